"""GET /cluster/tasks, PVE's "List recent tasks (cluster wide)" (pve-manager
PVE/API2/Cluster.pm `tasks`): each node's task list as it last broadcast it
into pmxcfs (pve-cluster PVE::Cluster get_tasklist), node after node. A
node's list is what pve-common's RESTEnvironment active_workers keeps in
/var/log/pve/tasks/active: its running tasks first (with their pid, saved
"0", no status), then its finished ones newest first (saved "1", endtime,
status, no pid), 25 entries at most unless more run; never a pstart. A
token's task carries user and tokenid apart. Without Sys.Audit on / the
caller sees the tasks whose user is the caller: a token (whose caller id is
the token id, compared with the task's user part) sees none. A standalone
host lists its own; an offline node's tasks stay listed (pmxcfs keeps them)."""
import json

import proxmoxer

from lib.cases import case, finish
from lib.env import TOKEN_SECRET
from lib.sim import Sim
from lib.wait import wait_for

BOB = "bob@pve!auto"
BOB_SECRET = "0b0b0b0b-1111-4222-8333-444455556666"
ENDED = {"upid", "node", "starttime", "type", "id", "user", "tokenid", "saved", "endtime", "status"}
RUNNING = {"upid", "node", "pid", "starttime", "type", "id", "user", "tokenid", "saved"}
TEMPLATE_START = "you can't start a vm if it's a template"


def upid_fields(upid):
    """UPID:node:pid:pstart:starttime:type:id:user: as a dict."""
    f = upid.split(":")
    return {"node": f[1], "pid": int(f[2], 16), "starttime": int(f[4], 16), "type": f[5],
            "id": f[6], "user": f[7]}


def failed_start(s, node, vmid, port=None, **kw):
    """Start a template: a qmstart task that fails at once; its UPID, once ended."""
    upid = s.data("POST", "/nodes/%s/qemu/%d/status/start" % (node, vmid), port=port, **kw)
    assert s.wait_task(node, upid, port=port)["exitstatus"] == TEMPLATE_START
    return upid


def check_ended(e, upid, status):
    """An ended task's entry: the UPID's fields, the token apart."""
    u = upid_fields(upid)
    assert set(e) == ENDED, e
    assert e["upid"] == upid and e["node"] == u["node"] and e["type"] == u["type"], e
    assert e["id"] == u["id"] and e["starttime"] == u["starttime"], e
    user, token = u["user"].split("!")
    assert e["user"] == user and e["tokenid"] == token, e
    assert e["saved"] == "1" and e["status"] == status, e
    assert isinstance(e["endtime"], int) and e["endtime"] >= e["starttime"], e


def of_node(tasks, node):
    return [t for t in tasks if t["node"] == node]


@case
def several_nodes_listed():
    """Every node's tasks, each entry with PVE's fields and its node; the
    same list through any node (one pmxcfs), by ticket too; an offline
    node's stay listed."""
    with Sim(nodes="sv1,sv2,sv3") as s:
        assert s.data("GET", "/cluster/tasks") == []
        u1 = failed_start(s, "sv1", 8000)
        u2 = s.data("POST", "/nodes/sv2/qemu/8010/clone", data={"newid": 300})
        assert s.wait_task("sv2", u2)["exitstatus"] == "OK"
        u3 = failed_start(s, "sv2", 8011)
        tasks = s.data("GET", "/cluster/tasks")
        assert [t["upid"] for t in tasks] == [u1, u3, u2], tasks  # node by node, newest first
        check_ended(tasks[0], u1, TEMPLATE_START)
        check_ended(tasks[1], u3, TEMPLATE_START)
        check_ended(tasks[2], u2, "OK")
        assert s.data("GET", "/cluster/tasks", port=s.ports["sv3"]) == tasks
        assert s.data("GET", "/cluster/tasks", auth=s.login()) == tasks
        s.ctl("POST", "/nodes/sv2", {"state": "offline"})
        assert s.data("GET", "/cluster/tasks") == tasks
        s.ctl("POST", "/nodes/sv2", {"state": "online"})


@case
def running_then_ended():
    """A running task is listed first with its pid and saved "0" and no
    status; once it ended, with its status. A node lists 25 tasks: the
    running and the newest finished."""
    with Sim(nodes="sv1,sv2") as s:
        starts = [failed_start(s, "sv1", 8000 + i % 4) for i in range(30)]
        other = failed_start(s, "sv2", 8010)
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1})  # the clone's copy waits
        clone = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": 100, "full": 1})
        tasks = s.data("GET", "/cluster/tasks")
        sv1 = of_node(tasks, "sv1")
        assert len(sv1) == 25 and tasks[25:] == of_node(tasks, "sv2"), tasks
        run = sv1[0]
        assert set(run) == RUNNING and run["upid"] == clone, run
        assert run["pid"] == upid_fields(clone)["pid"] and run["saved"] == "0", run
        assert {t["upid"] for t in sv1[1:]} == set(starts[-24:]), sv1
        times = [t["starttime"] for t in sv1[1:]]
        assert times == sorted(times, reverse=True), times
        assert [t["upid"] for t in of_node(tasks, "sv2")] == [other]
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1000000})

        def clone_ended():
            sv1 = of_node(s.data("GET", "/cluster/tasks"), "sv1")
            return sv1 if "status" in sv1[0] else None
        sv1 = wait_for(clone_ended, 30, what="the clone's end in /cluster/tasks")
        check_ended(sv1[0], clone, "OK")
        assert len(sv1) == 25 and {t["upid"] for t in sv1[1:]} == set(starts[-24:]), sv1


