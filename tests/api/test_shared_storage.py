"""Capacity on a shared storage (Ceph, NFS), black-box against pvesim: five
nodes of one cluster whose VM storage is one pool of 100 GiB that every
node reports whole (pvesim counts the disks of all nodes' VMs in it, as a
real cluster does). 12 creations of 20 GiB at once, spread over the nodes,
never take more than the pool holds beyond the margin (pvesim's own count,
sampled throughout, and no clone of pvesim's failing for lack of space),
and those refused fail with an error that names the shared storage. Then
with the pool nearly full (less free than one VM's disk), a drain of a
node moves its VMs: their disks stay on the pool, so no disk is reserved
on the targets.

PROXD_TEST_DB=postgresql://... runs it on PostgreSQL.
"""
import os

from lib.cases import case, finish
from lib.fleet import GiB, PoolSampler, pool_used as pool_of, shared_pool_fleet
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

DB = os.environ.get("PROXD_TEST_DB")
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
POOL_GB, MARGIN_GB, DISK_GB, N_CREATE = 100, 10, 20, 12
FIT = (POOL_GB - MARGIN_GB) // DISK_GB  # 4

sim = Sim(time_scale=0.005, fleet=shared_pool_fleet(NODES, POOL_GB))
# every node's VM storage: the shared pool. quarantine = 0 (api_config's):
# a refused creation's VMID goes at once to the next POST, whose record
# must not meet the failed one still live (create.c's finish_failed)
px = Proxd(sim, database=DB, storage="ceph",
           proxd_extra="reconcile_interval = 5\n\n[limits]\n"
           "memory_margin_mb = 1024\ndisk_margin_gb = %d\n" % MARGIN_GB)
ADMIN = px.token("ops", "admin")
USER = px.token("sh")
px.start()


def pool_used():
    """pvesim's count of the pool's bytes (lib.fleet.pool_used)."""
    return pool_of(sim.state())


def clone_failures():
    """pvesim's clone tasks that failed (a full pool refuses a copy)."""
    out = []
    for node in NODES:
        for t in sim.data("GET", "/nodes/%s/tasks" % node, params={"limit": 1000, "errors": 1}):
            if t["type"] == "qmclone":
                out.append((node, t["status"]))
    return out


MADE = []


@case
def creations_never_overcommit_the_shared_pool():
    def shared_seen():
        ns = px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]
        return all(n["storage"] == "ceph" and n["storage_shared"] and
                   n["disk_gb"]["total"] == POOL_GB for n in ns)
    wait_for(shared_seen, deadline=30, interval=0.1, what="inventory of the shared pool")
    sampler = PoolSampler(sim)
    sampler.start()
    try:
        subs = [px.call("POST", "/v1/vms", USER, {"os": "ubuntu", "name": "sh-%d" % i,
                                                  "cores": 1, "memory_mb": 1024,
                                                  "disk_gb": DISK_GB},
                        want=202).json() for i in range(N_CREATE)]
        jobs = [px.wait_job(s["job"], USER, deadline=240) for s in subs]
    finally:
        sampler.stop()
    done = [j for j in jobs if j["state"] == "done"]
    failed = [j for j in jobs if j["state"] == "failed"]
    MADE.extend(j["vmid"] for j in done)
    assert len(done) + len(failed) == N_CREATE, jobs
    assert 1 <= len(done) <= FIT, (len(done), [j.get("error") for j in failed])
    # the pool never held more than its size less the margin, by pvesim
    seen, disks = pool_used()
    assert len(seen) == 1, seen  # one pool, the same figure from every node
    # each VM: its disk and its cloud-init drive (4 MiB), both cloned onto the pool
    assert disks == len(done) * (DISK_GB * GiB + 4 * 1024 ** 2), (disks, len(done))
    assert sampler.samples > 0 and sampler.most <= (POOL_GB - MARGIN_GB) * GiB, \
        (sampler.samples, sampler.most / GiB)
    assert clone_failures() == [], clone_failures()
    # each refusal names the shared storage
    for j in failed:
        text = str(j.get("error")) + str(j.get("attempts"))
        assert "not enough space on shared storage ceph of cluster pvesim" in text, j
    # the VMs were made through several nodes (placement spreads them)
    nodes = {sim.vm(j["vmid"])["node"] for j in done}
    print("    %d of %d creations done on %s, %d refused; pool at most %.0f GiB of %d "
          "(%d samples)" % (len(done), N_CREATE, sorted(nodes), len(failed),
                            sampler.most / GiB, POOL_GB, sampler.samples))


@case
def drain_onto_a_full_pool_moves_disks_in_place():
    assert MADE, "the creations above made no VM"
    on = {}
    for v in MADE:
        on.setdefault(sim.vm(v)["node"], []).append(v)
    src = max(on, key=lambda n: len(on[n]))
    seen, before = pool_used()
    # the pool: less free than one VM's disk plus the margin
    total_gb = before // GiB + MARGIN_GB + DISK_GB // 2
    for n in NODES:
        sim.ctl("POST", "/nodes/" + n, {"storage_gb": {"ceph": total_gb}})

    def seen_small():
        ns = px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]
        return all(n["disk_gb"]["total"] == total_gb for n in ns)
    wait_for(seen_small, deadline=30, interval=0.1, what="inventory of the smaller pool")
    confs = {v: dict(sim.vm(v)["conf"]) for v in on[src]}
    d = px.call("POST", "/v1/nodes/%s/drain" % src, ADMIN, want=202).json()
    j = px.wait_job(d["job"], ADMIN, deadline=240)
    assert j["state"] == "done", j
    res = j["result"]
    assert sorted(m["vmid"] for m in res["moved"]) == sorted(on[src]), res
    assert res["stayed"] == [], res["stayed"]
    for v in on[src]:
        now = sim.vm(v)
        assert now["node"] != src, now
        # the disk did not move: the same volume on the pool
        assert now["conf"]["scsi0"] == confs[v]["scsi0"], (confs[v]["scsi0"], now["conf"])
    # the pool grew by the local cloud-init drives (4 MiB) that moved onto it only
    seen, after = pool_used()
    assert before <= after <= before + len(on[src]) * 4 * 1024 ** 2, (before, after)
    # a creation still gets the clear refusal (the pool is full)
    r = px.call("POST", "/v1/vms", USER, {"os": "ubuntu", "name": "late", "cores": 1,
                                          "memory_mb": 1024, "disk_gb": DISK_GB}, want=202).json()
    late = px.wait_job(r["job"], USER, deadline=120)
    assert late["state"] == "failed", late
    assert "not enough space on shared storage ceph of cluster pvesim" in str(late), late
    print("    drained %s: %d VMs moved with their disks in place, pool %d of %d GiB" % (
        src, len(res["moved"]), after // GiB, total_gb))


shutdown(px, sim)
finish()
