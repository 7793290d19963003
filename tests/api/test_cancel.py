"""Job cancel (POST /v1/jobs/{id}/cancel), black-box against pvesim:
  - who may: the job's owner or an administrator (another user: 404, as
    for GET), an unknown job 404, a finished one 409 naming its state, a
    second cancel the same answer again;
  - a queued creation (held behind three creations whose clone calls
    pvesim delays, [limits] jobs_max = 3) ends at once, 200, failed
    "cancelled by ... before it started", with its VMID, address and record
    given back, pvesim never asked anything for it; events job.cancelled
    (ended) and job.failed; a queued delete (behind a stop pvesim delays)
    ends with its VM enabled again;
  - a running creation cancelled while its clone call, its clone task (the
    clone is stopped; test_cancel_clone.py times it on a long clone), its
    configure, its resize or its start is under way (pvesim delays that
    call, or the clone runs): 202, then failed, and nothing left: no VM on
    any node, no VMID reserved, no capacity reservation unsettled, no
    clone slot held, no address used or reserved, the record failed;
  - a reinstall cancelled during its clone (abort: the temporary VM goes)
    and after its disk swap (restore: the old disk back): the VM as before;
  - a drain cancelled while its first move runs and its second is queued
    (a creation held in its clone call takes the third worker): the
    running move finishes, the queued one is cancelled with the drain, no
    other starts, the rest listed as stayed, the node still cordoned; the
    same drain ended by the node's uncordon instead (the uncordon's answer
    names the drain it cancelled; the drain fails saying the node was
    uncordoned, by whom; the node is uncordoned);
  - a control action whose call was sent finishes; one whose cancel lands
    before its call fails with nothing sent;
  - the cancel through another instance on the same database than the one
    running the job (its lease owner), and while the runner is dead (killed
    mid-clone: the job resumed stops there and removes its clone);
  - cancels racing the end of creations and of stops, at seeded random
    moments: each answer (200, 202 or 409) matches how the job ended, and a
    done job's VM exists while a cancelled one's does not;
  - seeded random cancels of creations, control jobs and reinstalls while
    pvesim fails calls at random: every job ends, and against pvesim and
    the database no VM leaked (a reinstall's temporary VM included), no
    VMID or address left reserved, no reservation or clone slot left, no
    record stuck creating or deleting (after a reconcile for the leftovers
    a node's failures left), and each reinstalled VM has one OS: its boot
    disk, of the OS its record names (the new one when the reinstall was
    done, else the old one), no second disk beside it.

PROXD_TEST_DB=postgresql://... runs it on PostgreSQL (test_cancel_pg.py;
the reinstall and drain cases there in `make test-full` only).
CANCEL_SEED picks the seed (pvesim's and the cancels' moments).
"""
import os
import random
import threading
import time

from lib.cases import case, finish
from lib.db import expire_leases, query
from lib.faults import fault_rules
from lib.pg import full_run
from lib.proxd import Proxd, TEMPLATE_BASE, run as proxd_cli, shutdown
from lib.sim import Sim
from lib.wait import wait_for

DB = os.environ.get("PROXD_TEST_DB")
SEED = int(os.environ.get("CANCEL_SEED", "2718"))
POOL = "\n[ippool cnl]\ncidr = 10.60.0.0/24\ngateway = 10.60.0.1\nbridge = vmbr0\nquarantine = 0\n"
BODY = {"os": "ubuntu", "cores": 1, "memory_mb": 512, "disk_gb": 20, "ippools": ["cnl"]}

sim = Sim(time_scale=0.05, extra=["--seed", str(SEED)])
EXTRA = "reconcile_interval = 3600\n\n[limits]\njobs_max = 3\ndrain_parallel = 2\n"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "me@host")
px = Proxd(sim, database=DB, proxd_extra=EXTRA, sections=POOL,
           proxmox_extra="connect_timeout = 1\ntimeout = 5\n")
CARL = px.token("carl")
MIA = px.token("mia")
ADMIN = px.token("ops", "admin")
px.start()
px2 = None
counter = [0]


