"""proxd's Proxmox token with the role the operator guide documents
(section 3, `pveum role add ProxdProvisioner --privs "..."`): pvesim's
arguments for a privilege-separated token holding exactly that role, so
that tests run proxd as a careful operator would set it up."""
import os
import re

SVC_ID = "proxd@pve!svc"
SVC_SECRET = "5f0c8a3e-7d21-4c55-9e0b-2b7a61d4c9f3"
SVC = SVC_ID + "=" + SVC_SECRET


def documented_privs():
    """The privileges of the role docs/operator-guide.md tells operators to
    make (PVE 9's line, pvesim's default version)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "docs", "operator-guide.md")) as f:
        text = f.read()
    m = re.search(r'pveum role add ProxdProvisioner --privs "([^"]+)"', text)
    assert m, "the operator guide's pveum role add line"
    return m.group(1).split()


def role_sim_args(privs=None):
    """pvesim arguments: the token SVC, privilege-separated, whose user may
    do everything and which holds role Proxd (privs; the documented ones by
    default) on /."""
    privs = documented_privs() if privs is None else privs
    return ["--token", SVC, "--token-privsep", SVC_ID,
            "--role", "Proxd:" + ",".join(privs),
            "--acl", "/:proxd@pve:Administrator",
            "--acl", "/:%s:Proxd" % SVC_ID]
