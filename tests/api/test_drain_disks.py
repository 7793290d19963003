"""A drain's moves follow where each VM's disks really are, not the storage
the node is configured with (black-box against pvesim). Every node of the
cluster has a local storage (local-lvm) and a shared pool (ceph); proxd's
configuration puts sv1's new VMs on one and sv2's on the other, then the
other way round after a restart, so that each node holds VMs on both:

  sv1 (configured: ceph)       A: local-lvm 20 GiB
                               B: ceph 20 GiB + a local-lvm data disk of 8 GiB
  sv2 (configured: local-lvm)  C: ceph 20 GiB
                               D: local-lvm 20 GiB

The only target, sv3, has 15 GiB of room on its local-lvm (25 GiB, 10 GiB
margin). Draining sv1 then sv2: A and D stay (their 20 GiB local disk would
land on sv3's local-lvm: "not enough disk space"), B moves (8 GiB reserved
and copied to sv3's local-lvm, its ceph disk stays), C moves (nothing
reserved on sv3's storage: its disk stays on ceph). sv3's local-lvm never
holds more than its room. Before, proxd took "shared" from the source's
configured storage: A moved too (nothing reserved, sv3 over-committed) and
C stayed (20 GiB asked of sv3's local-lvm for a disk that stays on ceph).
Then C is reinstalled: the new disk does not fit on sv3, so it is made on
sv2 and C moves there; its ceph disk stays in the pool, so only the new
disk is reserved on sv2, which has
room for that but not for two disks (before: refused, "no room").
B's data disk and C's boot disk have no size= in their config lines (edited
by hand, behind PVE's back): proxd sizes them by their storage's content
listing, as PVE does (before: they counted 0 bytes, B's 8 GiB moved with
nothing reserved for them, and C's new disk was not grown to its old size).
"""
from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

GiB = 1024 ** 3
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
MARGIN_GB, DISK_GB, SV3_LOCAL_GB, SV2_LOCAL_GB = 10, 20, 25, 65


def storages(node):
    # the templates on a storage of their own (the first for images), so
    # that local-lvm and ceph hold only the test's VMs
    return [{"id": "tpl", "type": "dir", "content": "images,iso", "total_gb": 300},
            {"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
             "total_gb": {"sv2": SV2_LOCAL_GB, "sv3": SV3_LOCAL_GB}.get(node, 200)},
            {"id": "ceph", "type": "rbd", "content": "images", "total_gb": 500, "shared": True}]


sim = Sim(time_scale=0.005, fleet={"nodes": [{"name": n, "storages": storages(n)}
                                             for n in NODES]})
px = Proxd(sim, proxd_extra="reconcile_interval = 5\n\n[limits]\nmemory_margin_mb = 1024\n"
           "disk_margin_gb = %d\ndrain_parallel = 2\n" % MARGIN_GB)
BASE_CONF = open(px.conf).read()


def configure(storage_of):
    """proxd's configuration with each node's storage (sv4, sv5 cordoned
    by it: never a target)."""
    text = BASE_CONF
    for n in NODES:
        extra = "state = cordoned\n" if n in ("sv4", "sv5") else ""
        text = text.replace("[node %s]\n" % n, "[node %s]\n%s" % (n, extra))
        head = text.index("[node %s]\n" % n)
        at = text.index("storage = local-lvm\n", head)
        text = text[:at] + "storage = %s\n" % storage_of.get(n, "local-lvm") + \
            text[at + len("storage = local-lvm\n"):]
    with open(px.conf, "w") as f:
        f.write(text)


configure({"sv1": "local-lvm", "sv2": "ceph"})
ADMIN = px.token("ops", "admin")
USER = px.token("dd")
px.start()


def call(method, path, token=ADMIN, body=None, want=None):
    r = px.call(method, path, token, body)
    if want is not None:
        assert r.status_code == want, (method, path, r.status_code, r.text)
    return r