def both(fn):
    """A case whose store calls are those of the others (reinstall, drain):
    on PostgreSQL in `make test-full` only (the suite's time)."""
    return case(fn) if not DB or full_run() else fn


def q(sql):
    return query(px.db, sql)


def create(token=CARL, **kw):
    counter[0] += 1
    body = dict(BODY, name="c%d" % counter[0], **kw)
    end = time.monotonic() + 30
    while True:  # 503: a node marked down a moment by a failed call
        r = px.call("POST", "/v1/vms", token, body=body)
        if r.status_code != 503 or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert r.status_code == 202, r.text
    return r.json()


def cancel(job, token=CARL, via=None):
    return (via or px).call("POST", "/v1/jobs/%s/cancel" % job, token)


def step_of(job):
    return q("SELECT step, state FROM jobs WHERE id = '%s'" % job)[0]


def wait_step(job, steps, deadline=30):
    def at():
        s, st = step_of(job)
        assert st not in ("done", "failed"), "job %s ended (%s) before step %s" % (job, st, steps)
        return s in steps
    wait_for(at, deadline, 0.002, "job %s at %s" % (job, steps))


def hold(path, method=None, delay_ms=2500, count=1):
    """pvesim delays the next `count` calls on `path` (a regex)."""
    r = {"kind": "delay", "path": path, "delay_ms": delay_ms, "count": count}
    if method:
        r["method"] = method
    sim.add_faults([r])


def nothing_left(job):
    """The job ended cancelled and left nothing: on the nodes, in the store."""
    j = px.wait_job(job, CARL, deadline=60)
    assert j["state"] == "failed", j
    assert j["cancel"] and j["error"].startswith("cancelled by "), j
    vmid = j["vmid"]
    assert sim.vm(vmid) is None, "VM %d of cancelled job %s exists: %s" % (vmid, job, sim.vm(vmid))
    assert not q("SELECT state FROM vmid_alloc WHERE vmid = %d AND state <> 'quarantine'" % vmid), \
        q("SELECT * FROM vmid_alloc WHERE vmid = %d" % vmid)
    assert not q("SELECT job FROM capacity WHERE job = '%s' AND settled_at IS NULL" % job)
    assert not q("SELECT job FROM clone_slots WHERE job = '%s'" % job)
    assert not q("SELECT vmid FROM leftovers WHERE job = '%s'" % job)
    recs = q("SELECT id, state FROM vms WHERE job = '%s'" % job)
    assert recs and all(s == "failed" for _, s in recs), recs
    for rid, _ in recs:
        assert not q("SELECT addr FROM addr_alloc WHERE vm_id = %d AND state IN ('used', 'reserved')"
                     % rid), "record %d keeps its address" % rid
    assert not q("SELECT addr FROM addr_alloc WHERE job = '%s' AND state = 'reserved'" % job)
    return j


def events_of(job):
    r = px.call("GET", "/v1/events?after=0&limit=1000", ADMIN, want=200).json()["events"]
    return [e for e in r if e["job"] == job]


@case
def who_may_cancel():
    c = create()
    assert cancel(c["job"], MIA).status_code == 404  # another user: not their job
    assert cancel("00000000-0000-4000-8000-000000000000").status_code == 404
    assert cancel("not-a-job!").status_code == 404
    j = px.wait_job(c["job"], CARL)
    assert j["state"] == "done", j
    r = cancel(c["job"], ADMIN)
    assert r.status_code == 409 and "has finished (done)" in r.json()["error"]["message"], r.text
    assert px.call("GET", "/v1/jobs/" + c["job"], CARL).json()["cancel"] is None


