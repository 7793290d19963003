"""The QEMU guest agent in pvesim (qemu-server API2/Qemu/Agent.pm): ping and
network-get-interfaces answer like the agent of a booted guest, with the
addresses of the VM's cloud-init ipconfigN and the MACs of its netN, and the
refusals of Agent::assert_agent_available (no agent configured, VM not
running, agent not answering: disabled, guest still booting, VM paused).
cloud-init applies ipconfigN at boot, so the agent reports the addresses the
guest booted with until it boots again."""
from lib.cases import case, finish
from lib.sim import expect500, Sim
from lib.wait import wait_for


def run(s, method, path, node="sv1", **kw):
    st = s.wait_task(node, s.data(method, "/nodes/%s%s" % (node, path), **kw))
    assert st["exitstatus"] == "OK", st
    return st


def ping(s, vmid=100):
    return s.api("POST", "/nodes/sv1/qemu/%d/agent/ping" % vmid)


def ifaces(s, vmid=100):
    return s.api("GET", "/nodes/sv1/qemu/%d/agent/network-get-interfaces" % vmid)


@case
def agent_answers_after_boot():
    with Sim(time_scale=0.2) as s:  # the guest's agent starts 15 PVE s (3 s) after boot
        run(s, "POST", "/qemu/8000/clone", data={"newid": "100"})
        expect500(ping(s), "VM 100 is not running")
        expect500(ifaces(s), "VM 100 is not running")
        s.data("PUT", "/nodes/sv1/qemu/100/config",
               data={"ipconfig0": "ip=192.168.10.5/24,gw=192.168.10.1,ip6=2001:db8::5/64",
                     "net1": "virtio=BC:24:11:00:01:02,bridge=vmbr1", "ipconfig1": "ip=dhcp"})
        run(s, "POST", "/qemu/100/status/start")
        expect500(ping(s), "QEMU guest agent is not running")
        wait_for(lambda: ping(s).status_code == 200, 10, what="the agent")
        assert ping(s).json() == {"data": {"result": {}}}
        res = ifaces(s).json()["data"]["result"]
        names = [i["name"] for i in res]
        assert names == ["lo", "ens18", "ens19"], names
        lo, e0, e1 = res
        assert {a["ip-address"] for a in lo["ip-addresses"]} == {"127.0.0.1", "::1"}, lo
        mac0 = s.data("GET", "/nodes/sv1/qemu/100/config")["net0"].split("=")[1].split(",")[0]
        assert e0["hardware-address"] == mac0.lower(), (e0, mac0)
        a0 = {(a["ip-address"], a["ip-address-type"], a["prefix"]) for a in e0["ip-addresses"]}
        assert ("192.168.10.5", "ipv4", 24) in a0 and ("2001:db8::5", "ipv6", 64) in a0, a0
        assert any(a[0].startswith("fe80::") and a[2] == 64 for a in a0), a0
        assert e1["hardware-address"] == "bc:24:11:00:01:02", e1
        v4 = [a for a in e1["ip-addresses"] if a["ip-address-type"] == "ipv4"]
        assert len(v4) == 1 and v4[0]["ip-address"].startswith("10.100.") and v4[0]["prefix"] == 16
        assert e0["statistics"]["rx-bytes"] >= 0 and "tx-packets" in e0["statistics"], e0
        # paused: the agent does not answer
        run(s, "POST", "/qemu/100/status/suspend")
        expect500(ping(s), "QEMU guest agent is not running")
        run(s, "POST", "/qemu/100/status/resume")
        assert ping(s).status_code == 200
        assert s.ctl("GET", "/rejections") == []


@case
def agent_refusals_and_bad_input():
    with Sim(time_scale=0.01) as s:
        run(s, "POST", "/qemu/8000/clone", data={"newid": "100"})
        run(s, "POST", "/qemu/100/status/start")
        wait_for(lambda: ping(s).status_code == 200, 10, what="the agent")
        # agent=0: QEMU has no agent channel, so the agent never answers
        s.data("PUT", "/nodes/sv1/qemu/100/config", data={"agent": "enabled=0"})
        expect500(ping(s), "QEMU guest agent is not running")
        s.data("PUT", "/nodes/sv1/qemu/100/config", data={"delete": "agent"})
        expect500(ping(s), "No QEMU guest agent configured")
        expect500(ifaces(s), "No QEMU guest agent configured")
        expect500(ping(s, 999), "Configuration file 'nodes/sv1/qemu-server/999.conf' does not exist")
        r = s.api("POST", "/nodes/sv1/qemu/100/agent/ping", data={"timeout": "5"})
        assert r.status_code == 400 and r.json()["errors"] == {
            "timeout": "property is not defined in schema and the schema does not allow "
                       "additional properties"}, r.text
        r = s.api("GET", "/nodes/sv1/qemu/abc/agent/network-get-interfaces")
        assert r.status_code == 400 and r.json()["errors"] == {
            "vmid": "type check ('integer') failed - got 'abc'"}, r.text
        r = s.api("GET", "/nodes/sv1/qemu/100/agent/ping")
        assert r.status_code == 501, r.text
        assert len(s.ctl("GET", "/rejections")) == 3


