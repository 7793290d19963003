"""Error texts and codes of pvesim (pve-api.md §1-2, §6): parameter verification,
HTTP-layer 501/506, handler 500 texts, reason phrase, Connection: close."""
import socket
import ssl
import urllib.parse

from lib.cases import case, finish
from lib.sim import Sim
from lib.wait import wait_for

PVF = "Parameter verification failed."


def expect(r, status, message, errors=None, plain=False, nl=True):
    """An error reply: status, reason = first line, Connection: close, and the body
    (JSON envelope with data null, message + newline (nl=False: rest_handler's
    own 501 has none) and errors; or the plain text as is)."""
    assert r.status_code == status, (r.status_code, r.reason, r.text)
    assert r.reason == message.split("\n")[0], (r.reason, message)
    assert r.headers.get("Connection", "").lower() == "close", r.headers
    if plain:
        assert "Content-Type" not in r.headers, r.headers
        assert r.text == message, r.text
        return
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8", r.headers
    body = r.json()
    assert body["data"] is None, body
    assert body["message"] == message + ("\n" if nl else ""), body
    if errors is None:
        assert "errors" not in body, body
    else:
        assert body["errors"] == errors, body


def param_err(r, errors):
    expect(r, 400, PVF, errors)


def upid_of(s, method, path, **kw):
    return s.data(method, path, **kw)


def run_task(s, method, path, node="sv1", **kw):
    return s.wait_task(node, s.data(method, path, **kw))


def linked_clone(s, newid, src=8000, node="sv1"):
    st = run_task(s, "POST", "/nodes/%s/qemu/%d/clone" % (node, src), node=node,
                  data={"newid": str(newid)})
    assert st["exitstatus"] == "OK", st
    return newid


# ---- 400 Parameter verification failed. ------------------------------------

@case
def parameter_verification_texts():
    with Sim(time_scale=0.01) as s:
        cfg = "/nodes/sv1/qemu/8000/config"
        param_err(s.api("PUT", cfg, data={"bogus": "1"}),
                  {"bogus": "property is not defined in schema and the schema does not allow "
                            "additional properties"})
        param_err(s.api("PUT", cfg, data={"cores": "abc"}),
                  {"cores": "type check ('integer') failed - got 'abc'"})
        param_err(s.api("PUT", cfg, data={"cores": "0"}),
                  {"cores": "value must have a minimum value of 1"})
        param_err(s.api("PUT", cfg, data={"citype": "abc"}),
                  {"citype": "value 'abc' does not have a value in the enumeration "
                             "'configdrive2, nocloud, opennebula'"})
        param_err(s.api("PUT", cfg, data={"onboot": "true"}),
                  {"onboot": "type check ('boolean') failed - got 'true'"})
        param_err(s.api("PUT", "/nodes/sv1/qemu/8000/resize", data={"disk": "scsi0", "size": "abc"}),
                  {"size": "value does not match the regex pattern"})
        # several bad parameters: one entry each
        param_err(s.api("PUT", cfg, data={"cores": "0", "sockets": "x"}),
                  {"cores": "value must have a minimum value of 1",
                   "sockets": "type check ('integer') failed - got 'x'"})
        # missing required
        param_err(s.api("PUT", "/nodes/sv1/qemu/8000/resize", data={"disk": "scsi0"}),
                  {"size": "property is missing and it is not optional"})
        # vmid format (checked before the minimum) and type
        param_err(s.api("GET", "/nodes/sv1/qemu/99/config"),
                  {"vmid": "invalid format - value does not look like a valid VM ID\n"})
        param_err(s.api("GET", "/nodes/sv1/qemu/abc/config"),
                  {"vmid": "type check ('integer') failed - got 'abc'"})
        param_err(s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "0100"}),
                  {"newid": "invalid format - value does not look like a valid VM ID\n"})
        # the same rules for JSON bodies
        param_err(s.api("PUT", cfg, json_body={"cores": 0}),
                  {"cores": "value must have a minimum value of 1"})
        # nothing changed by any of them
        assert s.data("GET", cfg)["cores"] == 2


