"""The endpoints inventories and reporting tools read (issue 11 §2): containers
(list, status, config, snapshots, /cluster/resources), the storage
configuration and a storage's volumes, pools and membership from clone's
`pool`, the HA manager status, a node's disks and network, fleet-unique
template names. Good and bad input; every answer checked against the schema
(--check-returns) and nothing refused."""
import json
import tempfile

from lib.cases import case, finish
from lib.sim import Sim, task_ok

GiB = 1024 ** 3
FLEET = {
    "nodes": [{"name": "sv1"}, {"name": "sv2"},
              {"name": "sv3", "storages": [{"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
                                             "total_gb": 500},
                                            {"id": "nfs1", "type": "nfs", "content": "images", "total_gb": 2000,
                                             "shared": True}]}],
    "pools": [{"poolid": "web", "comment": "web servers"}, {"poolid": "db"}],
    "containers": [
        {"vmid": 200, "node": "sv1", "hostname": "proxy1", "memory_mb": 1024, "cores": 2, "disk_gb": 8,
         "status": "running", "pool": "web", "tags": "edge"},
        {"vmid": 201, "node": "sv2", "hostname": "cache1", "status": "stopped"},
    ],
}


def fleet_sim(version=9, **kw):
    return Sim(nodes="sv1,sv2,sv3", time_scale=0.01, pve_version=version, fleet=FLEET, **kw)


def expect500(r, msg):
    assert r.status_code == 500 and r.reason == msg, (r.status_code, r.reason, r.text)


def no_rejections(s):
    assert s.ctl("GET", "/rejections") == [], s.ctl("GET", "/rejections")


@case
def containers_are_listed_and_inspected():
    for version in (8, 9):
        with fleet_sim(version) as s:
            cts = s.data("GET", "/nodes/sv1/lxc")
            assert [c["vmid"] for c in cts] == [200], cts
            c = cts[0]
            assert c["status"] == "running" and c["name"] == "proxy1" and c["type"] == "lxc", c
            assert c["maxmem"] == 1024 * 1024 ** 2 and c["cpus"] == 2 and c["maxdisk"] == 8 * GiB, c
            assert c["tags"] == "edge" and ("pressurecpusome" in c) == (version >= 9), c
            assert s.data("GET", "/nodes/sv2/lxc")[0]["status"] == "stopped"
            assert s.data("GET", "/nodes/sv3/lxc") == []
            cur = s.data("GET", "/nodes/sv1/lxc/200/status/current")
            assert cur["ha"] == {"managed": 0} and cur["status"] == "running", cur
            conf = s.data("GET", "/nodes/sv1/lxc/200/config")
            assert conf["hostname"] == "proxy1" and conf["rootfs"] == "local-lvm:vm-200-disk-0,size=8G", conf
            assert conf["memory"] == 1024 and len(conf["digest"]) == 40 and conf["net0"].startswith("name=eth0,")
            # no snapshots: "current" alone, with the digest and check_running
            assert s.data("GET", "/nodes/sv1/lxc/200/snapshot") == [
                {"name": "current", "description": "You are here!", "running": 1,
                 "digest": conf["digest"]}]
            # through another node's port: proxied to the container's node
            assert s.data("GET", "/nodes/sv1/lxc/200/config", port=s.ports["sv2"])["hostname"] == "proxy1"
            # wrong node, missing CT, a qemu path on a CT id
            expect500(s.api("GET", "/nodes/sv2/lxc/200/config"),
                      "Configuration file 'nodes/sv2/lxc/200.conf' does not exist")
            expect500(s.api("GET", "/nodes/sv1/lxc/299/status/current"),
                      "Configuration file 'nodes/sv1/lxc/299.conf' does not exist")
            expect500(s.api("GET", "/nodes/sv1/qemu/200/config"),
                      "Configuration file 'nodes/sv1/qemu-server/200.conf' does not exist")
            no_rejections(s)
            # bad input is refused by the schema
            r = s.api("GET", "/nodes/sv1/lxc/abc/config")
            assert r.status_code == 400 and "vmid" in r.json()["errors"], r.text
            # containers take VMIDs: nextid skips nothing it should not hand out
            r = s.api("GET", "/cluster/nextid", params={"vmid": "200"})
            assert r.status_code == 400 and r.json()["errors"] == {"vmid": "VM 200 already exists"}, r.text
            r = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "201"})
            st = s.wait_task("sv1", r)
            assert st["exitstatus"] != "OK", st  # 201 is a container on sv2


