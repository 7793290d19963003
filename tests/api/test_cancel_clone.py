"""A cancel of a creation mid-clone ends it at once (POST /v1/jobs/{id}/cancel),
black-box against pvesim at real time (time scale 1), its own file so that
test_cancel's cases keep their fast clock:
  - the clone copies for ~40 s (the nodes' storage at 250 MiB/s, a 10 GiB
    template), so that after its second read of the clone's log proxd's
    wait trusts the copy's end and sleeps toward it, tens of seconds away;
  - the cancel then comes: the wait is told (the cancel is recorded in
    this instance), the clone task is stopped (qemu-server removes what the
    clone made; pvesim does as it does) and the job ends failed, cancelled
    at step wait_clone, within a few seconds, not at the clone's end;
  - nothing is left: no VM of that VMID on any node, no VMID reserved, no
    reservation unsettled, no clone slot held, no address used or reserved,
    the record failed, and the clone task ended interrupted.

The same for a reinstall cancelled while its new OS is cloned to the
temporary VM: the clone task is stopped, the temporary VM goes, the VM keeps
its old OS, running, within seconds.

The same for a cancel recorded by another instance on the database than
the runner (a second proxd started mid-clone, the cancel through it): its
commit tells the runner's jobs watch (SQLite: the -jobs file's inotify
watch; PostgreSQL: NOTIFY), the runner reads the cancels of the jobs it
holds and tells the clone's wait, which ends as above: within a few
seconds, nothing left. And when the runner's only worker runs the job
([limits] jobs_max = 1), no idle worker watching the store: its leaser
holds the watch meanwhile, asleep (at most one wake-up in 4 s). On
PostgreSQL (test_cancel_clone_pg) `make test` runs the case of the watch
only, the others in `make test-full`.
"""
import os
import time

from lib.cases import case, finish
from lib.db import query
from lib.pg import case_full_on_pg
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

DB = os.environ.get("PROXD_TEST_DB")
POOL = "\n[ippool cnc]\ncidr = 10.61.0.0/24\ngateway = 10.61.0.1\nbridge = vmbr0\nquarantine = 0\n"
BODY = {"os": "ubuntu", "name": "slow-1", "cores": 1, "memory_mb": 512, "disk_gb": 20,
        "ippools": ["cnc"]}
LOG_READS = "GET /nodes/{node}/tasks/{upid}/log"
TEMPLATE_BASE = 8000
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "me@host")

sim = Sim(nodes="sv1,sv2", time_scale=1)
px = Proxd(sim, database=DB, proxd_extra="reconcile_interval = 3600\n", sections=POOL,
           proxmox_extra="connect_timeout = 1\ntimeout = 5\n")
CARL = px.token("carl")
px.start()


def q(sql):
    return query(px.db, sql)


def log_reads():
    return sim.ctl("GET", "/calls")["calls"].get(LOG_READS, 0)


def second(extra=""):
    return Proxd(sim, share=px, proxd_extra="reconcile_interval = 3600\n" + extra, sections=POOL,
                 proxmox_extra="connect_timeout = 1\ntimeout = 5\n")


def shutdown_proxd(p):
    if p.alive():
        p.stop()


def cancel_mid_clone(runner=None, other=None, limit=5, quiet_leaser=False):
    """A creation run by `runner` (px) cancelled mid-clone ends within
    `limit` seconds, nothing left; with `other` (a Proxd not yet started),
    the cancel goes through it, started once the clone is under way. With
    quiet_leaser, the runner's leaser wakes at most once in 4 s meanwhile
    (its lease renewal every 10 s): it holds the store's watch, no timer."""
    runner = runner or px
    for n in ("sv1", "sv2"):  # a 10 GiB copy of ~41 s
        sim.ctl("POST", "/nodes/" + n, {"bandwidth_mb": 250})
    sim.ctl("DELETE", "/calls")
    r = runner.call("POST", "/v1/vms", CARL, body=BODY, want=202).json()
    job, vmid = r["job"], r["vmid"]
    # the second read of the clone's log: from then the wait sleeps toward
    # the copy's end (pve/poll.c trusted_delay)
    wait_for(lambda: log_reads() >= 2, 20, 0.01, "the clone's second log read")
    st = q("SELECT step, upid, lease_owner FROM jobs WHERE id = '%s'" % job)[0]
    assert st[0] == "wait_clone", st
    upid = st[1]
    node = upid.split(":")[1]
    assert sim.vm(vmid)["conf"].get("lock") == "clone", sim.vm(vmid)
    assert st[2].endswith(":%d" % runner.proc.pid), st  # the one instance running
    if quiet_leaser:
        # it looked at the store once a second while every worker was busy
        # (4 wake-ups here): 1 ms of CPU per creation at time scale 1
        a = sum(runner.thread_switches("leaser").values())
        time.sleep(4)
        woke = sum(runner.thread_switches("leaser").values()) - a
        print("  the leaser woke %d times in 4 s with every worker busy" % woke, flush=True)
        assert woke <= 1, "the leaser woke %d times in 4 s" % woke
    via = runner
    if other:  # started now: the job is the runner's, the other takes the cancel
        via = other.start()
    t0 = time.monotonic()
    c = via.call("POST", "/v1/jobs/%s/cancel" % job, CARL, want=202).json()
    assert c["cancel"]["by"] == "carl", c
    j = runner.wait_job(job, CARL, deadline=60)  # the clone's end: the old way
    took = time.monotonic() - t0
    print("  the cancel%s ended the job in %.2f s"
          % (" through another instance" if other else "", took), flush=True)
    assert took < limit, "the cancel took %.1f s: it waited for the clone" % took
    assert j["state"] == "failed", j
    assert j["error"] == "cancelled by carl at step wait_clone: what the creation made is " \
                         "removed", j
    # nothing left, on the nodes and in the store
    assert sim.vm(vmid) is None, sim.vm(vmid)
    ts = sim.data("GET", "/nodes/%s/tasks/%s/status" % (node, upid))
    assert ts["status"] == "stopped" and "received interrupt" in ts["exitstatus"], ts
    assert not q("SELECT state FROM vmid_alloc WHERE vmid = %d AND state <> 'quarantine'" % vmid)
    assert not q("SELECT job FROM capacity WHERE job = '%s' AND settled_at IS NULL" % job)
    assert not q("SELECT job FROM clone_slots WHERE job = '%s'" % job)
    assert not q("SELECT vmid FROM leftovers WHERE job = '%s'" % job)
    recs = q("SELECT id, state FROM vms WHERE job = '%s'" % job)
    assert recs and all(s == "failed" for _, s in recs), recs
    for rid, _ in recs:
        assert not q("SELECT addr FROM addr_alloc WHERE vm_id = %d AND state IN ('used', "
                     "'reserved')" % rid), "record %d keeps its address" % rid
    assert not q("SELECT addr FROM addr_alloc WHERE job = '%s' AND state = 'reserved'" % job)
    lines = px.call("GET", "/v1/jobs/%s/events" % job, CARL, want=200).text
    assert "clone task stopped" in lines, lines


