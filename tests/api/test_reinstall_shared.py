"""Reinstalls on a shared storage (Ceph): sv1-sv3 keep their VMs on one
pool that every node reports whole, sv4 and sv5 on their own local-lvm,
30 GiB each besides the templates: once a VM of 12 GiB is on one, it has
no room for a second disk (10 GiB margin).
Black-box against pvesim, whose pool use is sampled throughout each case
(lib.fleet.PoolSampler): it never passes the pool's size less the margin.
  - on the VM's node: the temporary disk is made on the pool and reserved
    against it; the VM stays where it is, the pool holds one disk of it
    afterwards, as before;
  - a reinstall and a creation (on another node of the pool) race for the
    pool's last room: one gets it, the other is refused naming the shared
    storage (the reservations are the pool's, not a node's);
  - onto another node: the VM's node (local-lvm) full, the reinstall moves
    it onto a node of the pool; its old disk moves onto the pool with it
    (the migration's target storage), so the pool needs room for both
    disks: with room for one only it is refused, nothing changed; with room
    for both the VM lands there, its disk on the pool, identity kept;
  - a fault at the swap on the pool: the old OS kept, its disk attached
    again with the drive options it had (discard, iothread, ssd, cache),
    the temporary disk gone from the pool;
  - kill -9 in a reinstall on the pool's node (at the swap), and in one
    that moves onto the pool (while the migration's task runs): after the
    restart the job ends, one VM running, no temporary VM, nothing
    reserved.
Every case ends with nothing held in the store for its jobs (no VMID, no
unsettled capacity).
REINSTALL_SHARED_SEED overrides pvesim's seed.
"""
import math
import os
import time

from lib.cases import case, finish
from lib.db import expire_leases, query, wait_step
from lib.fleet import GiB, PoolSampler, pool_used, shared_pool_fleet
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

SEED = int(os.environ.get("REINSTALL_SHARED_SEED", "1416"))
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
POOL_NODES = NODES[:3]
POOL_GB, MARGIN_GB, DISK_GB = 100, 10, 12

sim = Sim(time_scale=0.005, extra=["--seed", str(SEED)],
          fleet=shared_pool_fleet(NODES, POOL_GB))
# local-lvm: the templates and 30 GiB
for node in sim.state()["nodes"]:
    lvm = [x for x in node["storages"] if x["id"] == "local-lvm"][0]
    sim.ctl("POST", "/nodes/" + node["name"],
            {"storage_gb": {"local-lvm": math.ceil(lvm["used"] / GiB) + 30}})
# the inventory is read at every reconcile pass: proxd sees a changed pool
# within a second
px = Proxd(sim, storage={n: "ceph" for n in POOL_NODES},
           proxd_extra="reconcile_interval = 1\n\n[limits]\ndisk_margin_gb = %d\n" % MARGIN_GB)
ALICE = px.token("alice")
ADMIN = px.token("root", role="admin")
px.start()


def q(sql):
    return query(px.db, sql)


def node_view(name):
    return [n for n in px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]
            if n["name"] == name][0]


def cordon(nodes, on=True):
    for n in nodes:
        px.call("POST", "/v1/nodes/%s/%s" % (n, "cordon" if on else "uncordon"), ADMIN, want=200)


def pool_bytes():
    """The pool's use by pvesim: one figure for all nodes."""
    seen, disks = pool_used(sim.state())
    assert len(seen) == 1, seen
    return seen.pop()


def set_pool(room_gb):
    """The pool's size: what it holds, the margin and room_gb more (on every
    node: it is one pool); waits until proxd sees it."""
    total = math.ceil(pool_bytes() / GiB) + MARGIN_GB + room_gb
    st = [x for x in sim.state()["nodes"][0]["storages"] if x["id"] == "ceph"][0]
    if st["total"] == total * GiB:
        # the same size: proxd's view must still be newer than what the
        # last case did (the disks a job made count on top of the inventory
        # until a refresh that began after them)
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".999Z"
        wait_for(lambda: all(node_view(n)["refreshed_at"] > t for n in POOL_NODES),
                 deadline=30, interval=0.2, what="a refresh of proxd's view of the pool")
        return total
    for n in NODES:
        sim.ctl("POST", "/nodes/" + n, {"storage_gb": {"ceph": total}})
    wait_for(lambda: all(node_view(n)["disk_gb"]["total"] == total for n in POOL_NODES),
             deadline=30, interval=0.1, what="proxd to see the pool at %d GiB" % total)
    return total


def create(name, node):
    """A VM made on `node` (the others cordoned meanwhile)."""
    cordon([n for n in NODES if n != node])
    try:
        r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                              "memory_mb": 1024, "disk_gb": DISK_GB}, want=202)
        j = px.wait_job(r.json()["job"], ALICE, deadline=120)
    finally:
        cordon([n for n in NODES if n != node], on=False)
    assert j["state"] == "done" and sim.vm(j["vmid"])["node"] == node, j
    return j["vmid"]