@case
def queued_creation_ends_at_once():
    hold(r"/qemu/\d+/clone$", "POST", delay_ms=4000, count=3)
    busy = [create() for _ in range(3)]
    for b in busy:
        wait_step(b["job"], ("clone", "wait_clone"))
    c = create()
    assert step_of(c["job"]) == ("queued", "queued")
    rid = q("SELECT id FROM vms WHERE vmid = %d AND state = 'creating'" % c["vmid"])[0][0]
    assert q("SELECT state FROM addr_alloc WHERE vm_id = %d" % rid) == [("used",)]
    r = cancel(c["job"])
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["state"] == "failed" and j["error"] == "cancelled by carl before it started", j
    assert j["cancel"]["by"] == "carl" and j["finished_at"], j
    nothing_left(c["job"])
    # its address is free again (quarantine 0): not held by the failed record
    assert q("SELECT state FROM addr_alloc WHERE vm_id = %d" % rid) in ([], [("quarantine",)]), \
        q("SELECT * FROM addr_alloc WHERE vm_id = %d" % rid)
    again = cancel(c["job"], ADMIN)  # harmless: the same answer
    assert again.status_code == 200 and again.json()["state"] == "failed", again.text
    types = [e["type"] for e in events_of(c["job"])]
    assert "job.cancelled" in types and "job.failed" in types, types
    ev = [e for e in events_of(c["job"]) if e["type"] == "job.cancelled"]
    assert len(ev) == 1 and ev[0]["data"]["ended"] is True and ev[0]["data"]["by"] == "carl", ev
    lines = px.call("GET", "/v1/jobs/%s/events" % c["job"], CARL, want=200).text
    assert "cancelled by carl before it started" in lines
    for b in busy:  # the others were not touched
        assert px.wait_job(b["job"], CARL)["state"] == "done"
    # never placed, never sent to Proxmox: its only steps are queued and failed
    steps = {r[0] for r in q("SELECT step FROM job_events WHERE job = '%s'" % c["job"])}
    assert steps == {"queued", "failed"}, steps
    assert sim.vm(c["vmid"]) is None


