"""Topology: the cluster entry point and the node ports, nodes going offline
or hanging (595/596), standalone hosts with their own VMID spaces, plain HTTP
on the TLS port, --state-dir persistence, --fleet files, the /_sim/ call
counters (and why connections were closed) and reset, the PVE 7/8 behaviour
switches, and the VMs' power and node history."""
import json
import os
import socket
import tempfile
import time

import requests

from lib.cases import case, finish
from lib.sim import Sim

GiB = 1024 ** 3


def refused(s, port):
    """A request to `port` fails with connection refused (not a timeout)."""
    try:
        s.api("GET", "/version", port=port, timeout=2)
    except requests.exceptions.Timeout as e:
        raise AssertionError("expected connection refused, got a timeout: %r" % e)
    except requests.exceptions.ConnectionError as e:
        assert "refused" in str(e).lower(), repr(e)
        return True
    raise AssertionError("port %d answered" % port)


def clone(s, node, src, newid, port=None, name=None):
    params = {"newid": newid, "full": 1}
    if name:
        params["name"] = name
    upid = s.data("POST", "/nodes/%s/qemu/%d/clone" % (node, src), data=params, port=port)
    st = s.wait_task(node, upid, port=port)
    assert st["exitstatus"] == "OK", st
    return upid


def by_name(entries, key="node"):
    return {e[key]: e for e in entries}


@case
def entry_and_node_ports_answer():
    with Sim(nodes="sv1,sv2,sv3") as s:
        assert sorted(s.ports) == ["sv1", "sv2", "sv3"]
        assert len(set(s.ports.values()) | {s.entry}) == 4
        for port in [s.entry] + list(s.ports.values()):
            assert s.data("GET", "/version", port=port)["version"] == "9.1.3"
            # any port proxies to the node named in the path
            st = s.data("GET", "/nodes/sv2/status", port=port)
            assert st["cpuinfo"]["cpus"] == 16
            vms = s.data("GET", "/nodes/sv3/qemu", port=port)
            assert sorted(v["vmid"] for v in vms) == [8020, 8021, 8022, 8023]
        # /cluster/status from a node port: that node is the local one
        cs = s.data("GET", "/cluster/status", port=s.ports["sv2"])
        assert cs[0]["type"] == "cluster" and cs[0]["nodes"] == 3 and cs[0]["quorate"] == 1
        local = [e["name"] for e in cs if e.get("local") == 1]
        assert local == ["sv2"], cs
        # a VM is served by its node, asked through any port
        clone(s, "sv1", 8000, 300, port=s.ports["sv3"])
        assert s.data("GET", "/nodes/sv1/qemu/300/config", port=s.ports["sv2"])["name"] == \
            "Copy-of-VM-tpl-ubuntu-sv1"
        r = s.api("GET", "/nodes/sv2/qemu/300/config", port=s.ports["sv1"])
        assert r.status_code == 500 and \
            r.reason == "Configuration file 'nodes/sv2/qemu-server/300.conf' does not exist", r.reason


