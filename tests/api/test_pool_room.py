"""What a shared pool's room is reserved for, besides a creation's disk
(black-box against pvesim; five nodes keep their VMs on one Ceph pool
that each reports whole, and pvesim's pool use is sampled throughout each
case: lib.fleet.PoolSampler):
  - a creation reserves the cloud-init drive its clone gets (4 MiB, as
    on PVE) beside its disk: with room for the disk and 2 MiB more it is
    refused naming the shared storage and what it needs ("12 GiB + 4 MiB"),
    with room for both it is made and fills the pool to its size less the
    margin exactly (before: the 2 MiB room took the creation, and the pool
    held 2 MiB more than its size less the margin);
  - a disk resize reserves its growth in the pool under its job, as a
    creation does: a resize and a creation racing for the pool's last room
    (room for either, not both) end with one done and the other refused
    naming the shared storage, the pool never over (before: the resize,
    checked when submitted and never reserved, and the creation both went
    through);
  - a resize refused by its job (the room taken meanwhile) holds nothing
    afterwards; a resize that went through holds its growth until an
    inventory shows it, then nothing.
Every case ends with nothing held in the store for its jobs (no VMID, no
unsettled capacity). POOL_ROOM_SEED overrides pvesim's seed.
"""
import os
import time

from lib.cases import case, finish
from lib.db import query
from lib.fleet import GiB, PoolSampler, pool_used, shared_pool_fleet
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

MiB = 1024 ** 2
SEED = int(os.environ.get("POOL_ROOM_SEED", "2207"))
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
POOL_GB, MARGIN_GB, DISK_GB = 100, 10, 12

sim = Sim(time_scale=0.005, extra=["--seed", str(SEED)], fleet=shared_pool_fleet(NODES, POOL_GB))
# the inventory is read at every reconcile pass: proxd sees a changed pool
# within a second or two
px = Proxd(sim, storage={n: "ceph" for n in NODES},
           proxd_extra="reconcile_interval = 1\n\n[limits]\ndisk_margin_gb = %d\n" % MARGIN_GB)
ALICE = px.token("alice")
ADMIN = px.token("root", role="admin")
px.start()


def q(sql):
    return query(px.db, sql)


def views():
    return {n["name"]: n for n in px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]}


def pool_bytes():
    seen, _ = pool_used(sim.state())
    assert len(seen) == 1, seen
    return seen.pop()


def set_pool(room):
    """The pool's size: what it holds, the margin and `room` bytes more (on
    every node: it is one pool); waits until proxd has read every node's
    inventory twice since (the second read began after the change).
    Returns the size in bytes."""
    total = pool_bytes() + MARGIN_GB * GiB + room
    before = {n: v["refreshed_at"] for n, v in views().items()}
    for n in NODES:
        sim.ctl("POST", "/nodes/" + n, {"storage_gb": {"ceph": total / GiB}})
    seen = {n: [] for n in NODES}

    def twice():
        for n, v in views().items():
            if v["refreshed_at"] != before[n] and v["refreshed_at"] not in seen[n]:
                seen[n].append(v["refreshed_at"])
        return all(len(s) >= 2 for s in seen.values())
    wait_for(twice, deadline=30, interval=0.1, what="proxd to read the pool at its new size")
    st = [x for x in sim.state()["nodes"][0]["storages"] if x["id"] == "ceph"][0]
    return st["total"]


def create(name, disk_gb=DISK_GB):
    r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                          "memory_mb": 1024, "disk_gb": disk_gb}, want=202)
    return r.json()["job"]


def nothing_held(*jobs):
    for job in jobs:
        assert not q("SELECT vmid FROM vmid_alloc WHERE job = '%s' AND state = 'reserved'" % job)
        assert not q("SELECT node FROM capacity WHERE job = '%s' AND settled_at IS NULL" % job)


def no_reservation_left():
    wait_for(lambda: all(v["disk_gb"]["reserved"] == 0 for v in views().values()), deadline=30,
             interval=0.2, what="no reservation left on the pool")


def delete(vmid):
    d = px.call("DELETE", "/v1/vms/%d" % vmid, ALICE, want=202).json()["job"]
    assert px.wait_job(d, ALICE, deadline=120)["state"] == "done"


VM = {}
print("seed %d" % SEED, flush=True)


