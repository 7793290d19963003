"""What the access-control tests share (test_permissions, test_groups): a
pvesim with bob's token and --acl entries, calls as that token, PVE's 403,
the fleet's first template, the state file."""
import json
import os

from lib.sim import Sim

BOB = "bob@pve!auto"
BOB_SECRET = "0b0b0b0b-1111-4222-8333-444455556666"
VM_USER_9 = {"VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup",
             "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite",
             "VM.PowerMgmt", "VM.Audit", "VM.GuestAgent.Audit"}


def bob_sim(acls=(), privsep=True, extra=(), **kw):
    """A pvesim with bob's token (privilege-separated unless told) and these
    --acl entries."""
    args = ["--token", "%s=%s" % (BOB, BOB_SECRET)]
    if privsep:
        args += ["--token-privsep", BOB]
    for a in acls:
        args += ["--acl", a]
    return Sim(nodes=kw.pop("nodes", "sv1,sv2"), extra=args + list(extra), **kw)


def as_bob(s, method, path, **kw):
    return s.api(method, path, auth=None,
                 headers={"Authorization": "PVEAPIToken=%s=%s" % (BOB, BOB_SECRET)}, **kw)


def bob_data(s, method, path, **kw):
    r = as_bob(s, method, path, **kw)
    assert r.status_code == 200, (method, path, r.status_code, r.reason, r.text)
    return r.json()["data"]


def denied(r, what):
    """A 403 of RPCEnvironment's check: 'Permission check failed (what)'."""
    reason = "Permission check failed (%s)" % what if what else "Permission check failed"
    assert r.status_code == 403 and r.reason == reason, (r.status_code, r.reason, reason)
    assert r.json() == {"data": None, "message": reason + "\n"}, r.text


def template(s):
    """A template VM: (vmid, node)."""
    vms = s.data("GET", "/cluster/resources", params={"type": "vm"})
    t = sorted((v for v in vms if v.get("template")), key=lambda v: v["vmid"])[0]
    return t["vmid"], t["node"]


def saved_state(d):
    with open(os.path.join(d, "state.json")) as f:
        return json.load(f)