@case
def offline_node():
    with Sim(nodes="sv1,sv2,sv3") as s:
        clone(s, "sv1", 8000, 301)
        assert s.data("GET", "/nodes/sv1/status")["uptime"] >= 86400  # up for a day
        r = s.ctl("POST", "/nodes/sv1", {"state": "offline"})
        assert r == {"node": "sv1", "state": "offline"}, r
        r = s.api("GET", "/nodes/sv1/status")
        assert r.status_code == 595 and r.reason == "Connection refused", (r.status_code, r.reason)
        assert r.content == b"" and r.headers.get("Connection") == "close", (r.content, r.headers)
        # the same through another node's port
        r = s.api("GET", "/nodes/sv1/qemu", port=s.ports["sv2"])
        assert r.status_code == 595 and r.content == b""
        # POSTs too, without changing anything
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": 302})
        assert r.status_code == 595
        nodes = by_name(s.data("GET", "/nodes"))
        assert nodes["sv1"]["status"] == "offline" and "uptime" not in nodes["sv1"], nodes["sv1"]
        assert nodes["sv2"]["status"] == "online"
        cs = by_name([e for e in s.data("GET", "/cluster/status") if e["type"] == "node"], "name")
        assert cs["sv1"]["online"] == 0 and cs["sv2"]["online"] == 1, cs
        assert s.data("GET", "/cluster/status")[0]["quorate"] == 1
        res = s.data("GET", "/cluster/resources")
        vms = {e["vmid"]: e for e in res if e["type"] == "qemu"}
        for vmid in (301, 8000, 8001, 8002, 8003):
            assert vms[vmid]["status"] == "unknown" and vms[vmid]["node"] == "sv1", vms[vmid]
        assert vms[8010]["status"] == "stopped"
        rnodes = by_name([e for e in res if e["type"] == "node"])
        assert rnodes["sv1"]["status"] == "offline"
        stor = {e["id"]: e for e in res if e["type"] == "storage"}
        assert stor["storage/sv1/local-lvm"]["status"] == "unknown"
        assert stor["storage/sv2/local-lvm"]["status"] == "available"
        # sv1's own port is down: connection refused
        refused(s, s.ports["sv1"])
        # a second node down too: no quorum any more with 1 of 3
        s.ctl("POST", "/nodes/sv2", {"state": "offline"})
        assert s.data("GET", "/cluster/status")[0]["quorate"] == 0
        s.ctl("POST", "/nodes/sv2", {"state": "online"})
        # back online
        s.ctl("POST", "/nodes/sv1", {"state": "online"})
        st = s.data("GET", "/nodes/sv1/status")
        assert st["uptime"] < 60, st["uptime"]  # it has just booted
        assert by_name(s.data("GET", "/nodes"))["sv3"]["uptime"] >= 86400
        assert s.data("GET", "/version", port=s.ports["sv1"])["release"] == "9.1"
        assert s.data("GET", "/nodes/sv1/qemu/301/config")["name"] == "Copy-of-VM-tpl-ubuntu-sv1"
        assert by_name(s.data("GET", "/nodes"))["sv1"]["status"] == "online"
        # unknown node, bad state
        r = s.raw("POST", "/_sim/nodes/sv9", json={"state": "offline"})
        assert r.status_code == 404, r.text
        r = s.raw("POST", "/_sim/nodes/sv1", json={"state": "sleeping"})
        assert r.status_code == 400, r.text


@case
def blackholed_node():
    scale = 0.02
    with Sim(nodes="sv1,sv2,sv3", time_scale=scale) as s:
        s.ctl("POST", "/nodes/sv1", {"state": "blackhole"})
        t0 = time.monotonic()
        r = s.api("GET", "/nodes/sv1/status", timeout=10)
        took = time.monotonic() - t0
        assert r.status_code == 596 and r.reason == "Connection timed out", (r.status_code, r.reason)
        assert r.content == b"" and r.headers.get("Connection") == "close"
        assert 30 * scale * 0.95 <= took < 30 * scale + 2, took
        # sv1's own port accepts the connection but never answers
        sock = socket.create_connection(("127.0.0.1", s.ports["sv1"]), timeout=2)
        sock.close()
        t0 = time.monotonic()
        try:
            s.api("GET", "/version", port=s.ports["sv1"], timeout=0.5)
            raise AssertionError("a blackholed node answered")
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectTimeout):
            pass
        assert time.monotonic() - t0 < 3
        # a hung node still looks alive to the cluster
        cs = by_name([e for e in s.data("GET", "/cluster/status") if e["type"] == "node"], "name")
        assert cs["sv1"]["online"] == 1, cs
        assert by_name(s.data("GET", "/nodes"))["sv1"]["status"] == "online"
        # the rest of the cluster is unaffected
        assert s.data("GET", "/nodes/sv2/status")["cpuinfo"]["cpus"] == 16
        s.ctl("POST", "/nodes/sv1", {"state": "online"})
        assert s.data("GET", "/nodes/sv1/status", port=s.ports["sv1"])["cpuinfo"]["cpus"] == 16


