"""Groups and role changes as Proxmox VE has them (pve-access-control
API2/Group.pm, API2/Role.pm, AccessControl `roles`): --group makes a group
and its members, ACL entries name groups (--acl PATH:@GROUP:ROLE, PUT
/access/acl groups=, GET /access/acl's type "group"); a member has its
groups' roles, its own entries overriding its groups' on the same level,
the deepest level winning, propagation and NoAccess as for a user's own; a
privilege-separated token has them only as far as its own entries reach.
GET/POST /access/groups, GET/PUT/DELETE /access/groups/{groupid} (deleting
a group takes its ACL entries and members); PUT/DELETE
/access/roles/{roleid} (built-in roles refused, a deleted role's entries
gone). --state-dir keeps the groups and the roles as the API left them,
/_sim/reset brings back the flags'."""
import json
import os
import subprocess
import tempfile

from accesslib import (BOB, VM_USER_9, as_bob, bob_data, bob_sim, denied, saved_state,
                       template)
from lib.cases import case, finish
from lib.env import PVESIM
from lib.pxm import client, expect_error
from lib.sim import expect400, expect500

DS_USER = {"Datastore.AllocateSpace", "Datastore.Audit"}


def status_path(s):
    vmid, node = template(s)
    return "/nodes/%s/qemu/%d/status/current" % (node, vmid), "/vms/%d" % vmid


def group_view(s):
    """The access API's answers, as root and as bob's token: the ACL, the
    roles, the groups (each one's own answer too), the token's effective
    permissions."""
    groups = s.data("GET", "/access/groups")
    return {"acl": s.data("GET", "/access/acl"),
            "roles": s.data("GET", "/access/roles"),
            "groups": groups,
            "each": {g["groupid"]: s.data("GET", "/access/groups/" + g["groupid"])
                     for g in groups},
            "bob": bob_data(s, "GET", "/access/permissions")}


@case
def group_grants_until_deleted():
    """A --group member has what the group's ACL entry gives (a token
    without privilege separation, its user's); GET /access/acl lists the
    entry as type "group", users before groups before tokens on a path;
    deleting the group takes its entry and its members: made again, it is
    empty, and an entry given to it gives bob nothing."""
    with bob_sim(["/vms:@devs:PVEVMUser", "/vms:bob@pve:PVEVMUser:nopropagate",
                  "/vms:%s:PVEVMUser" % BOB, "/nodes/sv1:bob@pve:PVEAuditor"], privsep=False,
                 extra=["--group", "devs:bob@pve,carol@pve", "--group", "ops"]) as s:
        path, vmpath = status_path(s)
        assert bob_data(s, "GET", path)["status"] == "stopped"
        assert bob_data(s, "GET", "/access/permissions", params={"path": vmpath}) == {
            vmpath: {p: 1 for p in VM_USER_9}}
        on_vms = [(e["type"], e["ugid"]) for e in s.data("GET", "/access/acl")
                  if e["path"] == "/vms"]
        assert on_vms == [("user", "bob@pve"), ("group", "devs"), ("token", BOB)], on_vms
        assert {"path": "/vms", "type": "group", "ugid": "devs", "roleid": "PVEVMUser",
                "propagate": 1} in s.data("GET", "/access/acl")
        assert s.data("GET", "/access/groups") == [
            {"groupid": "devs", "users": "bob@pve,carol@pve"}, {"groupid": "ops", "users": ""}]
        assert s.data("GET", "/access/groups/devs") == {"members": ["bob@pve", "carol@pve"]}
        assert s.data("DELETE", "/access/groups/devs") is None
        assert [e for e in s.data("GET", "/access/acl") if e["type"] == "group"] == []
        denied(as_bob(s, "GET", path), vmpath + ", VM.Audit")
        expect500(s.api("GET", "/access/groups/devs"), "group 'devs' does not exist")
        assert s.data("GET", "/access/groups") == [{"groupid": "ops", "users": ""}]
        # made again: no member; an entry for it reaches nobody
        assert s.data("POST", "/access/groups", data={"groupid": "devs"}) is None
        assert s.data("GET", "/access/groups/devs") == {"members": []}
        assert s.data("PUT", "/access/acl", data={"path": "/vms", "groups": "devs",
                                                  "roles": "PVEVMAdmin"}) is None
        assert {"path": "/vms", "type": "group", "ugid": "devs", "roleid": "PVEVMAdmin",
                "propagate": 1} in s.data("GET", "/access/acl")
        denied(as_bob(s, "GET", path), vmpath + ", VM.Audit")
        # a group PUT /access/acl does not know
        expect500(s.api("PUT", "/access/acl", data={"path": "/vms", "groups": "nope",
                                                   "roles": "PVEVMUser"}),
                  "ACL update failed: group 'nope' does not exist")
        # removed through PUT /access/acl delete=1
        s.data("PUT", "/access/acl", data={"path": "/vms", "groups": "devs",
                                           "roles": "PVEVMAdmin", "delete": 1})
        assert [e for e in s.data("GET", "/access/acl") if e["type"] == "group"] == []


