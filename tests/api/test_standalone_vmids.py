"""Standalone hosts each have their own VM ID space: a VM of a record's
VMID may also exist on another host (an operator's own, or the late copy
of a clone whose answer was lost). proxd's VMIDs stay unique across the
fleet, and its records stay with their own VMs.

  - the reconciler keeps a record on its node while that node has the VM,
    whatever VM of the same VMID another host has (it took the first it
    found, an operator's VM on sv1, for the record's VM "moved from sv2 to
    sv1 outside proxd": the record then named the operator's VM);
  - a creation whose clone request on sv1 is answered by nothing and served
    3 s later, after proxd looked for its task and its next requests were
    refused: the attempt is left for the reconciler (its VM may still come)
    and the next attempt, on sv2, takes another VMID. It took the same one,
    the late clone made a second VM of it on sv1, and the reconciler moved
    the record onto that copy, leaving the real VM unrecorded;
  - a creation whose clone request on sv1 is answered by nothing (served
    once the creation is done), and whose task is not found, so that the clone is
    asked for again: the second clone fails, and the next attempt, on
    sv2, takes another VMID (the first request may still be served). It
    took the same one (nothing was left of the failed clone), the late
    clone made a VM of it on sv1 carrying the job's marker, and the
    reconciler kept that one for ever: another host's copy of a recorded
    VMID while the record lived, the job's own finished VM once it was
    gone (the fault test's seed 77 in a loaded CI run);
  - likewise an attempt resumed after a kill during its clone, which then
    fails: whether its clone was asked for twice before the kill is not
    known, so its VMID stays with the reconciler.
"""
import json

from lib.cases import case, finish
from lib.db import query
from lib.proxd import Proxd, run as proxd_cli, shutdown
from lib.sim import Sim
from lib.wait import wait_for

sim = Sim(time_scale=0.2, standalone=True)
px = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n",
           proxmox_extra="timeout = 3\n")
ALICE = px.token("alice")
ADMIN = px.token("ops", "admin")
px.start()


def create(name):
    r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 12}, want=202)
    return px.wait_job(r.json()["job"], ALICE, deadline=120)


def vms():
    """(vmid, node, name) of every VM on the hosts but templates"""
    return sorted((v["vmid"], v["node"], v["conf"].get("name")) for v in sim.state()["vms"]
                  if v["vmid"] < 8000)


def record(vmid):
    return query(px.db, "SELECT node, state FROM vms WHERE vmid = %d AND state = 'enabled'"
                 % vmid)


def tasks_done(what):
    """Wait until no task runs on pvesim (a clone served, late or not, has
    its task from then on; its VM appears, locked, only after the task's
    fork and lock: "no VM locked" holds before that too)."""
    wait_for(lambda: sim.running_tasks()["running"] == 0, deadline=60, what=what)


def reconcile():
    """One reconciler pass (proxd stopped: its own passes would race the
    checks), then proxd again."""
    px.stop()
    proxd_cli("reconcile", "--config", px.conf)
    px.start()


@case
def a_record_stays_with_its_own_vm():
    px.call("POST", "/v1/nodes/sv1/cordon", ADMIN, want=200)
    try:
        j = create("mine")
    finally:
        px.call("POST", "/v1/nodes/sv1/uncordon", ADMIN, want=200)
    assert j["state"] == "done", j
    vmid = j["vmid"]
    assert record(vmid) == [("sv2", "enabled")], record(vmid)
    # an operator's VM of the same VMID on sv1 (its own VMID space)
    tpl = [v["vmid"] for v in sim.state()["vms"] if v["node"] == "sv1" and v["vmid"] >= 8000][0]
    upid = sim.data("POST", "/nodes/sv1/qemu/%d/clone" % tpl, port=sim.ports["sv1"],
                    data={"newid": str(vmid), "name": "operators"})
    tasks_done("the operator's clone done (%s)" % upid)
    sim.data("POST", "/nodes/sv1/qemu/%d/status/start" % vmid, port=sim.ports["sv1"])
    wait_for(lambda: [v["power"] for v in sim.state()["vms"]
                      if v["vmid"] == vmid and v["node"] == "sv1"] == ["running"],
             deadline=60, what="the operator's VM running")
    reconcile()
    assert record(vmid) == [("sv2", "enabled")], record(vmid)
    assert vms() == [(vmid, "sv1", "operators"), (vmid, "sv2", "mine")], vms()
    # and a job on the record acts on its own VM
    r = px.call("POST", "/v1/vms/%d/stop" % vmid, ALICE, want=202)
    assert px.wait_job(r.json()["job"], ALICE)["state"] == "done"
    power = {v["node"]: v["power"] for v in sim.state()["vms"] if v["vmid"] == vmid}
    assert power == {"sv1": "running", "sv2": "stopped"}, power