@case_full_on_pg
def cancel_mid_clone_ends_within_seconds():
    cancel_mid_clone()


@case
def cancel_through_another_instance_mid_clone_ends_within_seconds():
    px2 = second()
    try:
        cancel_mid_clone(other=px2, limit=8)
    finally:
        shutdown_proxd(px2)


@case_full_on_pg
def cancel_through_another_instance_with_every_worker_busy():
    """The runner's only worker ([limits] jobs_max = 1) runs the creation:
    no idle worker watches the store, its leaser holds the watch (from when
    the last worker took its job, not from its next renewal up to 10 s
    away) and is woken by the cancel's commit; it sleeps meanwhile."""
    px.stop()
    busy = second("\n[limits]\njobs_max = 1\n")
    try:
        cancel_mid_clone(runner=busy.start(), other=px, limit=5, quiet_leaser=True)
    finally:
        if not px.alive():
            px.start()
        shutdown_proxd(busy)



def bandwidth(mb):
    for n in ("sv1", "sv2"):
        sim.ctl("POST", "/nodes/" + n, {"bandwidth_mb": mb})


@case_full_on_pg
def reinstall_cancelled_mid_clone_ends_within_seconds():
    bandwidth(40000)  # the VM to reinstall comes at once
    r = px.call("POST", "/v1/vms", CARL, want=202,
                body={"os": "ubuntu", "name": "keep-1", "cores": 1, "memory_mb": 512,
                      "disk_gb": 20}).json()
    vmid = px.wait_job(r["job"], CARL, deadline=60)["vmid"]
    before = sim.vm_view(vmid)
    bandwidth(250)  # the reinstall's clone copies for ~41 s
    sim.ctl("DELETE", "/calls")
    job = px.call("POST", "/v1/vms/%d/reinstall" % vmid, CARL, want=202,
                  body={"os": "debian", "ssh_keys": [KEY]}).json()["job"]
    wait_for(lambda: log_reads() >= 2, 20, 0.01, "the reinstall clone's second log read")
    st = q("SELECT step, upid FROM jobs WHERE id = '%s'" % job)[0]
    assert st[0] == "wait_clone", st
    upid = st[1]
    t0 = time.monotonic()
    px.call("POST", "/v1/jobs/%s/cancel" % job, CARL, want=202)
    j = px.wait_job(job, CARL, deadline=90)
    took = time.monotonic() - t0
    print("  the cancel ended the reinstall in %.2f s" % took, flush=True)
    assert took < 8, "the cancel took %.1f s: it waited for the clone" % took
    assert j["state"] == "failed" and "cancelled by carl at step wait_clone" in j["error"], j
    ts = sim.data("GET", "/nodes/%s/tasks/%s/status" % (upid.split(":")[1], upid))
    assert ts["status"] == "stopped" and "received interrupt" in ts["exitstatus"], ts
    after = sim.vm_view(vmid)
    for k in ("os", "power", "disk", "node", "mac", "net0", "ipconfig0", "boot"):
        assert after[k] == before[k], (k, before, after)
    assert after["os"] == "ubuntu" and after["power"] == "running", after
    live = {v for (v,) in q("SELECT vmid FROM vms WHERE state IN ('creating', 'enabled', "
                            "'deleting')")}
    strays = [v["vmid"] for v in sim.state()["vms"]
              if not TEMPLATE_BASE <= v["vmid"] < TEMPLATE_BASE + 100 and v["vmid"] not in live]
    assert not strays, strays  # the temporary VM is gone
    assert not q("SELECT job FROM capacity WHERE job = '%s' AND settled_at IS NULL" % job)
    assert not q("SELECT vmid FROM vmid_alloc WHERE job = '%s' AND state = 'reserved'" % job)
    assert not q("SELECT job FROM clone_slots WHERE job = '%s'" % job)


shutdown(px, sim)
finish()
