"""[proxd] job_lease: how long a job's lease lasts, so how soon another
instance sharing the database takes over the jobs of one that died (30 s,
fixed, before the setting).

Two instances on one database, job_lease = 3: a creation runs on A (its
clone under way), A is killed (SIGKILL: nothing given back), and B, which
was running all along, takes the job over once its lease ran out (within
a few seconds, not 30) and finishes it: one VM, the job done, its events
saying it was resumed. B claims nothing of a live A meanwhile: a job of A
still running is renewed every second (a third of the lease).
"""
import time

from lib.cases import case, finish
from lib.db import query
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

LEASE_S = 3
EXTRA = "job_lease = %d\nreconcile_interval = 3600\n" % LEASE_S
sim = Sim(time_scale=0.5)  # a debian clone of some 10 s
a = Proxd(sim, proxd_extra=EXTRA)
ALICE = a.token("alice")
a.start()
b = Proxd(sim, share=a, proxd_extra=EXTRA)


def runner(job):
    rows = query(a.db, "SELECT lease_owner, step FROM jobs WHERE id = '%s'" % job)
    return rows[0] if rows else (None, None)


def owned_by(px):
    return ":%d" % px.proc.pid


@case
def a_dead_instances_job_moves_after_its_lease():
    r = a.call("POST", "/v1/vms", ALICE, {"os": "debian", "name": "leased", "cores": 1,
                                          "memory_mb": 512, "disk_gb": 12}, want=202)
    job = r.json()["job"]
    wait_for(lambda: runner(job)[1] == "wait_clone", deadline=30, interval=0.05,
             what="the clone under way on A")
    assert runner(job)[0].endswith(owned_by(a)), runner(job)
    b.start()  # after A's claim: B has nothing to claim but what A leaves
    # A alive: its lease is renewed, B does not take the job (two leases' time)
    end = time.monotonic() + 2 * LEASE_S
    while time.monotonic() < end and runner(job)[1] == "wait_clone":
        assert runner(job)[0].endswith(owned_by(a)), runner(job)
        time.sleep(0.2)
    a.kill()
    killed = time.monotonic()
    # B takes it once the lease ran out: seconds, not the 30 of before
    wait_for(lambda: runner(job)[0].endswith(owned_by(b)), deadline=20, interval=0.1,
             what="B to take the job over")
    took = time.monotonic() - killed
    j = b.wait_job(job, ALICE, deadline=120)
    assert j["state"] == "done", j
    mine = [v for v in sim.state()["vms"] if (v.get("conf") or {}).get("name") == "leased"]
    assert [v["vmid"] for v in mine] == [j["vmid"]], mine
    print("B took the job %.1f s after A was killed (lease %d s)" % (took, LEASE_S))


try:
    if a.alive():  # a case that failed before the kill
        a.kill()
finally:
    shutdown(b, sim)
finish()