@case
def a_late_clone_does_not_share_the_next_attempts_vmid():
    before = set(v[0] for v in vms())
    # sv1's clone: no answer (the connection closes), served 3 s later; the
    # requests after it on sv1 refused
    sim.add_faults([{"kind": "late", "method": "POST", "path": r"/clone$", "node": "sv1",
                     "delay_ms": 3000, "count": 1},
                    {"kind": "error", "status": 500, "message": "injected: refused",
                     "method": "POST", "path": r"/clone$", "node": "sv1", "count": 3}])
    j = create("late")
    sim.clear_faults()
    sim.wait_late()
    tasks_done("the late clone done")
    assert j["state"] == "done", j
    vmid = j["vmid"]
    assert record(vmid) == [("sv2", "enabled")], (record(vmid), j)
    # no VMID twice on the hosts, though each has its own VMID space
    ids = [v[0] for v in vms()]
    dup = sorted(set(i for i in ids if ids.count(i) > 1) - before)
    assert dup == [], vms()
    reconcile()
    assert record(vmid) == [("sv2", "enabled")], record(vmid)
    assert [v for v in vms() if v[2] == "late"] == [(vmid, "sv2", "late")], vms()



@case
def a_clone_asked_twice_does_not_share_the_next_attempts_vmid():
    before = set(v[0] for v in vms())
    # sv1's clone: no answer, served when the test says so (once the
    # creation is done); the task list has nothing of it then, so the clone
    # is asked for again, and that one fails
    sim.add_faults([{"kind": "late", "method": "POST", "path": r"/clone$", "node": "sv1",
                     "delay_ms": 600000, "count": 1},
                    {"kind": "task_error", "message": "injected: clone failed",
                     "method": "POST", "path": r"/clone$", "node": "sv1", "count": 1}])
    j = create("twice")
    sim.clear_faults()
    assert j["state"] == "done", j
    vmid = j["vmid"]
    assert record(vmid) == [("sv2", "enabled")], (record(vmid), j)
    assert sim.release_late() == 1
    sim.wait_late()
    tasks_done("the late clone done")
    # the late request was served, and made a VM (the test's premise)
    late = [v for v in vms() if v[1] == "sv1" and v[0] not in before]
    assert len(late) == 1 and late[0][2] == "twice", (late, vms())
    assert late[0][0] != vmid, (late, j)
    reconcile()
    assert record(vmid) == [("sv2", "enabled")], record(vmid)
    # the late VM was removed as a partial VM, and no VMID is twice
    assert [v for v in vms() if v[2] == "twice"] == [(vmid, "sv2", "twice")], vms()
    ids = [v[0] for v in vms()]
    assert sorted(set(i for i in ids if ids.count(i) > 1) - before) == [], vms()



@case
def a_reinstalls_clone_asked_twice_keeps_its_vmid_for_the_reconciler():
    """A reinstall's temporary clone asked for twice (the first request
    unanswered, its task not found): when the reinstall ends, the temporary
    VMID stays with a leftover until the reconciler's pass, which removes
    the late temporary VM. It was released at once: the next creation, on
    another host, took it, and the late first request then made a second
    VM of it."""
    before = set(v[0] for v in vms())
    vmid = create("rebuilt")["vmid"]
    (node, _), = record(vmid)
    sim.add_faults([{"kind": "late", "method": "POST", "path": r"/clone$", "node": node,
                     "delay_ms": 600000, "count": 1}])
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": "debian"}, want=202)
    j = px.wait_job(r.json()["job"], ALICE, deadline=120)
    sim.clear_faults()
    assert j["state"] == "done", j
    (attempts,), = query(px.db, "SELECT attempts FROM jobs WHERE id = '%s'" % j["id"])
    tmp = json.loads(attempts)[0]["tmp_vmid"]
    assert query(px.db, "SELECT vmid, node FROM leftovers WHERE vmid = %d" % tmp) == \
        [(tmp, node)], query(px.db, "SELECT * FROM leftovers")
    # the next creation (of the temporary VMID's OS, on another host) takes another VMID
    px.call("POST", "/v1/nodes/%s/cordon" % node, ADMIN, want=200)
    try:
        r = px.call("POST", "/v1/vms", ALICE, {"os": "debian" if tmp >= 4000 else "ubuntu",
                                               "name": "next", "cores": 1, "memory_mb": 512,
                                               "disk_gb": 12}, want=202)
        nj = px.wait_job(r.json()["job"], ALICE, deadline=120)
    finally:
        px.call("POST", "/v1/nodes/%s/uncordon" % node, ADMIN, want=200)
    assert nj["state"] == "done" and nj["vmid"] != tmp, (tmp, nj)
    # the late request served: the temporary VM again (the test's premise)
    assert sim.release_late() == 1
    sim.wait_late()
    tasks_done("the late clone done")
    assert (tmp, node) in [(v[0], v[1]) for v in vms()], (tmp, vms())
    reconcile()
    assert (tmp, node) not in [(v[0], v[1]) for v in vms()], (tmp, vms())
    assert query(px.db, "SELECT vmid FROM leftovers WHERE vmid = %d" % tmp) == []
    ids = [v[0] for v in vms()]
    assert sorted(set(i for i in ids if ids.count(i) > 1) - before) == [], vms()


