"""Calls that Proxmox serves after proxd gave up on their answer: never
answered (pvesim's late_hang: proxd's call times out at 3 s) or closed at
once (late), and served after proxd looked for the task they would start
(a request queued in a busy pvedaemon). Cases, on one pvesim and one proxd:
  - a creation's clone served after its timeout: one VM (the request asked
    again made it; the late copy finds its VMID taken);
  - a delete's destroy served after its timeout, and served at several
    moments around proxd's look and pause: the VM is looked at after a
    pause and the destroy made again, found done, or waited for while the
    late one holds its lock; the delete ends done (it failed "destroy
    failed: Operation timed out" while the late destroy removed the VM);
  - a VM destroyed by another client between a delete's look and its
    config read: the delete ends done (it failed "cannot read the config");
  - a drain's migration likewise (it failed "VM N stays: migration to ...
    refused", the drain counting it as stayed, while the late migration
    moved it);
  - a creation killed during its configure write and resumed: the write it
    makes again carries the digest of the config it reads first, so that a
    late copy of it, served after the new VM's first update, is refused
    (sent without one, it undid the update).
"""
import traceback
from concurrent.futures import ThreadPoolExecutor

from lib.cases import case, finish
from lib.db import expire_leases, query
from lib.proxd import Proxd, run as proxd_cli, shutdown
from lib.sim import Sim
from lib.vmjobs import VmJobs
from lib.wait import wait_for

# At time scale 0.2 (the tasks' lengths set against proxd's pauses and the
# faults' delays, which are real time). The VMs' template disks are 1 GiB,
# not 10: a creation's full clone copies for 0.5 s, not 4 (thirteen of
# them); the VMs are grown to 12 GiB all the same, so the migrations and
# every other task take as long as before. No case depends on how long a
# creation's copy takes.
FLEET = {"nodes": [{"name": "sv%d" % i} for i in range(1, 6)],
         "templates": [{"os": "ubuntu", "disk_gb": 1}, {"os": "debian", "disk_gb": 10},
                       {"os": "centos", "disk_gb": 16},
                       {"os": "windows", "disk_gb": 40, "memory_mb": 4096}]}
sim = Sim(time_scale=0.2, fleet=FLEET)
px = Proxd(sim, proxd_extra="placement = ordered\n", proxmox_extra="timeout = 3\n")
ALICE = px.token("alice")
ADMIN = px.token("ops", "admin")
px.start()

CLONE = r"^/nodes/[^/]+/qemu/\d+/clone$"


def clone_calls():
    return sim.ctl("GET", "/calls")["calls"].get("POST /nodes/{node}/qemu/{vmid}/clone", 0)


jobs = VmJobs(px, sim, ALICE)
events, wait_node_up, post_vm = jobs.events, jobs.wait_node_up, jobs.post_vm
created, named, done_through_the_fault = jobs.created, jobs.named, jobs.done_through_the_fault


def alone_on_sv5(name):
    """A VM created on sv5 (the other nodes cordoned meanwhile) with no
    other VM there: a drain of sv5 moves it alone. (vmid, "sv5")"""
    node = "sv5"
    others = ["sv1", "sv2", "sv3", "sv4"]
    for n in others:
        assert px.call("POST", "/v1/nodes/%s/cordon" % n, ADMIN).status_code == 200
    try:
        vmid = created(name)["vmid"]
    finally:
        for n in others:
            px.call("POST", "/v1/nodes/%s/uncordon" % n, ADMIN)
    assert sim.vm(vmid)["node"] == node
    wait_node_up(vmid)
    alone = [v["vmid"] for v in sim.state()["vms"] if v["node"] == node and v["vmid"] < 8000]
    assert alone == [vmid], alone
    return vmid, node


def drained(vmid, node):
    """Drain `node` (one fault rule in place): the drain and the VM's move
    end done, the VM on another node in pvesim and in its record."""
    r = px.call("POST", "/v1/nodes/%s/drain" % node, ADMIN)
    assert r.status_code == 202, r.text
    d = px.wait_job(r.json()["job"], ADMIN, deadline=300)
    assert sim.clear_faults() == 1, d
    sim.wait_late()
    px.call("POST", "/v1/nodes/%s/uncordon" % node, ADMIN)
    moves = query(px.db, "SELECT id, state, error FROM jobs WHERE kind = 'migrate' AND vmid = %d"
                  % vmid)
    assert len(moves) == 1 and moves[0][1] == "done", (moves, events(moves[0][0]) if moves else d)
    assert d["state"] == "done", d
    where = sim.vm(vmid)["node"]
    rec = query(px.db, "SELECT node FROM vms WHERE vmid = %d AND state = 'enabled'" % vmid)
    assert where != node and rec == [(where,)], (node, where, rec, events(moves[0][0]))