@case
def cluster_resources_list_containers_and_pools():
    with fleet_sim(9) as s:
        res = s.data("GET", "/cluster/resources")
        lxc = {e["vmid"]: e for e in res if e["type"] == "lxc"}
        assert sorted(lxc) == [200, 201], lxc
        assert lxc[200]["id"] == "lxc/200" and lxc[200]["node"] == "sv1" and lxc[200]["pool"] == "web"
        assert lxc[200]["status"] == "running" and lxc[200]["maxcpu"] == 2 and "memhost" in lxc[200]
        assert "pool" not in lxc[201] and lxc[201]["status"] == "stopped"
        pools = sorted(e["id"] for e in res if e["type"] == "pool")
        assert pools == ["/pool/db", "/pool/web"], pools
        vm = [e for e in s.data("GET", "/cluster/resources", params={"type": "vm"})]
        assert {e["type"] for e in vm} == {"qemu", "lxc"}, vm
        assert not [e for e in s.data("GET", "/cluster/resources", params={"type": "node"}) if e["type"] != "node"]
        # a node going offline: its container's status is unknown
        s.ctl("POST", "/nodes/sv2", {"state": "offline"})
        lxc = {e["vmid"]: e for e in s.data("GET", "/cluster/resources") if e["type"] == "lxc"}
        assert lxc[201]["status"] == "unknown", lxc[201]
        no_rejections(s)


@case
def pools_and_membership_from_clone():
    with fleet_sim(9) as s:
        assert s.data("GET", "/pools") == [{"poolid": "db"}, {"poolid": "web", "comment": "web servers"}]
        web = s.data("GET", "/pools/web")
        assert web["comment"] == "web servers" and [m["id"] for m in web["members"]] == ["lxc/200"], web
        # clone into a pool: the member appears once the task succeeded
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/8000/clone",
                                       data={"newid": "100", "name": "web1", "pool": "web"}))
        assert st["exitstatus"] == "OK", st
        web = s.data("GET", "/pools/web")
        assert sorted(m["id"] for m in web["members"]) == ["lxc/200", "qemu/100"], web
        m = [m for m in web["members"] if m["id"] == "qemu/100"][0]
        assert m["name"] == "web1" and m["node"] == "sv1" and m["type"] == "qemu" and m["vmid"] == 100, m
        assert [m["id"] for m in s.data("GET", "/pools/web", params={"type": "lxc"})["members"]] == ["lxc/200"]
        one = s.data("GET", "/pools", params={"poolid": "web"})
        assert len(one) == 1 and one[0]["poolid"] == "web" and len(one[0]["members"]) == 2, one
        res = {e["id"]: e for e in s.data("GET", "/cluster/resources", params={"type": "vm"})}
        assert res["qemu/100"]["pool"] == "web" and "pool" not in res["qemu/8000"]
        # create into a pool
        st = s.wait_task("sv2", s.data("POST", "/nodes/sv2/qemu", data={"vmid": "150", "pool": "db"}))
        assert st["exitstatus"] == "OK", st
        assert [m["id"] for m in s.data("GET", "/pools/db")["members"]] == ["qemu/150"]
        # destroying a member takes it out of its pool: a new VM 150 is in none
        assert s.wait_task("sv2", s.data("DELETE", "/nodes/sv2/qemu/150"))["exitstatus"] == "OK"
        st = s.wait_task("sv2", s.data("POST", "/nodes/sv2/qemu", data={"vmid": "150"}))
        assert st["exitstatus"] == "OK" and s.data("GET", "/pools/db")["members"] == [], st
        # a new pool; the refusals
        assert s.data("POST", "/pools", data={"poolid": "batch", "comment": "x"}) is None
        assert s.data("GET", "/pools/batch") == {"members": [], "comment": "x"}
        expect500(s.api("POST", "/pools", data={"poolid": "web"}), "pool 'web' already exists")
        expect500(s.api("POST", "/pools", data={"poolid": "9lives"}), "pool name must start with a letter")
        expect500(s.api("GET", "/pools/nope"), "pool 'nope' does not exist")
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "101", "pool": "nope"})
        assert r.status_code == 403 and r.reason == "Permission check failed (pool 'nope' does not exist)", r.reason
        assert s.vm(101) is None
        no_rejections(s)
        r = s.api("GET", "/pools", params={"type": "qemu"})  # type requires poolid
        assert r.status_code == 400 and r.json()["errors"] == {
            "poolid": "missing property - 'type' requires this property"}, r.text


