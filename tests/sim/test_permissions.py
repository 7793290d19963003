"""Privileges as Proxmox VE checks them (pve-access-control RPCEnvironment,
AccessControl): built-in and custom roles, ACL entries on paths for users
and API tokens (propagation, the more specific path winning, NoAccess, pool
roles), privilege-separated tokens, the schema's check before proxying and
parameter verification, the in-code checks (/cluster/resources and the guest
lists filtered, storage space on clone and create, others' tasks), the
access API (/access/acl, /access/roles, /access/permissions), the 8.x and
9.x role tables, qemu-server's per-option checks of a config change and a
create (each option's VM.Config.* privilege, root-only options, SDN.Use on
a network device's bridge, the drives' storages and volumes), a disk
reassigned to another VM, a migration's target storages, and "open" mode:
without any ACL entry every user and token may do everything, as before.
The ACL and roles the API changed are kept by --state-dir (over the flags,
as PVE's user.cfg) and undone by /_sim/reset."""
import json
import os
import tempfile

import proxmoxer

from accesslib import (BOB, BOB_SECRET, VM_USER_9, as_bob, bob_data, bob_sim, denied,
                       saved_state, template)
from lib.cases import case, finish
from lib.env import PASSWORD, TOKEN_ID
from lib.pxm import expect_error
from lib.sim import expect500

VM_ADMIN_9 = VM_USER_9 | {"VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory",
                          "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options",
                          "VM.Allocate", "VM.Clone", "VM.GuestAgent.Unrestricted", "VM.Migrate",
                          "VM.Replicate", "VM.Snapshot", "VM.Snapshot.Rollback"}
DEFAULT_PATHS = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}


def clone(s, newid, **extra):
    """Clone the first template as root's token (no privilege separation);
    the new VM's node."""
    vmid, node = template(s)
    upid = s.data("POST", "/nodes/%s/qemu/%d/clone" % (node, vmid),
                  data=dict({"newid": newid}, **extra))
    assert s.wait_task(node, upid)["exitstatus"] == "OK"
    return node


@case
def open_mode():
    """No ACL entry: bob's token (no ACL of its own) may do everything;
    GET /access/permissions answers as root@pam's; no entry listed."""
    with bob_sim(privsep=True) as s:
        vmid, node = template(s)
        assert bob_data(s, "GET", "/access/acl") == []
        perms = bob_data(s, "GET", "/access/permissions")
        assert set(perms) == DEFAULT_PATHS, perms
        assert perms["/"] == perms["/vms"] and "Permissions.Modify" in perms["/"], perms
        assert set(perms["/"].values()) == {1}
        root = s.data("GET", "/access/permissions", auth=s.login())
        assert root == perms, (root, perms)
        one = bob_data(s, "GET", "/access/permissions", params={"path": "/vms/4242"})
        assert one == {"/vms/4242": perms["/"]}, one
        upid = bob_data(s, "POST", "/nodes/%s/qemu/%d/clone" % (node, vmid), data={"newid": 300})
        assert s.wait_task(node, upid)["exitstatus"] == "OK"
        vms = bob_data(s, "GET", "/cluster/resources", params={"type": "vm"})
        assert {v["vmid"] for v in vms} == {v["vmid"] for v in s.data(
            "GET", "/cluster/resources", params={"type": "vm"})}
        upid = bob_data(s, "DELETE", "/nodes/%s/qemu/300" % node)
        assert s.wait_task(node, upid)["exitstatus"] == "OK"


@case
def privsep_vm_user():
    """bob may administer VMs, his privilege-separated token only use them
    (PVEVMUser on /vms): clone and destroy are refused with PVE's words,
    before the parameters are verified; a start goes through."""
    with bob_sim(["/vms:bob@pve:PVEVMAdmin", "/storage:bob@pve:PVEDatastoreUser",
                  "/vms:%s:PVEVMUser" % BOB]) as s:
        node = clone(s, 200)
        tpl, tnode = template(s)
        r = as_bob(s, "POST", "/nodes/%s/qemu/%d/clone" % (tnode, tpl), data={"newid": 201})
        denied(r, "/vms/%d, VM.Clone" % tpl)
        # the check comes before parameter verification (a bad newid) and
        # before proxying (any node name)
        r = as_bob(s, "POST", "/nodes/%s/qemu/%d/clone" % (tnode, tpl), data={"newid": "x"})
        denied(r, "/vms/%d, VM.Clone" % tpl)
        denied(as_bob(s, "DELETE", "/nodes/%s/qemu/200" % node), "/vms/200, VM.Allocate")
        denied(as_bob(s, "DELETE", "/nodes/nosuchnode/qemu/200"), "/vms/200, VM.Allocate")
        denied(as_bob(s, "POST", "/nodes/%s/qemu/200/snapshot" % node, data={"snapname": "a"}),
               "/vms/200, VM.Snapshot")
        upid = bob_data(s, "POST", "/nodes/%s/qemu/200/status/start" % node)
        st = bob_data(s, "GET", "/nodes/%s/tasks/%s/status" % (node, upid))  # its own task
        assert st["tokenid"] == "auto", st
        assert s.wait_task(node, upid)["exitstatus"] == "OK"
        # root's tasks: Sys.Audit on the node, which the token lacks
        root_task = [t["upid"] for t in s.data("GET", "/nodes/%s/tasks" % node)
                     if not t["user"].startswith("bob")][0]
        denied(as_bob(s, "GET", "/nodes/%s/tasks/%s/status" % (node, root_task)),
               "/nodes/%s, Sys.Audit" % node)
        denied(as_bob(s, "GET", "/nodes/%s/tasks/%s/log" % (node, root_task)),
               "/nodes/%s, Sys.Audit" % node)
        assert [t["upid"] for t in bob_data(s, "GET", "/nodes/%s/tasks" % node)] == [upid]
        # Sys.Audit on / is the check of /cluster/status
        denied(as_bob(s, "GET", "/cluster/status"), "/, Sys.Audit")
        # nextid: any user
        assert bob_data(s, "GET", "/cluster/nextid")
        # more rights for the token: its user's are the bound
        r = s.api("PUT", "/access/acl", data={"path": "/vms/200", "tokens": BOB,
                                             "roles": "PVEVMAdmin"})
        assert r.status_code == 200, r.text
        assert set(bob_data(s, "GET", "/access/permissions",
                            params={"path": "/vms/200"})["/vms/200"]) == VM_ADMIN_9


