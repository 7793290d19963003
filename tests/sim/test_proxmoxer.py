"""A real third-party client, proxmoxer (Debian's python3-proxmoxer 1.2.0),
drives pvesim unmodified: ticket and token login, a full VM life cycle from a
template clone to a purged destroy, and PVE errors surfacing through
proxmoxer's ResourceException."""
import time
import urllib.parse

import proxmoxer

from lib.cases import case, finish
from lib.env import PASSWORD, TOKEN_SECRET
from lib.pxm import expect_error
from lib.sim import Sim
from lib.wait import wait_for

# real keys (ssh-keygen), both with the comment 'me@host'
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKLvUisgGmPEnolX7BDaNtI/eDjLlJHK3zFxaGxyZU/q "
           "me@host")
RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDhRhkNzHs0Pa8U0/pxvznozGTwam25BiugZuM5IKyqK6Aitk"
       "aat/WpPLX7gKUSc+bdMOsecG7I0i4F4fdIqFJtyE/vqr7z3NtVb4gNV9VGOU3EpV1/DUGKfje6GDz9bfQYxUxBM8"
       "8VjSB004OO7OdFxfQ5TWaaask2YLZKrERdi6ekXJgNiSmuPMHyhz3T6qgFrUGQkCyr8PpGzq57eRxG+Vs1hnjxhY"
       "kN+49KQThTDjraNQ8GhBiMptelcYFjmhwSDr6Dh+1SPP2DJGvvLLRCkg7EcVIscdH/bvNbHJjCMt14a7JOlOpytt"
       "gZO60cMPkhJDMpjbAeFlWKMlWdRgdp me@host")


def client(s, how):
    if how == "ticket":
        return proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="root@pam",
                                    password=PASSWORD, verify_ssl=False)
    return proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="root@pam", token_name="ci",
                                token_value=TOKEN_SECRET, verify_ssl=False)


def blocking_status(px, node, upid, deadline=20.0):
    """proxmoxer 1.2.0 has no proxmoxer.tools.Tasks: poll the status the same way."""
    tools = getattr(proxmoxer, "tools", None)
    if tools is not None and hasattr(tools, "Tasks"):
        return tools.Tasks.blocking_status(px, upid, timeout=deadline, polling_interval=0.02)

    def done():
        st = px.nodes(node).tasks(upid).status.get()
        return st if st["status"] == "stopped" else None
    return wait_for(done, deadline, interval=0.02, what="task " + upid)


