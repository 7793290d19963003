"""Reinstall through proxd's API, black-box against pvesim (issue 14).

POST /v1/vms/{vmid}/reinstall is all or nothing: the VM keeps its VMID,
name, MAC, net0 and ipconfig0, and ends running either the new OS (the job
done) or the old one (the job failed). What a VM's boot disk holds is read
from pvesim's volume origins (/_sim/state: which template a volume was
cloned from). Cases, on one pvesim and one proxd:
  - a reinstall (ssh keys, password) and one through proxctl;
  - a fault injected at each step in turn (clone, its task, configure,
    resize, stop, the disk reassignment, start, destroy): one VM, running;
    before the swap the old VM untouched (config digest, disk, power);
  - passing errors on every write ridden out (the job ends done);
  - another owner's 404, bad input naming the field;
  - the temporary disk counted in the owner's quota and the node's room
    (a reservation while it exists; no room there nor on another node:
    failed, nothing changed);
  - an HA-managed VM refused, untouched;
  - a reinstall queued while another job of the VM runs waits for it.
The kill -9 test is test_reinstall_crash.py.
"""
import json
import os
import subprocess
import time

from lib.cases import case, finish
from lib.db import query as db_query
from lib.env import PROXCTL
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "reinstall@test")

sim = Sim(time_scale=0.005)
px = Proxd(sim, proxd_extra="reconcile_interval = 2\n")
ALICE = px.token("alice")
BOB = px.token("bob")
ADMIN = px.token("root", role="admin")
px.start()


def create(name, os_name="ubuntu"):
    r = px.call("POST", "/v1/vms", ALICE, {"os": os_name, "name": name, "cores": 1,
                                          "memory_mb": 1024, "disk_gb": 12})
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], ALICE)
    assert j["state"] == "done", j
    return r.json()["vmid"]


def reinstall(vmid, body, token=ALICE, want=None):
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, token, body)
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "reinstall"
    j = px.wait_job(r.json()["job"], token, deadline=120)
    assert want is None or j["state"] == want, j
    return j


def look(vmid):
    """What Proxmox holds for the VM (Sim.vm_view) and its config digest."""
    v = sim.vm_view(vmid)
    v["digest"] = sim.data("GET", "/nodes/%s/qemu/%d/config" % (v["node"], vmid))["digest"]
    return v


def temps():
    """Temporary VMs of reinstalls still in Proxmox."""
    return [v["vmid"] for v in sim.state()["vms"]
            if "reinstall of VM" in (v["conf"].get("description") or "")]


def event_steps(job):
    """The steps of a finished job's events, from its SSE stream."""
    s = px.call("GET", "/v1/jobs/%s/events" % job, ALICE, stream=True)
    assert s.status_code == 200, s.text
    steps = []
    for line in s.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            d = json.loads(line[6:])
            if isinstance(d, dict) and d.get("step"):
                steps.append(d["step"])
    return steps


def same_identity(a, b):
    for k in ("node", "name", "net0", "ipconfig0", "mac", "boot"):
        assert a[k] == b[k], (k, a[k], b[k])


VM = {}


