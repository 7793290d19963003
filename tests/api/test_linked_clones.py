"""Linked clones ([os NAME] clone = linked): a creation copies nothing,
its disk a thin volume on the template's storage over the template's base
volume, as PVE's `full=0` makes it; the rest of the VM's life as a full
clone's, but for what PVE refuses a linked clone on local storage:
  - the creation is done with `local-lvm:base-<tpl>-disk-0/vm-<id>-disk-0`
    grown to the size asked, its clone task says "linked", and it ends while
    a full clone of the same template (the other OS, started at once beside
    it) is still copying;
  - resize, snapshot, rollback, stop and start, delete: done as for any VM;
  - a drain of its node: it stays, saying why (a linked clone on local
    storage), no migration asked of Proxmox (which refuses it: "can't
    migrate ... as it's a clone of ..."), the full clone beside it moves;
  - a reinstall that must move it to another node (its own without room):
    failed before anything is done (PVE does not migrate a linked clone off
    local storage), the VM never stopped, no temporary VM;
  - a reinstall: done, the disk now a full copy of the new OS's template,
    the linked volume gone;
  - clone = thin is refused at check-config, naming the key;
  - a node whose storage is not its template's: the job says the linked
    clone's disk is elsewhere than where its room was counted.
"""
import os
import subprocess
import time

from lib.cases import case, finish
from lib.env import PROXD
from lib.proxd import Proxd, shutdown, TEMPLATE_BASE
from lib.sim import Sim
from lib.wait import wait_for

# slow enough that a full clone of the 10 GiB template takes seconds
sim = Sim(time_scale=0.2)
px = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n",
           os_extra={"ubuntu": "clone = linked\n"})
ADMIN = px.token("ops", "admin")
px.start()


def create(name, os_name="ubuntu", disk_gb=12):
    r = px.call("POST", "/v1/vms", ADMIN, {"os": os_name, "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": disk_gb})
    assert r.status_code == 202, r.text
    return r.json()["job"]


def job(method, path, body=None, deadline=120):
    r = px.call(method, path, ADMIN, body if body is not None else {})
    assert r.status_code == 202, (path, r.text)
    j = px.wait_job(r.json()["job"], ADMIN, deadline=deadline)
    return j


def boot_disk(vmid):
    return sim.vm(vmid)["conf"]["scsi0"]


def clone_log(vmid):
    for t in sim.state()["tasks"]:
        if t["type"] == "qmclone" and "with ID %d" % vmid in " ".join(t["log"]):
            return t["log"]
    return []


LINKED = {}


@case
def a_linked_clone_is_made_while_a_full_one_copies():
    full_job = create("full-1", "debian")
    t0 = time.monotonic()
    j = px.wait_job(create("linked-1"), ADMIN, deadline=120)
    took = time.monotonic() - t0
    assert j["state"] == "done", j
    vmid = j["vmid"]
    LINKED["vmid"], LINKED["node"] = vmid, sim.vm(vmid)["node"]
    tpl = TEMPLATE_BASE  # sv1's ubuntu template: placement is ordered
    assert LINKED["node"] == "sv1", sim.vm(vmid)
    disk = boot_disk(vmid)
    assert disk.startswith("local-lvm:base-%d-disk-0/vm-%d-disk-" % (tpl, vmid)), disk
    assert "size=12G" in disk, disk
    assert any("create linked clone of drive" in line for line in clone_log(vmid)), \
        clone_log(vmid)
    # the full clone of debian's 10 GiB template, started first, is still at it
    full = px.call("GET", "/v1/jobs/" + full_job, ADMIN).json()
    assert full["state"] in ("queued", "running"), (took, full)
    fj = px.wait_job(full_job, ADMIN, deadline=240)
    assert fj["state"] == "done", fj
    LINKED["full"] = fj["vmid"]
    assert "base-" not in boot_disk(fj["vmid"]), boot_disk(fj["vmid"])


@case
def a_linked_clone_lives_as_any_vm():
    vmid = LINKED["vmid"]
    v = "/v1/vms/%d" % vmid
    for method, path, body in (("POST", v + "/resize", {"disk_gb": 16}),
                               ("POST", v + "/snapshots", {"name": "s1"}),
                               ("POST", v + "/stop", None),
                               ("POST", v + "/snapshots/s1/rollback", None),
                               ("DELETE", v + "/snapshots/s1", None),
                               ("POST", v + "/start", None)):
        j = job(method, path, body)
        assert j["state"] == "done", (path, j)
    assert "size=16G" in boot_disk(vmid), boot_disk(vmid)
    assert sim.vm(vmid)["power"] == "running", sim.vm(vmid)


@case
def a_drain_leaves_a_linked_clone_on_local_storage_saying_why():
    vmid, full = LINKED["vmid"], LINKED["full"]
    node = LINKED["node"]
    assert sim.vm(full)["node"] == node, (sim.vm(full), node)
    j = job("POST", "/v1/nodes/%s/drain" % node, deadline=240)
    try:
        assert j["state"] == "done", j
        stayed = {s["vmid"]: s["reason"] for s in j["result"]["stayed"]}
        moved = {m["vmid"] for m in j["result"]["moved"]}
        assert vmid in stayed and "is a linked clone on local storage of %s, which Proxmox " \
            "does not migrate" % node in stayed[vmid], j["result"]
        assert full in moved, j["result"]
        # told before any migration was asked (it used to ask, and PVE refused)
        migrations = sim.data("GET", "/nodes/%s/tasks" % node,
                              params={"vmid": vmid, "typefilter": "qmigrate", "limit": 500})
        assert not migrations, migrations
        assert sim.vm(vmid)["node"] == node and sim.vm(full)["node"] != node
    finally:
        r = px.call("POST", "/v1/nodes/%s/uncordon" % node, ADMIN, {})
        assert r.status_code == 200, r.text