@case
def a_clone_served_after_its_timeout_makes_one_vm():
    """The clone's connection never answers (proxd's call times out at 3 s)
    and Proxmox serves it 4.5 s after it came, after proxd has looked for
    its task and found none, and has asked again: one VM for the creation,
    and none left over once the late clone has been served (it finds the
    VMID taken by the second request's clone)."""
    before = clone_calls()
    sim.add_faults([{"kind": "late_hang", "method": "POST", "path": CLONE, "delay_ms": 4500,
                     "count": 1}])
    job = post_vm("late-clone")
    j = px.wait_job(job, ALICE, deadline=120)
    ev = events(job)
    assert sim.clear_faults() == 1, ev
    sim.wait_late()
    # served is not yet done: the late clone's VM (a stray, if its VMID was
    # free) appears only after its task's fork and lock, after the checks
    # below when they follow the serve at once; once no task runs, its task
    # has failed or made it
    wait_for(lambda: sim.running_tasks()["running"] == 0, deadline=60, interval=0.05,
             what="the late clone's task to end")
    assert j["state"] == "done", (j, ev)
    print("[ figures ] late clone: %d clone requests" % (clone_calls() - before))
    assert named("late-clone") == [j["vmid"]], (named("late-clone"), ev)
    stray = [v["vmid"] for v in sim.state()["vms"]
             if job in (v["conf"].get("description") or "") and v["vmid"] != j["vmid"]]
    assert stray == [], (stray, ev)


# a late call's delay when the test serves it itself (Sim.release_late)
# once what had to come first is done: no fixed wait long enough for a
# loaded machine
UNTIL_RELEASED = 600000


def late_hang_once(method, path):
    """The next such call is never answered (proxd's call times out at 3 s)
    and is served 4.5 s after it came: after proxd looked for its task."""
    sim.add_faults([{"kind": "late_hang", "method": method, "path": path, "delay_ms": 4500,
                     "count": 1}])


def late_once(method, path, delay_ms):
    """The next such call: its connection closed at once, the call served
    delay_ms later (before, during or after proxd's look and pause)."""
    sim.add_faults([{"kind": "late", "method": method, "path": path, "delay_ms": delay_ms,
                     "count": 1}])


@case
def a_destroy_served_after_its_timeout_ends_done():
    """A delete's destroy times out and is served after proxd looked for
    its task: the VM is looked at after a pause and the destroy made again
    or found done; the delete ends done (it failed "destroy failed:
    Operation timed out" while the late destroy removed the VM)."""
    vmid = created("late-destroy")["vmid"]
    wait_node_up(vmid)
    late_hang_once("DELETE", r"^/nodes/[^/]+/qemu/%d$" % vmid)
    ev = done_through_the_fault(px.call("DELETE", "/v1/vms/%d" % vmid, ALICE))
    sim.wait_late()
    assert sim.vm(vmid) is None, ev
    state = query(px.db, "SELECT state FROM vms WHERE vmid = %d ORDER BY id DESC LIMIT 1" % vmid)
    assert state == [("deleted",)], (state, ev)


@case
def a_vm_gone_between_the_deletes_look_and_its_config_read_is_deleted():
    """The delete finds the VM, then its config read hangs (timed out at
    3 s, read again) while the VM is stopped and destroyed by another
    client (as a destroy sent before a crash and served late does): the
    read again says "does not exist", the delete looks once more, finds the
    VM on no node, and ends done, the record deleted (it failed "cannot read
    the config: ... does not exist", the record enabled again: random fault
    test seed 23003)."""
    vmid = created("gone-mid-delete")["vmid"]
    wait_node_up(vmid)
    node = sim.vm(vmid)["node"]
    path = r"^/nodes/[^/]+/qemu/%d/config$" % vmid
    sim.add_faults([{"kind": "hang", "method": "GET", "path": path, "count": 1}])
    r = px.call("DELETE", "/v1/vms/%d" % vmid, ALICE)
    assert r.status_code == 202, r.text
    wait_for(lambda: [f["hits"] for f in sim.ctl("GET", "/faults")] == [1], 60, 0.02,
             "the delete's config read")
    for method, p in (("POST", "/nodes/%s/qemu/%d/status/stop" % (node, vmid)),
                      ("DELETE", "/nodes/%s/qemu/%d" % (node, vmid))):
        sim.wait_task(node, sim.data(method, p))
    assert sim.vm(vmid) is None
    ev = done_through_the_fault(r)
    state = query(px.db, "SELECT state FROM vms WHERE vmid = %d ORDER BY id DESC LIMIT 1" % vmid)
    assert state == [("deleted",)], (state, ev)