@case
def resources_hidden():
    """/cluster/resources and the node's VM list show the VMs the caller
    may audit; storages need Datastore.Audit; nodes without Sys.Audit come
    without their figures."""
    with bob_sim(["/:bob@pve:PVEAdmin", "/vms/200:%s:PVEVMUser" % BOB]) as s:
        node = clone(s, 200)
        clone(s, 201)
        vms = bob_data(s, "GET", "/cluster/resources", params={"type": "vm"})
        assert [v["vmid"] for v in vms] == [200], vms
        allres = bob_data(s, "GET", "/cluster/resources")
        assert not [e for e in allres if e["type"] == "storage"], allres
        nodes = [e for e in allres if e["type"] == "node"]
        assert len(nodes) == 2 and all("maxmem" not in n and n["status"] == "online"
                                       for n in nodes), nodes
        assert [v["vmid"] for v in bob_data(s, "GET", "/nodes/%s/qemu" % node)] == [200]
        assert all("maxmem" not in n for n in bob_data(s, "GET", "/nodes")), "Sys.Audit"
        assert all("maxmem" in n for n in s.data("GET", "/nodes"))
        # the storage lists: Datastore.Audit or Datastore.AllocateSpace
        assert bob_data(s, "GET", "/nodes/%s/storage" % node) == []
        assert bob_data(s, "GET", "/storage") == []
        s.data("PUT", "/access/acl", data={"path": "/storage/local-lvm", "tokens": BOB,
                                           "roles": "PVEDatastoreUser"})
        assert [e["storage"] for e in bob_data(s, "GET", "/nodes/%s/storage" % node)] == [
            "local-lvm"]
        assert [e["storage"] for e in bob_data(s, "GET", "/storage")] == ["local-lvm"]
        denied(as_bob(s, "GET", "/nodes/%s/qemu/201/status/current" % node),
               "/vms/201, VM.Audit")
        # root's view is whole, and stays so after the token's
        full = s.data("GET", "/cluster/resources", params={"type": "vm"})
        assert {200, 201} <= {v["vmid"] for v in full}, full
        assert [v["vmid"] for v in bob_data(s, "GET", "/cluster/resources",
                                            params={"type": "vm"})] == [200]


@case
def acl_grant_revoke():
    """PUT /access/acl while pvesim runs: the next call sees it."""
    with bob_sim(["/vms:bob@pve:PVEVMAdmin"]) as s:
        node = clone(s, 200)
        path = "/nodes/%s/qemu/200/status/current" % node
        denied(as_bob(s, "GET", path), "/vms/200, VM.Audit")
        # the token cannot give itself the role
        denied(as_bob(s, "PUT", "/access/acl", data={"path": "/vms/200", "tokens": BOB,
                                                   "roles": "PVEVMUser"}),
               "/vms/200, Permissions.Modify|VM.Allocate")
        ticket = s.login()
        r = s.api("PUT", "/access/acl", auth=ticket,
                  data={"path": "/vms/200", "tokens": BOB, "roles": "PVEVMUser"})
        assert r.status_code == 200 and r.json() == {"data": None}, r.text
        assert bob_data(s, "GET", path)["vmid"] == 200
        acl = s.data("GET", "/access/acl")
        assert {"path": "/vms/200", "type": "token", "ugid": BOB, "roleid": "PVEVMUser",
                "propagate": 1} in acl, acl
        r = s.api("PUT", "/access/acl", data={"path": "/vms/200", "tokens": BOB,
                                             "roles": "PVEVMUser", "delete": 1})
        assert r.status_code == 200, r.text
        denied(as_bob(s, "GET", path), "/vms/200, VM.Audit")
        assert len(s.data("GET", "/access/acl")) == 1
        # PVE's refusals
        r = s.api("PUT", "/access/acl", data={"path": "/vms", "roles": "PVEVMUser"})
        assert r.status_code == 400 and r.json()["errors"] == {
            k: "either 'users', 'groups' or 'tokens' is required."
            for k in ("users", "groups", "tokens")}, r.text
        r = s.api("PUT", "/access/acl", data={"path": "/vms", "roles": "Nope", "users": "bob@pve"})
        assert r.status_code == 500 and r.reason == "ACL update failed: role 'Nope' does not exist"
        r = s.api("PUT", "/access/acl", data={"path": "/vms", "roles": "PVEVMUser",
                                             "tokens": "bob@pve!other"})
        assert r.reason == "ACL update failed: no such token 'other' for user 'bob@pve'", r.reason
        r = s.api("PUT", "/access/acl", data={"path": "/nowhere", "roles": "PVEVMUser",
                                             "users": "bob@pve"})
        assert r.status_code == 400 and r.json()["errors"] == {
            "path": "invalid ACL path '/nowhere'"}, r.text