@case
def group_precedence():
    """As AccessControl `roles` walks a path: bob's own entry overrides his
    group's on the same level; a deeper group entry (NoAccess) overrides
    his own on a parent; the entries of several groups on one level add
    up; one not propagated stays on its path; a group bob is not in gives
    him nothing; his privilege-separated token has the groups' roles only
    where its own entries reach."""
    with bob_sim(["/vms:@devs:PVEVMAdmin", "/vms:bob@pve:PVEVMUser",
                  "/nodes:bob@pve:PVEAuditor", "/nodes/sv2:@devs:NoAccess",
                  "/nodes/sv1:@others:NoAccess",
                  "/storage:@devs:PVEDatastoreUser", "/storage:@ops:PVEPoolUser:nopropagate",
                  "/:%s:Administrator" % BOB],
                 extra=["--group", "devs:bob@pve", "--group", "ops:bob@pve",
                        "--group", "others:carol@pve"]) as s:
        def perms(path):
            return set(bob_data(s, "GET", "/access/permissions", params={"path": path})[path])
        assert perms("/vms/123") == VM_USER_9
        assert "Sys.Audit" in perms("/nodes/sv1") and "Sys.Audit" in perms("/nodes/sv3")
        assert perms("/nodes/sv2") == set()
        assert perms("/storage") == DS_USER | {"Pool.Audit"}
        assert perms("/storage/local-lvm") == DS_USER
        # the token's are what both give: its Administrator on / and bob's
        assert bob_data(s, "GET", "/access/permissions") == s.data(
            "GET", "/access/permissions", params={"userid": "bob@pve"})
        denied(as_bob(s, "GET", "/nodes/sv2/status"), "/nodes/sv2, Sys.Audit")
        # the token's own entry gone: the groups' roles reach it no more
        s.data("PUT", "/access/acl", data={"path": "/", "tokens": BOB, "roles": "Administrator",
                                           "delete": 1})
        assert perms("/vms/123") == set() and perms("/storage") == set()
        assert s.data("GET", "/access/permissions", params={"userid": "bob@pve",
                                                            "path": "/storage/x"}) == {
            "/storage/x": {p: 1 for p in DS_USER}}


