"""A stale leftover never costs a live VM.

A leftover names a half-made VM a creation left for the reconciler (its
VMID, node and job); the reconciler destroys an unlocked VM of that VMID on
that node whose description carries the job's marker, and releases the
VMID when the VM is not there. But when the VMID has a live record
(creating or enabled) on that node made by that job, the creation went on
under that VMID after all and the leftover is stale: the VM is the
record's, a customer's. The reconciler destroyed it (and a creation whose
run was resumed could leave such a leftover: create.c resume_move, closed
since). Now it forgets the leftover, keeps the VM and the VMID ('used'),
and logs a warning saying why.

The state is built directly: a creation ends done, then a leftover row
naming its VMID, node and job is written into the database; a
`proxd reconcile` pass (the daemon stopped) follows. Cases:
  - the record's last job is the creation;
  - a later job (a stop) acted on the record since: the creation is still
    the job that made it (its job row names the VMID).
"""
import time

from lib.cases import case, finish
from lib.db import query
from lib.proxd import Proxd, run as proxd_cli, shutdown
from lib.sim import Sim
import sqlite3

sim = Sim(time_scale=0.05)
px = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n")
ALICE = px.token("alice")
px.start()


def created(name):
    r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 12}, want=202)
    j = px.wait_job(r.json()["job"], ALICE, deadline=120)
    assert j["state"] == "done", j
    return j


def vms_named(name):
    return [(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["conf"].get("name") == name]


def stale_leftover_kept(name, later_job=None):
    if not px.alive():
        px.start()
    j = created(name)
    vmid, node, job = j["vmid"], j["node"], j["id"]
    if later_job:
        r = px.call("POST", "/v1/vms/%d/%s" % (vmid, later_job), ALICE, want=202)
        assert px.wait_job(r.json()["job"], ALICE)["state"] == "done"
        last = query(px.db, "SELECT job FROM vms WHERE vmid = ? AND state = 'enabled'", (vmid,))
        assert last != [(job,)], last
    assert vms_named(name) == [(vmid, node)], vms_named(name)
    px.stop()
    c = sqlite3.connect(px.db, timeout=30)
    with c:
        c.execute("INSERT INTO leftovers (vmid, node, job, created_at) VALUES (?, ?, ?, ?)",
                  (vmid, node, job, int(time.time() * 1000)))
    c.close()
    r = proxd_cli("reconcile", "--config", px.conf)
    assert vms_named(name) == [(vmid, node)], (vms_named(name), r.stdout, r.stderr[-3000:])
    assert query(px.db, "SELECT vmid FROM leftovers") == [], query(px.db, "SELECT * FROM leftovers")
    assert query(px.db, "SELECT state FROM vmid_alloc WHERE vmid = ?", (vmid,)) == [("used",)], \
        query(px.db, "SELECT * FROM vmid_alloc WHERE vmid = ?", (vmid,))
    assert query(px.db, "SELECT state FROM vms WHERE vmid = ? AND state = 'enabled'",
                 (vmid,)) == [("enabled",)]
    assert "leftover of job %s is stale" % job in r.stderr, r.stderr[-3000:]
    assert '"partial_removed":0' in r.stdout, r.stdout
    px.start()


@case
def a_stale_leftover_of_the_records_own_job_is_forgotten():
    stale_leftover_kept("stale-own")


@case
def a_stale_leftover_is_forgotten_after_a_later_job():
    stale_leftover_kept("stale-later", later_job="stop")


shutdown(px, sim)
finish()