@case
def reinstall_keeps_the_identity():
    vmid = VM["a"] = create("ri-a")
    # options set on the boot drive stay on the new disk
    drive = sim.vm(vmid)["conf"]["scsi0"]
    opts = ",discard=on,iothread=1,ssd=1,cache=writeback"
    sim.ctl("POST", "/vms/%d" % vmid, {"conf": {"scsi0": drive.split(",")[0] + opts + ",size=" +
                                                 drive.split("size=")[1].split(",")[0]}})
    before = look(vmid)
    assert before["os"] == "ubuntu" and before["power"] == "running", before
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE,
                {"os": "debian", "ssh_keys": [KEY], "password": "correct horse 1"})
    assert r.status_code == 202, r.text
    # the temporary clone holds room on the node while it exists (capacity)
    held = wait_for(lambda: db_query(px.db, "SELECT node, disk FROM capacity WHERE job = ?",
                                     (r.json()["job"],)), deadline=30, interval=0.01,
                    what="the temporary VM's reservation")
    assert held[0][0] == before["node"] and held[0][1] >= 12 * 2**30, held
    j = px.wait_job(r.json()["job"], ALICE, deadline=120)
    assert j["state"] == "done", j
    assert not db_query(px.db, "SELECT node FROM capacity WHERE job = ?", (j["id"],))
    after = look(vmid)
    same_identity(before, after)
    assert after["os"] == "debian" and after["power"] == "running", after
    assert after["disk"] != before["disk"] and after["unused"] == [], after
    conf = sim.vm(vmid)["conf"]
    assert "reinstall" in (conf.get("sshkeys") or "") and conf.get("cipassword"), conf
    new_drive = conf["scsi0"].split(",")
    assert new_drive[0] != drive.split(",")[0], conf["scsi0"]
    for o in opts.split(",")[1:]:
        assert o in new_drive, conf["scsi0"]
    assert [o for o in new_drive if o.startswith("size=")] == ["size=12G"], conf["scsi0"]
    assert temps() == []
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["os"] == "debian" and rec["vmid"] == vmid and rec["name"] == "ri-a", rec
    assert rec["power"] == "running" and rec["disk_gb"] >= 12, rec
    ev = px.call("GET", "/v1/events?type=vm.reinstalled", ALICE).json()
    mine = [e for e in ev["events"] if e["job"] == j["id"]]
    assert len(mine) == 1 and mine[0]["vmid"] == vmid, ev
    assert mine[0]["data"]["os"] == "debian" and mine[0]["data"]["from"] == "ubuntu", mine
    steps = event_steps(j["id"])
    for s in ("clone", "resize", "stop", "swap", "start", "commit", "done"):
        assert s in steps, steps
    # the password is kept only hashed: not in proxd's database, nor its log
    req = db_query(px.db, "SELECT request FROM jobs WHERE id = ?", (j["id"],))[0][0]
    assert "correct horse" not in req and "$6$" in req, req
    assert not px.logs_contain("correct horse 1")