def cordon(node, on=True):
    call("POST", "/v1/nodes/%s/%s" % (node, "cordon" if on else "uncordon"), want=200)


def create_on(node, name):
    """A VM on `node` (the other candidates cordoned meanwhile): its VMID."""
    other = "sv2" if node == "sv1" else "sv1"
    cordon(other)
    cordon("sv3")
    try:
        r = call("POST", "/v1/vms", USER, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 1024, "disk_gb": DISK_GB}, want=202)
        v = r.json()
        j = px.wait_job(v["job"], USER, deadline=120)
        assert j["state"] == "done", j
    finally:
        cordon(other, False)
        cordon("sv3", False)
    assert sim.vm(v["vmid"])["node"] == node, sim.vm(v["vmid"])
    return v["vmid"]


def disks(vmid):
    """{key: volume id} of the VM's disks in pvesim, and its node."""
    v = sim.vm(vmid)
    return {k: d.split(",")[0] for k, d in v["conf"].items()
            if k.startswith(("scsi", "ide")) and isinstance(d, str) and ":" in d
            and k != "scsihw"}, v["node"]


def sv3_local_used():
    st = [s for n in sim.state()["nodes"] if n["name"] == "sv3" for s in n["storages"]
          if s["id"] == "local-lvm"][0]
    return st["used"]


def sv3_view():
    return [n for n in call("GET", "/v1/nodes", want=200).json()["nodes"] if n["name"] == "sv3"][0]


def drain(node):
    r = call("POST", "/v1/nodes/%s/drain" % node, want=202)
    j = px.wait_job(r.json()["job"], ADMIN, deadline=240)
    assert j["state"] == "done", j
    return j["result"]


