"""Texts and fields where pvesim used to differ from real PVE (issue 11 §3),
each checked against qemu-server / pve-manager / pve-http-server sources:
resize with a stale digest, a clone onto an ID on another node, PVE 9's
memhost and pressure fields, 501 bodies, the credential-free calls, the
"missmatch" typo and the release banner of each version."""
from lib.cases import case, finish
from lib.env import TOKEN_ID, TOKEN_SECRET
from lib.sim import Sim

MISMATCH = "checksum mismatch (file change by other user?)"
PRESSURE = ["pressurecpusome", "pressurecpufull", "pressureiosome", "pressureiofull",
            "pressurememorysome", "pressurememoryfull"]


def run_task(s, method, path, node="sv1", **kw):
    return s.wait_task(node, s.data(method, path, **kw))


def clone(s, newid, src=8000, node="sv1"):
    st = run_task(s, "POST", "/nodes/%s/qemu/%d/clone" % (node, src), node=node, data={"newid": str(newid)})
    assert st["exitstatus"] == "OK", st


@case
def resize_with_a_stale_digest_fails_its_task():
    # resize_vm (PVE 8+): the worker compares the digest under the config lock
    for version in (8, 9):
        with Sim(time_scale=0.01, pve_version=version) as s:
            clone(s, 100)
            cfg = "/nodes/sv1/qemu/100/config"
            stale = s.data("GET", cfg)["digest"]
            assert s.api("PUT", cfg, data={"cores": "3"}).status_code == 200
            st = run_task(s, "PUT", "/nodes/sv1/qemu/100/resize",
                          data={"disk": "scsi0", "size": "+1G", "digest": stale})
            assert st["type"] == "resize" and st["exitstatus"] == MISMATCH, (version, st)
            assert "size=10G" in s.data("GET", cfg)["scsi0"]
            log = s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])
            assert log[-1]["t"] == "TASK ERROR: " + MISMATCH, log
            # the current digest passes; a locked config refuses (skiplock is root's)
            fresh = s.data("GET", cfg)["digest"]
            st = run_task(s, "PUT", "/nodes/sv1/qemu/100/resize",
                          data={"disk": "scsi0", "size": "+1G", "digest": fresh})
            assert st["exitstatus"] == "OK", st
            assert "size=11G" in s.data("GET", cfg)["scsi0"]
            s.ctl("POST", "/vms/100", {"conf": {"lock": "backup"}})
            st = run_task(s, "PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "+1G"})
            assert st["exitstatus"] == "VM is locked (backup)", st
    # PVE 7: synchronous, with the old spelling
    with Sim(time_scale=0.01, pve_version=7) as s:
        clone(s, 100)
        r = s.api("PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "+1G", "digest": "0" * 40})
        assert r.status_code == 500 and r.reason == "checksum missmatch (file change by other user?)", r.reason


@case
def clone_onto_an_id_on_another_node_has_no_prefix():
    with Sim(time_scale=0.01) as s:
        clone(s, 300, src=8010, node="sv2")
        st = run_task(s, "POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "300"})
        assert st["exitstatus"] == ("close (rename) atomic file '/etc/pve/nodes/sv1/qemu-server/300.conf' "
                                    "failed: File exists"), st
        assert s.vm(300)["node"] == "sv2"


def vm_entries(s, vmid):
    res = [e for e in s.data("GET", "/cluster/resources") if e.get("vmid") == vmid]
    lst = [e for e in s.data("GET", "/nodes/sv1/qemu") if e["vmid"] == vmid]
    cur = s.data("GET", "/nodes/sv1/qemu/%d/status/current" % vmid)
    assert len(res) == 1 and len(lst) == 1, (res, lst)
    return res[0], lst[0], cur


@case
def pve9_memhost_and_pressure():
    with Sim(time_scale=0.01, pve_version=9) as s:
        clone(s, 100)
        res, lst, cur = vm_entries(s, 100)
        for e in (res, lst, cur):  # stopped: memhost 0, no pressure
            assert e["memhost"] == 0 and not any(k in e for k in PRESSURE), e
        assert run_task(s, "POST", "/nodes/sv1/qemu/100/status/start")["exitstatus"] == "OK"
        res, lst, cur = vm_entries(s, 100)
        for e in (res, lst, cur):
            assert e["memhost"] > 0 and e["memhost"] == e["mem"], e
        for e in (lst, cur):  # vmstatus reads the cgroup's pressure; resources the RRD
            assert all(isinstance(e[k], (int, float)) for k in PRESSURE), e
        assert not any(k in res for k in PRESSURE), res
        # the other entries of /cluster/resources carry no memhost
        assert all("memhost" not in e for e in s.data("GET", "/cluster/resources") if e["type"] not in ("qemu", "lxc"))
    with Sim(time_scale=0.01, pve_version=8) as s:
        clone(s, 100)
        assert run_task(s, "POST", "/nodes/sv1/qemu/100/status/start")["exitstatus"] == "OK"
        for e in vm_entries(s, 100):
            assert "memhost" not in e and not any(k in e for k in PRESSURE), e


@case
def not_implemented_message_has_no_newline():
    with Sim(time_scale=0.01) as s:
        r = s.api("GET", "/nodes/sv1/nothing")
        assert r.status_code == 501 and r.json() == {
            "data": None, "message": "Method 'GET /nodes/sv1/nothing' not implemented"}, r.text
        r = s.raw("GET", "/foo")  # AnyEvent's error(): the message as the body, as is
        assert r.status_code == 501 and r.text == "no such uri", r.text
        s.ctl("DELETE", "/rejections")


@case
def credential_free_calls_are_exactly_pves():
    with Sim(time_scale=0.01, auth_delay=0) as s:
        assert s.raw("GET", "/api2/json/access/domains").status_code == 200
        r = s.raw("POST", "/api2/json/access/domains", data={"realm": "x", "type": "pve"})
        assert r.status_code == 401 and r.reason == "No ticket" and r.text == "", (r.status_code, r.reason)
        # with a token, POST /access/domains is an ordinary call (checked, then handled)
        r = s.api("POST", "/access/domains", data={})
        assert r.status_code == 400 and set(r.json()["errors"]) == {"realm", "type"}, r.text
        # allowtoken => 0 methods refuse a token, naming the URI that was called
        tok = {"Authorization": "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)}
        for method, path, data in (("POST", "/access/ticket", {"username": "root@pam", "password": "x"}),
                                   ("PUT", "/access/password", {"userid": "root@pam", "password": "abcdefgh"})):
            r = s.raw(method, "/api2/json" + path, data=data, headers=tok)
            msg = "Permission check failed (URI '%s' not available with API token, need proper ticket." % path
            assert r.status_code == 403 and r.reason == msg, (path, r.status_code, r.reason)
            assert r.json()["data"] is None
        s.ctl("DELETE", "/rejections")


@case
def release_banner_names_each_versions_kernel_and_qemu():
    want = {9: ("9.1.3", "6.17.", "10.1."), 8: ("8.4.2", "6.8.", "9.2."), 7: ("7.4-3", "5.15.", "7.2.")}
    for version, (pve, kernel, qemu) in want.items():
        with Sim(time_scale=0.01, pve_version=version) as s:
            assert s.data("GET", "/version")["version"] == pve
            st = s.data("GET", "/nodes/sv1/status")
            assert st["pveversion"].startswith("pve-manager/%s/" % pve), st["pveversion"]
            assert st["kversion"].startswith("Linux " + kernel), st["kversion"]
            if version >= 8:
                assert st["current-kernel"]["release"].startswith(kernel), st["current-kernel"]
                assert st["kversion"] == "Linux %s %s" % (st["current-kernel"]["release"],
                                                           st["current-kernel"]["version"])
            clone(s, 100)
            assert run_task(s, "POST", "/nodes/sv1/qemu/100/status/start")["exitstatus"] == "OK"
            cur = s.data("GET", "/nodes/sv1/qemu/100/status/current")
            assert cur["running-qemu"].startswith(qemu), cur
            assert cur["running-machine"].startswith("pc-i440fx-" + qemu[:-1]), cur


@case
def a_cloud_init_password_is_never_given_back():
    # vm_config masks it ('**********'), in a snapshot's config too; vm_pending
    # lists it masked (PVE/API2/Qemu.pm); the VM keeps it (the state shows it)
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        cfg = "/nodes/sv1/qemu/100/config"
        assert s.api("PUT", cfg, data={"ciuser": "ops", "cipassword": "s3cret-pw"}).status_code == 200
        conf = s.data("GET", cfg)
        assert conf["cipassword"] == "**********" and conf["ciuser"] == "ops", conf
        assert s.data("GET", cfg, params={"current": "1"})["cipassword"] == "**********"
        pend = {e["key"]: e for e in s.data("GET", "/nodes/sv1/qemu/100/pending")}
        assert pend["cipassword"]["value"] == "**********", pend["cipassword"]
        st = run_task(s, "POST", "/nodes/sv1/qemu/100/snapshot", data={"snapname": "before"})
        assert st["exitstatus"] == "OK", st
        snap = s.data("GET", cfg, params={"snapshot": "before"})
        assert snap["cipassword"] == "**********", snap
        kept = s.vm(100)["conf"]["cipassword"]
        assert kept and kept != "**********", kept


@case
def a_pending_change_moves_the_digest():
    # the [PENDING] section is part of the config file (write_vm_config), so
    # the digest, its SHA-1, moves with a pending change: a write carrying
    # the digest of before it is refused, as any stale one
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        cfg = "/nodes/sv1/qemu/100/config"
        st = run_task(s, "POST", "/nodes/sv1/qemu/100/status/start")
        assert st["exitstatus"] == "OK", st
        before = s.data("GET", cfg)["digest"]
        assert s.api("PUT", cfg, data={"cores": "3", "digest": before}).status_code == 200
        assert s.vm(100)["pending"].get("cores") in (3, "3"), s.vm(100)
        pending = s.data("GET", cfg)["digest"]
        assert pending != before
        r = s.api("PUT", cfg, data={"cores": "2", "digest": before})
        assert r.status_code == 500 and r.reason == MISMATCH, (r.status_code, r.reason)
        assert s.vm(100)["pending"].get("cores") in (3, "3"), s.vm(100)
        # a pending deletion moves it too
        assert s.api("PUT", cfg, data={"delete": "sockets", "digest": pending}).status_code == 200
        assert "sockets" in s.vm(100)["pending_delete"], s.vm(100)
        assert s.data("GET", cfg)["digest"] != pending


finish()