def resumed_attempt_fails(name, at_clone=False):
    """proxd killed while sv1's clone runs, the resumed run's configure
    write on sv1 refused: the job (done on sv2), the VMID it had first.
    at_clone: the clone's answer held back (served at once, never
    answered), so that the kill lands before the wait_clone checkpoint and
    the resumed run finds the clone and adopts it."""
    started = sim.running_tasks()["started"]
    if at_clone:
        sim.add_faults([{"kind": "late_hang", "method": "POST", "path": r"/clone$",
                         "node": "sv1", "delay_ms": 0, "count": 1}])
    r = px.call("POST", "/v1/vms", ALICE, {"os": "debian", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 12}, want=202)
    job, first = r.json()["job"], r.json()["vmid"]
    # the clone (debian: some 4 s here) running on sv1, then the kill
    wait_for(lambda: sim.running_tasks(wait_ms=200)["started"] > started, 30, 0,
             "the clone to start")
    if at_clone:
        step = query(px.db, "SELECT step FROM jobs WHERE id = '%s'" % job)
        assert step == [("clone",)], step
    px.kill()
    sim.clear_faults()
    # the resumed run's configure write refused on sv1: the attempt fails
    sim.add_faults([{"kind": "error", "status": 500, "message": "injected: refused",
                     "method": "PUT", "path": r"/config$", "node": "sv1", "count": 8}])
    px.start()
    j = px.wait_job(job, ALICE, deadline=120)
    sim.clear_faults()
    assert j["state"] == "done", j
    return j, first


@case
def an_attempt_resumed_after_a_kill_leaves_its_vmid_when_it_fails():
    """The resumed run cannot know whether the clone was asked for twice
    before the kill (the first request may still come), so when the attempt
    then fails it leaves the VMID for the reconciler and the next attempt
    takes another."""
    before = set(v[0] for v in vms())
    j, first = resumed_attempt_fails("resumed")
    assert j["vmid"] != first and record(j["vmid"]) == [("sv2", "enabled")], (first, j)
    reconcile()
    assert [v for v in vms() if v[2] == "resumed"] == [(j["vmid"], "sv2", "resumed")], vms()
    ids = [v[0] for v in vms()]
    assert sorted(set(i for i in ids if ids.count(i) > 1) - before) == [], vms()


@case
def an_attempt_resumed_at_its_clone_step_leaves_its_vmid_too():
    """Killed before the wait_clone checkpoint (the clone's answer not
    come yet), the resumed run finds the clone and adopts it: whether it
    was asked for twice is not known either. It kept its VMID (a CI run
    whose kill landed there)."""
    before = set(v[0] for v in vms())
    j, first = resumed_attempt_fails("resumed2", at_clone=True)
    assert j["vmid"] != first and record(j["vmid"]) == [("sv2", "enabled")], (first, j)
    ids = [v[0] for v in vms()]
    assert sorted(set(i for i in ids if ids.count(i) > 1) - before) == [], vms()


@case
def a_cluster_node_failing_over_to_a_host_leaves_its_vmid_too():
    """Likewise in a mixed fleet: sv1 a cluster's node (a cluster of one
    here), the other nodes standalone hosts. The cluster's VMID space is
    not sv2's, so a late first request on sv1 would make a second VM of
    the VMID the next attempt takes on sv2. It kept its VMID (the rule
    was for standalone hosts only)."""
    global px, ALICE
    px.stop()
    px = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n",
               proxmox_extra="timeout = 3\n")
    with open(px.conf) as f:
        conf = f.read()
    sv1 = "host = 127.0.0.1:%d\n" % sim.ports["sv1"]
    assert conf.count(sv1) == 1, conf
    with open(px.conf, "w") as f:
        f.write(conf.replace(sv1, sv1 + "cluster = c1\n"))
    ALICE = px.token("alice")  # this proxd's database
    px.start()
    before = set(v[0] for v in vms())
    j, first = resumed_attempt_fails("mixed")
    assert j["vmid"] != first and record(j["vmid"]) == [("sv2", "enabled")], (first, j)
    ids = [v[0] for v in vms()]
    assert sorted(set(i for i in ids if ids.count(i) > 1) - before) == [], vms()


shutdown(px, sim)
finish()
