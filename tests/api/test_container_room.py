"""A node's room that containers take is no room for a VM.

Placement reads a node's memory and storage use from Proxmox; a real node
counts its containers in them (the host's figures), pvesim did not, so
against pvesim a node full of containers looked empty and got the VM. With
placement = ordered (sv1 first), a container whose rootfs fills sv1's
local-lvm sends the creation to sv2, and one whose memory fills sv2 to sv3.
"""
from lib.cases import case, finish
from lib.proxd import Proxd
from lib.sim import Sim

NODES = ["sv1", "sv2", "sv3"]
FLEET = {
    "nodes": [{"name": n} for n in NODES],
    "containers": [
        # local-lvm is 1024 GiB: 1010 of them are the container's (stopped: disk, no memory)
        {"vmid": 300, "node": "sv1", "status": "stopped", "disk_gb": 1010},
        # 64 GiB of memory: a running container uses a quarter of its 240000 MiB
        {"vmid": 301, "node": "sv2", "status": "running", "memory_mb": 240000},
    ],
}


@case
def a_node_full_of_containers_gets_no_vm():
    sim = Sim(nodes=",".join(NODES), time_scale=0.05, fleet=FLEET)
    px = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n")
    try:
        alice = px.token("alice")
        px.start()
        r = px.call("POST", "/v1/vms", alice, {"os": "ubuntu", "name": "a", "cores": 1,
                                               "memory_mb": 4096, "disk_gb": 20}, want=202)
        j = px.wait_job(r.json()["job"], alice, deadline=90)
        assert j["state"] == "done", j
        vm = px.call("GET", "/v1/vms/%d" % r.json()["vmid"], alice).json()
        assert vm["node"] == "sv3", (vm["node"], j)
    finally:
        if px.alive():
            px.stop()
        sim.stop()


finish()