@case
def unknown_parameters_without_properties():
    """A method that declares no parameter takes none: PVE's `properties => {}`
    (which the apidoc drops) still makes JSONSchema.pm's check_object refuse
    each one. Not so for the few that declare no properties hash at all."""
    unknown = "property is not defined in schema and the schema does not allow additional properties"
    with Sim(time_scale=0.01) as s:
        param_err(s.api("GET", "/version", params={"x": "1"}), {"x": unknown})
        param_err(s.api("GET", "/cluster/status", params={"a": "1", "b": ""}), {"a": unknown, "b": unknown})
        param_err(s.api("GET", "/cluster/tasks", params={"foo": "5"}), {"foo": unknown})
        param_err(s.api("GET", "/nodes", params={"node": "sv1"}), {"node": unknown})
        # a POST (9.1's arm-ha, not served): refused before the 501
        param_err(s.api("POST", "/cluster/ha/status/arm-ha", data={"foo": "1"}), {"foo": unknown})
        expect(s.api("POST", "/cluster/ha/status/arm-ha"), 501,
               "Method 'POST /cluster/ha/status/arm-ha' not implemented", nl=False)
        # the refusals are recorded as any other
        rej = [(e["method"], e["path"]) for e in s.ctl("GET", "/rejections")]
        assert ("GET", "/cluster/tasks") in rej and ("GET", "/version") in rej, rej
        # without them they answer; the ExtJS cache buster is gone before the check
        for path in ("/cluster/tasks", "/version", "/cluster/status", "/nodes"):
            assert s.api("GET", path).status_code == 200, path
            assert s.api("GET", path, params={"_dc": "1700000000000"}).status_code == 200, path
        # GET /access/ticket declares no properties hash: anything goes
        r = s.api("GET", "/access/ticket", params={"foo": "1"})
        assert r.status_code == 200 and r.json() == {"data": None}, (r.status_code, r.text)
    with Sim(time_scale=0.01, pve_version=8) as s:
        param_err(s.api("GET", "/cluster/tasks", params={"foo": "5"}), {"foo": unknown})
        param_err(s.api("GET", "/version", params={"x": "1"}), {"x": unknown})
        assert s.api("GET", "/version").status_code == 200


@case
def duplicate_path_parameter():
    with Sim(time_scale=0.01) as s:
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"vmid": "8001", "cores": "3"})
        param_err(r, {"vmid": "duplicate parameter (already defined in URI) with conflicting values!"})
        r = s.api("GET", "/nodes/sv1/qemu/8000/config", params={"node": "sv2"})
        param_err(r, {"node": "duplicate parameter (already defined in URI) with conflicting values!"})
        # the same value is no conflict
        assert s.api("PUT", "/nodes/sv1/qemu/8000/config",
                     data={"vmid": "8000", "cores": "3"}).status_code == 200
        assert s.data("GET", "/nodes/sv1/qemu/8000/config")["cores"] == 3


@case
def skiplock_is_root_only():
    with Sim(time_scale=0.01) as s:
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"skiplock": "1", "cores": "3"})
        param_err(r, {"skiplock": "Only root may use this option."})
        r = s.api("DELETE", "/nodes/sv1/qemu/8000", params={"skiplock": "1"})
        param_err(r, {"skiplock": "Only root may use this option."})
        # root with a ticket may
        t = s.login()
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"skiplock": "1", "cores": "3"}, auth=t)
        assert r.status_code == 200, (r.status_code, r.reason)


@case
def nextid():
    with Sim(time_scale=0.01) as s:
        r = s.api("GET", "/cluster/nextid")
        assert r.status_code == 200 and r.json() == {"data": "100"}, r.text
        assert s.api("GET", "/cluster/nextid", params={"vmid": "555"}).json() == {"data": "555"}
        param_err(s.api("GET", "/cluster/nextid", params={"vmid": "8000"}),
                  {"vmid": "VM 8000 already exists"})
        # a template on another node is in the same (cluster-wide) VMID space
        param_err(s.api("GET", "/cluster/nextid", params={"vmid": "8010"}),
                  {"vmid": "VM 8010 already exists"})
        linked_clone(s, 100)
        assert s.api("GET", "/cluster/nextid").json() == {"data": "101"}
        param_err(s.api("GET", "/cluster/nextid", params={"vmid": "100"}),
                  {"vmid": "VM 100 already exists"})


# ---- HTTP layer ---------------------------------------------------------------