def as_bob(s, path, **kw):
    r = s.api("GET", path, auth=None,
              headers={"Authorization": "PVEAPIToken=%s=%s" % (BOB, BOB_SECRET)}, **kw)
    assert r.status_code == 200, (path, r.status_code, r.reason, r.text)
    return r.json()["data"]


@case
def without_sys_audit_on_root():
    """PVE's check is Sys.Audit on / (on /nodes it is not enough), and a
    token is the task's user only by its token id, which a token's task's
    user part never is: bob's token sees none, not even its own task, until
    it may audit /; then every task, its own with user and tokenid apart."""
    args = ["--token", "%s=%s" % (BOB, BOB_SECRET), "--token-privsep", BOB]
    for who in ("bob@pve", BOB):
        args += ["--acl", "/vms:%s:PVEVMAdmin" % who, "--acl", "/nodes:%s:PVEAuditor" % who]
    with Sim(nodes="sv1,sv2", extra=args) as s:
        root_task = failed_start(s, "sv1", 8000)
        r = s.api("POST", "/nodes/sv2/qemu/8010/status/start", auth=None,
                  headers={"Authorization": "PVEAPIToken=%s=%s" % (BOB, BOB_SECRET)})
        assert r.status_code == 200, r.text
        bob_task = r.json()["data"]
        assert s.wait_task("sv2", bob_task)["exitstatus"] == TEMPLATE_START
        # the node's list shows bob's token its own task (and the rest: Sys.Audit on /nodes)
        assert bob_task in [t["upid"] for t in as_bob(s, "/nodes/sv2/tasks")]
        assert as_bob(s, "/cluster/tasks") == []
        everything = s.data("GET", "/cluster/tasks")
        assert [t["upid"] for t in everything] == [root_task, bob_task], everything
        check_ended(everything[1], bob_task, TEMPLATE_START)
        assert everything[1]["user"] == "bob@pve" and everything[1]["tokenid"] == "auto"
        r = s.api("PUT", "/access/acl", data={"path": "/", "users": "bob@pve", "tokens": BOB,
                                             "roles": "PVEAuditor"})
        assert r.status_code == 200, r.text
        assert as_bob(s, "/cluster/tasks") == everything


@case
def standalone_hosts():
    """Each standalone host is its own world: its /cluster/tasks lists its
    own tasks only."""
    with Sim(nodes="sv1,sv2", standalone=True) as s:
        p1, p2 = s.ports["sv1"], s.ports["sv2"]
        u1 = failed_start(s, "sv1", 8000, port=p1)
        u2 = failed_start(s, "sv2", 8010, port=p2)
        for port, upid in ((p1, u1), (p2, u2)):
            tasks = s.data("GET", "/cluster/tasks", port=port)
            assert [t["upid"] for t in tasks] == [upid], tasks
            check_ended(tasks[0], upid, TEMPLATE_START)


def broadcast_bytes(tasks):
    """The length of the JSON a node broadcast: its entries before the API
    split the token off (user "user@realm!token", no tokenid)."""
    def before(t):
        t = dict(t)
        t["user"] += "!" + t.pop("tokenid")
        return t
    return len(json.dumps([before(t) for t in tasks], separators=(",", ":")))


@case
def a_long_list_is_cut_at_32_kib():
    """More running tasks than 32 KiB of JSON hold: the node's list keeps
    its first (the longest running, in the order they started) and drops
    the rest, as broadcast_tasklist does (pmxcfs's limit); no finished one."""
    with Sim(nodes="sv1,sv2") as s:
        done = failed_start(s, "sv1", 8000)
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1, "storage_gb": {"local-lvm": 1000000}})
        clones = [s.data("POST", "/nodes/sv1/qemu/%d/clone" % (8000 + i % 4),
                         data={"newid": 1000 + i, "full": 1}) for i in range(200)]
        sv1 = of_node(s.data("GET", "/cluster/tasks"), "sv1")
        upids = [t["upid"] for t in sv1]
        assert 100 < len(sv1) < len(clones) and upids == clones[:len(sv1)], upids
        assert done not in upids and all("pid" in t for t in sv1)
        size = broadcast_bytes(sv1)
        assert size < 32 * 1024 <= broadcast_bytes(sv1 + [dict(sv1[-1])]), size
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1000000})
        wait_for(lambda: all("status" in t for t in s.data("GET", "/cluster/tasks")), 60,
                 what="every clone's end")


@case
def through_proxmoxer():
    """proxmoxer's cluster.tasks.get() gets the list."""
    with Sim(nodes="sv1,sv2") as s:
        upid = failed_start(s, "sv2", 8010)
        px = proxmoxer.ProxmoxAPI(host="127.0.0.1", port=s.entry, user="root@pam",
                                  token_name="ci", token_value=TOKEN_SECRET, verify_ssl=False)
        tasks = px.cluster.tasks.get()
        assert [t["upid"] for t in tasks] == [upid], tasks
        assert tasks == s.data("GET", "/cluster/tasks")


finish()