@case
def a_migration_served_after_its_timeout_is_seen():
    """A drain's migration times out and is served after proxd looked for
    its task: the VM is looked at after a pause and the migration asked for
    again or found under way; the move ends done with the VM on another node
    (it failed "VM N stays: migration to ... refused: Operation timed out",
    the drain counted it as stayed, while the late migration moved it)."""
    vmid, node = alone_on_sv5("late-move")
    late_hang_once("POST", r"^/nodes/[^/]+/qemu/%d/migrate$" % vmid)
    drained(vmid, node)


@case
def a_destroy_served_around_the_look_ends_done():
    """The destroy's connection closed at once, the destroy served 0.1 to
    1.5 s later: before proxd looks for its task, during the pause after,
    or after the destroy asked again; each delete ends done, the VM gone.
    (The four VMs are created at once first; the deletes one at a time.)"""
    delays = (100, 300, 700, 1500)
    jobs = [post_vm("late-destroy-%d" % delay) for delay in delays]
    made = [px.wait_job(job, ALICE, deadline=120) for job in jobs]
    assert [j["state"] for j in made] == ["done"] * len(delays), made
    for delay, j in zip(delays, made):
        vmid = j["vmid"]
        wait_node_up(vmid)
        late_once("DELETE", r"^/nodes/[^/]+/qemu/%d$" % vmid, delay)
        ev = done_through_the_fault(px.call("DELETE", "/v1/vms/%d" % vmid, ALICE))
        sim.wait_late()
        assert sim.vm(vmid) is None, (delay, ev)


@case
def a_destroy_served_after_the_next_one_failed_ends_done():
    """The destroy's connection closed at once, the destroy served once the
    destroy asked again meanwhile came (and failed: its task). The delete
    looks again before it fails, finds the VM gone, and ends done (it failed,
    the record enabled, and the late destroy removed the VM: "lost")."""
    vmid = created("late-destroy-500")["vmid"]
    wait_node_up(vmid)
    path = r"^/nodes/[^/]+/qemu/%d$" % vmid
    late_once("DELETE", path, UNTIL_RELEASED)
    sim.add_faults([{"kind": "task_error", "method": "DELETE", "path": path, "count": 1,
                     "message": "injected at the second destroy"}])
    r = px.call("DELETE", "/v1/vms/%d" % vmid, ALICE)
    assert r.status_code == 202, r.text
    # served after the second destroy came, whatever the machine's speed
    # (the delete looks again for 1.5 s after that one's task failed)
    wait_for(lambda: [f["hits"] for f in sim.ctl("GET", "/faults")] == [1, 1], 60, 0.02,
             "the second destroy")
    sim.release_late()
    j = px.wait_job(r.json()["job"], ALICE, deadline=120)
    hits = [f["hits"] for f in sim.ctl("GET", "/faults")]
    sim.clear_faults()
    sim.wait_late()
    assert hits == [1, 1], (hits, events(r.json()["job"]))
    assert j["state"] == "done", (j, events(r.json()["job"]))
    assert sim.vm(vmid) is None


@case
def a_migration_served_around_the_look_ends_done():
    """The same for a drain's migration, served 0.3 or 1.5 s after its
    connection closed: the move ends done, the VM on another node."""
    for delay in (300, 1500):
        vmid, node = alone_on_sv5("late-move-%d" % delay)
        late_once("POST", r"^/nodes/[^/]+/qemu/%d/migrate$" % vmid, delay)
        drained(vmid, node)


@case
def a_resumed_configure_writes_with_the_digest():
    """A creation killed during its configure write (the write hung, never
    served) and resumed: the write it makes again carries the digest of the
    config it reads first, so a late copy of it, served after the new VM's
    first update, is refused (sent without one, it undid the update)."""
    config = r"^/nodes/[^/]+/qemu/\d+/config$"
    sim.add_faults([{"kind": "hang", "method": "PUT", "count": 1, "path": config}])
    job = post_vm("resume-cfg")
    wait_for(lambda: sim.ctl("GET", "/faults")[0]["hits"] == 1, deadline=60, interval=0.05,
             what="the configure write hung")
    px.kill()
    sim.clear_faults()
    expire_leases(px.db)
    # served once the rest of the creation and the update are done (the
    # test releases it then)
    sim.add_faults([{"kind": "late", "method": "PUT", "delay_ms": UNTIL_RELEASED, "count": 1,
                     "path": config}])
    px.start()
    j = px.wait_job(job, ALICE, deadline=120)
    assert j["state"] == "done", (j, events(job))
    assert sim.clear_faults() == 1, events(job)
    vmid = j["vmid"]
    wait_node_up(vmid)
    u = px.wait_job(px.call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"cores": 3}).json()["job"],
                    ALICE, deadline=60)
    assert u["state"] == "done", (u, events(u["id"]))
    assert sim.ctl("GET", "/calls").get("late_pending", 0) == 1, "the late write came first"
    assert sim.release_late() == 1
    sim.wait_late()
    v = sim.vm(vmid)
    have = v["pending"].get("cores", v["conf"].get("cores"))
    assert str(have) == "3", (v, events(job))