@case
def queued_delete_gives_the_vm_back():
    c = create()
    vmid = px.wait_job(c["job"], CARL)["vmid"]
    hold(r"/qemu/%d/status/stop$" % vmid, "POST", delay_ms=3000)
    stop = px.call("POST", "/v1/vms/%d/stop" % vmid, CARL, want=202).json()["job"]
    wait_step(stop, ("call", "wait"))
    dele = px.call("DELETE", "/v1/vms/%d" % vmid, CARL, want=202).json()["job"]
    assert px.call("GET", "/v1/vms/%d" % vmid, CARL).json()["state"] == "deleting"
    r = cancel(dele, ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "failed", r.text
    assert r.json()["cancel"]["by"] == "ops", r.text
    assert px.call("GET", "/v1/vms/%d" % vmid, CARL).json()["state"] == "enabled"
    # the stop whose call was sent finishes; the VM stays
    assert px.wait_job(stop, CARL)["state"] == "done"
    assert sim.vm(vmid) is not None and sim.vm(vmid)["power"] == "stopped"


def cancel_running_creation(path, method, steps):
    if path:
        hold(path, method)
    c = create()
    wait_step(c["job"], steps)
    r = cancel(c["job"])
    assert r.status_code in (200, 202), r.text
    assert r.json()["cancel"]["by"] == "carl", r.text
    j = nothing_left(c["job"])
    ev = [e for e in events_of(c["job"]) if e["type"] == "job.cancelled"]
    assert len(ev) == 1 and ev[0]["data"]["ended"] is False, ev
    return j


@case
def running_creation_during_the_clone_call():
    cancel_running_creation(r"/qemu/\d+/clone$", "POST", ("clone",))


@case
def running_creation_during_the_clone_task():
    j = cancel_running_creation(None, None, ("wait_clone",))  # no fault: the clone runs
    # the clone's wait is told: its task is stopped, then what it made is
    # removed (a clone of ~1 s here may end before the cancel lands: then it
    # is seen at the checkpoint after it; test_cancel_clone.py times a long one)
    assert "at step wait_clone" in j["error"] or "at step configure" in j["error"], j


@case
def running_creation_during_configure():
    j = cancel_running_creation(r"/qemu/1\d\d\d/config$", "PUT", ("configure",))
    assert "at step resize" in j["error"], j  # seen at the checkpoint after configure


@case
def running_creation_during_resize():
    cancel_running_creation(r"/qemu/1\d\d\d/resize$", "PUT", ("resize",))


@case
def running_creation_during_start():
    cancel_running_creation(r"/qemu/1\d\d\d/status/start$", "POST", ("start",))


@case
def control_action_sent_finishes():
    c = create()
    vmid = px.wait_job(c["job"], CARL)["vmid"]
    hold(r"/qemu/%d/status/stop$" % vmid, "POST", delay_ms=2000)
    stop = px.call("POST", "/v1/vms/%d/stop" % vmid, CARL, want=202).json()["job"]
    wait_step(stop, ("call",))
    assert cancel(stop).status_code == 202
    # its checkpoint read no cancel and its call went to Proxmox: it finishes
    j = px.wait_job(stop, CARL)
    assert j["state"] == "done" and j["cancel"]["by"] == "carl", j
    assert sim.vm(vmid)["power"] == "stopped"
    # one whose cancel lands before its call: nothing is sent
    hold(r"/qemu/%d/status/current$" % vmid, "GET", delay_ms=2000)  # its look at the VM
    start = px.call("POST", "/v1/vms/%d/start" % vmid, CARL, want=202).json()["job"]
    wait_for(lambda: q("SELECT lease_owner FROM jobs WHERE id = '%s'" % start)[0][0], 10, 0.002,
             "the start claimed")
    assert cancel(start).status_code == 202
    j = px.wait_job(start, CARL)
    assert j["state"] == "failed", j
    assert j["error"] == "cancelled by carl at step call: nothing was sent to Proxmox", j
    assert sim.vm(vmid)["power"] == "stopped"


@case
def cancel_through_the_other_instance():
    global px2
    px2 = Proxd(sim, share=px, proxd_extra=EXTRA, sections=POOL,
                proxmox_extra="connect_timeout = 1\ntimeout = 5\n")
    px2.start()
    pids = {px.proc.pid: px, px2.proc.pid: px2}
    for _ in range(2):
        c = create()
        wait_step(c["job"], ("wait_clone",))
        owner = q("SELECT lease_owner FROM jobs WHERE id = '%s'" % c["job"])[0][0]
        runner = pids[int(owner.rsplit(":", 1)[1])]
        other = px2 if runner is px else px
        r = cancel(c["job"], via=other)
        assert r.status_code == 202, r.text
        nothing_left(c["job"])
    # the runner killed mid-clone, the job cancelled meanwhile: resumed (by
    # either instance), it stops there and removes its clone
    c = create()
    wait_step(c["job"], ("wait_clone",))
    owner = q("SELECT lease_owner FROM jobs WHERE id = '%s'" % c["job"])[0][0]
    runner = pids[int(owner.rsplit(":", 1)[1])]
    other = px2 if runner is px else px
    runner.kill()
    r = cancel(c["job"], via=other)
    assert r.status_code == 202 and r.json()["state"] == "running", r.text
    expire_leases(px.db)
    runner.start()
    nothing_left(c["job"])


@case
def cancels_race_the_end():
    rng = random.Random(SEED)
    outcomes = {}
    for i in range(8):
        c = create()
        time.sleep(rng.uniform(0, 2.5))  # the race's moment, not a wait for a condition
        r = cancel(c["job"])
        j = px.wait_job(c["job"], CARL, deadline=60)
        outcomes[(r.status_code, j["state"])] = outcomes.get((r.status_code, j["state"]), 0) + 1
        if r.status_code == 409:
            assert j["state"] == "done" and j["cancel"] is None, j
            assert "has finished (done)" in r.json()["error"]["message"], r.text
        else:
            assert r.status_code in (200, 202), r.text
            assert j["cancel"]["by"] == "carl", j
        if j["state"] == "failed":
            nothing_left(c["job"])
        else:
            assert j["state"] == "done", j
            assert sim.vm(j["vmid"]) is not None
            v = px.call("GET", "/v1/vms/%d" % j["vmid"], CARL, want=200).json()
            assert v["state"] == "enabled", v
    print("  race outcomes (status, state): %s" % sorted(outcomes.items()), flush=True)


def strays():
    """VMs on the nodes without a live record (templates aside)."""
    live = {r[0] for r in q("SELECT vmid FROM vms WHERE state IN ('creating', 'enabled', "
                            "'deleting')")}
    return [v["vmid"] for v in sim.state()["vms"]
            if not TEMPLATE_BASE <= v["vmid"] < TEMPLATE_BASE + 100 and v["vmid"] not in live]


def cancel_reinstall(path, method, steps):
    c = create()
    vmid = px.wait_job(c["job"], CARL)["vmid"]
    before = sim.vm_view(vmid)
    hold(path, method)
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, CARL, want=202,
                body={"os": "debian", "ssh_keys": [KEY], "password": "correct horse 1"}).json()
    wait_step(r["job"], steps)
    assert cancel(r["job"]).status_code == 202
    j = px.wait_job(r["job"], CARL, deadline=120)
    assert j["state"] == "failed" and "reinstall failed: cancelled by carl" in j["error"], j
    after = sim.vm_view(vmid)
    for k in ("os", "power", "disk", "node", "mac", "net0", "ipconfig0", "boot"):
        assert after[k] == before[k], (k, before, after)
    assert after["os"] == "ubuntu" and after["power"] == "running", after
    assert not strays(), strays()  # no temporary VM left
    assert not q("SELECT job FROM capacity WHERE job = '%s' AND settled_at IS NULL" % r["job"])
    assert not q("SELECT vmid FROM vmid_alloc WHERE job = '%s' AND state = 'reserved'" % r["job"])
    v = px.call("GET", "/v1/vms/%d" % vmid, CARL, want=200).json()
    assert v["os"] == "ubuntu" and v["state"] == "enabled", v


