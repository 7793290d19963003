"""Crash test: proxd is killed with SIGKILL at random moments while it creates
VMs, and restarted, ten times; in the end every request has exactly one VM or
a clean failure, and Proxmox and the database agree.

The event log tells each creation exactly once (lib/eventcheck.py).

Against pvesim (5 nodes, --time-scale 0.02: a 10 GiB clone takes ~0.4 s, a
40 GiB one ~1.6 s, so many kills land in the middle of a clone). Rounds take
turns: kill after a random delay; kill while a clone task runs; kill while a
clone request is in flight (pvesim delays half of the clone calls by 300 ms,
so a VM may appear after the kill with no UPID recorded). The RNG is seeded
(CRASH_SEED overrides the seed) so the request mix and the kill delays repeat.

A killed proxd leaves its jobs leased for LEASE_MS (30 s) to its dead
instance; waiting that out ten times would take five minutes, so after each
kill the test expires the dead instance's leases in the database (what the
clock would do 30 s later) before it restarts proxd.

Before that (SQLite only), cases of one creation killed at a chosen step
and restarted in a chosen world.

Plain script run by ctest (/usr/bin/python3 with Debian's python3-requests);
prints one line per check group and a closing `N passed, N failed` line.
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor
import random
import re
import sqlite3
import tempfile
import time

from lib import eventcheck
from lib.cases import case, finish
from lib.db import (expire_leases, query as db_query, Reader, rows as db_rows, wait_settled,
                    wait_step)
from lib.env import TOKEN_SECRET
from lib.proxd import cluster_config as write_config, Daemon, OSES, run as proxd, TEMPLATE_BASE
from lib.sim import Sim
from lib.wait import wait_for

SEED = int(os.environ.get("CRASH_SEED", "20260124"))
ROUNDS = 10
REQUESTS = 50
DISK = {"ubuntu": 20, "debian": 20, "centos": 20, "windows": 40}

rng = random.Random(SEED)
print("seed %d" % SEED, flush=True)


def db_jobs(db):
    return db_rows(db, "jobs", ("state", "step", "vmid", "node"))


def clone_running(sim):
    return "qmclone" in sim.running_tasks()["types"]


def killed_at_configure(tag):
    """One creation killed while its configure call is held (pvesim delays
    config writes 3 s), its lease expired: (sim, daemon, conf, db, tmp,
    job id, its VMID, its node). The daemon is down, the delay rule gone."""
    tmp = tempfile.TemporaryDirectory(prefix="proxd-crash-%s-" % tag)
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.02)
    d = Daemon(conf, tmp.name)
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"])
        sim.ctl("POST", "/faults", {"method": "PUT", "path": r"^/nodes/[^/]+/qemu/\d+/config$",
                                    "kind": "delay", "delay_ms": 3000})
        d.start()
        out = json.loads(proxd("create", "--config", conf, "--os", "ubuntu", "--name", tag,
                               "--cores", "1", "--memory", "512", "--disk", "20",
                               "--owner", "ci").stdout)
        step = wait_step(db, out["job"], "configure", 30)
        assert step == "configure", "the creation is at %s, not configuring" % step
        d.kill()
        sim.ctl("DELETE", "/faults")
        expire_leases(db)
        j = db_jobs(db)[out["job"]]
        return sim, d, conf, db, tmp, out["job"], j["vmid"], j["node"]
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise


def resumed_creation_fails_over_without_a_leftover():
    # resumed at configure on node A, the configure fails there and the
    # creation moves on (what A had is removed); on the next node the clone
    # is refused, plainly. Nothing was sent there before the restart: the
    # refusal is a failover like any other, not a request that "may still
    # be served" (which left a leftover and took a new VMID per failover)
    sim, d, conf, db, tmp, job, vmid, node = killed_at_configure("failover")
    try:
        sim.ctl("POST", "/faults", {"method": "PUT", "node": node,
                                    "path": r"^/nodes/[^/]+/qemu/\d+/config$",
                                    "kind": "error", "status": 500,
                                    "message": "config refused by the test"})
        sim.ctl("POST", "/faults", {"method": "POST",
                                    "path": r"^/nodes/(?!%s/)[^/]+/qemu/\d+/clone$" % node,
                                    "kind": "error", "status": 500, "count": 1,
                                    "message": "clone refused by the test"})
        d.start()
        wait_settled(db, 60)
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        events = " | ".join(e["message"] for e in j["events"])
        assert j["state"] == "done", "%s: %s (%s)" % (j["state"], j["error"], events)
        assert "clone refused by the test" in json.dumps(j["attempts"]), j["attempts"]
        assert "left for the reconciler" not in events, "a leftover: " + events
        assert j["vmid"] == vmid, "VMID %d spent, the VM is %d: %s" % (vmid, j["vmid"], events)
        assert not db_query(db, "SELECT vmid FROM leftovers")
        ours = [v for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE]
        assert [(v["vmid"], v["node"]) for v in ours] == [(vmid, j["node"])], ours
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def without_node(conf, node):
    """The configuration at `conf` with the [node NODE] section left out."""
    with open(conf) as f:
        sections = re.split(r"(?m)^(?=\[)", f.read())
    with open(conf, "w") as f:
        f.write("".join(s for s in sections if not s.startswith("[node %s]" % node)))


def resumed_on_a_node_no_longer_configured():
    # killed at configure, restarted with its node gone from the
    # configuration: the VM made there (which proxd can no longer look at)
    # is recorded as a leftover, under its VMID, and the request goes on
    # under a new one. Placed again under the same VMID, the half-made VM
    # was abandoned without a trace
    sim, d, conf, db, tmp, job, vmid, node = killed_at_configure("gone")
    try:
        without_node(conf, node)
        d.start()
        wait_settled(db, 60)
        assert d.alive(), d.tail()
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        events = " | ".join(e["message"] for e in j["events"])
        assert j["state"] == "done", "%s: %s (%s)" % (j["state"], j["error"], events)
        assert j["node"] != node and j["vmid"] != vmid, (j["node"], j["vmid"], events)
        left = db_query(db, "SELECT vmid, node, job FROM leftovers")
        assert left == [(vmid, node, job)], "leftovers %s; events: %s" % (left, events)
        assert "left for the reconciler" in events, events
        # the request has one VM where proxd manages nodes, and the
        # half-made one is still where it was left (nobody removed it)
        vms = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
        assert vms == {(vmid, node), (j["vmid"], j["node"])}, vms
        recs = [r for r in json.loads(proxd("vms", "--config", conf).stdout)
                if r["state"] == "enabled"]
        assert [(r["vmid"], r["node"]) for r in recs] == [(j["vmid"], j["node"])], recs
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def resumed_cleanup_minds_a_clone_that_may_come():
    # standalone hosts. The creation's run died in its cleanup after a clone
    # request to sv1 whose answer was lost (step cleanup, no UPID; made by
    # hand: a kill lands in that window only by luck), and that request is
    # served after the resumed cleanup looked (here the test makes the VM
    # it makes, marker and all). The resumed run knows nothing of the lost
    # answer: it must assume it, set that VMID aside and go on under a new
    # one; it went on under the same VMID, and the late clone made a second
    # VM of it on sv1, which the reconciler takes for a copy and keeps
    tmp = tempfile.TemporaryDirectory(prefix="proxd-crash-late-")
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(standalone=True, time_scale=0.02)
    d = Daemon(conf, tmp.name)
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"], placement="ordered",
                     standalone=sim.ports)
        out = json.loads(proxd("create", "--config", conf, "--os", "ubuntu", "--name", "late",
                               "--cores", "1", "--memory", "512", "--disk", "20",
                               "--owner", "ci").stdout)
        job = out["job"]
        vmid = db_jobs(db)[job]["vmid"]
        c = sqlite3.connect(db, timeout=30)
        with c:
            c.execute("UPDATE jobs SET state = 'running', step = 'cleanup', node = 'sv1',"
                      " upid = '', lease_owner = 'dead:1', lease_until = 0,"
                      " attempts = '[{\"node\": \"sv1\", \"error\": \"the connection closed"
                      " without an answer after the request was sent\"}]' WHERE id = ?", (job,))
        c.close()
        d.start()
        wait_settled(db, 60)
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        events = " | ".join(e["message"] for e in j["events"])
        assert j["state"] == "done", "%s: %s (%s)" % (j["state"], j["error"], events)
        assert j["node"] != "sv1", (j["node"], events)
        # the request served late: the clone it makes on sv1
        tpl = TEMPLATE_BASE + OSES.index("ubuntu")
        upid = sim.data("POST", "/nodes/sv1/qemu/%d/clone" % tpl,
                        data={"newid": str(vmid), "name": "late", "full": "1",
                              "description": "proxd job %s" % job}, port=sim.ports["sv1"])
        assert sim.wait_task("sv1", upid, port=sim.ports["sv1"])["exitstatus"] == "OK"
        proxd("reconcile", "--config", conf)
        vms = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
        assert vms == {(j["vmid"], j["node"])}, "VMs %s, the job's %s: %s" % (
            vms, (j["vmid"], j["node"]), events)
        assert j["vmid"] != vmid, events
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def cut_move(tag, step, record=False, leftover=False):
    """One creation whose run was killed in the middle of moving to another
    VMID (create.c move_vmid; made by hand: a kill lands between its writes
    only by luck): the job at `step` on sv1 under its first VMID, the next
    VMID already reserved under the job id; with `record`, the new record
    made too (creating, the request's copy); with `leftover`, the first
    VMID left for the reconciler on sv1 (leave()), else taken on sv1 by a VM
    that is not proxd's and marked foreign (reallocate()). The daemon is
    not started: (sim, daemon, conf, db, tmp, job, first VMID, next VMID)."""
    tmp = tempfile.TemporaryDirectory(prefix="proxd-crash-%s-" % tag)
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.02)
    d = Daemon(conf, tmp.name)
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"], placement="ordered")
        out = json.loads(proxd("create", "--config", conf, "--os", "ubuntu", "--name", tag,
                               "--cores", "1", "--memory", "512", "--disk", "20",
                               "--owner", "ci").stdout)
        job = out["job"]
        vmid = db_jobs(db)[job]["vmid"]
        other = vmid + 1
        if not leftover:  # the VM that made the VMID foreign
            tpl = TEMPLATE_BASE + OSES.index("ubuntu")
            upid = sim.data("POST", "/nodes/sv1/qemu/%d/clone" % tpl,
                            data={"newid": str(vmid), "name": "not-proxds", "full": "1",
                                  "description": "made outside proxd"})
            assert sim.wait_task("sv1", upid)["exitstatus"] == "OK"
        now = int(time.time() * 1000)
        c = sqlite3.connect(db, timeout=30)
        with c:
            c.execute("UPDATE jobs SET state = 'running', step = ?, node = 'sv1', upid = '',"
                      " lease_owner = 'dead:1', lease_until = 0,"
                      " attempts = '[{\"node\": \"sv1\", \"error\": \"the test\"}]'"
                      " WHERE id = ?", (step, job))
            if leftover:
                c.execute("INSERT INTO leftovers (vmid, node, job, created_at)"
                          " VALUES (?, 'sv1', ?, ?)", (vmid, job, now))
            else:
                c.execute("UPDATE vmid_alloc SET state = 'foreign', job = '' WHERE vmid = ?",
                          (vmid,))
            assert not c.execute("SELECT 1 FROM vmid_alloc WHERE vmid = ?", (other,)).fetchall()
            c.execute("INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
                      " VALUES (?, 'reserved', ?, 0, ?)", (other, job, now))
            if record:
                c.execute("INSERT INTO vms (vmid, os, name, owner, node, state, power, cores,"
                          " memory_mb, disk_gb, job, error, pending, created_at, updated_at)"
                          " SELECT ?, os, name, owner, node, state, power, cores, memory_mb,"
                          " disk_gb, job, error, pending, created_at, ? FROM vms"
                          " WHERE vmid = ? AND job = ?", (other, now, vmid, job))
        c.close()
        return sim, d, conf, db, tmp, job, vmid, other
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise


def after_cut_move(sim, d, conf, db, job, vmid, other):
    """Resumed: the job ends done under the VMID it held besides its own,
    with one enabled record, no record left creating, no other VMID left
    reserved to it, and no VM on pvesim the database does not know. The
    job (proxctl's view) and its events."""
    d.start()
    wait_settled(db, 60)
    j = json.loads(proxd("job", "--config", conf, job).stdout)
    events = " | ".join(e["message"] for e in j["events"])
    assert j["state"] == "done", "%s: %s (%s)" % (j["state"], j["error"], events)
    held = db_query(db, "SELECT vmid, state FROM vmid_alloc WHERE job = ? AND vmid <> ?"
                    " AND vmid NOT IN (SELECT vmid FROM leftovers)", (job, j["vmid"]))
    assert not held, "VMIDs still held by the job: %s (%s)" % (held, events)
    recs = db_query(db, "SELECT vmid, state FROM vms WHERE job = ? ORDER BY id", (job,))
    assert recs == [(vmid, "failed"), (other, "enabled")], "records %s: %s" % (recs, events)
    assert j["vmid"] == other, "VMID %d reserved to the job, the VM is %d: %s" % (
        other, j["vmid"], events)
    live = {r[0] for r in db_query(db, "SELECT vmid FROM vms WHERE state NOT IN"
                                       " ('failed', 'deleted', 'lost')")}
    foreign = {r[0] for r in db_query(db, "SELECT vmid FROM vmid_alloc"
                                          " WHERE state = 'foreign'")}
    ours = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
    unknown = {v for v in ours if v[0] not in live | foreign}
    assert not unknown, "VMs the database does not know: %s" % unknown
    assert (other, j["node"]) in ours, (ours, j["node"])
    return j, events


def resumed_mid_move_to_a_new_vmid_takes_the_reserved_one(record):
    # killed after move_vmid reserved the next VMID (and, with `record`,
    # made its record) but before the job's checkpoint: the resumed run
    # found the foreign VMID again and reserved yet another one, and the
    # first stayed reserved to the job for good (with its record, a second
    # one for the request, left creating with nobody's job)
    def run():
        sim, d, conf, db, tmp, job, vmid, other = cut_move(
            "move%s" % ("rec" if record else ""), "clone", record=record)
        try:
            after_cut_move(sim, d, conf, db, job, vmid, other)
            assert db_query(db, "SELECT state FROM vmid_alloc WHERE vmid = ?",
                            (vmid,)) == [("foreign",)]
            d.stop()
        except Exception:
            d.abort()
            sim.stop(check_clean=False)
            raise
        sim.stop()
    run.__name__ = "resumed_mid_move_%s_takes_the_reserved_vmid" % (
        "with_its_record" if record else "before_its_record")
    return run


def resumed_mid_move_after_a_leftover_takes_the_reserved_vmid():
    # the same cut after leave(): the first VMID left on sv1 for the
    # reconciler (it keeps it reserved to the job), the next reserved. The
    # resumed cleanup, seeing nothing on sv1 now, must not carry on under
    # the first VMID nor reserve a third: the move is finished first. Once
    # the reconciler is done with the leftover, nothing is reserved to the
    # job but its VM's VMID
    sim, d, conf, db, tmp, job, vmid, other = cut_move("moveleft", "cleanup", leftover=True)
    try:
        j, events = after_cut_move(sim, d, conf, db, job, vmid, other)
        assert j["node"] != "sv1", (j["node"], events)
        proxd("reconcile", "--config", conf)
        assert not db_query(db, "SELECT vmid FROM leftovers"), events
        held = db_query(db, "SELECT vmid, state FROM vmid_alloc WHERE job = ?", (job,))
        assert held == [(other, "used")], "VMIDs of the job: %s (%s)" % (held, events)
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def cut_before_move(tag, step, foreign=False, made=False, attempt="the test"):
    """One creation whose run was killed after it gave up its VMID and
    before the move to another reserved one (create.c reallocate() or
    leave(), then move_vmid; made by hand: a kill lands there only by luck):
    the job at `step` on sv1 under its first VMID, no other VMID reserved.
    With `foreign`, the VMID marked foreign (the VM that made it so gone
    since); else named by a leftover of the job on sv1, and with `made`, a
    VM of the job's there (its marker, made by the clone before). The daemon
    is not started: (sim, daemon, conf, db, tmp, job, first VMID)."""
    tmp = tempfile.TemporaryDirectory(prefix="proxd-crash-%s-" % tag)
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.02)
    d = Daemon(conf, tmp.name)
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"], placement="ordered")
        out = json.loads(proxd("create", "--config", conf, "--os", "ubuntu", "--name", tag,
                               "--cores", "1", "--memory", "512", "--disk", "20",
                               "--owner", "ci").stdout)
        job = out["job"]
        vmid = db_jobs(db)[job]["vmid"]
        if made:  # the half-made VM the leftover names
            tpl = TEMPLATE_BASE + OSES.index("ubuntu")
            upid = sim.data("POST", "/nodes/sv1/qemu/%d/clone" % tpl,
                            data={"newid": str(vmid), "name": tag, "full": "1",
                                  "description": "proxd job %s" % job})
            assert sim.wait_task("sv1", upid)["exitstatus"] == "OK"
        now = int(time.time() * 1000)
        c = sqlite3.connect(db, timeout=30)
        with c:
            c.execute("UPDATE jobs SET state = 'running', step = ?, node = 'sv1', upid = '',"
                      " lease_owner = 'dead:1', lease_until = 0, attempts = ? WHERE id = ?",
                      (step, json.dumps([{"node": "sv1", "error": attempt}]), job))
            if foreign:
                c.execute("UPDATE vmid_alloc SET state = 'foreign', job = '' WHERE vmid = ?",
                          (vmid,))
            else:
                c.execute("INSERT INTO leftovers (vmid, node, job, created_at)"
                          " VALUES (?, 'sv1', ?, ?)", (vmid, job, now))
        c.close()
        return sim, d, conf, db, tmp, job, vmid
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise


def after_cut_before_move(sim, d, conf, db, job, vmid):
    """Settled, the job is done under another VMID than the one it gave up,
    the only VMID held by it (used), its record the only live one, its VM
    on pvesim. The job (proxctl's view) and its events."""
    wait_settled(db, 90)
    j = json.loads(proxd("job", "--config", conf, job).stdout)
    events = " | ".join(e["message"] for e in j["events"])
    assert j["state"] == "done", "%s: %s (%s)" % (j["state"], j["error"], events)
    held = db_query(db, "SELECT vmid, state FROM vmid_alloc WHERE job = ?"
                    " AND vmid NOT IN (SELECT vmid FROM leftovers)", (job,))
    alloc = db_query(db, "SELECT state, job FROM vmid_alloc WHERE vmid = ?", (j["vmid"],))
    assert held == [(j["vmid"], "used")], "VMIDs of the job %s, its VM %d (allocated %s): %s" % (
        held, j["vmid"], alloc, events)
    assert j["vmid"] != vmid, "the VM was made under the VMID %d given up: %s" % (vmid, events)
    recs = db_query(db, "SELECT vmid, state FROM vms WHERE job = ? ORDER BY id", (job,))
    assert recs == [(vmid, "failed"), (j["vmid"], "enabled")], "records %s: %s" % (recs, events)
    ours = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
    assert (j["vmid"], j["node"]) in ours, (ours, j["vmid"], j["node"])
    return j, events


def resumed_before_a_move_off_a_leftover_does_not_keep_its_vmid():
    # killed in leave() after the leftover was recorded (the node did not
    # answer) and before the move reserved the next VMID: resumed at
    # cleanup under the VMID the leftover names. The node answers now (its
    # VM is locked a while, so that the daemon's first reconcile pass does
    # not take it first): the cleanup removed the VM and the creation went
    # on under the same VMID, which a reconcile pass during the next clone,
    # done with the leftover, gave back (quarantined) under the live VM.
    # The move must be finished first; the reconciler removes the leftover
    # and leaves the live VM alone
    sim, d, conf, db, tmp, job, vmid = cut_before_move(
        "gapleft", "cleanup", made=True, attempt="node sv1 does not answer")
    try:
        sim.ctl("POST", "/vms/%d" % vmid, {"at": "sv1", "conf": {"lock": "backup"}})
        sim.ctl("POST", "/faults", {"method": "POST",
                                    "path": r"^/nodes/(?!sv1/)[^/]+/qemu/\d+/clone$",
                                    "kind": "delay", "delay_ms": 5000})
        # a reconcile pass before the job is resumed (a restarted daemon's
        # first pass may run before its runner claims the job) leaves the
        # leftover to the job: its live record is the job's own, made
        # before the cleanup, not a creation that went on under the VMID
        proxd("reconcile", "--config", conf)
        assert db_query(db, "SELECT vmid, node FROM leftovers") == [(vmid, "sv1")], \
            db_query(db, "SELECT vmid, node, job FROM leftovers")
        d.start()
        # the VM stays locked until the daemon has resumed the job (claimed
        # from the dead owner) and taken it off the VMID, or, without the
        # move, got past its cleanup's start: then its first reconcile pass
        # (which left the locked VM alone) does not remove the VM first. A
        # soft wait: a proxd whose cleanup waits for the lock must see it go
        # (a sleep of 3 s ended before a loaded machine's first pass)
        try:
            wait_for(lambda: db_query(db, "SELECT 1 FROM jobs WHERE id = ? AND lease_owner <> "
                                          "'dead:1' AND (vmid <> ? OR step <> 'cleanup')",
                                      (job, vmid)), 30, what="the job resumed and moved")
        except AssertionError:
            pass
        sim.ctl("POST", "/vms/%d" % vmid, {"at": "sv1", "conf": {"lock": None}})
        # a reconcile pass while the next attempt clones elsewhere
        wait_for(lambda: db_query(db, "SELECT 1 FROM jobs WHERE id = ? AND (state = 'done' OR"
                                      " (node <> 'sv1' AND step IN ('clone', 'wait_clone')))",
                                  (job,)), 60, what="the next attempt's clone")
        proxd("reconcile", "--config", conf)
        j, events = after_cut_before_move(sim, d, conf, db, job, vmid)
        assert j["node"] != "sv1", (j["node"], events)
        proxd("reconcile", "--config", conf)
        assert not db_query(db, "SELECT vmid FROM leftovers"), events
        held = db_query(db, "SELECT vmid, state FROM vmid_alloc WHERE job = ?", (job,))
        assert held == [(j["vmid"], "used")], "VMIDs of the job: %s (%s)" % (held, events)
        ours = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
        assert ours == {(j["vmid"], j["node"])}, "VMs %s: %s" % (ours, events)
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def resumed_past_the_clone_before_a_move_off_a_leftover_moves():
    # the same cut in the leave() of a run that found its node no longer
    # configured (resume_unconfigured), the job at configure; the next run
    # has the node configured again (another instance's node list). It
    # went on under the VMID the leftover names, on its node, and made the
    # VM there: the reconciler took the live VM for the leftover and
    # destroyed it
    # (a daemon's first reconcile pass may come before the job resumes, on
    # a loaded machine: it finds the job's live record of that VMID on that
    # node and forgets the leftover as stale, its VM untouched; the job then
    # goes on with its own VM under its VMID, which is right too: one VM,
    # its record, nothing left)
    sim, d, conf, db, tmp, job, vmid = cut_before_move(
        "gapcfg", "configure", made=True, attempt="node is no longer configured")
    try:
        d.start()
        wait_settled(db, 90)
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        if j["vmid"] == vmid and j["state"] == "done":
            events = " | ".join(e["message"] for e in j["events"])
            recs = db_query(db, "SELECT vmid, state FROM vms WHERE job = ?", (job,))
            assert recs == [(vmid, "enabled")], "records %s: %s" % (recs, events)
        else:
            j, events = after_cut_before_move(sim, d, conf, db, job, vmid)
        proxd("reconcile", "--config", conf)
        assert not db_query(db, "SELECT vmid FROM leftovers"), events
        ours = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
        assert ours == {(j["vmid"], j["node"])}, "VMs %s, the job's %s: %s" % (
            ours, (j["vmid"], j["node"]), events)
        held = db_query(db, "SELECT vmid, state FROM vmid_alloc WHERE job = ?", (job,))
        assert held == [(j["vmid"], "used")], "VMIDs of the job: %s (%s)" % (held, events)
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def resumed_before_a_move_off_a_foreign_vmid_does_not_clone_onto_it():
    # killed in reallocate() after the VMID was marked foreign and before
    # the move reserved the next one: resumed at the clone under it, and
    # the VM that made it foreign gone since. The resumed clone found
    # nothing there and cloned onto the foreign VMID: a live VM of proxd's
    # under a VMID no job holds, never marked used
    sim, d, conf, db, tmp, job, vmid = cut_before_move("gapforeign", "clone", foreign=True)
    try:
        d.start()
        j, events = after_cut_before_move(sim, d, conf, db, job, vmid)
        # still foreign, or, its VM gone and the job moved off it, given
        # back (quarantined) by the start-up pass of the reconciler if that
        # came after the job ended; never the job's
        state = db_query(db, "SELECT state FROM vmid_alloc WHERE vmid = ?", (vmid,))
        assert state in ([("foreign",)], [("quarantine",)]), (state, events)
        ours = {(v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE}
        assert ours == {(j["vmid"], j["node"])}, "VMs %s: %s" % (ours, events)
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()


def main(db=None):
    """db: a postgresql:// URL, or None for a SQLite file of its own."""
    tmp = tempfile.TemporaryDirectory(prefix="proxd-crash-")
    db = db or os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.02)
    requests_made = []  # (job id, os, name)
    stats = {"kills": 0, "during_clone": 0, "expired": 0, "missed": 0}
    d = Daemon(conf, tmp.name)
    look = None
    try:
        write_config(conf, db, sim.entry)
        proxd("--check-config", conf)
        # the kill aimed at a clone request polls every 10 ms for a window of
        # up to 300 ms: one psql for all its reads on PostgreSQL (a psql per
        # read took 0.1-0.2 s, missed the window, and the round waited out
        # its 20 s)
        look = Reader(db)
        sim.ctl("POST", "/faults", {"method": "POST", "path": r"^/nodes/[^/]+/qemu/\d+/clone$",
                                    "kind": "delay", "delay_ms": 300, "rate": 0.5})

        def queue(i):
            o = OSES[i % len(OSES)] if i < 8 else rng.choice(OSES)
            name = "crash-%02d" % i
            r = proxd("create", "--config", conf, "--os", o, "--name", name, "--cores",
                      str(rng.choice([1, 2])), "--memory", str(rng.choice([512, 1024, 2048])),
                      "--disk", str(DISK[o]), "--owner", "ci")
            out = json.loads(r.stdout)
            requests_made.append((out["job"], o, name))

        def aim(moment, interval, what):
            """Wait for the moment a kill is aimed at (moment(rows): rows the
            (state, step) of the jobs not ended), up to 20 s. Once every job
            has ended there is none to come: the round stops waiting (its
            kill lands on an idle proxd, as it did after the 20 s) and
            counts as missed."""
            def seen():
                rows = look.query("SELECT state, step FROM jobs"
                                  " WHERE state NOT IN ('done', 'failed')")
                return "hit" if moment(rows) else None if rows else "none left"
            try:
                got = wait_for(seen, 20, interval, what)
            except AssertionError:
                got = None
            stats["missed"] += got != "hit"

        per_round = REQUESTS // ROUNDS
        t_start = time.monotonic()
        for rnd in range(ROUNDS):
            d.start()
            # most requests are queued while proxd runs, one per round while it is down
            for _ in range(per_round - 1):
                queue(len(requests_made))
            kind = rnd % 3
            if kind == 1:
                # land the kill in a clone: wait for one to run, then a little more
                aim(lambda rows: clone_running(sim), 0.02, "a clone to run")
                time.sleep(rng.uniform(0, 0.3))
            elif kind == 2:
                # land it while a clone request is in flight (the step is written,
                # the UPID not yet): pvesim holds half of the clone calls 300 ms
                aim(lambda rows: ("running", "clone") in rows, 0.01, "a clone request")
                time.sleep(rng.uniform(0, 0.25))
            else:
                time.sleep(rng.uniform(0.05, 2.5))
            during = clone_running(sim)
            assert d.alive(), "proxd died on its own:\n" + d.tail()
            d.kill()
            stats["kills"] += 1
            stats["during_clone"] += during
            queue(len(requests_made))  # queued while proxd is down
            stats["expired"] += expire_leases(db)
        print("%d kills (%d during a clone, %d aimed at one that missed it), %d leases expired,"
              " %d requests in %.1fs" % (stats["kills"], stats["during_clone"], stats["missed"],
                                         stats["expired"], len(requests_made),
                                         time.monotonic() - t_start), flush=True)

        # let it finish
        d.start()
        try:
            wait_settled(db, 100)
        finally:
            print("all jobs settled after %.1fs" % (time.monotonic() - t_start), flush=True)
            d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    finally:
        if look:
            look.close()

    # proxctl's view of each request: fifty runs of the sanitizer build
    # (0.2-0.5 s each, mostly its start), four at a time
    with ThreadPoolExecutor(4) as pool:
        jobs = dict(zip([jid for jid, _, _ in requests_made],
                        pool.map(lambda r: json.loads(proxd("job", "--config", conf, r[0]).stdout),
                                 requests_made)))
    records = json.loads(proxd("vms", "--config", conf).stdout)
    state = sim.state()
    all_db_jobs = db_jobs(db)
    sim_vms = [v for v in state["vms"] if v["vmid"] < TEMPLATE_BASE]
    ndone = sum(1 for j in jobs.values() if j["state"] == "done")
    # what the resumed jobs found (for the log: which recovery paths ran)
    seen = {}
    for j in jobs.values():
        for ev in j.get("events", []):
            m = ev["message"]
            for key in ("found the clone from before", "found the clone task from before",
                        "the clone exists already", "exists outside proxd", "already running",
                        "attempt on"):
                if key in m:
                    seen[key] = seen.get(key, 0) + 1
    print("recovery paths: %s" % (json.dumps(seen, sort_keys=True) if seen else "none"), flush=True)
    print("%d done, %d failed, %d VMs on the nodes, %d records" % (
        ndone, len(jobs) - ndone, len(sim_vms), len(records)), flush=True)

    def marker_of(v):
        return (v.get("conf") or {}).get("description", "")

    @case
    def no_job_left_queued_or_running():
        left = {k: v for k, v in all_db_jobs.items() if v["state"] not in ("done", "failed")}
        assert not left, "unfinished jobs: %s" % left
        assert len(all_db_jobs) == REQUESTS, "%d jobs in the DB" % len(all_db_jobs)

    @case
    def every_request_has_one_vm_or_a_failure():
        bad = []
        for jid, o, name in requests_made:
            j = jobs[jid]
            recs = [r for r in records if r["job"] == jid]
            if len(recs) != 1:
                bad.append("%s: %d records" % (jid, len(recs)))
                continue
            r = recs[0]
            ours = [v for v in sim_vms if ("proxd job %s" % jid) in marker_of(v)]
            if j["state"] == "done":
                on_node = [v for v in sim_vms if v["vmid"] == r["vmid"] and v["node"] == r["node"]]
                if r["state"] != "enabled":
                    bad.append("%s done but record is %s" % (jid, r["state"]))
                elif r["vmid"] != j["vmid"] or r["node"] != j["node"]:
                    bad.append("%s: record %d@%s, job %d@%s" % (jid, r["vmid"], r["node"], j["vmid"],
                                                                j["node"]))
                elif len(on_node) != 1:
                    bad.append("%s: VM %d not on %s" % (jid, r["vmid"], r["node"]))
                elif on_node[0]["power"] != "running":
                    bad.append("%s: VM %d is %s" % (jid, r["vmid"], on_node[0]["power"]))
                elif len(ours) != 1:
                    bad.append("%s: %d VMs carry its marker: %s" % (
                        jid, len(ours), [(v["vmid"], v["node"]) for v in ours]))
                elif r["name"] != name or r["os"] != o:
                    bad.append("%s: record is %s/%s, asked %s/%s" % (jid, r["name"], r["os"], name, o))
            elif j["state"] == "failed":
                if r["state"] != "failed" or not r["error"]:
                    bad.append("%s failed but record is %s (error %r)" % (jid, r["state"], r["error"]))
                elif ours:
                    bad.append("%s failed but left %s" % (jid, [(v["vmid"], v["node"]) for v in ours]))
                elif not j["error"]:
                    bad.append("%s failed without a reason" % jid)
            else:
                bad.append("%s is %s" % (jid, j["state"]))
        assert not bad, "\n".join(bad)

    @case
    def no_vm_without_a_record():
        enabled = {(r["vmid"], r["node"]) for r in records if r["state"] == "enabled"}
        stray = [(v["vmid"], v["node"], marker_of(v), (v.get("conf") or {}).get("lock"))
                 for v in sim_vms if (v["vmid"], v["node"]) not in enabled]
        assert not stray, "VMs without an enabled record: %s" % stray

    @case
    def no_secret_in_the_logs():
        assert not d.logs_contain(TOKEN_SECRET), "the token secret is in proxd's log"

    @case
    def no_record_stuck_creating():
        stuck = [(r["vmid"], r["job"]) for r in records if r["state"] == "creating"]
        assert not stuck, "records still creating: %s" % stuck

    @case
    def no_two_records_share_a_vmid():
        seen = {}
        for r in records:
            seen.setdefault(r["vmid"], []).append(r["job"])
        dup = {k: v for k, v in seen.items() if len(v) > 1}
        assert not dup, "VMIDs with several records: %s" % dup

    @case
    def every_creation_is_logged_once():
        # one vm.created per enabled record, one vm.creation_failed per
        # failed one, one job.failed per failed job (lib/eventcheck.py)
        print("events: %s" % eventcheck.summary(db), flush=True)
        bad = eventcheck.problems(db)
        assert not bad, "\n".join(bad[:40])
        created = eventcheck.load(db)
        done = sum(1 for j in jobs.values() if j["state"] == "done")
        assert sum(1 for e in created if e["type"] == "vm.created") == done

    @case
    def simulator_served_schema_conformant_results():
        v = sim.ctl("GET", "/violations")
        assert v == [], "results that do not match the schema: %s" % v[:5]

    # after the cases, not in one: a run of some cases (PROXD_CASES) left
    # this pvesim running after the test's exit
    sim.stop()
    finish()


if __name__ == "__main__":
    # the cases of one creation each first, on databases of their own
    case(resumed_creation_fails_over_without_a_leftover)
    case(resumed_on_a_node_no_longer_configured)
    case(resumed_cleanup_minds_a_clone_that_may_come)
    case(resumed_mid_move_to_a_new_vmid_takes_the_reserved_one(False))
    case(resumed_mid_move_to_a_new_vmid_takes_the_reserved_one(True))
    case(resumed_mid_move_after_a_leftover_takes_the_reserved_vmid)
    case(resumed_before_a_move_off_a_leftover_does_not_keep_its_vmid)
    case(resumed_past_the_clone_before_a_move_off_a_leftover_moves)
    case(resumed_before_a_move_off_a_foreign_vmid_does_not_clone_onto_it)
    main()