@case
def standalone_hosts():
    with Sim(nodes="sv1,sv2,sv3", standalone=True) as s:
        p1, p2 = s.ports["sv1"], s.ports["sv2"]
        assert p1 == s.base and s.entry not in s.ports.values()
        # the same new VMID on two hosts: separate VMID spaces
        clone(s, "sv1", 8000, 500, port=p1, name="one")
        clone(s, "sv2", 8010, 500, port=p2, name="two")
        assert s.data("GET", "/nodes/sv1/qemu/500/config", port=p1)["name"] == "one"
        assert s.data("GET", "/nodes/sv2/qemu/500/config", port=p2)["name"] == "two"
        assert s.data("GET", "/cluster/nextid", port=p1) == "100"
        r = s.api("GET", "/cluster/nextid", port=p1, params={"vmid": 500})
        assert r.status_code == 400 and r.json()["errors"] == {"vmid": "VM 500 already exists"}
        assert s.data("GET", "/cluster/nextid", port=s.ports["sv3"], params={"vmid": 500}) == "500"
        # each host sees only itself
        res = s.data("GET", "/cluster/resources", port=p1)
        assert {e["node"] for e in res} == {"sv1"}, res
        assert sorted(e["vmid"] for e in res if e["type"] == "qemu") == [500, 8000, 8001, 8002, 8003]
        assert [n["node"] for n in s.data("GET", "/nodes", port=p2)] == ["sv2"]
        cs = s.data("GET", "/cluster/status", port=p2)
        assert len(cs) == 1 and cs[0]["name"] == "sv2" and cs[0]["local"] == 1, cs
        # another host's name is not resolvable
        r = s.api("GET", "/nodes/sv2/status", port=p1)
        assert r.status_code == 500, r.status_code
        assert r.reason == ("hostname lookup 'sv2' failed - failed to get address info for: sv2: "
                            "Name or service not known"), r.reason
        assert r.json()["message"] == r.reason + "\n"
        # an offline host refuses connections; the others go on
        s.ctl("POST", "/nodes/sv2", {"state": "offline"})
        refused(s, p2)
        assert s.data("GET", "/nodes/sv1/qemu/500/config", port=p1)["name"] == "one"
        s.ctl("POST", "/nodes/sv2", {"state": "online"})
        assert s.data("GET", "/nodes/sv2/qemu/500/config", port=p2)["name"] == "two"
        st = {(v["vmid"], v["node"]) for v in s.state()["vms"]}
        assert (500, "sv1") in st and (500, "sv2") in st


@case
def plain_http_is_redirected():
    with Sim(nodes="sv1,sv2") as s:
        for port in (s.entry, s.ports["sv2"]):
            url = "http://127.0.0.1:%d/api2/json/version?x=1" % port
            r = requests.get(url, allow_redirects=False, timeout=5)
            assert r.status_code == 301, r.status_code
            assert r.headers["Location"] == "https://127.0.0.1:%d/api2/json/version?x=1" % port
            assert r.headers.get("Connection") == "close"
            r = requests.post("http://127.0.0.1:%d/api2/json/nodes/sv1/qemu/8000/clone" % port,
                              data={"newid": 900}, allow_redirects=False, timeout=5)
            assert r.status_code == 308, r.status_code
            assert r.headers["Location"] == \
                "https://127.0.0.1:%d/api2/json/nodes/sv1/qemu/8000/clone" % port
            r = requests.put("http://127.0.0.1:%d/x" % port, allow_redirects=False, timeout=5)
            assert r.status_code == 308
        # nothing was done over plain HTTP
        assert s.vm(900) is None
        assert s.ctl("GET", "/calls")["calls"] == {}