@both
def reinstall_cancelled_before_the_stop():
    cancel_reinstall(r"/qemu/\d+/clone$", "POST", ("clone",))  # abort: the clone goes


@both
def reinstall_cancelled_after_the_swap():
    cancel_reinstall(r"/qemu/\d+/move_disk$", "POST", ("swap",))  # restore: the old disk back


def cordon(node, on=True):
    px.call("POST", "/v1/nodes/%s/%s" % (node, "cordon" if on else "uncordon"), ADMIN, want=200)


def moves_of(drain):
    """The migrate jobs a drain queued: {id: (state, error)}."""
    return {i: (st, e) for i, st, e in q("SELECT id, state, error FROM jobs WHERE kind = "
                                         "'migrate' AND request LIKE '%%%s%%'" % drain)}


def drain_with_a_move_held():
    """A drain of sv1 whose first move runs (pvesim holds its migrate call)
    and whose second is queued: (drain, queued move, running move, the VMs
    on sv1 before, the creation that holds the third worker)."""
    if px2 and px2.alive():  # its workers would take the queued move
        px2.stop()
    on = len(q("SELECT vmid FROM vms WHERE node = 'sv1' AND state = 'enabled'"))
    if on < 3:  # three VMs on sv1 at least (an earlier drain's left some)
        for n in ("sv2", "sv3", "sv4", "sv5"):
            cordon(n)
        made = [create() for _ in range(4 - on)]
        vms = {px.wait_job(c["job"], CARL)["vmid"] for c in made}
        assert {sim.vm(v)["node"] for v in vms} == {"sv1"}
        for n in ("sv2", "sv3", "sv4", "sv5"):
            cordon(n, False)
    cordon("sv1")  # the creation below goes elsewhere
    there = q("SELECT vmid FROM vms WHERE node = 'sv1' AND state = 'enabled'")  # earlier cases' too
    # three workers (jobs_max): a creation held in its clone call takes one,
    # the drain one, its first move the last; its second move (drain_parallel
    # = 2) stays queued
    hold(r"/qemu/\d+/clone$", "POST", delay_ms=6000)
    blocker = create()
    wait_step(blocker["job"], ("clone",))
    hold(r"/qemu/\d+/migrate$", "POST", delay_ms=3000)  # the first move runs on
    d = px.call("POST", "/v1/nodes/sv1/drain", ADMIN, want=202).json()["job"]
    wait_for(lambda: sorted(st for st, _ in moves_of(d).values()) == ["queued", "running"], 20,
             0.005, "one move running, one queued")
    (queued,) = [i for i, (st, _) in moves_of(d).items() if st == "queued"]
    (running,) = [i for i, (st, _) in moves_of(d).items() if st == "running"]
    return d, queued, running, there, blocker