@case
def effective_permissions():
    """GET /access/permissions: the default paths and the ACL's, empty ones
    left out, the propagate flags, the more specific path winning (NoAccess
    on one VM under PVEVMAdmin on /vms); a token without privilege
    separation has its user's privileges."""
    with bob_sim(["/vms:bob@pve:PVEVMAdmin", "/vms/9000:bob@pve:NoAccess",
                  "/nodes/sv1:bob@pve:PVEAuditor:nopropagate"], privsep=False) as s:
        perms = bob_data(s, "GET", "/access/permissions")
        assert set(perms) == {"/vms", "/nodes/sv1"}, perms
        assert perms["/vms"] == {p: 1 for p in VM_ADMIN_9}, perms
        assert perms["/nodes/sv1"]["Sys.Audit"] == 0 and perms["/nodes/sv1"]["VM.Audit"] == 0
        assert bob_data(s, "GET", "/access/permissions", params={"path": "/vms/9000"}) == {
            "/vms/9000": {}}
        assert bob_data(s, "GET", "/access/permissions", params={"path": "/vms/123"}) == {
            "/vms/123": perms["/vms"]}
        assert bob_data(s, "GET", "/access/permissions", params={"path": "/nodes/sv1/x"}) == {
            "/nodes/sv1/x": {}}
        # the token's are its user's, as root sees them
        assert s.data("GET", "/access/permissions", params={"userid": "bob@pve"}) == perms
        assert s.data("GET", "/access/permissions", params={"userid": BOB}) == perms
        # another user's (or the token's own user's) need Sys.Audit on /access
        denied(as_bob(s, "GET", "/access/permissions", params={"userid": "bob@pve"}),
               "/access, Sys.Audit")
        # NoAccess at work: bob's token cannot see VM 9000's status
        vmid, node = template(s)
        st = as_bob(s, "GET", "/nodes/%s/qemu/%d/status/current" % (node, vmid))
        assert st.status_code == 200, st.text
        r = as_bob(s, "GET", "/nodes/sv1/qemu/9000/status/current")
        denied(r, "/vms/9000, VM.Audit")
        # root@pam by ticket has everything, everywhere
        root = s.data("GET", "/access/permissions", auth=s.login())
        assert set(root) == DEFAULT_PATHS | {"/vms/9000", "/nodes/sv1"}, root
        assert "Permissions.Modify" in root["/"] and "VM.Monitor" not in root["/"]
        assert set(root["/vms/9000"].values()) == {1}


@case
def privsep_intersection():
    """A privilege-separated token has what both its ACL and its user's
    give; propagation needs both."""
    with bob_sim(["/vms:bob@pve:PVEVMUser", "/:%s:PVEAdmin" % BOB]) as s:
        perms = bob_data(s, "GET", "/access/permissions")
        assert set(perms) == {"/vms"}, perms
        assert perms["/vms"] == {p: 1 for p in VM_USER_9}, perms


@case
def role_tables():
    """8.x and 9.x roles differ as pve-access-control's tables do:
    VM.Monitor (8.x) against the VM.GuestAgent.* privileges and
    VM.Replicate (9.x); the agent's check follows the schema served."""
    for version in (8, 9):
        with bob_sim(["/vms:bob@pve:PVEVMAdmin", "/vms:%s:PVEVMUser" % BOB],
                     pve_version=version) as s:
            admin = set(s.data("GET", "/access/roles/PVEVMAdmin"))
            user = set(s.data("GET", "/access/roles/PVEVMUser"))
            roles = {r["roleid"]: r for r in s.data("GET", "/access/roles")}
            for name in ("Administrator", "NoAccess", "PVEAdmin", "PVEAuditor", "PVEVMAdmin",
                         "PVEVMUser", "PVEDatastoreAdmin", "PVEDatastoreUser", "PVEPoolAdmin",
                         "PVEPoolUser", "PVESysAdmin", "PVEUserAdmin", "PVETemplateUser",
                         "PVESDNUser", "PVESDNAdmin", "PVEMappingAdmin", "PVEMappingUser"):
                assert roles[name]["special"] == 1, name
            assert roles["NoAccess"]["privs"] == ""
            assert roles["PVETemplateUser"]["privs"] == "VM.Audit,VM.Clone"
            assert "Mapping.Modify" not in roles["PVEAdmin"]["privs"]
            assert "Permissions.Modify" not in roles["PVEAdmin"]["privs"]
            assert "PVESysUser" not in roles and "PVEUserUser" not in roles
            if version == 8:
                assert "VM.Monitor" in admin and "VM.Replicate" not in admin, admin
                assert not [p for p in admin if p.startswith("VM.GuestAgent")], admin
                assert user == VM_USER_9 - {"VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt",
                                            "VM.GuestAgent.FileWrite", "VM.GuestAgent.Audit"}
            else:
                assert admin == VM_ADMIN_9 and user == VM_USER_9, (admin, user)
            r = s.api("POST", "/access/roles", data={"roleid": "Mon", "privs": "VM.Monitor"})
            if version == 8:
                assert r.status_code == 200, r.text
            else:
                assert r.status_code == 400 and r.json()["errors"] == {
                    "privs": "invalid format - invalid privilege 'VM.Monitor'\n"}, r.text
            node = clone(s, 200)
            r = as_bob(s, "POST", "/nodes/%s/qemu/200/agent/ping" % node)
            if version == 8:
                denied(r, "/vms/200, VM.Monitor")
            else:
                assert r.status_code != 403, r.text