def addrs(s, vmid=100, nic="ens18"):
    res = ifaces(s, vmid).json()["data"]["result"]
    e = [i for i in res if i["name"] == nic][0]
    return e["hardware-address"], sorted(
        (a["ip-address"], a["prefix"]) for a in e["ip-addresses"]
        if not a["ip-address"].startswith("fe80:"))


@case
def agent_reports_the_booted_network():
    """What proxd's address pools set (net0 with a locally administered MAC
    on a tagged bridge, ipconfig0 with both families, nameserver,
    searchdomain) is accepted, read back, and shown by the agent after boot;
    a change while the VM runs (through the API or behind PVE's back)
    reaches the guest at its next boot only."""
    with Sim(time_scale=0.05) as s:
        run(s, "POST", "/qemu/8000/clone", data={"newid": "100"})
        conf = {"net0": "virtio=02:5A:00:11:22:33,bridge=vmbr1,tag=42",
                "ipconfig0": "ip=192.168.10.5/24,gw=192.168.10.1,ip6=2001:db8:10::5/64,"
                             "gw6=2001:db8:10::1",
                "nameserver": "192.168.10.53 2001:db8:10::53", "searchdomain": "example.com"}
        s.data("PUT", "/nodes/sv1/qemu/100/config", data=conf)
        got = s.data("GET", "/nodes/sv1/qemu/100/config")
        for k, v in conf.items():
            assert got[k] == v, (k, got[k], v)
        run(s, "POST", "/qemu/100/status/start")
        wait_for(lambda: ping(s).status_code == 200, 10, what="the agent")
        booted = ("02:5a:00:11:22:33", [("192.168.10.5", 24), ("2001:db8:10::5", 64)])
        assert addrs(s) == booted, addrs(s)
        # changed through the API while running: in the config at once, not in the guest
        s.data("PUT", "/nodes/sv1/qemu/100/config", data={"ipconfig0": "ip=192.168.10.6/24"})
        assert s.data("GET", "/nodes/sv1/qemu/100/config")["ipconfig0"] == "ip=192.168.10.6/24"
        assert addrs(s) == booted, addrs(s)
        # ... and again behind PVE's back (an operator editing the file)
        s.ctl("POST", "/vms/100", {"conf": {"ipconfig0": "ip=192.168.10.7/24"}})
        assert addrs(s) == booted, addrs(s)
        run(s, "POST", "/qemu/100/status/reboot")
        wait_for(lambda: ping(s).status_code == 200, 10, what="the agent after the reboot")
        assert addrs(s) == ("02:5a:00:11:22:33", [("192.168.10.7", 24)]), addrs(s)
        # stopped, changed, started: the new address
        run(s, "POST", "/qemu/100/status/stop")
        s.data("PUT", "/nodes/sv1/qemu/100/config", data={"delete": "ipconfig0"})
        s.data("PUT", "/nodes/sv1/qemu/100/config", data={"ipconfig0": "ip6=2001:db8:10::9/64"})
        run(s, "POST", "/qemu/100/status/start")
        wait_for(lambda: ping(s).status_code == 200, 10, what="the agent after the start")
        assert addrs(s) == ("02:5a:00:11:22:33", [("2001:db8:10::9", 64)]), addrs(s)
        assert s.ctl("GET", "/rejections") == []


@case
def net_values_stored_canonically():
    """qemu-server re-prints every netN it is given (parse_net + print_net):
    "<model>=<MAC>" first, a missing MAC made up, the other keys sorted by
    name; a clone gets new MACs. The agent reads the MAC from that form."""
    import re
    with Sim(time_scale=0.01) as s:
        run(s, "POST", "/qemu/8000/clone", data={"newid": "100"})
        s.data("PUT", "/nodes/sv1/qemu/100/config", data={
            "net0": "virtio=02:5A:00:11:22:33,tag=5,bridge=vmbr0",
            "net1": "bridge=vmbr2,firewall=1,model=e1000,tag=7",
            "net2": "model=virtio,macaddr=02:00:00:00:00:09,bridge=vmbr0,mtu=1400"})
        conf = s.data("GET", "/nodes/sv1/qemu/100/config")
        assert conf["net0"] == "virtio=02:5A:00:11:22:33,bridge=vmbr0,tag=5", conf["net0"]
        assert re.fullmatch(r"e1000=BC:24:11(:[0-9A-F]{2}){3},bridge=vmbr2,firewall=1,tag=7",
                            conf["net1"]), conf["net1"]
        assert conf["net2"] == "virtio=02:00:00:00:00:09,bridge=vmbr0,mtu=1400", conf["net2"]
        run(s, "POST", "/qemu/100/clone", data={"newid": "101"})
        c2 = s.data("GET", "/nodes/sv1/qemu/101/config")
        for k in ("net0", "net1", "net2"):
            mac, rest = c2[k].split(",", 1)
            assert mac.split("=")[0] == conf[k].split("=")[0], (k, c2[k])
            assert mac != conf[k].split(",")[0] and rest == conf[k].split(",", 1)[1], (k, c2[k])
        run(s, "POST", "/qemu/100/status/start")
        wait_for(lambda: ping(s).status_code == 200, 10, what="the agent")
        macs = [i["hardware-address"] for i in ifaces(s).json()["data"]["result"]]
        assert macs[1:] == [c.split(",")[0].split("=")[1].lower()
                            for c in (conf["net0"], conf["net1"], conf["net2"])], macs
        assert s.ctl("GET", "/rejections") == []


finish()