@both
def drain_cancelled_stops_moving():
    d, queued, running, there, blocker = drain_with_a_move_held()
    r = cancel(d, ADMIN)
    assert r.status_code == 202, r.text
    j = px.wait_job(d, ADMIN, deadline=60)
    assert j["state"] == "failed", j
    assert j["error"] == ("cancelled by ops at step moving: 1 VMs moved, %d stayed (1 queued "
                          "moves cancelled); the node stays cordoned" % (len(there) - 1)), j
    res = j["result"]
    assert len(res["moved"]) == 1 and len(res["stayed"]) == len(there) - 1, res
    assert res["moved"][0]["job"] == running, res
    assert all("cancelled by ops" in s["reason"] for s in res["stayed"]), res
    dropped = [s for s in res["stayed"] if s.get("job") == queued]
    assert len(dropped) == 1 and "its move was cancelled before it started" in \
        dropped[0]["reason"], res
    # the queued move was cancelled with the drain, the running one finished;
    # no other move was queued and none is left queued
    moves = moves_of(d)
    assert set(moves) == {queued, running}, moves
    assert moves[running][0] == "done", moves
    assert moves[queued][0] == "failed" and moves[queued][1].startswith(
        "cancelled by ops before it started (drain %s cancelled)" % d), moves
    mj = px.call("GET", "/v1/jobs/" + queued, ADMIN, want=200).json()
    assert mj["cancel"]["by"] == "ops", mj
    assert sim.vm(dropped[0]["vmid"])["node"] == "sv1"
    on = {v: sim.vm(v)["node"] for (v,) in there}
    assert list(on.values()).count("sv1") == len(there) - 1, on
    lines = px.call("GET", "/v1/jobs/%s/events" % d, ADMIN, want=200).text
    assert "1 queued move(s) cancelled (VM %d)" % dropped[0]["vmid"] in lines, lines
    n = px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]
    assert [x for x in n if x["name"] == "sv1"][0]["cordoned"]  # still cordoned
    assert px.wait_job(blocker["job"], CARL)["state"] == "done"
    cordon("sv1", False)


@both
def uncordon_cancels_the_drain():
    """The node uncordoned while its drain's first move runs and its second
    is queued: the uncordon cancels the drain (its answer names it), the
    queued move is cancelled, the running one finishes, no other starts,
    and the drain fails saying the node was uncordoned, by whom."""
    d, queued, running, there, blocker = drain_with_a_move_held()
    r = px.call("POST", "/v1/nodes/sv1/uncordon", ADMIN, want=200).json()
    assert r["drain_cancelled"] == d and not r["cordoned"], r
    j = px.wait_job(d, ADMIN, deadline=60)
    assert j["state"] == "failed" and j["cancel"]["by"] == "ops", j
    assert j["error"] == ("cancelled by ops at step moving: the node was uncordoned; 1 VMs moved, "
                          "%d stayed (1 queued moves cancelled)" % (len(there) - 1)), j
    res = j["result"]
    assert [m["job"] for m in res["moved"]] == [running], res
    assert len(res["stayed"]) == len(there) - 1, res
    assert all(s["reason"].startswith("the node was uncordoned: the drain was cancelled by ops")
               for s in res["stayed"]), res
    dropped = [s for s in res["stayed"] if s.get("job") == queued]
    assert len(dropped) == 1, res
    moves = moves_of(d)
    assert set(moves) == {queued, running}, moves  # no other move started
    assert moves[running][0] == "done", moves
    assert moves[queued] == ("failed", "cancelled by ops before it started (drain %s cancelled: "
                             "the node was uncordoned)" % d), moves
    assert sim.vm(dropped[0]["vmid"])["node"] == "sv1"
    lines = px.call("GET", "/v1/jobs/%s/events" % d, ADMIN, want=200).text
    assert "cancel requested by ops (the node was uncordoned)" in lines, lines
    assert "the node was uncordoned: the drain was cancelled by ops" in lines, lines
    ev = [e for e in events_of(d) if e["type"] == "job.cancelled"]
    assert len(ev) == 1 and ev[0]["data"]["reason"] == "the node was uncordoned", ev
    n = px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]
    assert not [x for x in n if x["name"] == "sv1"][0]["cordoned"]
    again = px.call("POST", "/v1/nodes/sv1/uncordon", ADMIN, want=200).json()
    assert again["drain_cancelled"] is None, again
    assert px.wait_job(blocker["job"], CARL)["state"] == "done"


