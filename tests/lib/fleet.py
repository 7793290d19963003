"""A large simulated fleet for pvesim, written as files it reads at start:
a fleet file (--fleet: nodes, their CPUs, memory and storages) and a state
file (--state-dir DIR: DIR/state.json, the VMs). This is the fast way to
seed pvesim with tens of thousands of VMs: the scale test
(tests/sim/test_scale.py) and the benchmark (bench/bench_sim.py) use it.

The VMs look like the ones proxd creates from a template: a name, 1-4
cores, 1-8 GiB, a 10-40 GiB scsi0 on local-lvm, a cloud-init drive, a NIC,
tag "proxd"; a deterministic share of them run (every third), are HA
managed (every 50th) or carry a config lock (every 97th, "backup").

As a program: python3 -m lib.fleet DIR N_VMS [N_NODES] writes DIR/fleet.json and
DIR/state/state.json.
"""
import json
import os
import sys
import threading

GiB = 1024 ** 3


def node_names(n_nodes):
    return ["sv%d" % (i + 1) for i in range(n_nodes)]


def vm_conf(vmid, i, pve_version=9):
    cores = 1 + i % 4
    mem_mb = 1024 * (1 + i % 8)
    disk_gb = 10 * (1 + i % 4)
    conf = {
        "name": "vm-%d" % vmid,
        "cores": cores,
        "sockets": 1,
        "memory": str(mem_mb) if pve_version >= 8 else mem_mb,
        "scsihw": "virtio-scsi-pci",
        "scsi0": "local-lvm:vm-%d-disk-0,size=%dG" % (vmid, disk_gb),
        "ide2": "local-lvm:vm-%d-cloudinit,media=cdrom,size=4M" % vmid,
        "net0": "virtio=BC:24:11:%02X:%02X:%02X,bridge=vmbr0" % ((i >> 16) & 255, (i >> 8) & 255, i & 255),
        "boot": "order=scsi0",
        "ostype": "l26",
        "agent": "1",
        "ipconfig0": "ip=dhcp",
        "smbios1": "uuid=%08x-0000-4000-8000-%012d" % (vmid, vmid),
        "tags": "proxd",
    }
    if i % 97 == 0:
        conf["lock"] = "backup"
    return conf


def vm_entries(n_vms, nodes, first_vmid=10000, pve_version=9):
    """The state file's "vms" entries, spread round-robin over nodes."""
    for i in range(n_vms):
        vmid = first_vmid + i
        ha = i % 50 == 0
        yield {
            "vmid": vmid,
            "node": nodes[i % len(nodes)],
            "power": "running" if i % 3 == 0 else "stopped",
            "conf": vm_conf(vmid, i, pve_version),
            "pending": {},
            "pending_delete": [],
            "ha": ha,
            "ha_state": "started" if ha else "",
            "acpi": True,
        }


def shared_pool_fleet(names, pool_gb, pool="ceph", lvm_gb=200):
    """A fleet for Sim(fleet=...): nodes `names` of one cluster, each with
    local (dir), local-lvm of lvm_gb and the shared storage `pool` of
    pool_gb (an RBD storage marked shared: every node reports the same
    pool, and pvesim counts all nodes' disks on it in one figure, as a real
    cluster does). proxd uses the pool on the nodes whose configured
    storage it is (lib.proxd's `storage`)."""
    return {"nodes": [
        {"name": n, "storages": [
            {"id": "local", "type": "dir", "content": "iso,vztmpl,backup", "total_gb": 100,
             "used_gb": 12},
            {"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
             "total_gb": lvm_gb},
            {"id": pool, "type": "rbd", "content": "images", "total_gb": pool_gb,
             "shared": True}]}
        for n in names]}


def pool_used(state, pool="ceph"):
    """From a pvesim state (Sim.state()): the pool's used bytes as the nodes
    report it (a set: one figure when it is one pool) and the sum of the
    VMs' disks on it."""
    seen = {s["used"] for n in state["nodes"] for s in n["storages"] if s["id"] == pool}
    disks = 0
    for v in state["vms"]:
        for d in v["conf"].values():
            if isinstance(d, str) and d.startswith(pool + ":") and "size=" in d:
                size = d.split("size=")[1].split(",")[0]
                disks += int(size[:-1]) * (GiB if size.endswith("G") else 1024 ** 2)
    return seen, disks


class PoolSampler(threading.Thread):
    """The most of the pool pvesim held, sampled every 50 ms from start()
    until stop(): self.most (bytes, the larger of the nodes' figure and the
    disks' sum), self.samples."""

    def __init__(self, sim, pool="ceph"):
        super().__init__(daemon=True)
        self.sim, self.pool = sim, pool
        self.halt = threading.Event()
        self.most, self.samples = 0, 0

    def run(self):
        while not self.halt.is_set():
            seen, disks = pool_used(self.sim.state(), self.pool)
            self.most = max([self.most, disks] + list(seen))
            self.samples += 1
            self.halt.wait(0.05)

    def stop(self):
        self.halt.set()
        self.join()
        return self.most


def write(dirpath, n_vms, n_nodes=5, first_vmid=10000, pve_version=9):
    """Write DIR/fleet.json and DIR/state/state.json; returns
    (fleet_path, state_dir, node_names)."""
    nodes = node_names(n_nodes)
    per_node = (n_vms + n_nodes - 1) // max(n_nodes, 1)
    fleet = {
        "nodes": [
            {"name": n, "cpus": 128, "memory_gb": 8 * 1024,
             "storages": [
                 {"id": "local", "type": "dir", "content": "iso,vztmpl,backup", "total_gb": 100, "used_gb": 12},
                 {"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
                  "total_gb": max(1024, per_node * 64)}]}
            for n in nodes]
    }
    os.makedirs(os.path.join(dirpath, "state"), exist_ok=True)
    fleet_path = os.path.join(dirpath, "fleet.json")
    with open(fleet_path, "w") as f:
        json.dump(fleet, f)
    state_dir = os.path.join(dirpath, "state")
    with open(os.path.join(state_dir, "state.json"), "w") as f:
        f.write('{"nodes":%s,"vms":[' % json.dumps([{"name": n, "state": "online"} for n in nodes]))
        for k, e in enumerate(vm_entries(n_vms, nodes, first_vmid, pve_version)):
            if k:
                f.write(",")
            f.write(json.dumps(e, separators=(",", ":")))
        f.write('],"tasks":[]}\n')
    return fleet_path, state_dir, nodes


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python3 -m lib.fleet DIR N_VMS [N_NODES]")
    write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 5)
