"""An address a container (LXC) has is taken in the pool its network is.

The config walk read VMs' configs only (their cloud-init ipconfigN), so a
container's static address (`ip=10.20.0.10/24` in its netN, which pct sets
on the interface itself) was not seen: a creation with that pool was handed
the same address, two guests on one customer network. Now the walk reads
containers' configs too (GET /nodes/{node}/lxc/{vmid}/config, their net0..31):
  - a container holding the pool's first free address: a creation gets the
    next one; the address is marked foreign, noted with the container;
  - an admin asking for it is refused (409 `conflict` on addresses.lan);
  - a container on DHCP, or with an address outside every pool, claims
    nothing: its neighbour address is handed out;
  - a container whose config Proxmox refuses to show (403: the token lacks
    VM.Audit on it) keeps its address unknown to the pool: proxd warns,
    naming it and the privilege, once (it said so at debug level only).
"""
from lib.cases import case, finish
from lib.db import query
from lib.proxd import Proxd
from lib.sim import Sim
from lib.wait import wait_for

NODES = ["sv1", "sv2", "sv3"]
POOL = """
[ippool lan]
cidr = 10.20.0.0/24
gateway = 10.20.0.1
ranges = 10.20.0.10-10.20.0.20
bridge = vmbr0
"""
FLEET = {
    "nodes": [{"name": n} for n in NODES],
    "containers": [
        # the pool's first address, in the net0 of a running container
        {"vmid": 300, "node": "sv2", "hostname": "web", "status": "running",
         "ip": "10.20.0.10/24", "gw": "10.20.0.1"},
        # a stopped one still holds its address: it has it again when started
        {"vmid": 301, "node": "sv3", "hostname": "db", "status": "stopped", "ip": "10.20.0.12/24"},
        # no static claim: DHCP, or outside every pool
        {"vmid": 302, "node": "sv1", "hostname": "dhcp", "status": "running"},
        {"vmid": 303, "node": "sv1", "hostname": "other", "status": "running", "ip": "192.168.5.11/24"},
    ],
}


def key_of(addr):
    """ippool_addr_key() of an IPv4 address."""
    a, b, c, d = (int(x) for x in addr.split("."))
    return "4" + "0" * 24 + "%02x%02x%02x%02x" % (a, b, c, d)


def row(px, addr):
    rows = query(px.db, "SELECT state, note FROM addr_alloc WHERE addr = ?", (key_of(addr),))
    return rows[0] if rows else None


def setup(sim):
    px = Proxd(sim, proxd_extra="reconcile_interval = 3600\n", sections=POOL)
    with open(px.conf) as f:
        text = f.read()
    with open(px.conf, "w") as f:
        f.write(text.replace("[os ubuntu]\n", "[os ubuntu]\nippools = lan\n", 1))
    return px


@case
def a_containers_address_is_not_handed_out():
    sim = Sim(nodes=",".join(NODES), time_scale=0.05, fleet=FLEET)
    px = setup(sim)
    try:
        admin = px.token("root", role="admin")
        px.start()
        # the walk at start-up reads the containers too
        wait_for(lambda: row(px, "10.20.0.10") and row(px, "10.20.0.12"), 30, 0.2,
                 what="the containers' addresses marked foreign")
        assert row(px, "10.20.0.10") == ("foreign", "ct 300 on sv2"), row(px, "10.20.0.10")
        assert row(px, "10.20.0.12") == ("foreign", "ct 301 on sv3"), row(px, "10.20.0.12")
        r = px.call("POST", "/v1/vms", admin, {"os": "ubuntu", "name": "a", "cores": 1,
                                               "memory_mb": 512, "disk_gb": 10})
        assert r.status_code == 202, r.text
        j = px.wait_job(r.json()["job"], admin, deadline=90)
        assert j["state"] == "done", j
        vm = px.call("GET", "/v1/vms/%d" % r.json()["vmid"], admin).json()
        assert [a["address"] for a in vm["network"]["addresses"]] == ["10.20.0.11"], vm["network"]
        # asked for by name: taken
        r = px.call("POST", "/v1/vms", admin, {"os": "ubuntu", "name": "b", "cores": 1,
                                               "memory_mb": 512, "disk_gb": 10,
                                               "addresses": {"lan": "10.20.0.12"}})
        assert r.status_code == 409 and "addresses.lan" in r.text, r.text
        # DHCP and an address outside the pools claim nothing
        assert row(px, "192.168.5.11") is None
    finally:
        if px.alive():
            px.stop()
        sim.stop()


@case
def a_container_whose_config_is_refused_is_warned_of():
    sim = Sim(nodes=",".join(NODES), time_scale=0.05, fleet=FLEET)
    px = setup(sim)
    try:
        sim.add_faults([{"kind": "error", "status": 403,
                         "message": "Permission check failed (/vms/300, VM.Audit)",
                         "method": "GET", "path": r"^/nodes/sv2/lxc/300/config$"}])
        px.start()
        # the walk at start-up: the other container's address is seen
        wait_for(lambda: row(px, "10.20.0.12"), 30, 0.2, what="container 301's address")
        want = ("1 guest config(s) cannot be read, permission denied (the first, container 300 "
                "on sv2: Permission check failed (/vms/300, VM.Audit))")
        wait_for(lambda: want in px.log_text(), 30, 0.2, what="the warning")
        assert "level=warn" in [ln for ln in px.log_text().splitlines() if want in ln][0]
        assert row(px, "10.20.0.10") is None  # what the warning warns of
    finally:
        if px.alive():
            px.stop()
        sim.stop()


finish()