def storage_gb(node):
    st = [x for n in sim.state()["nodes"] if n["name"] == node
          for x in n["storages"] if x["id"] == "local-lvm"][0]
    return st["total"] // 2**30, st["used"] // 2**30


def available_gb(node):
    return [n for n in px.call("GET", "/v1/nodes", ADMIN).json()["nodes"]
            if n["name"] == node][0]["disk_gb"]["available"]


@case
def a_reinstall_that_must_move_it_is_refused_before_anything_is_done():
    """Its node without room for a second disk: the reinstall's temporary VM
    would go to another node and the VM follow it offline, which PVE refuses
    for a linked clone on local storage: the job fails before anything is
    done, saying so; the VM never stopped (the first version stopped it,
    failed at the migration, and started it again)."""
    j = px.wait_job(create("linked-2"), ADMIN, deadline=120)
    assert j["state"] == "done", j
    vmid = j["vmid"]
    node = sim.vm(vmid)["node"]
    before = dict(sim.vm(vmid)["conf"])
    total, used = storage_gb(node)
    sim.ctl("POST", "/nodes/" + node, {"storage_gb": {"local-lvm": used + 5}})
    try:
        wait_for(lambda: available_gb(node) <= 6, deadline=30, interval=0.1,
                 what="proxd to see %s full" % node)
        r = job("POST", "/v1/vms/%d/reinstall" % vmid, {"os": "debian"}, deadline=240)
        assert r["state"] == "failed", r
        assert "is a linked clone on local storage, which Proxmox does not migrate" in \
            r["error"] and "nothing was changed" in r["error"], r["error"]
        stops = [t for t in sim.state()["tasks"]
                 if t["type"] in ("qmstop", "qmshutdown") and t["id"] == str(vmid)]
        assert stops == [], stops
        after = sim.vm(vmid)
        assert after["power"] == "running", after
        assert after["node"] == node and after["conf"]["scsi0"] == before["scsi0"], after
        assert not [v["vmid"] for v in sim.state()["vms"]
                    if "reinstall of VM" in (v["conf"].get("description") or "")], "temporary VM"
    finally:
        sim.ctl("POST", "/nodes/" + node, {"storage_gb": {"local-lvm": total}})
        wait_for(lambda: available_gb(node) > 100, deadline=30, interval=0.1,
                 what="proxd to see %s's room back" % node)
    assert job("DELETE", "/v1/vms/%d" % vmid)["state"] == "done"


@case
def a_reinstall_makes_the_disk_a_full_copy():
    vmid = LINKED["vmid"]
    j = job("POST", "/v1/vms/%d/reinstall" % vmid, {"os": "debian"}, deadline=240)
    assert j["state"] == "done", j
    disk = boot_disk(vmid)
    assert "base-" not in disk and "size=16G" in disk, disk
    conf = sim.vm(vmid)["conf"]
    assert not [k for k, d in conf.items() if isinstance(d, str) and "base-%d" % TEMPLATE_BASE
                in d], conf
    for v in (vmid, LINKED["full"]):
        assert job("DELETE", "/v1/vms/%d" % v)["state"] == "done"
    wait_for(lambda: not [x for x in sim.state()["vms"] if x["vmid"] < TEMPLATE_BASE],
             deadline=30, what="nothing left")


@case
def clone_thin_is_refused_naming_the_key():
    conf = os.path.join(px.dir, "bad.conf")
    with open(px.conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("clone = linked", "clone = thin"))
    r = subprocess.run([PROXD, "--check-config", conf], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0, r
    assert "[os ubuntu] clone: 'thin': expected full or linked" in r.stderr, r.stderr


@case
def a_node_storage_other_than_the_templates_is_told():
    """A linked clone lands on its template's storage (local-lvm here), not
    on the node's configured one (local): its room was counted there, so
    the job says so."""
    px.stop()
    px2 = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n",
                os_extra={"ubuntu": "clone = linked\n"}, storage={"sv1": "local"})
    admin = px2.token("ops", "admin")
    px2.start()
    try:
        r = px2.call("POST", "/v1/vms", admin, {"os": "ubuntu", "name": "elsewhere", "cores": 1,
                                                 "memory_mb": 512, "disk_gb": 12})
        assert r.status_code == 202, r.text
        j = px2.wait_job(r.json()["job"], admin, deadline=120)
        assert j["state"] == "done" and sim.vm(j["vmid"])["node"] == "sv1", j
        want = ("the linked clone's disk local-lvm:base-%d-disk-0/vm-%d-disk-0 is on storage "
                "local-lvm, not the node's storage local" % (TEMPLATE_BASE, j["vmid"]))
        wait_for(lambda: want in px2.log_text(), deadline=10, what="the warning")
        r = px2.call("DELETE", "/v1/vms/%d" % j["vmid"], admin, {})
        assert r.status_code == 202 and px2.wait_job(r.json()["job"], admin)["state"] == "done"
    finally:
        px2.stop()


shutdown(px, sim)
finish()