@case
def a_pause_served_after_a_reboot_is_seen():
    """A pause's call closed at once and served later: the job looks,
    finds the VM running and pauses it again; a resume and a reboot follow
    (each done, the VM running); then the first pause is served and the VM
    is paused. A reconcile pass records it paused (it read the VM's own
    status only after a pause or resume job: the record said "running",
    seed 11 of core/test_faults_random)."""
    vmid = created("late-pause")["vmid"]
    wait_node_up(vmid)
    late_once("POST", r"^/nodes/[^/]+/qemu/%d/status/suspend$" % vmid, UNTIL_RELEASED)
    ev = done_through_the_fault(px.call("POST", "/v1/vms/%d/pause" % vmid, ALICE))
    for action in ("resume", "reboot"):
        r = px.call("POST", "/v1/vms/%d/%s" % (vmid, action), ALICE)
        assert r.status_code == 202, r.text
        j = px.wait_job(r.json()["job"], ALICE, deadline=60)
        assert j["state"] == "done", (action, j)
    assert sim.ctl("GET", "/calls").get("late_pending", 0) == 1, ev  # not served yet
    assert sim.release_late() == 1
    sim.wait_late()  # served: its task may still run
    wait_for(lambda: sim.vm(vmid)["power"] == "paused", 30, 0.05, "the late pause's task")
    power = query(px.db, "SELECT power FROM vms WHERE vmid = %d AND state = 'enabled'" % vmid)
    assert power == [("running",)], power
    proxd_cli("reconcile", "--config", px.conf)
    power = query(px.db, "SELECT power FROM vms WHERE vmid = %d AND state = 'enabled'" % vmid)
    assert power == [("paused",)], (power, ev)



def tasks_of(vmid, kind):
    node = sim.vm(vmid)["node"]
    return [t for t in sim.data("GET", "/nodes/%s/tasks" % node,
                                params={"vmid": vmid, "typefilter": kind, "limit": 50})
            if t["type"] == kind]


def done_through_rule(r, rule):
    """done_through_the_fault for one rule among others (a series run
    beside another): the job ends done, the rule hit once (then removed);
    the job's events."""
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    j = px.wait_job(job, ALICE, deadline=120)
    ev = events(job)
    hits = [f["hits"] for f in sim.ctl("GET", "/faults") if f["id"] == rule]
    sim.ctl("DELETE", "/faults/%d" % rule)
    assert hits == [1], (hits, ev)
    assert j["state"] == "done", (j, ev)
    return ev


def power_series(vmid, action, kind, path):
    """The action asked with its call served 0.1, 0.3, 0.7 and 1.5 s late,
    in turn, on one VM (started again when stopped): one task each."""
    for delay in (100, 300, 700, 1500):
        wait_node_up(vmid)
        if sim.vm(vmid)["power"] != "running":
            r = px.call("POST", "/v1/vms/%d/start" % vmid, ALICE)
            assert px.wait_job(r.json()["job"], ALICE, deadline=60)["state"] == "done"
        before = len(tasks_of(vmid, kind))
        rule = sim.ctl("POST", "/faults", {
            "kind": "late", "method": "POST", "delay_ms": delay, "count": 1,
            "path": r"^/nodes/[^/]+/qemu/%d/status/%s$" % (vmid, path)})["id"]
        ev = done_through_rule(px.call("POST", "/v1/vms/%d/%s" % (vmid, action), ALICE), rule)
        sim.wait_late()  # the other series' late call too, if one waits: served in 1.5 s
        wait_for(lambda: all(t.get("status") for t in tasks_of(vmid, kind)), 30, 0.05,
                 "the %s tasks to end" % action)
        n = len(tasks_of(vmid, kind)) - before
        assert n == 1, "%s served %d ms late: %d tasks; %s" % (action, delay, n, ev)