@case
def not_implemented():
    with Sim(time_scale=0.01) as s:
        expect(s.api("GET", "/nodes/sv1/nothing"), 501, "Method 'GET /nodes/sv1/nothing' not implemented",
               nl=False)
        expect(s.api("POST", "/version"), 501, "Method 'POST /version' not implemented", nl=False)
        expect(s.api("DELETE", "/cluster/nextid"), 501, "Method 'DELETE /cluster/nextid' not implemented",
               nl=False)
        for m in ("PATCH", "OPTIONS", "HEAD"):
            r = s.api(m, "/version")
            assert r.status_code == 501 and r.reason == "method '%s' not available" % m, (m, r.status_code, r.reason)
            assert r.headers.get("Connection") == "close" and "Content-Type" not in r.headers
            assert r.text == "", (m, r.text)  # a bare HTTP::Response: no body
        # before authentication: no credentials needed to get it
        r = s.api("PATCH", "/version", auth=None)
        assert r.status_code == 501 and r.reason == "method 'PATCH' not available" and r.text == "", r
        # after authentication (handle_api2_request), unlike the above
        token = {"Authorization": "PVEAPIToken=%s=%s" % (s.token_id, s.token_secret)}
        expect(s.raw("GET", "/api2/xml/version", headers=token), 501,
               "no formatter for uri /version, xml", plain=True)
        expect(s.raw("GET", "/foo"), 501, "no such uri", plain=True)


@case
def body_rules():
    with Sim(time_scale=0.01) as s:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = s.api("DELETE", "/nodes/sv1/qemu/8000", data="purge=1", headers=form)
        expect(r, 501, "Unexpected content for method 'DELETE'", plain=True)
        r = s.api("GET", "/version", data="x=1", headers=form)
        expect(r, 501, "Unexpected content for method 'GET'", plain=True)
        assert s.vm(8000) is not None
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone", files={"newid": (None, "100")})
        ct = r.request.headers["Content-Type"]
        assert ct.startswith("multipart/form-data; boundary=")
        # the whole header, boundary and all
        expect(r, 506, "upload 'Content-Type '%s' not implemented" % ct, plain=True)
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data="cores=3",
                  headers={"Content-Type": "text/plain"})
        expect(r, 506, "upload 'Content-Type 'text/plain' not implemented", plain=True)
        # charset parameters are ignored
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data="cores=3",
                  headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
        assert r.status_code == 200, (r.status_code, r.reason)
        assert s.vm(100) is None


# ---- handler errors (500) ----------------------------------------------------

@case
def missing_vm_texts():
    with Sim(time_scale=0.01) as s:
        msg = "Configuration file 'nodes/sv1/qemu-server/555.conf' does not exist"
        expect(s.api("GET", "/nodes/sv1/qemu/555/config"), 500, msg)
        expect(s.api("PUT", "/nodes/sv1/qemu/555/config", data={"cores": "2"}), 500, msg)
        expect(s.api("GET", "/nodes/sv1/qemu/555/status/current"), 500, msg)
        expect(s.api("DELETE", "/nodes/sv1/qemu/555"), 500, msg)
        expect(s.api("POST", "/nodes/sv1/qemu/555/clone", data={"newid": "556"}), 500,
               "unable to find configuration file for VM 555 on node 'sv1'")
        expect(s.api("POST", "/nodes/sv1/qemu/555/status/stop"), 500,
               "unable to find configuration file for VM 555 on node 'sv1'")
        # a VM that lives on another node: that node's config directory is asked
        expect(s.api("GET", "/nodes/sv2/qemu/8000/config"), 500,
               "Configuration file 'nodes/sv2/qemu-server/8000.conf' does not exist")


@case
def destroy_refusals():
    with Sim(time_scale=0.01) as s:
        linked_clone(s, 100)
        run_task(s, "POST", "/nodes/sv1/qemu/100/status/start")
        expect(s.api("DELETE", "/nodes/sv1/qemu/100"), 500, "VM 100 is running - destroy failed")
        linked_clone(s, 101)
        assert s.api("PUT", "/nodes/sv1/qemu/101/config", data={"protection": "1"}).status_code == 200
        expect(s.api("DELETE", "/nodes/sv1/qemu/101"), 500,
               "can't remove VM 101 - protection mode enabled")
        linked_clone(s, 102)
        s.ctl("POST", "/vms/102", {"ha": True, "ha_state": "stopped"})
        expect(s.api("DELETE", "/nodes/sv1/qemu/102"), 500,
               "unable to remove VM 102 - used in HA resources and purge parameter not set.")
        st = run_task(s, "DELETE", "/nodes/sv1/qemu/102", params={"purge": "1"})
        assert st["exitstatus"] == "OK", st
        assert s.vm(100) and s.vm(101) and s.vm(102) is None