@case
def groups_api():
    """POST/GET/PUT/DELETE of groups with PVE's answers and refusals, and
    their privileges: Group.Allocate on /access/groups to change them, Sys.Audit
    or Group.Allocate there to read one; the list holds the groups the
    caller may audit (User.Modify, Sys.Audit or Group.Allocate on
    /access/groups/<group>)."""
    with bob_sim(["/access/groups/devs:bob@pve:PVEAuditor"], privsep=False,
                 extra=["--group", "devs:bob@pve", "--group", "ops"]) as s:
        assert s.data("POST", "/access/groups", data={"groupid": "qa", "comment": "q & a"}) is None
        expect500(s.api("POST", "/access/groups", data={"groupid": "qa"}),
                  "create group failed: group 'qa' already exists")
        assert s.data("GET", "/access/groups/qa") == {"members": [], "comment": "q & a"}
        assert {"groupid": "qa", "users": "", "comment": "q & a"} in s.data("GET", "/access/groups")
        s.data("PUT", "/access/groups/qa", data={"comment": "quality"})
        assert s.data("GET", "/access/groups/qa") == {"members": [], "comment": "quality"}
        s.data("PUT", "/access/groups/qa")  # no comment given: kept
        assert s.data("GET", "/access/groups/qa")["comment"] == "quality"
        s.data("PUT", "/access/groups/qa", data={"comment": ""})  # removed
        assert s.data("GET", "/access/groups/qa") == {"members": []}
        expect500(s.api("PUT", "/access/groups/nope", data={"comment": "x"}),
                  "update group failed: group 'nope' does not exist")
        expect500(s.api("DELETE", "/access/groups/nope"),
                  "delete group failed: group 'nope' does not exist")
        expect400(s.api("POST", "/access/groups", data={"groupid": "a:b"}),
                  {"groupid": "invalid format - group name 'a:b' contains invalid characters\n"})
        # bob: PVEAuditor on /access/groups/devs only
        assert bob_data(s, "GET", "/access/groups") == [{"groupid": "devs", "users": "bob@pve"}]
        denied(as_bob(s, "GET", "/access/groups/devs"), "/access/groups, Sys.Audit|Group.Allocate")
        denied(as_bob(s, "POST", "/access/groups", data={"groupid": "x"}),
               "/access/groups, Group.Allocate")
        denied(as_bob(s, "PUT", "/access/groups/devs", data={"comment": "x"}),
               "/access/groups, Group.Allocate")
        denied(as_bob(s, "DELETE", "/access/groups/devs"), "/access/groups, Group.Allocate")
        s.data("PUT", "/access/acl", data={"path": "/access/groups", "users": "bob@pve",
                                           "roles": "PVEUserAdmin"})
        assert bob_data(s, "DELETE", "/access/groups/ops") is None
        assert [g["groupid"] for g in bob_data(s, "GET", "/access/groups")] == ["devs", "qa"]


@case
def groups_per_standalone_host():
    """Standalone hosts have one user.cfg each: a group made on one is not
    on the other; --group makes it on every host."""
    with bob_sim([], standalone=True, extra=["--group", "devs:bob@pve"]) as s:
        p1, p2 = s.ports["sv1"], s.ports["sv2"]
        s.data("POST", "/access/groups", port=p1, data={"groupid": "qa"})
        assert [g["groupid"] for g in s.data("GET", "/access/groups", port=p1)] == ["devs", "qa"]
        assert [g["groupid"] for g in s.data("GET", "/access/groups", port=p2)] == ["devs"]
        s.data("PUT", "/access/acl", port=p2, data={"path": "/", "groups": "devs",
                                                    "roles": "PVEAuditor"})
        denied(as_bob(s, "POST", "/nodes/sv2/qemu/9000/status/start", port=p2),
               "/vms/9000, VM.PowerMgmt")
        assert s.data("GET", "/access/acl", port=p1) == []