def check_world(problems):
    """The invariants against pvesim's state and the database, every job
    ended."""
    state = sim.state()
    for jid, kind, st in q("SELECT id, kind, state FROM jobs"):
        if st not in ("done", "failed"):
            problems.append("job %s (%s) is %s" % (jid, kind, st))
    ends = {r[0] for r in q("SELECT job FROM job_events WHERE step IN ('done', 'failed')")}
    for (jid,) in q("SELECT id FROM jobs"):
        if jid not in ends:
            problems.append("job %s ended without its terminal event" % jid)
    for vmid, job in q("SELECT vmid, job FROM vmid_alloc WHERE state = 'reserved'"):
        problems.append("VMID %d left reserved (job %s)" % (vmid, job))
    for (job,) in q("SELECT job FROM capacity WHERE settled_at IS NULL"):
        problems.append("a reservation left unsettled (job %s)" % job)
    for (job,) in q("SELECT job FROM clone_slots"):
        problems.append("a clone slot left held (job %s)" % job)
    for addr, job in q("SELECT addr, job FROM addr_alloc WHERE state = 'reserved'"):
        problems.append("address %s left reserved (job %s)" % (addr, job))
    live = {}
    for rid, vmid, st, job in q("SELECT id, vmid, state, job FROM vms"):
        if st in ("creating", "deleting"):
            problems.append("record of VM %d stuck %s (job %s)" % (vmid, st, job))
        if st in ("creating", "enabled", "deleting"):
            if vmid in live:
                problems.append("VMID %d has two live records" % vmid)
            live[vmid] = rid
        elif q("SELECT addr FROM addr_alloc WHERE vm_id = %d AND state = 'used'" % rid):
            problems.append("gone record %d of VM %d keeps its address" % (rid, vmid))
    on_nodes = [v for v in state["vms"] if not TEMPLATE_BASE <= v["vmid"] < TEMPLATE_BASE + 100]
    for v in on_nodes:
        if v["vmid"] not in live:
            problems.append("VM %d on %s has no live record (leaked: %s)"
                            % (v["vmid"], v["node"], (v.get("conf") or {}).get("description")))
    seen = {v["vmid"] for v in on_nodes}
    for vmid in live:
        if vmid not in seen:
            problems.append("VM %d recorded live is on no node" % vmid)
    for jid, kind, vmid in q("SELECT id, kind, vmid FROM jobs WHERE cancel_at > 0 AND "
                             "state = 'failed' AND kind = 'create'"):
        if vmid in seen and vmid not in live:
            problems.append("cancelled creation %s left VM %d" % (jid, vmid))
    # a reinstalled VM (done, failed, cancelled) has one OS: its boot disk,
    # cloned from the OS its record names (the old one unless the
    # reinstall was done), no second disk left beside it (the temporary
    # VMs are counted above: no live record)
    for (vmid,) in q("SELECT DISTINCT vmid FROM jobs WHERE kind = 'reinstall'"):
        rec = q("SELECT os FROM vms WHERE vmid = %d AND state = 'enabled'" % vmid)
        if not rec or vmid not in seen:
            continue
        v = sim.vm_view(vmid)
        if not v["disk"] or not v["os"]:
            problems.append("reinstalled VM %d has no OS disk: %s" % (vmid, v))
        elif v["os"] != rec[0][0]:
            problems.append("reinstalled VM %d runs %s, its record says %s" % (vmid, v["os"],
                                                                              rec[0][0]))
        if v["unused"]:
            problems.append("reinstalled VM %d keeps a second disk: %s" % (vmid, v))