@case
def state_dir_survives_restart():
    with tempfile.TemporaryDirectory() as d:
        with Sim(nodes="sv1,sv2,sv3", state_dir=d) as s:
            clone(s, "sv2", 8010, 700, name="keeper")
            s.data("PUT", "/nodes/sv2/qemu/700/config", data={"cores": 3, "tags": "kept"})
            upid = s.data("POST", "/nodes/sv2/qemu/700/status/start")
            assert s.wait_task("sv2", upid)["exitstatus"] == "OK"
            s.ctl("POST", "/nodes/sv3", {"state": "offline"})
            before = s.data("GET", "/nodes/sv2/qemu/700/config")
            s.stop()
            saved = json.load(open(os.path.join(d, "state.json")))
            assert any(v["vmid"] == 700 for v in saved["vms"])
            s.start()
            conf = s.data("GET", "/nodes/sv2/qemu/700/config")
            assert conf == before, (conf, before)
            assert conf["name"] == "keeper" and conf["cores"] == 3 and conf["tags"] == "kept"
            assert s.data("GET", "/nodes/sv2/qemu/700/status/current")["status"] == "running"
            nodes = by_name(s.data("GET", "/nodes"))
            assert nodes["sv3"]["status"] == "offline" and nodes["sv1"]["status"] == "online"
            refused(s, s.ports["sv3"])
            r = s.api("GET", "/nodes/sv3/status")
            assert r.status_code == 595
            # the restarted simulator keeps working
            s.ctl("POST", "/nodes/sv3", {"state": "online"})
            upid = s.data("POST", "/nodes/sv2/qemu/700/status/stop")
            assert s.wait_task("sv2", upid)["exitstatus"] == "OK"
            upid = s.data("DELETE", "/nodes/sv2/qemu/700")
            assert s.wait_task("sv2", upid)["exitstatus"] == "OK"
        # a third start sees the VM gone
        with Sim(nodes="sv1,sv2,sv3", state_dir=d) as s:
            assert s.vm(700) is None
            assert s.vm(8010)["node"] == "sv2"
            assert all(n["state"] == "online" for n in s.state()["nodes"])


@case
def fleet_file():
    fleet = {
        "nodes": [
            {"name": "alpha", "cpus": 8, "memory_gb": 32, "bandwidth_mb": 1000,
             "storages": [{"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
                           "total_gb": 200, "used_gb": 0},
                          {"id": "nfs1", "type": "nfs", "content": "images,iso", "total_gb": 2000,
                           "used_gb": 500, "shared": True}]},
            {"name": "beta", "cpus": 32, "memory_gb": 256},
            {"name": "gamma", "storages": [{"id": "tank", "type": "zfspool", "content": "images",
                                            "total_gb": 100}]},
        ],
        "templates": [{"os": "rocky", "vmid": 9000, "disk_gb": 20, "memory_mb": 1024, "cores": 1},
                      {"os": "alpine"}],
    }
    with Sim(nodes="alpha,beta,gamma", fleet=fleet) as s:
        nodes = by_name(s.data("GET", "/nodes"))
        assert sorted(nodes) == ["alpha", "beta", "gamma"]
        assert nodes["alpha"]["maxcpu"] == 8 and nodes["alpha"]["maxmem"] == 32 * GiB
        assert nodes["beta"]["maxcpu"] == 32 and nodes["beta"]["maxmem"] == 256 * GiB
        st = by_name(s.data("GET", "/nodes/alpha/storage"), "storage")
        assert sorted(st) == ["local-lvm", "nfs1"], st
        assert st["nfs1"]["total"] == 2000 * GiB and st["nfs1"]["shared"] == 1
        assert st["nfs1"]["type"] == "nfs" and st["nfs1"]["used"] == 500 * GiB
        assert st["local-lvm"]["total"] == 200 * GiB
        # beta has the default storages
        assert sorted(by_name(s.data("GET", "/nodes/beta/storage"), "storage")) == \
            ["local", "local-lvm"]
        assert s.data("GET", "/nodes/alpha/storage/nfs1/status")["total"] == 2000 * GiB
        # the explicit template VMID exists once, on the first node; the other per node
        alpha = {v["vmid"]: v for v in s.data("GET", "/nodes/alpha/qemu")}
        beta = {v["vmid"]: v for v in s.data("GET", "/nodes/beta/qemu")}
        assert sorted(alpha) == [8001, 9000] and sorted(beta) == [8011], (alpha, beta)
        conf = s.data("GET", "/nodes/alpha/qemu/9000/config")
        assert conf["name"] == "tpl-rocky" and conf["cores"] == 1 and conf["memory"] == "1024"
        assert conf["scsi0"].endswith(",size=20G") and conf["template"] == 1, conf
        res = s.data("GET", "/cluster/resources", params={"type": "storage"})
        assert {e["id"] for e in res} == {"storage/alpha/local-lvm", "storage/alpha/nfs1",
                                          "storage/beta/local", "storage/beta/local-lvm",
                                          "storage/gamma/tank"}
        # without local-lvm, a node's templates live on its storage for images
        conf = s.data("GET", "/nodes/gamma/qemu/8021/config")
        assert conf["scsi0"] == "tank:base-8021-disk-0,size=10G", conf
        assert conf["ide2"].startswith("tank:vm-8021-cloudinit,"), conf
        upid = s.data("POST", "/nodes/gamma/qemu/8021/clone", data={"newid": 121, "full": 1})
        assert s.wait_task("gamma", upid)["exitstatus"] == "OK"
        assert s.data("GET", "/nodes/gamma/qemu/121/config")["scsi0"] == \
            "tank:vm-121-disk-0,size=10G"
        tank = s.data("GET", "/nodes/gamma/storage/tank/status")
        assert 20 * GiB <= tank["used"] < 21 * GiB, tank
        # a full clone of the template onto the shared storage
        upid = s.data("POST", "/nodes/alpha/qemu/9000/clone",
                      data={"newid": 120, "full": 1, "storage": "nfs1"})
        assert s.wait_task("alpha", upid)["exitstatus"] == "OK"
        conf = s.data("GET", "/nodes/alpha/qemu/120/config")
        # every volume goes to the target storage, the cloud-init drive too
        assert conf["scsi0"].startswith("nfs1:") and conf["ide2"].startswith("nfs1:vm-120-cloudinit,"), conf
        assert s.data("GET", "/nodes/alpha/storage/nfs1/status")["used"] == 520 * GiB + 4 * 1024 ** 2
    # a broken fleet file: pvesim refuses to start with a clear error
    try:
        Sim(nodes="x", fleet={"nodes": []})
        raise AssertionError("pvesim started with an empty fleet")
    except RuntimeError as e:
        assert "'nodes' must be a non-empty array" in str(e), str(e)