@case
def a_shutdown_or_reboot_served_around_the_look_runs_once():
    """A shutdown's or a reboot's connection closed at once, the call served
    0.1 to 1.5 s later: before proxd looks for its task, during the pause
    after, or around the moment it would ask again. The late task is found
    and waited on: one task, the job done (asked again, a second shutdown
    waited on the first's lock and failed, a reboot ran twice). The
    shutdowns and the reboots run at once, each series on a VM of its own
    on a node of its own (a lost answer holds its node down until its
    probe), each with its own fault rule."""
    first = created("late-power")["vmid"]
    node = sim.vm(first)["node"]
    assert px.call("POST", "/v1/nodes/%s/cordon" % node, ADMIN).status_code == 200
    try:
        second = created("late-power-2")["vmid"]
    finally:
        px.call("POST", "/v1/nodes/%s/uncordon" % node, ADMIN)
    assert sim.vm(second)["node"] != node
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(power_series, first, "shutdown", "qmshutdown", "shutdown"),
                pool.submit(power_series, second, "reboot", "qmreboot", "reboot")]
    failed = [f.exception() for f in runs if f.exception()]
    for e in failed:
        traceback.print_exception(type(e), e, e.__traceback__)
    assert not failed, failed


@case
def a_rollback_served_around_the_look_runs_once():
    """A snapshot rollback's connection closed at once, the call served 0.1
    to 1.5 s later: the late task is found, by pve_snap_rollback's look or
    by the job's looks after its pauses, and waited on: one qmrollback
    each, the job done. It was sent again: a late first one, served after
    the job ended, rolled the VM back once more over what was done since."""
    vmid = created("late-rollback")["vmid"]
    r = px.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": "s1"})
    assert r.status_code == 202, r.text
    assert px.wait_job(r.json()["job"], ALICE, deadline=60)["state"] == "done"
    for delay in (100, 300, 700, 1500):
        wait_node_up(vmid)
        before = len(tasks_of(vmid, "qmrollback"))
        rule = sim.ctl("POST", "/faults", {
            "kind": "late", "method": "POST", "delay_ms": delay, "count": 1,
            "path": r"^/nodes/[^/]+/qemu/%d/snapshot/s1/rollback$" % vmid})["id"]
        ev = done_through_rule(
            px.call("POST", "/v1/vms/%d/snapshots/s1/rollback" % vmid, ALICE), rule)
        sim.wait_late()
        wait_for(lambda: all(t.get("status") for t in tasks_of(vmid, "qmrollback")), 30, 0.05,
                 "the rollback tasks to end")
        n = len(tasks_of(vmid, "qmrollback")) - before
        assert n == 1, "rollback served %d ms late: %d tasks; %s" % (delay, n, ev)


@case
def a_rollback_resumed_at_its_call_finds_its_task():
    """proxd killed while its rollback call waits for an answer that never
    comes (pvesim served it at once): the resumed job looks for the
    qmrollback task before it sends the call again, finds it and waits on
    it: one rollback, the job done. It sent it again: a second rollback,
    or a failure on the first's lock."""
    vmid = created("late-rollback-2")["vmid"]
    r = px.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": "s1"})
    assert r.status_code == 202, r.text
    assert px.wait_job(r.json()["job"], ALICE, deadline=60)["state"] == "done"
    wait_node_up(vmid)
    before = len(tasks_of(vmid, "qmrollback"))
    sim.add_faults([{"kind": "late_hang", "method": "POST", "delay_ms": 0, "count": 1,
                     "path": r"^/nodes/[^/]+/qemu/%d/snapshot/s1/rollback$" % vmid}])
    r = px.call("POST", "/v1/vms/%d/snapshots/s1/rollback" % vmid, ALICE)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    wait_for(lambda: len(tasks_of(vmid, "qmrollback")) > before, 30, 0.05, "the rollback served")
    step = query(px.db, "SELECT step FROM jobs WHERE id = ?", (job,))
    assert step == [("call",)], step  # its answer not come (proxd waits 3 s)
    px.kill()
    sim.clear_faults()
    px.start()
    j = px.wait_job(job, ALICE, deadline=60)
    assert j["state"] == "done", (j, events(job))
    wait_for(lambda: all(t.get("status") for t in tasks_of(vmid, "qmrollback")), 30, 0.05,
             "the rollback tasks to end")
    n = len(tasks_of(vmid, "qmrollback")) - before
    assert n == 1, "%d rollbacks; %s" % (n, events(job))


shutdown(px, sim)
finish()