@case
def storage_configuration_and_content():
    with fleet_sim(9) as s:
        cfg = {e["storage"]: e for e in s.data("GET", "/storage")}
        assert sorted(cfg) == ["local", "local-lvm", "nfs1"], cfg
        assert cfg["local"]["type"] == "dir" and cfg["local"]["path"] == "/var/lib/vz"
        assert cfg["local"]["nodes"] == "sv1,sv2", cfg["local"]  # sv3 has no `local`
        assert cfg["local-lvm"]["type"] == "lvmthin" and "nodes" not in cfg["local-lvm"]
        assert cfg["nfs1"]["type"] == "nfs" and cfg["nfs1"]["nodes"] == "sv3"
        assert [e["storage"] for e in s.data("GET", "/storage", params={"type": "nfs"})] == ["nfs1"]
        assert s.data("GET", "/storage/local-lvm") == cfg["local-lvm"]
        expect500(s.api("GET", "/storage/nosuch"), "storage 'nosuch' does not exist")
        # volumes: the templates' base disks, a linked clone's thin LV, the container's rootfs
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"}))
        assert st["exitstatus"] == "OK", st
        vols = {v["volid"]: v for v in s.data("GET", "/nodes/sv1/storage/local-lvm/content")}
        assert vols["local-lvm:vm-100-disk-0"]["size"] == 10 * GiB and vols["local-lvm:vm-100-disk-0"]["vmid"] == 100
        assert vols["local-lvm:base-8000-disk-0"]["content"] == "images"
        assert vols["local-lvm:vm-200-disk-0"]["content"] == "rootdir" and vols["local-lvm:vm-200-disk-0"]["vmid"] == 200
        only = s.data("GET", "/nodes/sv1/storage/local-lvm/content", params={"vmid": "100"})
        assert {v["vmid"] for v in only} == {100} and len(only) == 2, only  # disk + cloud-init
        assert all(v["content"] == "rootdir" for v in
                   s.data("GET", "/nodes/sv1/storage/local-lvm/content", params={"content": "rootdir"}))
        local = s.data("GET", "/nodes/sv1/storage/local/content")
        assert [v["content"] for v in local] == ["vztmpl"], local
        expect500(s.api("GET", "/nodes/sv3/storage/local/content"), "storage 'local' does not exist")
        no_rejections(s)
        r = s.api("GET", "/storage", params={"type": "floppy"})
        assert r.status_code == 400 and "type" in r.json()["errors"], r.text