@case
def call_counters_and_reset():
    with Sim(nodes="sv1,sv2") as s:
        for _ in range(3):
            s.data("GET", "/nodes/sv1/qemu")
        s.data("GET", "/nodes/sv2/qemu")
        s.data("GET", "/version")
        s.api("GET", "/nodes/sv1/qemu/4242/config")
        c = s.ctl("GET", "/calls")
        assert c["calls"] == {"GET /nodes/{node}/qemu": 4, "GET /version": 1,
                              "GET /nodes/{node}/qemu/{vmid}/config": 1}, c
        assert c["nodes"] == {"sv1": 4, "sv2": 1}, c
        assert s.ctl("DELETE", "/calls") == {}
        c = s.ctl("GET", "/calls")
        assert c["calls"] == {} and c["nodes"] == {}, c
        # each call above came on a connection of its own (no session): six
        # API calls and three control calls, this one's included; not reset
        assert c["tls_handshakes"] >= 9, c
        # change the world, then reset it
        clone(s, "sv1", 8000, 800)
        s.ctl("POST", "/nodes/sv2", {"state": "offline"})
        s.ctl("POST", "/faults", {"kind": "error", "path": "^/version$", "status": 500,
                                  "message": "boom"})
        assert s.api("GET", "/version").status_code == 500
        initial_vms = sorted(v["vmid"] for v in s.state()["vms"] if v["vmid"] != 800)
        assert s.ctl("POST", "/reset") == {"reset": True}
        st = s.state()
        assert sorted(v["vmid"] for v in st["vms"]) == initial_vms
        assert st["tasks"] == [] and all(n["state"] == "online" for n in st["nodes"])
        assert s.ctl("GET", "/faults") == []
        c2 = s.ctl("GET", "/calls")
        assert c2["calls"] == {} and c2["nodes"] == {}, c2
        assert c2["tls_handshakes"] > c["tls_handshakes"], (c, c2)
        assert s.data("GET", "/version")["version"] == "9.1.3"
        assert s.data("GET", "/version", port=s.ports["sv2"])["version"] == "9.1.3"
        r = s.api("GET", "/nodes/sv1/qemu/800/config")
        assert r.status_code == 500 and "does not exist" in r.reason
        # the world works as before after a reset
        clone(s, "sv1", 8000, 800)


