"""A creation's room on a shared pool while Proxmox's figures lag (pvesim
--pvestatd-cycle): a real cluster serves a node's storage use in
/cluster/resources from the RRD cache pvestatd refreshes about every 10 s,
so a read that began after a VM was made may not show its disk yet.

Five nodes keep their VMs on one Ceph pool with room for two creations'
disks (after the margin), not three. A first creation ends; the inventory
is read again (its figures still those of pvestatd's last report, before
the VM); then two creations come together. The first's room counted only
until a read that began after it was made, so both found the pool empty
but for each other: three disks on a pool with room for two. With
`[proxd] stats_lag` (proxd's default 15 s; longer here than pvesim's
cycle) its room counts until a read that began that long after: one of
the two is refused naming the shared storage, and the pool never holds
more than its room.
"""
import time

from lib.cases import case, finish
from lib.fleet import GiB, PoolSampler, shared_pool_fleet
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
MARGIN_GB, DISK_GB = 10, 12
POOL_GB = MARGIN_GB + 2 * DISK_GB + 1  # two creations' disks and drives, not three
CYCLE_S = 60  # pvesim's pvestatd cycle, real seconds (3000 PVE s at 0.02)
LAG_S = 90    # longer than the cycle: the test's creations all come within one

sim = Sim(time_scale=0.02, fleet=shared_pool_fleet(NODES, POOL_GB),
          extra=["--pvestatd-cycle", str(int(CYCLE_S / 0.02))])
T0 = time.monotonic()
px = Proxd(sim, storage={n: "ceph" for n in NODES}, proxmox_extra="timeout = 3\n",
           proxd_extra="reconcile_interval = 3600\nstats_lag = %d\n\n[limits]\n"
           "disk_margin_gb = %d\n" % (LAG_S, MARGIN_GB))
ALICE = px.token("alice")
px.start()


def inventory_reads():
    return sim.ctl("GET", "/calls")["calls"].get("GET /cluster/resources", 0)


def create(name):
    r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                          "memory_mb": 1024, "disk_gb": DISK_GB}, want=202)
    return r.json()["job"]


@case
def a_vm_just_made_keeps_its_room_while_the_figures_lag():
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        first = px.wait_job(create("lag-1"), ALICE, deadline=60)
        assert first["state"] == "done", first
        # a read of the inventory that began after the VM was made (proxd
        # reads again 5 s after the last when something wants it, here the
        # node list): its figures are those of pvestatd's report at pvesim's
        # start, without the VM's disk
        reads = inventory_reads()

        def read_again():
            px.call("GET", "/v1/nodes", ALICE)
            return inventory_reads() > reads

        wait_for(read_again, 30, 0.5, "the inventory read again")
        jobs = [create("lag-2"), create("lag-3")]
        ends = [px.wait_job(j, ALICE, deadline=60) for j in jobs]
        assert time.monotonic() - T0 < CYCLE_S, "pvestatd reported within the test: too slow"
    finally:
        most = sampler.stop()
    limit = (POOL_GB - MARGIN_GB) * GiB
    assert most <= limit, "the pool held %.2f GiB, more than its %d less the margin %d" % (
        most / GiB, POOL_GB, MARGIN_GB)
    states = sorted(e["state"] for e in ends)
    assert states == ["done", "failed"], ends
    failed = [e for e in ends if e["state"] == "failed"][0]
    assert "not enough space on shared storage ceph" in failed["error"], failed


shutdown(px, sim)
finish()