@case
def custom_roles_and_pools():
    """--role and POST /access/roles; a role on a pool reaches the pool's
    VMs; VM.Allocate on the pool lets a clone into it; an `any` check
    lists its privileges."""
    with bob_sim(["/:bob@pve:PVEAdmin", "/vms:%s:Starter" % BOB,
                  "/vms/%d:%s:PVETemplateUser" % (8000, BOB),
                  "/storage:%s:PVEDatastoreUser" % BOB],
                 extra=["--role", "Starter:VM.PowerMgmt,VM.Audit"]) as s:
        assert s.data("GET", "/access/roles/Starter") == {"VM.PowerMgmt": 1, "VM.Audit": 1}
        node = clone(s, 200)
        bob_data(s, "POST", "/nodes/%s/qemu/200/status/start" % node)
        r = as_bob(s, "PUT", "/nodes/%s/qemu/200/config" % node, data={"cores": 2})
        denied(r, "/vms/200, VM.Config.Disk|VM.Config.CDROM|VM.Config.CPU|VM.Config.Memory|"
                  "VM.Config.Network|VM.Config.HWType|VM.Config.Options|VM.Config.Cloudinit")
        r = s.api("POST", "/access/roles", data={"roleid": "Configurer",
                                                "privs": "VM.Config.CPU,VM.Audit"})
        assert r.status_code == 200, r.text
        r = s.api("POST", "/access/roles", data={"roleid": "PVEMine", "privs": "VM.Audit"})
        assert r.status_code == 400 and r.json()["errors"] == {
            "roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"}
        s.data("PUT", "/access/acl", data={"path": "/vms/200", "tokens": BOB,
                                           "roles": "Configurer"})
        r = as_bob(s, "PUT", "/nodes/%s/qemu/200/config" % node, data={"cores": 2})
        assert r.status_code == 200, r.text
        # pools
        s.data("POST", "/pools", data={"poolid": "p1"})
        vms = s.data("GET", "/cluster/resources", params={"type": "vm"})
        tpl = [v for v in vms if v["vmid"] == 8000]  # the fleet's first template
        assert tpl and tpl[0]["template"] == 1, vms
        if tpl:
            tnode = tpl[0]["node"]
            r = as_bob(s, "POST", "/nodes/%s/qemu/8000/clone" % tnode, data={"newid": 300})
            denied(r, None)  # VM.Allocate neither on /vms/300 nor (no pool) on /pool/...
            s.data("PUT", "/access/acl", data={"path": "/pool/p1", "tokens": BOB,
                                               "roles": "PVEVMAdmin"})
            upid = bob_data(s, "POST", "/nodes/%s/qemu/8000/clone" % tnode,
                            data={"newid": 300, "pool": "p1"})
            assert s.wait_task(tnode, upid)["exitstatus"] == "OK"
            # the pool's role reaches its VM (not propagated)
            p = bob_data(s, "GET", "/access/permissions", params={"path": "/vms/300"})["/vms/300"]
            assert p.get("VM.Allocate") == 0 and p.get("VM.PowerMgmt") == 1, p
            upid = bob_data(s, "DELETE", "/nodes/%s/qemu/300" % tnode)
            assert s.wait_task(tnode, upid)["exitstatus"] == "OK"


def config(s, node, vmid, method="PUT", **data):
    return as_bob(s, method, "/nodes/%s/qemu/%d/config" % (node, vmid), data=data)


NO_MEMORY = sorted(VM_ADMIN_9 - {"VM.Config.Memory"})