@case
def role_update_and_delete():
    """PUT /access/roles/{roleid} replaces a role's privileges (append=1
    adds them; none given leaves it without any) and the next call sees
    it, for user and group entries alike; DELETE removes the role and every
    ACL entry naming it. Built-in roles are refused, so is an unknown role;
    both need Sys.Modify on /access."""
    with bob_sim(["/vms:bob@pve:Starter", "/nodes:@devs:Starter", "/storage:bob@pve:PVEAuditor"],
                 privsep=False,
                 extra=["--role", "Starter:VM.Audit", "--group", "devs:bob@pve"]) as s:
        path, vmpath = status_path(s)
        bob_data(s, "GET", path)
        assert s.data("PUT", "/access/roles/Starter", data={"privs": "VM.Config.Options"}) is None
        assert s.data("GET", "/access/roles/Starter") == {"VM.Config.Options": 1}
        denied(as_bob(s, "GET", path), vmpath + ", VM.Audit")
        s.data("PUT", "/access/roles/Starter", data={"privs": "VM.Audit,Sys.Audit", "append": 1})
        assert s.data("GET", "/access/roles/Starter") == {
            "VM.Config.Options": 1, "VM.Audit": 1, "Sys.Audit": 1}
        assert bob_data(s, "GET", path)["status"] == "stopped"
        assert bob_data(s, "GET", "/nodes/sv1/status")["uptime"] >= 0  # devs' Starter
        assert {"roleid": "Starter", "privs": "Sys.Audit,VM.Audit,VM.Config.Options",
                "special": 0} in s.data("GET", "/access/roles")
        expect400(s.api("PUT", "/access/roles/Starter", data={"append": 1}),
                  {"privs": "missing property - 'append' requires this property"})
        expect400(s.api("PUT", "/access/roles/Starter", data={"privs": "VM.Monitor"}),
                  {"privs": "invalid format - invalid privilege 'VM.Monitor'\n"})
        # refusals
        for role in ("PVEVMUser", "Administrator", "NoAccess"):
            expect500(s.api("PUT", "/access/roles/" + role, data={"privs": "VM.Audit"}),
                      "auto-generated role '%s' cannot be modified" % role)
            expect500(s.api("DELETE", "/access/roles/" + role),
                      "auto-generated role '%s' cannot be deleted" % role)
        expect500(s.api("PUT", "/access/roles/Nope", data={"privs": "VM.Audit"}),
                  "update role failed: role 'Nope' does not exist")
        expect500(s.api("DELETE", "/access/roles/Nope"),
                  "delete role failed: role 'Nope' does not exist")
        denied(as_bob(s, "PUT", "/access/roles/Starter", data={"privs": "VM.Audit"}),
               "/access, Sys.Modify")
        denied(as_bob(s, "DELETE", "/access/roles/Starter"), "/access, Sys.Modify")
        # none given: the role is left without privileges
        s.data("PUT", "/access/roles/Starter")
        assert s.data("GET", "/access/roles/Starter") == {}
        denied(as_bob(s, "GET", path), vmpath + ", VM.Audit")
        s.data("PUT", "/access/roles/Starter", data={"privs": "VM.Audit"})
        bob_data(s, "GET", path)
        # deleted: its entries (bob's, devs') go with it
        assert s.data("DELETE", "/access/roles/Starter") is None
        expect500(s.api("GET", "/access/roles/Starter"), "role 'Starter' does not exist")
        assert [(e["path"], e["roleid"]) for e in s.data("GET", "/access/acl")] == [
            ("/storage", "PVEAuditor")]
        denied(as_bob(s, "GET", path), vmpath + ", VM.Audit")
        # made again, it reaches nobody
        s.data("POST", "/access/roles", data={"roleid": "Starter", "privs": "VM.Audit"})
        denied(as_bob(s, "GET", path), vmpath + ", VM.Audit")