def life_cycle(s, how, newid, name):
    px = client(s, how)
    node = px.nodes("sv1")
    assert [n["node"] for n in sorted(px.nodes.get(), key=lambda n: n["node"])][:2] == ["sv1", "sv2"]

    # clone the ubuntu template
    upid = node.qemu(8000).clone.post(newid=newid, full=1, name=name)
    assert upid.startswith("UPID:sv1:") and ":qmclone:8000:" in upid, upid
    owner = "root@pam!ci" if how == "token" else "root@pam"
    assert upid.endswith(":%s:" % owner), upid
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    conf = node.qemu(newid).config.get()
    assert conf["name"] == name and "template" not in conf and "lock" not in conf, conf
    assert conf["scsi0"].startswith("local-lvm:vm-%d-disk-0," % newid), conf["scsi0"]
    assert conf["scsi0"].endswith("size=10G"), conf["scsi0"]

    # config, with sshkeys encoded the way PVE wants them (proxmoxer encodes once more)
    keys = ED25519 + "\n" + RSA + "\n"
    enc = urllib.parse.quote(keys, safe="")
    assert "%20me%40host%0A" in enc
    r = node.qemu(newid).config.put(sshkeys=enc, cores=4, memory=4096,
                                    ipconfig0="ip=10.1.2.3/24,gw=10.1.2.1", tags="ci;web")
    assert r is None, r
    conf = node.qemu(newid).config.get()
    assert conf["sshkeys"] == enc, (conf["sshkeys"], enc)
    assert urllib.parse.unquote(conf["sshkeys"]) == keys
    assert conf["cores"] == 4 and conf["memory"] == "4096", conf
    assert conf["ipconfig0"] == "ip=10.1.2.3/24,gw=10.1.2.1", conf
    assert conf["tags"] == "ci;web", conf
    digest = conf["digest"]
    assert len(digest) == 40

    # a key in the form a naive client sends (not encoded) is refused by the schema
    expect_error(lambda: node.qemu(newid).config.put(sshkeys=ED25519), 400,
                     "Parameter verification failed.")
    # a wrong key, properly encoded, fails the validation
    bad = urllib.parse.quote("ssh-ed25519 AAAAnotakey me@host", safe="")
    expect_error(lambda: node.qemu(newid).config.put(sshkeys=bad), 500,
                 "SSH public key validation error")
    # a stale digest
    node.qemu(newid).config.put(description="changed")
    expect_error(lambda: node.qemu(newid).config.put(cores=2, digest=digest), 500,
                 "checksum mismatch (file change by other user?)")

    # resize +5G: a task on PVE 9
    upid = node.qemu(newid).resize.put(disk="scsi0", size="+5G")
    assert ":resize:%d:" % newid in upid, upid
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    assert node.qemu(newid).config.get()["scsi0"].endswith("size=15G")
    # shrinking fails inside the task on PVE >= 8
    st = blocking_status(px, "sv1", node.qemu(newid).resize.put(disk="scsi0", size="1G"))
    assert st["exitstatus"] == "shrinking disks is not supported", st
    assert node.qemu(newid).config.get()["scsi0"].endswith("size=15G")

    # start, running, shutdown, start again, stop
    upid = node.qemu(newid).status.start.post()
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    cur = node.qemu(newid).status.current.get()
    assert cur["status"] == "running" and cur["qmpstatus"] == "running", cur
    assert cur["cpus"] == 4 and cur["maxmem"] == 4096 * 1024 * 1024, cur
    assert cur["maxdisk"] == 15 * 1024 ** 3, cur
    vms = {v["vmid"]: v for v in node.qemu.get()}
    assert vms[newid]["status"] == "running" and vms[newid]["name"] == name

    # a running VM cannot be destroyed; PVE's reason reaches the caller
    expect_error(lambda: node.qemu(newid).delete(purge=1), 500,
                 "VM %d is running - destroy failed" % newid)

    upid = node.qemu(newid).status.shutdown.post(timeout=30)
    assert ":qmshutdown:%d:" % newid in upid
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    assert node.qemu(newid).status.current.get()["status"] == "stopped"
    upid = node.qemu(newid).status.start.post()
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    assert node.qemu(newid).status.current.get()["status"] == "running"
    # a guest that ignores ACPI: the shutdown times out, unless forceStop
    s.ctl("POST", "/vms/%d" % newid, {"acpi": False})
    st = blocking_status(px, "sv1", node.qemu(newid).status.shutdown.post(timeout=2))
    assert st["exitstatus"] == "VM quit/powerdown failed - got timeout", st
    assert node.qemu(newid).status.current.get()["status"] == "running"
    st = blocking_status(px, "sv1", node.qemu(newid).status.shutdown.post(timeout=2, forceStop=1))
    assert st["exitstatus"] == "OK", st
    assert node.qemu(newid).status.current.get()["status"] == "stopped"
    s.ctl("POST", "/vms/%d" % newid, {"acpi": True})
    st = blocking_status(px, "sv1", node.qemu(newid).status.start.post())
    assert st["exitstatus"] == "OK", st
    upid = node.qemu(newid).status.stop.post()
    assert ":qmstop:%d:" % newid in upid
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    assert node.qemu(newid).status.current.get()["status"] == "stopped"

    # delete with purge (DELETE parameters go in the query string)
    upid = node.qemu(newid).delete(purge=1)
    assert ":qmdestroy:%d:" % newid in upid
    st = blocking_status(px, "sv1", upid)
    assert st["exitstatus"] == "OK", st
    expect_error(lambda: node.qemu(newid).config.get(), 500,
                 "Configuration file 'nodes/sv1/qemu-server/%d.conf' does not exist" % newid)
    assert newid not in [v["vmid"] for v in node.qemu.get()]
    assert s.vm(newid) is None


@case
def ticket_login_life_cycle():
    with Sim() as s:
        life_cycle(s, "ticket", 1201, "px-ticket")


@case
def token_life_cycle():
    with Sim() as s:
        life_cycle(s, "token", 1202, "px-token")


@case
def errors_through_proxmoxer():
    with Sim(auth_delay=0) as s:
        px = client(s, "token")
        # a missing VM on a node
        expect_error(lambda: px.nodes("sv2").qemu(4242).status.current.get(), 500,
                     "Configuration file 'nodes/sv2/qemu-server/4242.conf' does not exist")
        # parameter verification: the reason phrase, errors are not in proxmoxer 1.2's exception
        e = expect_error(lambda: px.nodes("sv1").qemu(8000).clone.post(newid=5), 400,
                         "Parameter verification failed.")
        assert "400 Bad Request: Parameter verification failed." in str(e), str(e)
        # an unknown node (pveproxy's DNS lookup fails)
        expect_error(lambda: px.nodes("nosuch").qemu.get(), 500,
                     "hostname lookup 'nosuch' failed - failed to get address info for: nosuch: "
                     "Name or service not known")
        # an unknown path: 501
        expect_error(lambda: px.nodes("sv1").nothing.get(), 501,
                     "Method 'GET /nodes/sv1/nothing' not implemented")
        # an offline node: 595 with an empty body, proxmoxer names the AnyEvent status
        s.ctl("POST", "/nodes/sv3", {"state": "offline"})
        e = expect_error(lambda: px.nodes("sv3").status.get(), 595, "Connection refused")
        assert "595" in str(e) and "Errors during connection establishment" in str(e), str(e)
        # wrong password: proxmoxer's AuthenticationError (401 with {"data":null})
        t0 = time.monotonic()
        try:
            proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="root@pam",
                                 password="wrong", verify_ssl=False)
            raise AssertionError("login with a wrong password succeeded")
        except proxmoxer.backends.https.AuthenticationError as e:
            assert "Couldn't authenticate user: root@pam" in str(e), str(e)
        assert time.monotonic() - t0 < 5
        # a bad token: 401 with an empty body
        bad = proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="root@pam",
                                   token_name="ci", token_value="00000000-0000-0000-0000-000000000000",
                                   verify_ssl=False)
        e = expect_error(lambda: bad.version.get(), 401, "invalid token value!")


finish()