@case
def connection_closes_counted():
    """/_sim/calls tells why connections the server closed were closed:
    pveproxy's 100 requests a connection, or 5 s without a request (what
    makes a client's next call a new TLS handshake)"""
    with Sim(nodes="sv1") as s:
        c0 = s.ctl("GET", "/calls")
        assert c0["tls_closed_at_limit"] == 0 and c0["tls_closed_idle"] == 0, c0
        h = {"Authorization": "PVEAPIToken=%s=%s" % (s.token_id, s.token_secret)}
        with requests.Session() as sess:
            for i in range(101):  # the 100th answer closes; the 101st opens anew
                r = sess.get(s.url("/api2/json/version"), headers=h, verify=False, timeout=30)
                assert r.status_code == 200, (i, r.status_code)
                if i == 99:
                    assert r.headers.get("Connection", "").lower() == "close", r.headers
            c1 = s.ctl("GET", "/calls")
            # the control calls come on connections of their own, closed by the client
            assert c1["tls_closed_at_limit"] == 1 and c1["tls_closed_idle"] == 0, c1
            assert c1["tls_handshakes"] - c0["tls_handshakes"] == 3, (c0, c1)  # 2 + this call
            # the session's second connection now idles out
            deadline = time.monotonic() + 20
            while s.ctl("GET", "/calls")["tls_closed_idle"] == 0:
                assert time.monotonic() < deadline, "no idle close within 20 s"
                time.sleep(0.2)
        c2 = s.ctl("GET", "/calls")
        assert c2["tls_closed_idle"] == 1 and c2["tls_closed_at_limit"] == 1, c2


@case
def pve_version_8():
    with Sim(nodes="sv1,sv2", pve_version=8) as s:
        v = s.data("GET", "/version")
        assert v["version"] == "8.4.2" and v["release"] == "8.4", v
        clone(s, "sv1", 8000, 130)
        assert s.data("GET", "/nodes/sv1/qemu/130/config")["memory"] == "2048"
        r = s.data("PUT", "/nodes/sv1/qemu/130/resize", data={"disk": "scsi0", "size": "+1G"})
        assert r.startswith("UPID:sv1:") and ":resize:130:" in r, r
        assert s.wait_task("sv1", r)["exitstatus"] == "OK"
        assert s.data("GET", "/nodes/sv1/qemu/130/config")["scsi0"].endswith("size=11G")
        r = s.api("GET", "/nodes/sv1/qemu/131/config")
        assert r.json() == {"data": None, "message":
                            "Configuration file 'nodes/sv1/qemu-server/131.conf' does not exist\n"}


@case
def pve_version_7():
    with Sim(nodes="sv1,sv2", pve_version=7) as s:
        v = s.data("GET", "/version")
        assert v["version"] == "7.4-3" and v["release"] == "7.4" and len(v["repoid"]) == 8, v
        clone(s, "sv1", 8000, 130)
        conf = s.data("GET", "/nodes/sv1/qemu/130/config")
        assert conf["memory"] == 2048, conf["memory"]
        s.data("PUT", "/nodes/sv1/qemu/130/config", data={"memory": 3072})
        assert s.data("GET", "/nodes/sv1/qemu/130/config")["memory"] == 3072
        # resize is synchronous and returns null
        r = s.api("PUT", "/nodes/sv1/qemu/130/resize", data={"disk": "scsi0", "size": "+1G"})
        assert r.status_code == 200 and r.json() == {"data": None}, r.text
        assert s.data("GET", "/nodes/sv1/qemu/130/config")["scsi0"].endswith("size=11G")
        r = s.api("PUT", "/nodes/sv1/qemu/130/resize", data={"disk": "scsi0", "size": "1G"})
        assert r.status_code == 500 and r.reason == "shrinking disks is not supported", r.reason
        assert r.json() == {"data": None}, r.text
        # errors carry no "message" in the body
        r = s.api("GET", "/nodes/sv1/qemu/131/config")
        assert r.status_code == 500 and r.json() == {"data": None}, r.text
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "x"})
        assert r.status_code == 400 and set(r.json()) == {"data", "errors"}, r.text
        # JSON booleans are not accepted before PVE 8
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone", json_body={"newid": 132, "full": True})
        assert r.status_code == 400, r.text
        assert r.json()["errors"] == {"full": "type check ('boolean') failed - got JSON::PP::Boolean"}, r.text
        # HTTP-layer errors had an empty body before http-server 5.2.0
        r = s.api("HEAD", "/version")
        assert r.status_code == 501 and r.reason == "method 'HEAD' not available"
        r = s.api("GET", "/version", data="x=1")
        assert r.status_code == 501 and r.reason == "Unexpected content for method 'GET'"
        assert r.content == b"", r.content