@case
def clone_onto_existing_id():
    with Sim(time_scale=0.01) as s:
        linked_clone(s, 100)
        expect(s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"}), 500,
               "unable to create VM 100: config file already exists")
        expect(s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "8001"}), 500,
               "unable to create VM 8001: config file already exists")


@case
def config_update_refusals():
    with Sim(time_scale=0.01) as s:
        cfg = "/nodes/sv1/qemu/8000/config"
        expect(s.api("PUT", cfg, data={}), 500, "no options specified")
        expect(s.api("POST", cfg, data={"digest": "0" * 40}), 500, "no options specified")
        digest = s.data("GET", cfg)["digest"]
        assert s.api("PUT", cfg, data={"cores": "3", "digest": digest}).status_code == 200
        # the digest is now stale
        expect(s.api("PUT", cfg, data={"cores": "4", "digest": digest}), 500,
               "checksum mismatch (file change by other user?)")
        expect(s.api("POST", cfg, data={"cores": "4", "digest": digest}), 500,
               "checksum mismatch (file change by other user?)")
        assert s.data("GET", cfg)["cores"] == 3
        param_err(s.api("PUT", cfg, data={"delete": "nosuchopt"}),
                  {"delete": "unknown option 'nosuchopt'"})
        param_err(s.api("PUT", cfg, data={"delete": "cores", "cores": "2"}),
                  {"delete": "you can't use '-cores' and -delete cores' at the same time"})


@case
def checksum_missmatch_before_pve8_4():
    # the typo was fixed in qemu-server 8.2.5 (Oct 2024): PVE 8.4 says "mismatch"
    for version, word in ((7, "missmatch"), (8, "mismatch"), (9, "mismatch")):
        with Sim(time_scale=0.01, pve_version=version) as s:
            r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"cores": "4", "digest": "0" * 40})
            msg = "checksum %s (file change by other user?)" % word
            if version >= 8:
                expect(r, 500, msg)
            else:  # 7.x: the message is in the reason phrase only
                assert r.status_code == 500 and r.reason == msg, (r.status_code, r.reason)


@case
def locked_while_cloning():
    with Sim(time_scale=0.01) as s:
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 100})  # 40 GiB: ~400 PVE s = 4 s
        upid = s.data("POST", "/nodes/sv1/qemu/8003/clone", data={"newid": "100", "full": "1"})

        def locked():
            r = s.api("GET", "/nodes/sv1/qemu/100/config")
            return r.status_code == 200 and r.json()["data"].get("lock") == "clone"
        wait_for(locked, 5, what="lock: clone on the new VM")
        expect(s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "4"}), 500, "VM is locked (clone)")
        expect(s.api("POST", "/nodes/sv1/qemu/100/config", data={"cores": "4"}), 500, "VM is locked (clone)")
        # the source is not locked
        assert "lock" not in s.data("GET", "/nodes/sv1/qemu/8003/config")
        assert s.api("DELETE", "/nodes/sv1/tasks/" + upid).status_code == 200
        # the stopped clone's worker removed what it made, as qemu-server's does
        st = s.data("GET", "/nodes/sv1/tasks/%s/status" % upid)
        assert st["status"] == "stopped" and st["exitstatus"] == "clone failed: received interrupt", st
        assert s.api("GET", "/nodes/sv1/qemu/100/config").status_code == 500
        assert s.api("DELETE", "/nodes/sv1/tasks/" + upid).status_code == 200  # ended: no error


KEY_ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExpzqEB21/osp0uiM0EB4U0KDw5SIdKC9V/XOsO7BlK me@host"
KEY_RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDQWuCctQv99fKVfXCADMq/QbywO9U4qs2bgWC1AQ4tgP9ng1Q0Jo"
           "ViqEEo7cRfwKtcufyUZPmgUU3n77iJ48F27kLQEWetm+fnViWHjEhv0UpRQkYzY68YAEJfky5RF1HNN/pYS5uJxC"
           "+ui2R7sqjCV8sfGcCH76AqxbW5fhMqJQ== r@h")