@case
def ha_status_disks_network():
    with fleet_sim(9) as s:
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"}))
        assert st["exitstatus"] == "OK"
        assert s.data("POST", "/cluster/ha/resources", data={"sid": "vm:100", "state": "started"}) is None
        ha = s.data("GET", "/cluster/ha/status/current")
        kinds = [e["type"] for e in ha]
        assert kinds[:2] == ["quorum", "master"] and kinds.count("lrm") == 3 and kinds.count("service") == 1, ha
        svc = [e for e in ha if e["type"] == "service"][0]
        assert svc["sid"] == "vm:100" and svc["node"] == "sv1" and svc["state"] == "started", svc
        assert ha[0]["quorate"] == 1 and ha[0]["status"] == "OK"
        lrm = {e["node"]: e for e in ha if e["type"] == "lrm"}
        assert "active" in lrm["sv1"]["status"] and "idle" in lrm["sv2"]["status"], lrm
        disks = s.data("GET", "/nodes/sv2/disks/list")
        assert len(disks) == 1 and disks[0]["devpath"] == "/dev/nvme0n1" and disks[0]["used"] == "LVM", disks
        assert s.data("GET", "/nodes/sv2/disks/list", params={"type": "unused"}) == []
        net = s.data("GET", "/nodes/sv2/network")
        assert net[0]["iface"] == "vmbr0" and net[0]["address"] == "10.0.0.12" and net[0]["type"] == "bridge", net
        status_ips = {e["name"]: e["ip"] for e in s.data("GET", "/cluster/status") if e["type"] == "node"}
        assert status_ips["sv2"] == net[0]["address"]
        assert [i["iface"] for i in s.data("GET", "/nodes/sv2/network", params={"type": "eth"})] == ["eno1"]
        r = s.api("GET", "/nodes/sv2/network", params={"type": "wifi"})
        assert r.status_code == 400, r.text
        s.ctl("DELETE", "/rejections")


@case
def template_names_are_unique_across_the_fleet():
    with Sim(nodes="sv1,sv2,sv3", time_scale=0.01) as s:
        names = [e["name"] for e in s.data("GET", "/cluster/resources", params={"type": "vm"})]
        assert len(names) == 12 and len(set(names)) == 12, names
        assert "tpl-ubuntu-sv2" in names
    with Sim(nodes="sv1,sv2", time_scale=0.01, standalone=True) as s:
        assert {v["name"] for v in s.data("GET", "/nodes/sv2/qemu", port=s.ports["sv2"])} == {
            "tpl-ubuntu-sv2", "tpl-debian-sv2", "tpl-centos-sv2", "tpl-windows-sv2"}


def next_report(s, deadline=30.0):
    """Wait for pvestatd's next report (--pvestatd-cycle): the nodes'
    uptimes in /cluster/resources move on only then."""
    import time

    def uptime():
        return [e["uptime"] for e in s.data("GET", "/cluster/resources", params={"type": "node"})]

    u0, end = uptime(), time.monotonic() + deadline
    while uptime() == u0:
        assert time.monotonic() < end, "no pvestatd report in %ss" % deadline
        time.sleep(0.02)