@case
def config_option_privileges():
    """A config change needs each option's privilege, as qemu-server's
    check_vm_modify_config_perm asks it, for the options written and those
    deleted, before the worker (POST answers the 403 too)."""
    with bob_sim(["/:bob@pve:Administrator", "/vms:%s:NoMemory" % BOB,
                  "/storage:%s:PVEDatastoreUser" % BOB],
                 extra=["--role", "NoMemory:" + ",".join(NO_MEMORY)]) as s:
        node = clone(s, 200)
        denied(config(s, node, 200, memory=1024), "/vms/200, VM.Config.Memory")
        denied(config(s, node, 200, method="POST", memory=1024), "/vms/200, VM.Config.Memory")
        denied(config(s, node, 200, delete="memory"), "/vms/200, VM.Config.Memory")
        denied(config(s, node, 200, balloon=512, cores=2), "/vms/200, VM.Config.Memory")
        r = config(s, node, 200, cores=2)
        assert r.status_code == 200, r.text
        assert s.data("GET", "/nodes/%s/qemu/200/config" % node)["cores"] == 2
        upid = bob_data(s, "POST", "/nodes/%s/qemu/200/config" % node,
                        data={"name": "renamed", "delete": "description"})
        assert s.wait_task(node, upid)["exitstatus"] == "OK"
        # startup changes the host's behaviour: Sys.Modify on / too
        denied(config(s, node, 200, startup="order=1"), "/, Sys.Modify")
        # an option only root may set: refused with every VM privilege
        s.data("PUT", "/access/acl", data={"path": "/vms/200", "tokens": BOB,
                                           "roles": "Administrator"})
        expect500(config(s, node, 200, args="-no-reboot"), "only root can set 'args' config")
        expect500(config(s, node, 200, delete="args"), "only root can set 'args' config")
        # so for root@pam's token (its user is the token, not root@pam)
        expect500(s.api("PUT", "/nodes/%s/qemu/200/config" % node, data={"args": "-no-reboot"}),
                  "only root can set 'args' config")
        # root@pam may
        root = s.login()
        r = s.api("PUT", "/nodes/%s/qemu/200/config" % node, auth=root,
                  data={"args": "-no-reboot"})
        assert r.status_code == 200, r.text
        assert s.data("GET", "/nodes/%s/qemu/200/config" % node)["args"] == "-no-reboot"


@case
def config_network_privileges():
    """ipconfigN: VM.Config.Cloudinit or VM.Config.Network; netN:
    VM.Config.Network and SDN.Use on its bridge (or VLAN) in zone
    localnetwork, the value replaced's too."""
    with bob_sim(["/:bob@pve:Administrator", "/vms:%s:NetOnly" % BOB],
                 extra=["--role", "NetOnly:VM.Config.Network,VM.Audit"]) as s:
        node = clone(s, 200)
        r = config(s, node, 200, ipconfig0="ip=dhcp")
        assert r.status_code == 200, r.text
        r = config(s, node, 200, nameserver="192.0.2.53")
        assert r.status_code == 200, r.text
        denied(config(s, node, 200, cores=2), "/vms/200, VM.Config.CPU")
        denied(config(s, node, 200, net1="virtio,bridge=vmbr0"),
               "/sdn/zones/localnetwork/vmbr0, SDN.Use")
        denied(config(s, node, 200, net1="virtio,bridge=vmbr0,tag=10"),
               "/sdn/zones/localnetwork/vmbr0/10, SDN.Use")
        s.data("PUT", "/access/acl", data={"path": "/sdn/zones/localnetwork/vmbr0/10",
                                           "tokens": BOB, "roles": "PVESDNUser"})
        r = config(s, node, 200, net1="virtio,bridge=vmbr0,tag=10")
        assert r.status_code == 200, r.text
        denied(config(s, node, 200, net1="virtio,bridge=vmbr0"),
               "/sdn/zones/localnetwork/vmbr0, SDN.Use")
        # the old value's bridge is checked by the worker: net0 on vmbr0
        s.data("PUT", "/access/acl", data={"path": "/sdn/zones/localnetwork/vmbr1",
                                           "tokens": BOB, "roles": "PVESDNUser"})
        assert "bridge=vmbr0" in s.data("GET", "/nodes/%s/qemu/200/config" % node)["net0"]
        denied(config(s, node, 200, net0="virtio,bridge=vmbr1"),
               "/sdn/zones/localnetwork/vmbr0, SDN.Use")
        upid = bob_data(s, "POST", "/nodes/%s/qemu/200/config" % node,
                        data={"net0": "virtio,bridge=vmbr1"})
        st = s.wait_task(node, upid)
        assert st["exitstatus"] == "Permission check failed (/sdn/zones/localnetwork/vmbr0, " \
            "SDN.Use)", st
        assert "bridge=vmbr0" in s.data("GET", "/nodes/%s/qemu/200/config" % node)["net0"]
        # with SDN.Use on the whole bridge
        s.data("PUT", "/access/acl", data={"path": "/sdn/zones/localnetwork/vmbr0",
                                           "tokens": BOB, "roles": "PVESDNUser"})
        r = config(s, node, 200, net0="virtio,bridge=vmbr1")
        assert r.status_code == 200, r.text