def look(vmid):
    """sim.vm_view, the boot disk's storage and size."""
    v = sim.vm_view(vmid)
    scsi0 = sim.vm(vmid)["conf"]["scsi0"]
    v["storage"], v["size"] = scsi0.split(":")[0], scsi0.split("size=")[-1]
    return v


def same_identity(a, b, node=True):
    for k in ("name", "net0", "ipconfig0", "mac", "boot", "size") + (("node",) if node else ()):
        assert a[k] == b[k], (k, a[k], b[k])


def temps():
    return [v["vmid"] for v in sim.state()["vms"]
            if "reinstall of VM" in (v["conf"].get("description") or "")]


def submit(vmid, os_name):
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": os_name}, want=202)
    return r.json()["job"]


def reinstall(vmid, os_name, want):
    """A reinstall, pvesim's pool sampled meanwhile: (job, the pool's peak)."""
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        j = px.wait_job(submit(vmid, os_name), ALICE, deadline=180)
    finally:
        most = sampler.stop()
    assert j["state"] == want, j
    return j, most


def nothing_held(*jobs):
    for job in jobs:
        assert not q("SELECT vmid FROM vmid_alloc WHERE job = '%s' AND state = 'reserved'" % job)
        assert not q("SELECT node FROM capacity WHERE job = '%s' AND settled_at IS NULL" % job)


def events(job, kind):
    ev = px.call("GET", "/v1/events?type=%s&limit=1000" % kind, ALICE).json()["events"]
    return [e for e in ev if e["job"] == job]


def other_os(vmid):
    return "debian" if look(vmid)["os"] == "ubuntu" else "ubuntu"


VM = {}
print("seed %d" % SEED, flush=True)


@case
def on_its_node_the_temporary_disk_is_on_the_pool():
    wait_for(lambda: all(node_view(n)["storage_shared"] for n in POOL_NODES), deadline=30,
             interval=0.1, what="the inventory of the pool")
    VM["p"] = create("sh-p", "sv1")
    VM["l1"] = create("sh-l1", "sv4")
    VM["l2"] = create("sh-l2", "sv5")
    vmid = VM["p"]
    before, used = look(vmid), pool_bytes()
    assert before["storage"] == "ceph", before
    total = set_pool(DISK_GB + 6)  # room for the temporary disk
    j, most = reinstall(vmid, "debian", "done")
    after = look(vmid)
    same_identity(before, after)
    assert after["os"] == "debian" and after["storage"] == "ceph", after
    assert after["power"] == "running" and after["unused"] == [] and temps() == [], after
    # the new disk (the temporary VM's) was made on the pool; the pool holds
    # one disk of the VM again, and never held more than it may
    assert most <= (total - MARGIN_GB) * GiB, (used, most, total)
    assert pool_bytes() == used, (pool_bytes(), used)
    assert not events(j["id"], "vm.moved") and len(events(j["id"], "vm.reinstalled")) == 1
    nothing_held(j["id"])


@case
def a_reinstall_and_a_creation_race_for_the_pools_last_room():
    vmid = VM["p"]
    before = look(vmid)
    total = set_pool(DISK_GB + 6)  # one more disk, not two
    # the creation can only go to the pool: sv4 and sv5 have no room
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": "sh-race", "cores": 1,
                                              "memory_mb": 1024, "disk_gb": DISK_GB}, want=202)
        ri = submit(vmid, other_os(vmid))
        jc = px.wait_job(r.json()["job"], ALICE, deadline=120)
        jr = px.wait_job(ri, ALICE, deadline=180)
    finally:
        most = sampler.stop()
    states = sorted([jc["state"], jr["state"]])
    assert states == ["done", "failed"], (jc, jr)
    lost = jc if jc["state"] == "failed" else jr
    assert "shared storage ceph" in str(lost), lost
    assert most <= (total - MARGIN_GB) * GiB, (most / GiB, total)
    after = look(vmid)
    same_identity(before, after)
    assert after["power"] == "running" and temps() == [], after
    nothing_held(jc["id"], jr["id"])
    print("    %s got the room, %s refused: %s" % (
        "the creation" if jc["state"] == "done" else "the reinstall",
        "the creation" if jc["state"] == "failed" else "the reinstall", lost.get("error")))
    if jc["state"] == "done":  # its room back to the pool
        d = px.call("DELETE", "/v1/vms/%d" % jc["vmid"], ALICE, want=202).json()["job"]
        assert px.wait_job(d, ALICE)["state"] == "done"