@case
def a_creation_reserves_its_cloud_init_drive():
    wait_for(lambda: all(v["storage_shared"] for v in views().values()), deadline=30,
             interval=0.1, what="the inventory of the pool")
    # room for the disk and 2 MiB: not for the cloud-init drive as well
    total = set_pool(DISK_GB * GiB + 2 * MiB)
    used = pool_bytes()
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        j = px.wait_job(create("ci-short"), ALICE, deadline=120)
    finally:
        most = sampler.stop()
    assert j["state"] == "failed", j
    assert "not enough space on shared storage ceph" in str(j), j
    assert "12 GiB + 4 MiB needed" in str(j), j
    assert most <= total - MARGIN_GB * GiB, ((most - total) / MiB, MARGIN_GB)
    assert pool_bytes() == used
    nothing_held(j["id"])
    # room for both: made, the pool full to its size less the margin
    total = set_pool(DISK_GB * GiB + 4 * MiB)
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        j = px.wait_job(create("ci-fits"), ALICE, deadline=120)
    finally:
        most = sampler.stop()
    assert j["state"] == "done", j
    assert most <= total - MARGIN_GB * GiB, ((most - total) / MiB, MARGIN_GB)
    assert pool_bytes() == total - MARGIN_GB * GiB, ((pool_bytes() - total) / MiB)
    conf = sim.vm(j["vmid"])["conf"]
    assert conf["ide2"].startswith("ceph:") and "size=4M" in conf["ide2"], conf
    nothing_held(j["id"])
    VM["r"] = j["vmid"]


@case
def a_resize_and_a_creation_race_for_the_pools_last_room():
    vmid = VM["r"]
    # room for the resize's 12 GiB or the creation's 12 GiB + 4 MiB, not both
    total = set_pool(DISK_GB * GiB + 100 * MiB)
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        # the resize first: its submission sees the room free (nothing holds
        # it yet), so only its job's reservation keeps the creation out
        r = px.call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {"disk_gb": 2 * DISK_GB})
        assert r.status_code == 202, r.text
        jc = create("race")
        jr = px.wait_job(r.json()["job"], ALICE, deadline=120)
        jc = px.wait_job(jc, ALICE, deadline=120)
    finally:
        most = sampler.stop()
    states = sorted([jc["state"], jr["state"]])
    assert states == ["done", "failed"], (jc, jr)
    lost = jc if jc["state"] == "failed" else jr
    assert "shared storage ceph" in str(lost), lost
    assert most <= total - MARGIN_GB * GiB, ((most - total) / MiB, MARGIN_GB)
    nothing_held(jc["id"], jr["id"])
    print("    %s got the room; %s" % ("the creation" if jc["state"] == "done" else "the resize",
                                       lost.get("error")))
    size = sim.vm(vmid)["conf"]["scsi0"].split("size=")[1].split(",")[0]
    assert size == ("%dG" % (2 * DISK_GB) if jr["state"] == "done" else "%dG" % DISK_GB), size
    no_reservation_left()
    if jc["state"] == "done":
        delete(jc["vmid"])


@case
def a_resize_refused_by_its_job_holds_nothing():
    vmid = VM["r"]
    disk = px.call("GET", "/v1/vms/%d" % vmid, ALICE, want=200).json()["disk_gb"]
    # room for 12 GiB and a cloud-init drive: the resize's 4 GiB pass its
    # submission; a creation (10 GiB, the template's size) takes the room
    # while the resize's job waits for the VM's config (pvesim holds its
    # reads' answers until the creation has reserved), so the job finds 2 GiB
    set_pool(12 * GiB + 4 * MiB)
    sim.ctl("POST", "/faults", {"method": "GET", "path": r"^/nodes/sv\d/qemu/%d/config$" % vmid,
                                "kind": "delay", "delay_ms": 600000})
    try:
        r = px.call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {"disk_gb": disk + 4})
        assert r.status_code == 202, r.text
        jc = create("taker", disk_gb=10)
        wait_for(lambda: q("SELECT node FROM capacity WHERE job = '%s'" % jc), deadline=30,
                 interval=0.02, what="the creation's reservation")
        # the order this case is about: the creation reserved first
        assert not q("SELECT node FROM capacity WHERE job = '%s'" % r.json()["job"]), \
            "the resize's job reserved before the creation: pvesim's delay did not hold it"
    finally:
        sim.clear_faults()  # no read held back from now on,
        sim.release_late()  # and the ones held go now
    jc = px.wait_job(jc, ALICE, deadline=120)
    jr = px.wait_job(r.json()["job"], ALICE, deadline=120)
    assert jc["state"] == "done", jc
    assert jr["state"] == "failed", jr
    assert "resize refused: not enough space on shared storage ceph" in jr["error"], jr
    assert sim.vm(vmid)["conf"]["scsi0"].endswith("size=%dG" % disk), sim.vm(vmid)
    assert not q("SELECT node FROM capacity WHERE job = '%s'" % jr["id"])
    nothing_held(jc["id"], jr["id"])
    delete(jc["vmid"])
    # with the room back, the resize goes through and holds its growth until
    # an inventory shows it
    set_pool(4 * GiB)
    r = px.call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {"disk_gb": disk + 4})
    assert r.status_code == 202, r.text
    jr = px.wait_job(r.json()["job"], ALICE, deadline=120)
    assert jr["state"] == "done", jr
    nothing_held(jr["id"])
    t0 = time.monotonic()
    no_reservation_left()
    print("    the growth's reservation gone %.1f s after the resize" % (time.monotonic() - t0))


try:
    finish()
finally:
    shutdown(px, sim)