@case
def proxctl_reinstall():
    vmid = VM["a"]
    before = look(vmid)
    env = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=ALICE)
    env.pop("PROXCTL_CONFIG", None)
    r = subprocess.run([PROXCTL, "vm", "reinstall", str(vmid), "--os", "ubuntu"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    after = look(vmid)
    same_identity(before, after)
    assert after["os"] == "ubuntu" and after["power"] == "running", after
    r = subprocess.run([PROXCTL, "vm", "reinstall", str(vmid)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2 and "--os" in r.stderr, r


# step, method, path (PCRE2; TMP stands for "not the customer's VM"), fault kind, and
# whether the failure comes before the swap (the old VM untouched) or the job still ends done
STEPS = [
    ("clone", "POST", r"^/nodes/[^/]+/qemu/\d+/clone$", "error", "before"),
    ("clone task", "POST", r"^/nodes/[^/]+/qemu/\d+/clone$", "task_error", "before"),
    ("configure", "PUT", r"^/nodes/[^/]+/qemu/TMP/config$", "error", "before"),
    ("resize", "PUT", r"^/nodes/[^/]+/qemu/TMP/resize$", "error", "before"),
    ("stop", "POST", r"^/nodes/[^/]+/qemu/VMID/status/stop$", "error", "before"),
    ("reassign", "POST", r"^/nodes/[^/]+/qemu/TMP/move_disk$", "error", "after"),
    ("reassign task", "POST", r"^/nodes/[^/]+/qemu/TMP/move_disk$", "task_error", "after"),
    ("start", "POST", r"^/nodes/[^/]+/qemu/VMID/status/start$", "error", "after"),
    ("destroy", "DELETE", r"^/nodes/[^/]+/qemu/TMP$", "error", "done"),
]


@case
def a_fault_at_each_step():
    vmid = VM["f"] = create("ri-faults")
    os_now = "ubuntu"
    for name, method, path, kind, when in STEPS:
        before = look(vmid)
        path = path.replace("VMID", str(vmid)).replace("TMP", r"(?!%d$|%d/)\d+" % (vmid, vmid))
        # as many failures as the job's tries of one call (4): the step fails
        rule = {"method": method, "path": path, "kind": kind, "count": 1 if kind == "task_error" else 4,
                "status": 500, "message": "injected at " + name}
        sim.ctl("POST", "/faults", rule)
        target = "debian" if os_now == "ubuntu" else "ubuntu"
        j = reinstall(vmid, {"os": target})
        hits = [f for f in sim.ctl("GET", "/faults") if f.get("hits")]
        sim.ctl("DELETE", "/faults")
        assert hits, "%s: the fault never hit" % name
        after = look(vmid)
        same_identity(before, after)
        assert after["power"] == "running", (name, after)
        assert temps() == [], (name, temps())
        if when == "done":
            assert j["state"] == "done", (name, j)
            assert after["os"] == target and after["unused"] == [], (name, after)
            os_now = target
            continue
        assert j["state"] == "failed", (name, j)
        assert "keeps %s" % os_now in j["error"], (name, j["error"])
        assert after["os"] == os_now and after["disk"] == before["disk"], (name, after)
        assert after["unused"] == [], (name, after)
        if when == "before":  # never written
            assert after["digest"] == before["digest"], name
        rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
        assert rec["os"] == os_now and rec["power"] == "running", (name, rec)


@case
def a_backup_lock_at_the_stop_ends_it_at_once():
    """A backup holds the VM's lock: the stop is refused, and nothing of the
    VM was changed yet. The job ends failed at once, the temporary VM gone,
    the VM untouched and running (it went to the restore, whose writes the
    lock refused too: 10 minutes of them, then "could not put the old disk
    back" for a disk never taken)."""
    vmid = VM.get("f") or create("ri-backup")
    before = look(vmid)
    # the backup begins while the temporary VM's clone is asked (a lock at
    # the start is refused before anything is made)
    sim.ctl("POST", "/faults", {"method": "POST", "path": r"^/nodes/[^/]+/qemu/\d+/clone$",
                                "kind": "delay", "delay_ms": 3000, "count": 1})
    try:
        target = "debian" if before["os"] == "ubuntu" else "ubuntu"
        r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": target})
        assert r.status_code == 202, r.text
        wait_for(lambda: sim.ctl("GET", "/faults")[0]["hits"] == 1, deadline=30, interval=0.02,
                 what="the clone asked")
        sim.ctl("POST", "/vms/%d" % vmid, {"conf": {"lock": "backup"}})
        before = look(vmid)
        j = px.wait_job(r.json()["job"], ALICE, deadline=120)
        sim.clear_faults()
        assert j["state"] == "failed", j
        assert "locked (backup)" in j["error"] and "keeps %s" % before["os"] in j["error"], j
        assert "could not put" not in j["error"], j
        after = look(vmid)
        assert after["digest"] == before["digest"] and after["power"] == "running", after
        assert temps() == [], temps()
    finally:
        sim.ctl("POST", "/vms/%d" % vmid, {"conf": {"lock": None}})


@case
def passing_errors_are_ridden_out():
    """One 500 on each write of the way: every call is made again (after a
    look at Proxmox when it may have gone through) and the job ends done."""
    vmid = VM["f"]
    before = look(vmid)
    target = "debian" if before["os"] == "ubuntu" else "ubuntu"
    for name, method, path, kind, when in STEPS:
        if kind != "error":
            continue
        path = path.replace("VMID", str(vmid)).replace("TMP", r"(?!%d$|%d/)\d+" % (vmid, vmid))
        sim.ctl("POST", "/faults", {"method": method, "path": path, "kind": "error", "count": 1,
                                    "status": 500, "message": "passing error at " + name})
    j = reinstall(vmid, {"os": target})
    hits = sim.clear_faults()
    assert j["state"] == "done", j
    assert hits >= 6, hits
    after = look(vmid)
    same_identity(before, after)
    assert after["os"] == target and after["power"] == "running" and temps() == [], after


@case
def isolation_and_bad_input():
    vmid = VM["a"]
    for token, v in ((BOB, vmid), (BOB, 99999), (ALICE, 99999)):
        r = px.call("POST", "/v1/vms/%d/reinstall" % v, token, {"os": "debian"})
        assert r.status_code == 404, r.text
    bad = [({"os": "plan9"}, "os"), ({}, "os"),
           ({"os": "debian", "ssh_keys": ["ssh-rsa not-a-key"]}, "ssh_keys"),
           ({"os": "debian", "password": "short"}, "password"),
           ({"os": "debian", "password": "x" * 300}, "password")]
    for body, field in bad:
        r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["details"].get("field") == field, (body, r.text)
    # another owner's VM is a 404 before its body is looked at
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, BOB, {"os": "plan9"})
    assert r.status_code == 404, r.text


@case
def quota_counts_the_temporary_disk():
    # bob: 1 VM, 40 GiB in all; his 25 GiB VM leaves no room for a second 25 GiB disk
    r = px.call("POST", "/v1/vms", BOB, {"os": "ubuntu", "name": "ri-bob", "cores": 1,
                                        "memory_mb": 1024, "disk_gb": 25})
    assert r.status_code == 202, r.text
    assert px.wait_job(r.json()["job"], BOB)["state"] == "done"
    vmid = r.json()["vmid"]
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, BOB, {"os": "debian"})
    assert r.status_code == 403, r.text
    e = r.json()["error"]
    assert e["details"].get("field") == "disk_gb" and "quota" in e["message"], e
    assert look(vmid)["os"] == "ubuntu"


@case
def ha_managed_vm_refused_untouched():
    vmid = VM["f"]
    v = sim.vm(vmid)
    sim.data("POST", "/cluster/ha/resources", data={"sid": "vm:%d" % vmid, "state": "started"})
    before = look(vmid)
    j = reinstall(vmid, {"os": "debian"}, want="failed")
    assert "HA-managed" in j["error"] and "nothing was changed" in j["error"], j
    after = look(vmid)
    assert after["digest"] == before["digest"] and after["power"] == "running", after
    assert temps() == []
    sim.data("DELETE", "/cluster/ha/resources/vm:%d" % vmid)
    assert v["node"] == after["node"]


def node_view(name):
    for n in px.call("GET", "/v1/nodes", ALICE).json()["nodes"]:
        if n["name"] == name:
            return n


@case
def no_room_on_the_node_fails_before_touching_anything():
    vmid = VM["f"]
    before = look(vmid)
    node = before["node"]
    # the node's storage: what it holds now, plus 5 GiB (the VM's disk is 12 GiB)
    total_gb = node_view(node)["disk_gb"]["total"]
    used_gb = node_view(node)["disk_gb"]["used"]
    sim.ctl("POST", "/nodes/" + node, {"storage_gb": {"local-lvm": used_gb + 5}})
    # and no other node may take it (test_reinstall_move.py: onto another node)
    others = [n["name"] for n in px.call("GET", "/v1/nodes", ALICE).json()["nodes"]
              if n["name"] != node]
    for n in others:
        assert px.call("POST", "/v1/nodes/%s/cordon" % n, ADMIN).status_code == 200
    try:
        wait_for(lambda: node_view(node)["disk_gb"]["available"] <= 6, deadline=30, interval=0.2,
                 what="proxd to see the full node")
        j = reinstall(vmid, {"os": "debian"}, want="failed")
        assert "no room" in j["error"] and "nothing was changed" in j["error"], j
        for n in others:
            assert "%s: cordoned" % n in j["error"], j
        after = look(vmid)
        assert after["digest"] == before["digest"] and after["power"] == "running", after
        assert temps() == []
        assert not db_query(px.db, "SELECT node FROM capacity WHERE job = ?", (j["id"],))
    finally:
        sim.ctl("POST", "/nodes/" + node, {"storage_gb": {"local-lvm": total_gb}})
        for n in others:
            px.call("POST", "/v1/nodes/%s/uncordon" % n, ADMIN)


@case
def waits_for_the_vms_other_job():
    vmid = VM["a"]
    sim.ctl("POST", "/faults", {"method": "POST", "path": r"^/nodes/[^/]+/qemu/%d/status/reboot$"
                                % vmid, "kind": "delay", "delay_ms": 3000, "count": 1})
    r = px.call("POST", "/v1/vms/%d/reboot" % vmid, ALICE)
    assert r.status_code == 202, r.text
    reboot = r.json()["job"]
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": "debian"})
    assert r.status_code == 202, r.text
    ri = r.json()["job"]
    seen_waiting = False
    end = time.monotonic() + 60
    while True:
        assert time.monotonic() < end, "the reboot did not end in 60 s"
        # the reinstall read first: when the reboot still runs after it, it ran then too
        b = px.call("GET", "/v1/jobs/" + ri, ALICE).json()
        a = px.call("GET", "/v1/jobs/" + reboot, ALICE).json()
        if a["state"] in ("done", "failed"):
            break
        if a["state"] == "running":
            assert b["state"] == "queued", (a, b)
            seen_waiting = True
        time.sleep(0.05)
    sim.ctl("DELETE", "/faults")
    assert seen_waiting
    j = px.wait_job(ri, ALICE, deadline=120)
    assert j["state"] == "done", j
    assert look(vmid)["os"] == "debian"


@case
def a_paused_vms_failed_reinstall_records_it_paused():
    """A reinstall of a paused VM whose clone fails ends without touching
    the VM: its record says paused still. The abort wrote PVE's `status`,
    which is "running" for a paused VM (its qmpstatus says paused), and
    the record said running (the PostgreSQL fault test, seeds 14108 and
    14109)."""
    vmid = create("ri-paused")
    r = px.call("POST", "/v1/vms/%d/pause" % vmid, ALICE)
    assert r.status_code == 202, r.text
    assert px.wait_job(r.json()["job"], ALICE)["state"] == "done"
    assert sim.vm_view(vmid)["power"] == "paused"
    sim.ctl("POST", "/faults", {"method": "POST", "path": r"^/nodes/[^/]+/qemu/\d+/clone$",
                                "kind": "task_error", "count": 1, "message": "clone broken"})
    try:
        j = reinstall(vmid, {"os": "debian"}, want="failed")
    finally:
        sim.ctl("DELETE", "/faults")
    assert "keeps ubuntu" in j["error"], j
    assert sim.vm_view(vmid)["power"] == "paused"
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["power"] == "paused", rec


@case
def a_change_pending_before_a_reinstall_is_applied_by_it():
    """An update made while the VM runs is pending until its next start;
    the reinstall's stop and start apply it: the record says no change is
    pending any more (it kept the update's pending change)."""
    vmid = create("ri-pending")
    r = px.call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"cores": 2})
    assert r.status_code == 202, r.text
    assert px.wait_job(r.json()["job"], ALICE)["state"] == "done"
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["pending"] == {"cores": "2"}, rec
    reinstall(vmid, {"os": "debian"}, want="done")
    v = sim.vm(vmid)
    assert not v.get("pending") and int(v["conf"]["cores"]) == 2, v
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["pending"] == {} and rec["cores"] == 2, rec


try:
    finish()
finally:
    shutdown(px, sim)