def events(job):
    r = px.call("GET", "/v1/jobs/%s/events" % job, ADMIN, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.text


VMS = {}


@case
def vms_on_both_storages_of_each_node():
    VMS["A"] = create_on("sv1", "a-local")
    VMS["C"] = create_on("sv2", "c-ceph")
    px.stop()
    configure({"sv1": "ceph", "sv2": "local-lvm"})  # the operator changed the storages
    px.start()
    VMS["B"] = create_on("sv1", "b-ceph")
    VMS["D"] = create_on("sv2", "d-local")
    # B gets a data disk on the node's local storage (8 GiB)
    r = sim.api("PUT", "/nodes/sv1/qemu/%d/config" % VMS["B"], data={"scsi1": "local-lvm:8"})
    assert r.status_code == 200, r.text
    # B's data disk and C's boot disk lose their size= (a config edited by
    # hand): their volumes keep their size on their storages
    for k, key in (("B", "scsi1"), ("C", "scsi0")):
        drive = sim.vm(VMS[k])["conf"][key]
        assert ",size=" in drive, drive
        bare = ",".join(x for x in drive.split(",") if not x.startswith("size="))
        sim.ctl("POST", "/vms/%d" % VMS[k], {"conf": {key: bare}})
        assert "size=" not in sim.vm(VMS[k])["conf"][key]
    want = {"A": ("sv1", "local-lvm"), "B": ("sv1", "ceph"), "C": ("sv2", "ceph"),
            "D": ("sv2", "local-lvm")}
    for k, (node, sid) in want.items():
        d, at = disks(VMS[k])
        assert at == node and d["scsi0"].startswith(sid + ":"), (k, at, d)
    assert disks(VMS["B"])[0]["scsi1"].startswith("local-lvm:")
    assert sv3_local_used() == 0


@case
def drain_reserves_what_lands_on_the_target():
    cordon("sv2")  # sv3 the only target
    res = drain("sv1")
    moved = {m["vmid"]: m for m in res["moved"]}
    stayed = {s["vmid"]: s for s in res["stayed"]}
    # A's local disk would land on sv3's local-lvm, which lacks the room
    assert VMS["A"] in stayed, res
    assert "not enough disk space" in stayed[VMS["A"]]["reason"], stayed[VMS["A"]]
    assert "sv3" in stayed[VMS["A"]]["reason"], stayed[VMS["A"]]
    # B's local data disk (8 GiB) goes, its ceph disk stays on the pool
    assert VMS["B"] in moved and moved[VMS["B"]]["to"] == "sv3", res
    d, at = disks(VMS["B"])
    assert at == "sv3" and d["scsi0"].startswith("ceph:") and d["scsi1"].startswith("local-lvm:"), d
    ev = events(moved[VMS["B"]]["job"])
    assert "8.0 GiB of local disks to local-lvm, 20.0 GiB stay on shared storage" in ev, ev[-800:]
    assert disks(VMS["A"])[1] == "sv1"
    assert sv3_local_used() <= (SV3_LOCAL_GB - MARGIN_GB) * GiB, sv3_local_used() / GiB
    cordon("sv2", False)
    # B's reservation counts until an inventory begun after its move shows
    # it on sv3 (store_settle_capacity): not twice, in what sv2's drain sees
    wait_for(lambda: sv3_view()["disk_gb"]["reserved"] == 0, deadline=60,
             what="B's reservation on sv3 to settle")

    res = drain("sv2")  # sv1 stays cordoned by its drain
    moved = {m["vmid"]: m for m in res["moved"]}
    stayed = {s["vmid"]: s for s in res["stayed"]}
    # C's disk is on ceph: nothing asked of sv3's local-lvm, it moves
    assert VMS["C"] in moved and moved[VMS["C"]]["to"] == "sv3", res
    d, at = disks(VMS["C"])
    assert at == "sv3" and d["scsi0"].startswith("ceph:"), d
    # D's local disk does not fit in what is left
    assert VMS["D"] in stayed and "not enough disk space" in stayed[VMS["D"]]["reason"], res
    used = sv3_local_used()
    assert 8 * GiB <= used <= (SV3_LOCAL_GB - MARGIN_GB) * GiB, used / GiB
    print("    sv3 local-lvm: %.1f GiB used of %d (room %d); moved B, C; stayed A, D" %
          (used / GiB, SV3_LOCAL_GB, SV3_LOCAL_GB - MARGIN_GB))


@case
def reinstall_elsewhere_reserves_what_moves():
    # C (ceph 20 GiB, its cloud-init drive too) is reinstalled:
    # sv3 has no room for the new 20 GiB disk, so it is made on sv2 (35 GiB
    # of room: D holds 20 of its 65) and C moves there; its ceph disk stays
    # in the pool, so sv2 needs room for the new disk only, not for both
    # (before: 40 GiB asked of sv2, "no room", the reinstall refused)
    cordon("sv2", False)  # sv1 stays cordoned: sv2 the only other node
    before = disks(VMS["C"])[0]
    r = call("POST", "/v1/vms/%d/reinstall" % VMS["C"], USER, {"os": "debian"}, want=202)
    j = px.wait_job(r.json()["job"], USER, deadline=240)
    assert j["state"] == "done", j
    d, at = disks(VMS["C"])
    assert at == "sv2", (at, d)
    assert d["scsi0"].startswith("local-lvm:") and d["scsi0"] != before["scsi0"], (before, d)
    # the new disk has the old one's size, read from its storage
    assert sim.vm(VMS["C"])["conf"]["scsi0"].endswith(",size=%dG" % DISK_GB), sim.vm(VMS["C"])
    assert not any(v == before["scsi0"] for v in d.values()), d  # the old disk is gone
    st = [s for n in sim.state()["nodes"] if n["name"] == "sv2" for s in n["storages"]
          if s["id"] == "local-lvm"][0]
    assert st["used"] <= (SV2_LOCAL_GB - MARGIN_GB) * GiB, st["used"] / GiB


shutdown(px, sim)
finish()