@case
def cluster_resources_lag_behind_pvestatd():
    """--pvestatd-cycle S: /cluster/resources and GET /nodes serve the stats
    of pvestatd's last report, as PVE reads them from the RRD cache; a VM no
    report has seen yet is listed with status "unknown" and the live fields
    (lock, tags, pool, hastate) only; the VM list and the per-VM endpoints
    are live. 600 PVE s at 0.01: a report every 6 real seconds (the checks
    between two reports take a few calls and tasks: room for a loaded
    machine)."""
    with fleet_sim(9, extra=["--pvestatd-cycle", "600"]) as s:
        def res(vmid):
            got = [e for e in s.data("GET", "/cluster/resources", params={"type": "vm"}) if e["vmid"] == vmid]
            return got[0] if got else None

        def node_mem(path):
            return next(e["mem"] for e in s.data("GET", path, params={"type": "node"} if "cluster" in path else None)
                        if e["node"] == "sv1")

        tpl = res(8000)  # the fleet as it started was reported
        assert tpl["status"] == "stopped" and tpl["template"] == 1 and tpl["maxmem"] > 0, tpl
        next_report(s)
        upid = s.data("POST", "/nodes/sv1/qemu", data={"vmid": "300", "name": "lag1", "memory": "2048",
                                                        "cores": "2", "tags": "blue", "pool": "web"})
        task_ok(s.wait_task("sv1", upid))
        s.data("POST", "/cluster/ha/resources", data={"sid": "vm:300", "state": "stopped"})
        e = res(300)
        assert e == {"id": "qemu/300", "vmid": 300, "node": "sv1", "type": "qemu", "status": "unknown",
                     "tags": "blue", "pool": "web", "hastate": "stopped"}, e
        assert s.data("GET", "/nodes/sv1/qemu/300/status/current")["status"] == "stopped"
        next_report(s)
        e = res(300)
        assert (e["status"], e["name"], e["maxmem"], e["maxcpu"], e["uptime"]) == (
            "stopped", "lag1", 2 * GiB, 2, 0), e
        # a change of memory and a start: live in the VM's own endpoints, in
        # /cluster/resources and the nodes' stats only after the next report
        mem0, mem0_nodes = node_mem("/cluster/resources"), node_mem("/nodes")
        s.api("DELETE", "/cluster/ha/resources/vm:300")
        s.data("PUT", "/nodes/sv1/qemu/300/config", data={"memory": "4096"})
        task_ok(s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/300/status/start")))
        cur = s.data("GET", "/nodes/sv1/qemu/300/status/current")
        assert cur["status"] == "running" and cur["maxmem"] == 4 * GiB, cur
        e = res(300)
        assert (e["status"], e["maxmem"], e["uptime"]) == ("stopped", 2 * GiB, 0), e
        assert "hastate" not in e, e
        assert (node_mem("/cluster/resources"), node_mem("/nodes")) == (mem0, mem0_nodes)
        next_report(s)
        e = res(300)
        assert (e["status"], e["maxmem"]) == ("running", 4 * GiB), e
        assert node_mem("/cluster/resources") == node_mem("/nodes") == mem0 + 4 * GiB
        # the list itself is live: a destroyed VM is gone at once
        task_ok(s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/300/status/stop")))
        task_ok(s.wait_task("sv1", s.data("DELETE", "/nodes/sv1/qemu/300")))
        assert res(300) is None
        no_rejections(s)


def node_figures(s):
    """Per node: memory used (status, /nodes, /cluster/resources) and per storage used (status,
    /cluster/resources)."""
    res = s.data("GET", "/cluster/resources")
    nodes = {e["node"]: e for e in s.data("GET", "/nodes")}
    out = {}
    for n in ("sv1", "sv2", "sv3"):
        st = s.data("GET", f"/nodes/{n}/status")
        rn = [e for e in res if e["type"] == "node" and e["node"] == n][0]
        assert st["memory"]["used"] == nodes[n]["mem"] == rn["mem"], (st["memory"], nodes[n], rn)
        assert st["memory"]["free"] == st["memory"]["total"] - st["memory"]["used"], st["memory"]
        stor = {}
        for e in s.data("GET", f"/nodes/{n}/storage"):
            one = s.data("GET", f"/nodes/{n}/storage/{e['storage']}/status")
            re = [r for r in res if r["type"] == "storage" and r["id"] == f"storage/{n}/{e['storage']}"][0]
            assert one["used"] == e["used"] == re["disk"], (one, e, re)
            assert one["avail"] == one["total"] - one["used"], one
            stor[e["storage"]] = one["used"]
        out[n] = (st["memory"]["used"], stor)
    return out


@case
def node_figures_count_containers():
    """A node's memory and storage figures are the host's (pvestatd reads them from the kernel and
    the storage): a running container's memory counts in the node's mem, every container's
    volumes (rootfs, mount points) in its storages' use, as a VM's would."""
    bare = dict(FLEET, containers=[])
    cts = dict(FLEET, containers=[
        {"vmid": 200, "node": "sv1", "memory_mb": 4096, "disk_gb": 8, "status": "running",
         "mps": [{"disk_gb": 20}, {"disk_gb": 30, "storage": "local"}]},
        {"vmid": 201, "node": "sv2", "memory_mb": 4096, "disk_gb": 16, "status": "stopped"},
        {"vmid": 202, "node": "sv3", "memory_mb": 2048, "status": "running", "storage": "nfs1"},
    ])
    with Sim(nodes="sv1,sv2,sv3", time_scale=0.01, fleet=bare) as s:
        before = node_figures(s)
    with Sim(nodes="sv1,sv2,sv3", time_scale=0.01, fleet=cts) as s:
        after = node_figures(s)
        ct = {c["vmid"]: c for n in ("sv1", "sv2", "sv3") for c in s.data("GET", f"/nodes/{n}/lxc")}
        assert ct[200]["mem"] == 1024 * 1024 ** 2 and ct[201]["mem"] == 0, ct
        conf = s.data("GET", "/nodes/sv1/lxc/200/config")
        rootfs = s.data("GET", "/nodes/sv3/lxc/202/config")["rootfs"]
        no_rejections(s)
    # what a running container uses (its entry's mem), none for a stopped one
    assert after["sv1"][0] - before["sv1"][0] == ct[200]["mem"], (before, after)
    assert after["sv2"][0] == before["sv2"][0], (before, after)
    assert after["sv3"][0] - before["sv3"][0] == ct[202]["mem"], (before, after)
    grew = {n: {k: after[n][1][k] - before[n][1][k] for k in after[n][1]} for n in after}
    assert grew["sv1"] == {"local": 30 * GiB, "local-lvm": 28 * GiB}, grew
    assert grew["sv2"] == {"local": 0, "local-lvm": 16 * GiB}, grew
    assert grew["sv3"] == {"local-lvm": 0, "nfs1": 8 * GiB}, grew  # sv3 has no `local`
    assert conf["mp0"] == "local-lvm:vm-200-disk-1,mp=/mnt/mp0,size=20G", conf
    assert conf["mp1"] == "local:vm-200-disk-2,mp=/mnt/mp1,size=30G", conf
    assert rootfs == "nfs1:vm-202-disk-0,size=8G", rootfs


@case
def container_network_and_volumes_from_the_fleet_file():
    """net0 as pct writes it (name first, the other keys sorted), with a static address; bad
    values are refused naming the field."""
    fleet = dict(FLEET, containers=[
        {"vmid": 200, "node": "sv1", "ip": "10.0.0.5/24", "gw": "10.0.0.1", "ip6": "fd00::5/64",
         "bridge": "vmbr1", "tag": 20}])
    with Sim(nodes="sv1,sv2,sv3", time_scale=0.01, fleet=fleet) as s:
        n0 = s.data("GET", "/nodes/sv1/lxc/200/config")["net0"]
        assert n0.startswith("name=eth0,bridge=vmbr1,gw=10.0.0.1,hwaddr=BC:24:11:"), n0
        assert n0.endswith(",ip=10.0.0.5/24,ip6=fd00::5/64,tag=20,type=veth"), n0
        no_rejections(s)


@case
def bad_fleet_files_name_the_field():
    import subprocess
    from lib.env import PVESIM
    from lib.ports import free_port
    for extra, want in (({"containers": [{"vmid": 5}]}, "containers[0].vmid"),
                        ({"containers": [{"vmid": 300, "node": "zz"}]}, "containers[0].node"),
                        ({"containers": [{"vmid": 300, "pool": "none"}]}, "containers[0].pool"),
                        ({"containers": [{"vmid": 300}, {"vmid": 300}]}, "containers[1].vmid"),
                        ({"containers": [{"vmid": 300, "ip": "10.0.0.5/24,gw=x"}]}, "containers[0].ip"),
                        ({"containers": [{"vmid": 300, "tag": 5000}]}, "containers[0].tag"),
                        ({"containers": [{"vmid": 300, "storage": "zz"}]}, "containers[0].storage"),
                        ({"containers": [{"vmid": 300, "mps": [{"disk_gb": 0}]}]}, "containers[0].mps[0]"),
                        ({"pools": [{"poolid": "a"}, {"poolid": "a"}]}, "pools[1].poolid")):
        fleet = dict({"nodes": [{"name": "sv1"}]}, **extra)
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(fleet, f)
            f.flush()
            # a free port, not 1: other tests take 1 for "nothing listens
            # there", and a file taken by mistake would serve on it
            p = subprocess.run([PVESIM, "--listen", "127.0.0.1:%d" % free_port(), "--fleet", f.name],
                               capture_output=True, text=True, timeout=60)
            assert p.returncode != 0 and want in p.stderr, (extra, p.returncode, p.stderr)


finish()