@case
def history_tells_each_vms_power_and_node_by_the_clock():
    """GET /_sim/history: every VM's creation, power changes, moves and end,
    oldest first, with the host's wall-clock ms: [ms, uid, vmid, node,
    power or "gone", sizes...]; a VMID made again is another VM (another
    uid). A clone is made empty and gets its config as the clone ends."""
    with Sim(nodes="sv1,sv2") as s:
        t0 = int(time.time() * 1000)
        clone(s, "sv1", 8000, 301)
        for what in ("start", "suspend", "resume", "stop"):
            upid = s.data("POST", "/nodes/sv1/qemu/301/status/" + what)
            assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        upid = s.data("POST", "/nodes/sv1/qemu/301/migrate", data={"target": "sv2"})
        assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        upid = s.data("DELETE", "/nodes/sv2/qemu/301")
        assert s.wait_task("sv2", upid)["exitstatus"] == "OK"
        clone(s, "sv2", 8010, 301)
        t1 = int(time.time() * 1000)
        h = s.ctl("GET", "/history")
        assert h["dropped"] == 0, h["dropped"]
        mine = [e for e in h["history"] if e[2] == 301]
        assert [e[3:5] for e in mine] == [
            ["sv1", "stopped"], ["sv1", "stopped"], ["sv1", "running"], ["sv1", "paused"],
            ["sv1", "running"], ["sv1", "stopped"], ["sv2", "stopped"], ["sv2", "gone"],
            ["sv2", "stopped"], ["sv2", "stopped"]], mine
        # made empty, then the template's sizes (2 cores, 2048 MiB, 10 GiB)
        assert mine[0][5:] == [1, 512, 0, 0, 0] and mine[1][5:] == [2, 2048, 10 << 30, 0, 0]
        assert len({e[1] for e in mine[:8]}) == 1 and mine[8][1] != mine[0][1], mine
        ms = [e[0] for e in mine]
        assert ms == sorted(ms) and t0 <= ms[0] and ms[-1] <= t1, (t0, ms, t1)
        # the templates were made at the start, before any of it
        assert all(e[0] <= t0 for e in h["history"] if e[2] == 8000), h["history"][:4]


@case
def history_tells_each_vms_sizes_by_the_clock():
    """Every entry of GET /_sim/history has the VM's sizes then, as the
    inventory tells them (cores, memory MiB, boot disk bytes) and what its
    pending list holds (cores, memory MiB; 0: none); a change of them is
    an entry: a config write, a resize, a change left pending while it
    runs and applied by a stop, an edit through the control API."""
    with Sim(nodes="sv1") as s:
        clone(s, "sv1", 8000, 302)
        s.data("PUT", "/nodes/sv1/qemu/302/config", data={"cores": 3, "memory": 3072})
        upid = s.data("PUT", "/nodes/sv1/qemu/302/resize", data={"disk": "scsi0", "size": "+2G"})
        if upid:  # a task on PVE 8 and later
            assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        upid = s.data("POST", "/nodes/sv1/qemu/302/status/start")
        assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        s.data("PUT", "/nodes/sv1/qemu/302/config", data={"cores": 4, "memory": 4096})
        s.data("PUT", "/nodes/sv1/qemu/302/config", data={"description": "sizes unchanged"})
        upid = s.data("POST", "/nodes/sv1/qemu/302/status/stop")
        assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        s.ctl("POST", "/vms/302", {"conf": {"cores": 1}})
        h = s.ctl("GET", "/history")
        mine = [e[4:] for e in h["history"] if e[2] == 302]
        g12 = 12 << 30
        # (the stop changes the power first, then applies what was pending)
        assert mine == [
            ["stopped", 1, 512, 0, 0, 0], ["stopped", 2, 2048, 10 << 30, 0, 0],
            ["stopped", 3, 3072, 10 << 30, 0, 0], ["stopped", 3, 3072, g12, 0, 0],
            ["running", 3, 3072, g12, 0, 0], ["running", 3, 3072, g12, 4, 4096],
            ["stopped", 3, 3072, g12, 4, 4096], ["stopped", 4, 4096, g12, 0, 0],
            ["stopped", 1, 4096, g12, 0, 0]], mine


finish()