@case
def group_flags_refused():
    """--group and an --acl naming a group are checked as --acl and --role
    are: pvesim does not start, and says which flag and why."""
    for args, said in (
            (["--group", "bad/name"], "--group 'bad/name': expected NAME[:USER[,USER...]]"),
            (["--group", "devs:bob"], "--group 'devs:bob': 'bob' is no user id (user@realm)"),
            (["--group", "devs:bob@pve!t"],
             "--group 'devs:bob@pve!t': 'bob@pve!t' is no user id (user@realm)"),
            (["--acl", "/vms:@devs:PVEVMUser"], "--acl '/vms:@devs:PVEVMUser': no --group 'devs'")):
        r = subprocess.run([PVESIM, "--listen", "127.0.0.1:0", "--nodes", "sv1"] + args,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and r.stderr.startswith("pvesim: " + said), (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)


FLAGS = ["/vms:@devs:PVEVMUser", "/nodes:@ops:PVEAuditor", "/storage:bob@pve:Starter",
         "/sdn:bob@pve:Old", "/vms:%s:PVEVMUser" % BOB]
GROUP_FLAGS = ["--role", "Starter:VM.Audit", "--role", "Old:SDN.Audit",
               "--group", "devs:bob@pve", "--group", "ops:bob@pve"]


def change_access(s):
    """Through the API: ops deleted, qa made (with a comment and an entry);
    Starter changed, Old deleted (and its entry), New made."""
    s.data("DELETE", "/access/groups/ops")
    s.data("POST", "/access/groups", data={"groupid": "qa", "comment": "quality"})
    s.data("PUT", "/access/acl", data={"path": "/pool", "groups": "qa", "roles": "PVEPoolUser"})
    s.data("PUT", "/access/roles/Starter", data={"privs": "Datastore.Audit"})
    s.data("DELETE", "/access/roles/Old")
    s.data("POST", "/access/roles", data={"roleid": "New", "privs": "VM.Audit"})


@case
def groups_kept_across_restart():
    """--state-dir keeps the groups, their members and entries, and the
    roles as the API left them (changed, deleted, made): a restart answers
    as before, over the flags; so does a start with other flags."""
    with tempfile.TemporaryDirectory() as d:
        with bob_sim(FLAGS, state_dir=d, extra=GROUP_FLAGS) as s:
            change_access(s)
            before = group_view(s)
            assert [g["groupid"] for g in before["groups"]] == ["devs", "qa"], before["groups"]
            assert "/nodes" not in before["bob"] and "/sdn" not in before["bob"], before["bob"]
            assert set(before["bob"]["/vms"]) == VM_USER_9
            s.stop()
            saved = saved_state(d)
            s.start()
            after = group_view(s)
            assert after == before, (after, before)
            world = saved["access"][0]
            assert world["groups"] == [{"groupid": "devs", "members": ["bob@pve"]},
                                       {"groupid": "qa", "members": [], "comment": "quality"}]
            assert {r["roleid"]: r["privs"] for r in world["roles"]} == {
                "New": "VM.Audit", "Starter": "Datastore.Audit"}
            denied(as_bob(s, "GET", "/nodes/sv1/status"), "/nodes/sv1, Sys.Audit")
        with bob_sim(["/:bob@pve:Administrator"], state_dir=d,
                     extra=["--group", "ops:bob@pve", "--role", "Other:VM.Audit"]) as s:
            assert group_view(s) == before


@case
def groups_reset_to_flags():
    """/_sim/reset brings back the flags' groups, members, entries and
    roles, and so does a restart after it."""
    with tempfile.TemporaryDirectory() as d:
        with bob_sim(FLAGS, state_dir=d, extra=GROUP_FLAGS) as s:
            start = group_view(s)
            change_access(s)
            assert group_view(s) != start
            assert s.ctl("POST", "/reset") == {"reset": True}
            assert group_view(s) == start
            assert "Sys.Audit" in s.data("GET", "/access/permissions", params={
                "userid": "bob@pve", "path": "/nodes/sv1"})["/nodes/sv1"]  # ops' again
            s.stop()
            assert "access" not in saved_state(d)
            s.start()
            assert group_view(s) == start


@case
def old_state_without_groups():
    """A saved access world from before groups were kept (no "groups")
    still loads: the flags' groups stay, the saved entries naming them
    hold; a saved entry naming a group that is not there is left out and
    logged."""
    with tempfile.TemporaryDirectory() as d:
        with bob_sim(FLAGS, state_dir=d, extra=GROUP_FLAGS) as s:
            s.data("PUT", "/access/acl", data={"path": "/vms/4242", "groups": "devs",
                                               "roles": "NoAccess"})
            before = group_view(s)
        saved = saved_state(d)
        world = saved["access"][0]
        del world["groups"]
        world["acl"].append({"path": "/vms", "type": "group", "ugid": "gone",
                             "roleid": "PVEVMAdmin", "propagate": 1})
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump(saved, f)
        with bob_sim(FLAGS, state_dir=d, extra=GROUP_FLAGS) as s:
            assert group_view(s) == before
            assert bob_data(s, "GET", "/access/permissions", params={"path": "/vms/4242"}) == {
                "/vms/4242": {}}
            assert "ACL entry /vms:gone:PVEVMAdmin left out" in s.stderr(), s.stderr()


@case
def groups_through_proxmoxer():
    """proxmoxer drives the group and role methods and sees PVE's errors."""
    with bob_sim(["/:bob@pve:PVEAuditor"], extra=["--group", "devs:bob@pve"]) as s:
        px = client(s)
        px.access.groups.post(groupid="qa", comment="quality")
        assert px.access.groups("qa").get() == {"members": [], "comment": "quality"}
        assert px.access.groups("devs").get() == {"members": ["bob@pve"]}
        px.access.groups("qa").put(comment="q")
        assert [g.get("comment") for g in px.access.groups.get()] == [None, "q"]
        px.access.groups("qa").delete()
        expect_error(lambda: px.access.groups("qa").get(), 500, "group 'qa' does not exist")
        px.access.roles.post(roleid="R", privs="VM.Audit")
        px.access.roles("R").put(privs="VM.PowerMgmt", append=1)
        assert px.access.roles("R").get() == {"VM.Audit": 1, "VM.PowerMgmt": 1}
        expect_error(lambda: px.access.roles("PVEVMUser").delete(), 500,
                     "auto-generated role 'PVEVMUser' cannot be deleted")
        px.access.roles("R").delete()
        expect_error(lambda: px.access.roles("R").get(), 500, "role 'R' does not exist")


finish()