KEY_EC = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOgI5MK3m0zeohrCw+k2"
          "/utr2tF8n467GdmYirc/rb9rTwSRhzcJXbuKgZ8MvjcYMF9FXi3j7A9+nk0H12sOEv0= e@h")


@case
def ssh_keys():
    with Sim(time_scale=0.01) as s:
        cfg = "/nodes/sv1/qemu/8000/config"
        # encodeURIComponent of the key text, then the form encoder encodes it again
        enc = urllib.parse.quote(KEY_ED + "\n", safe="")
        assert s.api("PUT", cfg, data={"sshkeys": enc}).status_code == 200
        assert s.data("GET", cfg)["sshkeys"] == enc
        several = urllib.parse.quote("\n".join([KEY_RSA, KEY_EC, KEY_ED, ""]), safe="")
        r = s.api("PUT", cfg, data={"sshkeys": several})
        assert r.status_code == 200, (r.status_code, r.reason)
        # well encoded, but not a key: unknown type, blob not base64, a blob of
        # another type, truncated blobs, trailing garbage, one bad line among good ones
        blob = KEY_ED.split()[1]
        import base64
        raw = base64.b64decode(blob)
        bads = ["ssh-foo AAAA me", "ssh-ed25519 not-base64! me",
                "ssh-rsa " + blob,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBAD me",
                "ssh-ed25519 " + base64.b64encode(raw[:-3]).decode(),
                "ssh-ed25519 " + base64.b64encode(raw + b"xyz").decode(),
                "ssh-rsa " + base64.b64encode(base64.b64decode(KEY_RSA.split()[1])[:40]).decode(),
                KEY_RSA + "\nssh-ed25519 AAAA"]
        for bad in bads:
            r = s.api("PUT", cfg, data={"sshkeys": urllib.parse.quote(bad, safe="")})
            expect(r, 500, "SSH public key validation error")
            r = s.api("POST", "/nodes/sv1/qemu", data={"vmid": "300", "sshkeys": urllib.parse.quote(bad, safe="")})
            expect(r, 500, "SSH public key validation error")
        assert s.vm(300) is None
        assert s.data("GET", cfg)["sshkeys"] == several
        # the key text itself not percent-encoded: '+' in the form became a space
        r = s.api("PUT", cfg, data="sshkeys=ssh-ed25519 AAAA+x me",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        param_err(r, {"sshkeys": "invalid format - invalid urlencoded string: ssh-ed25519 AAAA x me\n"})
        r = s.api("PUT", cfg, data={"sshkeys": KEY_ED})  # encoded once only
        param_err(r, {"sshkeys": "invalid format - invalid urlencoded string: %s\n" % KEY_ED})
        assert s.data("GET", cfg)["sshkeys"] == several


@case
def resize_errors_are_task_statuses():
    with Sim(time_scale=0.01) as s:
        linked_clone(s, 100)
        st = run_task(s, "PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "1G"})
        assert st["type"] == "resize" and st["exitstatus"] == "shrinking disks is not supported", st
        st = run_task(s, "PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi5", "size": "+1G"})
        assert st["exitstatus"] == "disk 'scsi5' does not exist", st
        st = run_task(s, "PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "+1G"})
        assert st["exitstatus"] == "OK", st
        assert "size=11G" in s.data("GET", "/nodes/sv1/qemu/100/config")["scsi0"]


@case
def resize_errors_are_http_errors_on_pve7():
    with Sim(time_scale=0.01, pve_version=7) as s:
        linked_clone(s, 100)
        r = s.api("PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "1G"})
        assert r.status_code == 500 and r.reason == "shrinking disks is not supported", (r.status_code, r.reason)
        assert r.headers["Connection"] == "close"
        r = s.api("PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "+1G"})
        assert r.status_code == 200 and r.json() == {"data": None}, r.text


@case
def more_handler_texts():
    with Sim(time_scale=0.01) as s:
        clone = "/nodes/sv1/qemu/8000/clone"
        param_err(s.api("POST", clone, data={"newid": "100", "full": "1", "storage": "local"}),
                  {"storage": "storage 'local' does not support vm images"})
        expect(s.api("POST", clone, data={"newid": "100", "full": "1", "storage": "nope"}), 500,
               "storage 'nope' does not exist")
        expect(s.api("POST", clone, data={"newid": "100", "storage": "local-lvm"}), 500,
               "parameter 'storage' not allowed for linked clones")
        expect(s.api("POST", clone, data={"newid": "100", "format": "raw"}), 500,
               "parameter 'format' not allowed for linked clones")
        expect(s.api("POST", clone, data={"newid": "100", "target": "sv2"}), 500,
               "can't clone VM to node 'sv2' (VM uses local storage)")
        expect(s.api("POST", clone, data={"newid": "100", "target": "sv9"}), 500,
               "no such cluster node 'sv9'")
        expect(s.api("GET", "/nodes/sv9/qemu"), 500,
               "hostname lookup 'sv9' failed - failed to get address info for: sv9: Name or service not known")
        linked_clone(s, 100)
        expect(s.api("POST", "/nodes/sv1/qemu/100/clone", data={"newid": "101", "full": "0"}), 500,
               "Linked clone feature is not supported for 'local-lvm:base-8000-disk-0/vm-100-disk-0' (scsi0)")
        expect(s.api("PUT", "/nodes/sv1/qemu/100/config", data={"balloon": "4096"}), 500,
               "balloon value too large (must be smaller than assigned memory)")
        # newid taken by a VM on another node: only the task fails, and the
        # temporary config write is outside clone_vm's eval: no "clone failed: "
        st = run_task(s, "POST", clone, data={"newid": "8010"})
        assert st["exitstatus"] == ("close (rename) atomic file "
                                    "'/etc/pve/nodes/sv1/qemu-server/8010.conf' failed: File exists"), st
        # create onto an existing id
        expect(s.api("POST", "/nodes/sv1/qemu", data={"vmid": "8010"}), 500,
               "unable to create VM 8010 - VM 8010 already exists on node 'sv2'")
        # HA-only refusals
        s.ctl("POST", "/vms/100", {"ha": True})
        param_err(s.api("POST", "/nodes/sv1/qemu/100/status/stop", data={"overrule-shutdown": "1"}),
                  {"overrule-shutdown": "Not applicable for HA resources."})
        run_task(s, "POST", "/nodes/sv1/qemu/100/status/start")
        wait_for(lambda: s.vm(100)["power"] == "running", 5, what="the HA start")
        expect(s.api("POST", "/nodes/sv1/qemu/100/status/suspend", data={"todisk": "1"}), 500,
               "Cannot suspend HA managed VM to disk")


@case
def task_endpoint_errors():
    with Sim(time_scale=0.01) as s:
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"})
        s.wait_task("sv1", upid)
        param_err(s.api("GET", "/nodes/sv1/tasks/nonsense/status"), {"upid": "unable to parse worker upid"})
        param_err(s.api("GET", "/nodes/sv2/tasks/%s/status" % upid), {"upid": "no such task"})
        param_err(s.api("GET", "/nodes/sv1/tasks/nonsense/log"), {"upid": "unable to parse worker upid"})
        r = s.api("GET", "/nodes/sv2/tasks/%s/log" % upid)
        assert r.status_code == 200 and r.json() == {
            "data": [{"n": 1, "t": "unable to open file - No such file or directory"}], "total": 1}, r.text
        # the %3A-encoded UPID works like the raw one
        enc = upid.replace(":", "%3A")
        assert s.data("GET", "/nodes/sv1/tasks/%s/status" % enc)["upid"] == upid



@case
def reason_phrase_is_first_line():
    with Sim(time_scale=0.01) as s:
        s.ctl("POST", "/faults", {"path": "^/version$", "kind": "error", "status": 500,
                                  "message": "first line\nsecond line"})
        expect(s.api("GET", "/version"), 500, "first line\nsecond line")


@case
def success_keeps_connection():
    with Sim(time_scale=0.01) as s:
        r = s.api("GET", "/version")
        assert r.status_code == 200 and r.headers.get("Connection", "").lower() != "close", r.headers
        # after an error on a keep-alive connection the server closes it
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", s.entry), timeout=5) as raw:
            c = ctx.wrap_socket(raw)
            c.sendall(b"GET /api2/json/nodes/sv1/qemu/555/config HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: PVEAPIToken=root@pam!ci=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode()
            assert head.startswith("HTTP/1.1 500 Configuration file 'nodes/sv1/qemu-server/555.conf' does not exist"), head
            assert "Connection: close" in head, head


finish()