@case
def onto_the_pool_the_old_disk_needs_room_too():
    vmid = VM["l1"]
    before = look(vmid)
    assert before["node"] == "sv4" and before["storage"] == "local-lvm", before
    # room on the pool for the new disk, not for the old one as well
    total = set_pool(DISK_GB + 6)
    j, most = reinstall(vmid, "debian", "failed")
    assert "no room for the new disk and the VM's local disks on shared storage ceph" \
        in j["error"], j
    assert "nothing was changed" in j["error"], j
    assert most <= (total - MARGIN_GB) * GiB, (most / GiB, total)
    assert look(vmid) == before and temps() == [], (look(vmid), before)
    nothing_held(j["id"])
    # room for both
    used = pool_bytes()
    total = set_pool(2 * DISK_GB + 6)
    j, most = reinstall(vmid, "debian", "done")
    assert most <= (total - MARGIN_GB) * GiB, (most / GiB, total)
    after = look(vmid)
    same_identity(before, after, node=False)
    assert after["node"] in POOL_NODES and after["storage"] == "ceph", after
    assert after["os"] == "debian" and after["power"] == "running", after
    assert after["unused"] == [] and temps() == [], (after, temps())
    # the pool holds the VM's disk now (and its cloud-init drive)
    assert used + DISK_GB * GiB <= pool_bytes() <= used + DISK_GB * GiB + 8 * 1024 ** 2
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["node"] == after["node"] and rec["os"] == "debian", rec
    assert len(events(j["id"], "vm.moved")) == 1 and len(events(j["id"], "vm.reinstalled")) == 1
    nothing_held(j["id"])


@case
def a_fault_at_the_swap_on_the_pool_keeps_the_old_os():
    vmid = VM["p"]
    # the boot disk has drive options: the restore attaches it with them
    drive = sim.vm(vmid)["conf"]["scsi0"]
    opts = ",discard=on,iothread=1,ssd=1,cache=writeback"
    sim.ctl("POST", "/vms/%d" % vmid, {"conf": {"scsi0": drive.split(",")[0] + opts + ",size=" +
                                                 drive.split("size=")[1].split(",")[0]}})
    drive = sim.vm(vmid)["conf"]["scsi0"]
    before, used = look(vmid), pool_bytes()
    set_pool(4 * DISK_GB)  # and the kills' below
    # the new disk's move into the VM fails (its task)
    sim.ctl("POST", "/faults", {"method": "POST", "path": r"^/nodes/sv1/qemu/\d+/move_disk$",
                                "kind": "task_error", "count": 1,
                                "message": "injected at the swap"})
    try:
        j, most = reinstall(vmid, other_os(vmid), "failed")
    finally:
        hits = sim.clear_faults()
    assert hits, "the fault never hit"
    assert "keeps %s" % before["os"] in j["error"], j
    after = look(vmid)
    same_identity(before, after)
    assert after["os"] == before["os"] and after["disk"] == before["disk"], after
    assert after["power"] == "running" and after["unused"] == [] and temps() == [], after
    assert sim.vm(vmid)["conf"]["scsi0"] == drive, (sim.vm(vmid)["conf"]["scsi0"], drive)
    assert pool_bytes() == used, (pool_bytes() / GiB, used / GiB)
    nothing_held(j["id"])


def kill_at(vmid, aim):
    """A reinstall of vmid with proxd killed at step `aim` (or "migrating":
    the migration's task under way), then restarted. The job, once ended."""
    job = submit(vmid, other_os(vmid))
    wait_step(px.db, job, aim)
    px.kill()
    t0 = time.monotonic()
    at = q("SELECT step FROM jobs WHERE id = '%s'" % job)[0][0]
    expire_leases(px.db)
    px.start()
    t1 = time.monotonic()
    j = px.wait_job(job, ALICE, deadline=240)
    print("    VM %d: killed at %s, %s %s (restarted in %.1f s, ended %.1f s after the kill)"
          % (vmid, at, j["state"], j.get("error") or "", t1 - t0, time.monotonic() - t0))
    return j


@case
def kill_during_reinstalls_on_the_pool():
    set_pool(4 * DISK_GB)
    # on the pool's node, at the swap
    vmid = VM["p"]
    before, used = look(vmid), pool_bytes()
    j = kill_at(vmid, "swap")
    after = look(vmid)
    same_identity(before, after)
    assert (after["os"] == before["os"]) == (j["state"] == "failed"), (j, before, after)
    assert after["power"] == "running" and after["unused"] == [] and temps() == [], after
    assert [v["vmid"] for v in sim.state()["vms"]].count(vmid) == 1
    assert pool_bytes() == used, (pool_bytes() / GiB, used / GiB)
    nothing_held(j["id"])
    # onto the pool from a full node (sv5; sv4 has no room for both disks
    # either), killed while the migration's task runs
    vmid = VM["l2"]
    before = look(vmid)
    j = kill_at(vmid, "migrating")
    after = look(vmid)
    same_identity(before, after, node=False)
    assert after["power"] == "running" and after["unused"] == [] and temps() == [], after
    assert [v["vmid"] for v in sim.state()["vms"]].count(vmid) == 1
    if j["state"] == "done":
        assert after["node"] in POOL_NODES and after["storage"] == "ceph", (j, after)
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["node"] == after["node"] and rec["os"] == after["os"], (rec, after)
    nothing_held(j["id"])
    # and nothing is reserved on any node once the inventory shows the VMs
    t0 = time.monotonic()
    wait_for(lambda: all(n["disk_gb"]["reserved"] == 0 and n["memory_mb"]["reserved"] == 0
                         for n in px.call("GET", "/v1/nodes", ADMIN).json()["nodes"]),
             deadline=30, interval=0.2, what="no reservation left")
    print("    no reservation left %.1f s after the last job" % (time.monotonic() - t0))


try:
    finish()
finally:
    shutdown(px, sim)
