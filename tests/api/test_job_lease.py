"""[proxd] job_lease: how long a job's lease lasts, so how soon another
instance sharing the database takes over the jobs of one that died (30 s,
fixed, before the setting).

Two instances on one database, job_lease = 3: a creation runs on A (its
clone under way), A is killed (SIGKILL: nothing given back), and B, which
was running all along, takes the job over once its lease ran out (within
a few seconds, not 30) and finishes it: one VM, the job done, its events
saying it was resumed. B claims nothing of a live A meanwhile: a job of A
still running is renewed every second (a third of the lease). And an
instance just started leaves a lease that ran out to its runner for the
settling window: the runner may have been unable to renew a moment ago.
"""
import time

from lib.cases import case, finish
from lib.db import execute, query
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


def cloning_on(px, name):
    """A creation asked of px, once its clone is under way there: its job."""
    r = px.call("POST", "/v1/vms", ALICE, {"os": "debian", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 12}, want=202)
    job = r.json()["job"]
    wait_for(lambda: runner(job)[1] == "wait_clone", deadline=30, interval=0.05,
             what="the clone under way")
    assert runner(job)[0].endswith(owned_by(px)), runner(job)
    return job


def b_finished_alone(job, c, name):
    """B, thawed, finished the job it ran, alive, one VM made; C never
    claimed it."""
    j = b.wait_job(job, ALICE, deadline=120)
    assert j["state"] == "done", j
    assert runner(job)[0].endswith(owned_by(b)), runner(job)
    assert b.alive(), "B ended:\n" + b.tail()
    assert "claimed at step" not in "".join(
        line for line in c.log_text().splitlines(True) if job in line), c.tail()
    mine = [v for v in sim.state()["vms"] if (v.get("conf") or {}).get("name") == name]
    assert [v["vmid"] for v in mine] == [j["vmid"]], mine


@case
def a_dead_instances_job_moves_after_its_lease():
    job = cloning_on(a, "leased")
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


@case
def a_new_instance_leaves_a_lapsed_lease_to_its_live_runner():
    """B runs a creation and cannot renew its lease for a while (frozen, as
    a runner is while its database is out of reach), and the lease runs
    out; C starts then. C leaves the job to B for the settling window
    (5 s here): B, alive again, renews and finishes it. C used to claim it
    at once: B's next write was refused and B ended its process (SIGABRT;
    the PostgreSQL fault test, seed 14102: an instance started just after
    an outage)."""
    job = cloning_on(b, "lapsed")
    c = Proxd(sim, share=a, proxd_extra=EXTRA)
    c.secrets += a.secrets
    b.freeze()
    try:
        try:
            execute(a.db, "UPDATE jobs SET lease_until = %d WHERE id = '%s'"
                    % (int(time.time() * 1000) - 1000, job))
            started = time.monotonic()
            c.start()
            # an observation window, not a wait on a condition: C, started
            # with the job's lease run out, must not take it (it used to at
            # once). B thawed by 3.5 s after C's start began, so that B (which
            # renews every second) renews within C's window of 5 s however
            # slowly C came up
            end = min(time.monotonic() + 1.5, started + 3.5)
            while True:
                assert runner(job)[0].endswith(owned_by(b)), runner(job)
                if time.monotonic() >= end:
                    break
                time.sleep(0.1)
        finally:
            b.thaw()
        b_finished_alone(job, c, "lapsed")
    finally:
        if c.alive():
            c.stop()


@case
def a_running_instance_leaves_a_lease_just_run_out_to_its_runner():
    """B runs a creation and cannot renew its lease for a while (frozen, as
    a runner is while SQLite's lock is held by another process: its renewal
    waits, and lands as the lock is let go), and the lease runs out; C has
    been running for longer than its start's settling window. C leaves a
    lease that ran out less than the settling window (5 s here) ago to its
    runner: B, alive again, renews and finishes the job. C used to claim it
    at once, and B ended its process (the random fault test, seed 15602:
    two instances on one SQLite file took over each other's jobs as its
    lock was let go)."""
    c = Proxd(sim, share=a, proxd_extra=EXTRA)
    c.secrets += a.secrets
    c.start()
    try:
        # past C's start window: it claims lapsed leases by now
        wait_for(lambda: c.logs_contain("running with"), deadline=30, interval=0.1,
                 what="C up")
        # the case needs C past its start's window (5 s from its start): a
        # wait for time itself, the window's own measure
        time.sleep(6.5)
        c.freeze()  # the creation is B's to claim (C's workers claim too)
        try:
            job = cloning_on(b, "just-lapsed")
        finally:
            c.thaw()
        b.freeze()
        try:
            execute(a.db, "UPDATE jobs SET lease_until = %d WHERE id = '%s'"
                    % (int(time.time() * 1000) - 500, job))
            started = time.monotonic()
            # an observation window, not a wait on a condition: C must not
            # take the job while its lease ran out less than 5 s ago; B
            # thawed 3 s after the lease ran out (0.5 s before the
            # observation began), so that it renews (every second) within
            # the window
            while time.monotonic() < started + 2.5:
                assert runner(job)[0].endswith(owned_by(b)), runner(job)
                time.sleep(0.1)
        finally:
            b.thaw()
        b_finished_alone(job, c, "just-lapsed")
    finally:
        if c.alive():
            c.stop()


try:
    if a.alive():  # a case that failed before the kill
        a.kill()
finally:
    shutdown(b, sim)
finish()