@case
def config_drive_privileges():
    """Drives: the worker asks VM.Config.Disk for a disk, VM.Config.CDROM
    for a CD-ROM; a new volume Datastore.AllocateSpace on its storage;
    another VM's volume Datastore.Audit and that VM's VM.Config.Disk."""
    with bob_sim(["/:bob@pve:Administrator", "/vms:%s:CdOnly" % BOB],
                 extra=["--role", "CdOnly:VM.Config.CDROM,VM.Audit"]) as s:
        node = clone(s, 200)
        clone(s, 201)
        r = config(s, node, 200, ide3="none,media=cdrom")
        assert r.status_code == 200, r.text
        # ide2 holds the cloud-init drive: VM.Config.Cloudinit and .CDROM
        denied(config(s, node, 200, ide2="none,media=cdrom"), "/vms/200, VM.Config.Cloudinit")
        denied(config(s, node, 200, scsi5="local-lvm:1"),
               "/storage/local-lvm, Datastore.AllocateSpace")
        s.data("PUT", "/access/acl", data={"path": "/storage", "tokens": BOB,
                                           "roles": "PVEDatastoreUser"})
        denied(config(s, node, 200, scsi5="local-lvm:1"), "/vms/200, VM.Config.Disk")
        conf201 = s.data("GET", "/nodes/%s/qemu/201/config" % node)
        other = [v for k, v in conf201.items() if k.startswith("scsi") and "vm-201-" in v]
        assert other, conf201
        # PVEDatastoreUser holds Datastore.Audit; VM.Config.Disk on 201 lacks
        denied(config(s, node, 200, scsi6=other[0].split(",")[0]), "/vms/201, VM.Config.Disk")

@case
def create_option_privileges():
    """A create checks its options as a config change does (VM.Allocate
    first); root@pam skips the per-option checks; tags are the worker's."""
    with bob_sim(["/:bob@pve:Administrator", "/vms:%s:Maker" % BOB,
                  "/storage:%s:PVEDatastoreUser" % BOB],
                 extra=["--role", "Maker:VM.Allocate,VM.Config.CPU,VM.Audit"]) as s:
        node = s.data("GET", "/nodes")[0]["node"]
        url = "/nodes/%s/qemu" % node
        denied(as_bob(s, "POST", url, data={"vmid": 300, "memory": 1024}),
               "/vms/300, VM.Config.Memory")
        expect500(as_bob(s, "POST", url, data={"vmid": 300, "lock": "backup"}),
                  "only root can set 'lock' config")
        upid = bob_data(s, "POST", url, data={"vmid": 300, "cores": 2, "tags": "a"})
        st = s.wait_task(node, upid)
        assert st["exitstatus"] == "unable to create VM 300 - Permission check failed " \
            "(/vms/300, VM.Config.Options)", st
        upid = bob_data(s, "POST", url, data={"vmid": 300, "cores": 2, "scsi0": "local-lvm:1"})
        assert s.wait_task(node, upid)["exitstatus"] == "OK"
        root = s.login()
        r = s.api("POST", url, auth=root, data={"vmid": 301, "args": "-no-reboot",
                                               "memory": 1024})
        assert r.status_code == 200, r.text
        assert s.wait_task(node, r.json()["data"])["exitstatus"] == "OK"


@case
def move_disk_and_migrate_privileges():
    """A disk reassigned to another VM needs VM.Config.Disk on that VM too
    and Datastore.AllocateSpace on the volume's storage; a migration with
    targetstorage Datastore.AllocateSpace on each target storage and, unless
    the mapping is the identity, VM.Config.Disk."""
    with bob_sim(["/:bob@pve:Administrator", "/vms/200:%s:PVEVMAdmin" % BOB,
                  "/vms/201:%s:PVEVMUser" % BOB, "/vms/202:%s:Mover" % BOB],
                 extra=["--role", "Mover:VM.Migrate,VM.Audit"]) as s:
        node = clone(s, 200)
        clone(s, 201)
        clone(s, 202)
        other = "sv2" if node == "sv1" else "sv1"
        assert s.data("PUT", "/nodes/%s/qemu/200/config" % node,
                      data={"delete": "scsi0"}) is None
        url = "/nodes/%s/qemu/200/move_disk" % node
        move = {"disk": "unused0", "target-vmid": 201, "target-disk": "scsi5"}
        denied(as_bob(s, "POST", url, data=move), "/vms/201, VM.Config.Disk")
        s.data("PUT", "/access/acl", data={"path": "/vms/201", "tokens": BOB,
                                           "roles": "PVEVMAdmin"})
        denied(as_bob(s, "POST", url, data=move), "/storage/local-lvm, Datastore.AllocateSpace")
        url = "/nodes/%s/qemu/%%d/migrate" % node
        denied(as_bob(s, "POST", url % 201, data={"target": other, "targetstorage": "local-lvm"}),
               "/storage/local-lvm, Datastore.AllocateSpace")
        denied(as_bob(s, "POST", url % 202, data={"target": other, "targetstorage": "local-lvm"}),
               "/vms/202, VM.Config.Disk")
        s.data("PUT", "/access/acl", data={"path": "/storage", "tokens": BOB,
                                           "roles": "PVEDatastoreUser"})
        upid = bob_data(s, "POST", "/nodes/%s/qemu/200/move_disk" % node, data=move)
        st = s.wait_task(node, upid)
        assert st["exitstatus"] == "OK", st
        assert s.data("GET", "/nodes/%s/qemu/201/config" % node)["scsi5"].startswith(
            "local-lvm:vm-201-disk-"), "reassigned"
        upid = bob_data(s, "POST", url % 201, data={"target": other, "targetstorage": "local-lvm"})
        assert ":qmigrate:201:" in upid, upid  # granted (a linked clone: its task fails)
        s.wait_task(node, upid)