@case
def random_cancels_under_faults():
    rng = random.Random(SEED * 7)
    if px2 and px2.alive():
        px2.stop()
    vms = [create() for _ in range(4)]
    vms = [px.wait_job(c["job"], CARL)["vmid"] for c in vms]
    sim.clear_faults()
    sim.add_faults(fault_rules(0.08))
    jobs, lock = [], threading.Lock()

    def submit():
        for i in range(32):
            # reinstalls early (the longest jobs end with the others), of
            # the two VMs that are never deleted
            if i < 24 and rng.random() < 0.2:
                r = px.call("POST", "/v1/vms/%d/reinstall" % rng.choice(vms[:2]), CARL,
                            body={"os": rng.choice(["debian", "ubuntu"]), "ssh_keys": [KEY]})
            elif rng.random() < 0.6:
                r = px.call("POST", "/v1/vms", CARL, body=dict(BODY, name="r%d" % i))
            else:
                vmid = rng.choice(vms)
                op = rng.choice(["stop", "start", "reboot", "resize", "delete"])
                if op == "resize":
                    r = px.call("POST", "/v1/vms/%d/resize" % vmid, CARL,
                                body={"disk_gb": 21 + i})
                elif op == "delete":
                    r = px.call("DELETE", "/v1/vms/%d" % rng.choice(vms[2:]), CARL)
                else:
                    r = px.call("POST", "/v1/vms/%d/%s" % (vmid, op), CARL)
            if r.status_code == 202:  # cancel 70 % of them, 0-3 s after
                with lock:
                    jobs.append((r.json()["job"], rng.random() < 0.7,
                                 time.monotonic() + rng.uniform(0, 3)))
            time.sleep(rng.uniform(0, 0.3))

    t = threading.Thread(target=submit)
    t.start()
    asked = {}
    while True:
        with lock:
            todo = [(j, at) for j, c, at in jobs if c and j not in asked]
        if not todo and not t.is_alive():
            break
        for j, at in todo:
            if time.monotonic() >= at:
                r = cancel(j)
                assert r.status_code in (200, 202, 409), r.text
                asked[j] = r.status_code
        time.sleep(0.05)
    t.join()
    ids = [j for j, _, _ in jobs]
    wait_for(lambda: all(px.call("GET", "/v1/jobs/" + j, CARL).json()["state"]
                         in ("done", "failed") for j in ids), 120, 0.5, "every job to end")
    sim.clear_faults()
    sim.wait_late()
    px.stop()
    proxd_cli("reconcile", "--config", px.conf)  # leftovers a failing node kept
    problems = []
    check_world(problems)
    cancelled = sum(1 for j, st in q("SELECT id, state FROM jobs WHERE cancel_at > 0")
                    if j in ids and st == "failed")
    kinds = {}
    for jid, kind, st in q("SELECT id, kind, state FROM jobs"):
        if jid in ids and kind == "reinstall":
            kinds[st] = kinds.get(st, 0) + 1
    print("  %d jobs, %d cancels asked %s, %d jobs ended cancelled; reinstalls %s" % (
        len(ids), len(asked), sorted({s: list(asked.values()).count(s)
                                      for s in set(asked.values())}.items()), cancelled,
        sorted(kinds.items())), flush=True)
    assert not problems, "\n  ".join(problems)


if px2 and px2.alive():
    px2.stop()
shutdown(px, sim)
finish()