@case
def standalone_hosts():
    """Standalone hosts have one user.cfg each: an ACL set on one leaves
    the other open."""
    with bob_sim([], standalone=True) as s:
        p1, p2 = s.ports["sv1"], s.ports["sv2"]
        r = s.api("PUT", "/access/acl", port=p1,
                  data={"path": "/vms", "users": "bob@pve", "roles": "PVEVMUser"})
        assert r.status_code == 200, r.text
        denied(as_bob(s, "GET", "/cluster/status", port=p1), "/, Sys.Audit")
        assert as_bob(s, "GET", "/cluster/status", port=p2).status_code == 200
        assert s.data("GET", "/access/acl", port=p2) == []
        assert len(s.data("GET", "/access/acl", port=p1)) == 1


@case
def through_proxmoxer():
    """proxmoxer with a privilege-separated token sees PVE's 403."""
    with bob_sim(["/vms:bob@pve:PVEVMAdmin", "/vms:%s:PVEVMUser" % BOB]) as s:
        tpl, node = template(s)
        px = proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="bob@pve",
                                  token_name="auto", token_value=BOB_SECRET, verify_ssl=False)
        expect_error(lambda: px.nodes(node).qemu(tpl).clone.post(newid=400), 403,
                     "Permission check failed (/vms/%d, VM.Clone)" % tpl)
        perms = px.access.permissions.get(path="/vms")
        assert set(perms["/vms"]) == VM_USER_9, perms
        assert TOKEN_ID and PASSWORD  # root's credentials stay the Sim's


def access_view(s):
    """What the access API answers, as root and as bob's token: the ACL, the
    roles, the token's effective permissions (and on one path)."""
    return {"acl": s.data("GET", "/access/acl"),
            "roles": s.data("GET", "/access/roles"),
            "bob": bob_data(s, "GET", "/access/permissions"),
            "bob_vms": bob_data(s, "GET", "/access/permissions", params={"path": "/vms/4242"}),
            "root_view": s.data("GET", "/access/permissions", params={"userid": BOB})}


@case
def access_kept_across_restart():
    """--state-dir keeps what PUT /access/acl and POST /access/roles did, as
    PVE's user.cfg does: after a restart the ACL, the roles and the token's
    permissions answer as before, and a call the ACL refuses is still
    refused; an entry the flags gave and the API removed stays removed, the
    saved ACL holding over --acl and --role (a later start with other flags
    included) once the API changed it."""
    flags = ["/vms:bob@pve:PVEVMAdmin", "/storage:bob@pve:PVEDatastoreUser",
             "/:bob@pve:PVEAuditor", "/vms:%s:PVEVMUser" % BOB]
    with tempfile.TemporaryDirectory() as d:
        with bob_sim(flags, state_dir=d) as s:
            tpl, tnode = template(s)
            r = s.api("POST", "/access/roles", data={"roleid": "Starter",
                                                    "privs": "VM.PowerMgmt,VM.Audit"})
            assert r.status_code == 200, r.text
            s.data("PUT", "/access/acl", data={"path": "/vms/%d" % tpl, "tokens": BOB,
                                               "roles": "Starter", "propagate": 0})
            s.data("PUT", "/access/acl", data={"path": "/vms", "tokens": BOB,
                                               "roles": "PVEVMUser", "delete": 1})
            s.data("PUT", "/access/acl", data={"path": "/", "users": "bob@pve",
                                               "roles": "PVEAuditor", "delete": 1})
            before = access_view(s)
            assert {"roleid": "Starter", "privs": "VM.Audit,VM.PowerMgmt", "special": 0} in \
                before["roles"], before["roles"]
            assert set(before["bob"]) == {"/vms/%d" % tpl}, before["bob"]
            assert before["bob"]["/vms/%d" % tpl] == {"VM.Audit": 0, "VM.PowerMgmt": 0}
            assert before["bob_vms"] == {"/vms/4242": {}}, before["bob_vms"]
            refused = "/vms/%d, VM.Clone" % tpl
            denied(as_bob(s, "POST", "/nodes/%s/qemu/%d/clone" % (tnode, tpl),
                          data={"newid": 300}), refused)
            s.stop()
            saved = saved_state(d)
            s.start()
            after = access_view(s)
            assert after == before, (after, before)
            assert [w["world"] for w in saved["access"]] == ["cluster"], saved.get("access")
            denied(as_bob(s, "POST", "/nodes/%s/qemu/%d/clone" % (tnode, tpl),
                          data={"newid": 300}), refused)
            assert s.data("GET", "/access/roles/Starter") == {"VM.PowerMgmt": 1, "VM.Audit": 1}
            # the restarted ACL takes changes and keeps them in turn
            s.data("PUT", "/access/acl", data={"path": "/vms/%d" % tpl, "tokens": BOB,
                                               "roles": "PVEVMAdmin"})
            assert bob_data(s, "GET", "/access/permissions", params={
                "path": "/vms/%d" % tpl})["/vms/%d" % tpl]["VM.Clone"] == 1
            s.data("PUT", "/access/acl", data={"path": "/vms/%d" % tpl, "tokens": BOB,
                                               "roles": "PVEVMAdmin", "delete": 1})
        # other flags on the same state: the saved ACL and roles hold
        with bob_sim(["/:bob@pve:Administrator", "/:%s:Administrator" % BOB], state_dir=d,
                     extra=["--role", "Other:VM.Audit"]) as s:
            assert access_view(s) == before
            r = s.api("GET", "/access/roles/Other")
            assert r.status_code == 500 and r.reason == "role 'Other' does not exist", r.reason


@case
def access_reset_to_flags():
    """/_sim/reset brings the ACL and roles back to what the flags made (the
    API's changes gone, as the VMs it made are), and so does a restart after
    it: the state file no longer holds them."""
    flags = ["/vms:bob@pve:PVEVMAdmin", "/vms:%s:PVEVMUser" % BOB]
    with tempfile.TemporaryDirectory() as d:
        with bob_sim(flags, state_dir=d, extra=["--role", "Flagged:VM.Audit"]) as s:
            start = access_view(s)
            s.data("POST", "/access/roles", data={"roleid": "Starter", "privs": "VM.PowerMgmt"})
            s.data("PUT", "/access/acl", data={"path": "/vms", "tokens": BOB,
                                               "roles": "PVEVMUser", "delete": 1})
            s.data("PUT", "/access/acl", data={"path": "/vms/4242", "tokens": BOB,
                                               "roles": "Starter"})
            assert access_view(s) != start
            assert s.ctl("POST", "/reset") == {"reset": True}
            assert access_view(s) == start
            r = s.api("GET", "/access/roles/Starter")
            assert r.status_code == 500 and r.reason == "role 'Starter' does not exist", r.reason
            assert s.data("GET", "/access/roles/Flagged") == {"VM.Audit": 1}
            s.stop()
            assert "access" not in saved_state(d)
            s.start()
            assert access_view(s) == start
        # open mode comes back too: an ACL set through the API on a pvesim
        # without --acl is gone after a reset
        with bob_sim([]) as s:
            s.data("PUT", "/access/acl", data={"path": "/vms", "users": "bob@pve",
                                               "roles": "PVEVMUser"})
            denied(as_bob(s, "GET", "/cluster/status"), "/, Sys.Audit")
            s.ctl("POST", "/reset")
            assert s.data("GET", "/access/acl") == []
            assert as_bob(s, "GET", "/cluster/status").status_code == 200


@case
def access_old_state_file():
    """A state file from before the access state was kept (no "access"
    member) still loads: the VMs as saved, the ACL and roles as the flags
    make them; so does one whose saved entries this start cannot hold (a
    token no --token gives, a role that does not exist): those are left
    out, the rest kept."""
    flags = ["/vms:bob@pve:PVEVMAdmin", "/vms:%s:PVEVMUser" % BOB]
    with tempfile.TemporaryDirectory() as d:
        with bob_sim(flags, state_dir=d) as s:
            start = access_view(s)
            clone(s, 200)
            s.data("POST", "/access/roles", data={"roleid": "Starter", "privs": "VM.PowerMgmt"})
            s.data("PUT", "/access/acl", data={"path": "/vms/200", "tokens": BOB,
                                               "roles": "Starter"})
        saved = saved_state(d)
        assert "access" in saved, list(saved)
        old = dict(saved)
        del old["access"]
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump(old, f)
        with bob_sim(flags, state_dir=d) as s:
            assert s.vm(200) is not None
            assert access_view(s) == start
        # saved entries that do not fit this start
        world = saved["access"][0]
        world["acl"] += [
            {"path": "/vms/200", "type": "token", "ugid": "carol@pve!gone", "roleid": "Starter",
             "propagate": 1},
            {"path": "/vms/200", "type": "user", "ugid": "bob@pve", "roleid": "Nope",
             "propagate": 1}]
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump(saved, f)
        with bob_sim(flags, state_dir=d) as s:
            acl = s.data("GET", "/access/acl")
            assert {e["ugid"] for e in acl} == {"bob@pve", BOB}, acl
            assert {"path": "/vms/200", "type": "token", "ugid": BOB, "roleid": "Starter",
                    "propagate": 1} in acl, acl
            assert "carol@pve!gone" in s.stderr() and "'Nope' does not exist" in s.stderr()


@case
def access_kept_standalone():
    """Standalone hosts keep their own ACL each: the one set on sv1 comes
    back on sv1; sv2, never changed, stays as the flags make it (open)."""
    with tempfile.TemporaryDirectory() as d:
        with bob_sim([], standalone=True, state_dir=d) as s:
            p1 = s.ports["sv1"]
            s.data("PUT", "/access/acl", port=p1,
                   data={"path": "/vms", "users": "bob@pve", "roles": "PVEVMUser"})
            s.stop()
            saved = saved_state(d)
            s.start()
            p1, p2 = s.ports["sv1"], s.ports["sv2"]
            denied(as_bob(s, "GET", "/cluster/status", port=p1), "/, Sys.Audit")
            assert as_bob(s, "GET", "/cluster/status", port=p2).status_code == 200
            assert s.data("GET", "/access/acl", port=p2) == []
            assert len(s.data("GET", "/access/acl", port=p1)) == 1
            assert [w["world"] for w in saved["access"]] == ["sv1"], saved.get("access")


finish()
