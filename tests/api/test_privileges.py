"""The Proxmox credentials' privileges, checked before a customer meets a
refusal (src/core/access.h): proxd reads what its token holds on each path
its work touches (GET /access/permissions?path=) and shows what is missing
per node (GET /v1/nodes "privileges", proxctl node list and status, the
metrics, the log). pvesim checks privileges as PVE does (its --acl, --role
and --token-privsep; PUT /access/acl at run time).

  - a pvesim with no ACL (its open mode): nothing missing on any node;
  - a privilege-separated token whose role lacks VM.Clone: every node tells
    VM.Clone on each of its templates, proxctl status names it and exits 1,
    the metric counts it, the log says it; a creation fails with Proxmox's
    refusal and leaves nothing; once the role is granted on the templates
    (PUT /access/acl) the next check finds nothing missing, the log says so;
  - the role the operator guide documents (its `pveum role add` line, read
    from docs/operator-guide.md) is enough for every job proxd runs:
    creation with an address, resize, stop, start, snapshot, rollback,
    reinstall, deletion, all done on a pvesim that enforces it;
  - a job refused for a privilege (403) brings the next check forward
    (within seconds of it, privilege_check at its 600 s default);
  - a creation refused on one node for a privilege and done on another
    brings the check forward too;
  - PVE 7 (no SDN.Use yet) is not asked for SDN.Use;
  - a check that cannot be read (GET /access/permissions answered 500) is
    told as such (the node's "error"; proxctl status while no read was ever
    whole, proxctl node list always) and read again after 30 s, here after
    the test's 1 s interval.
"""
import json
import os
import subprocess

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.privs import SVC, SVC_ID, documented_privs, role_sim_args
from lib.proxd import Proxd, shutdown, OSES, TEMPLATE_BASE
from lib.sim import Sim
from lib.wait import wait_for

NODES = ["sv%d" % i for i in range(1, 6)]
POOL = ("[ippool lan]\ncidr = 10.20.0.0/24\ngateway = 10.20.0.1\n"
        "ranges = 10.20.0.10-10.20.0.200\nbridge = vmbr0\n")
EXTRA = "reconcile_interval = 3600\n"
EVERY_SECOND = "privilege_check = 1\n"  # [proxmox]
PRIVS = documented_privs()


def restricted_sim(privs):
    """A pvesim whose token proxd@pve!svc is privilege-separated: its user
    may do everything, the token holds role Proxd (privs) on /."""
    return Sim(time_scale=0.02, extra=role_sim_args(privs))


def nodes(px, token):
    r = px.call("GET", "/v1/nodes", token)
    assert r.status_code == 200, r.text
    return {n["name"]: n for n in r.json()["nodes"]}


def checked(px, token):
    """Every node's privileges once all were read whole."""
    def all_read():
        ns = nodes(px, token)
        ok = all(n["privileges"]["checked_at"] and n["privileges"]["error"] is None
                 for n in ns.values())
        return ns if ok else None
    return wait_for(all_read, deadline=60, interval=0.2, what="every node's privileges read")


def daemon(sim, proxd_extra=EXTRA, proxmox_extra=EVERY_SECOND, **kw):
    """A Proxd on sim (not started; its privileges read every second unless
    told) and an admin token for it."""
    px = Proxd(sim, proxd_extra=proxd_extra, proxmox_extra=proxmox_extra, **kw)
    return px, px.token("ops", "admin")


def nothing_missing(px, token):
    """Every node read whole, nothing missing; the nodes."""
    ns = checked(px, token)
    assert all(n["privileges"]["missing"] == [] for n in ns.values()), ns
    return ns


def ctl(px, token, *args):
    e = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=token)
    e.pop("PROXCTL_CONFIG", None)
    return subprocess.run([PROXCTL] + list(args), capture_output=True, text=True, timeout=60,
                          env=e)


def status(px, token):
    r = ctl(px, token, "--json", "status")
    assert r.returncode in (0, 1), (r.returncode, r.stdout, r.stderr)
    return r.returncode, json.loads(r.stdout)


def ours(sim):
    """The VMs in pvesim that are not its templates (8000 and up)."""
    return [v["vmid"] for v in sim.state()["vms"] if v["vmid"] < TEMPLATE_BASE]


def templates(i):
    return ["/vms/%d" % (TEMPLATE_BASE + 10 * i + OSES.index(o)) for o in ("ubuntu", "debian")]


def create(px, token, name, **more):
    body = {"os": "ubuntu", "name": name, "cores": 1, "memory_mb": 512, "disk_gb": 12}
    body.update(more)
    r = px.call("POST", "/v1/vms", token, body)
    assert r.status_code == 202, r.text
    return px.wait_job(r.json()["job"], token, deadline=120)


def job(px, token, method, path, body=None):
    r = px.call(method, path, token, body if body is not None else {})
    assert r.status_code == 202, (path, r.text)
    j = px.wait_job(r.json()["job"], token, deadline=120)
    assert j["state"] == "done", (path, j)
    return j


@case
def a_pvesim_without_acls_leaves_nothing_missing():
    sim = Sim(time_scale=0.02)
    px, admin = daemon(sim)
    try:
        px.start()
        nothing_missing(px, admin)
        rc, rep = status(px, admin)
        assert not [a for a in rep["attention"] if "credentials" in a], rep
        # a user's token sees no privileges
        user = px.token("alice")
        assert all("privileges" not in n for n in nodes(px, user).values())
    finally:
        shutdown(px, sim)


@case
def a_token_without_vm_clone_is_told_on_every_node_until_granted():
    short = [p for p in PRIVS if p != "VM.Clone"]
    sim = restricted_sim(short)
    px, admin = daemon(sim, pve_token=SVC)
    try:
        px.start()
        ns = checked(px, admin)
        for i, name in enumerate(NODES):
            miss = ns[name]["privileges"]["missing"]
            assert sorted((m["privilege"], m["path"]) for m in miss) == \
                sorted(("VM.Clone", p) for p in templates(i)), (name, miss)
            assert all("creations of" in m["for"] for m in miss), miss
        rc, rep = status(px, admin)
        assert rc == 1, rep
        lines = [a for a in rep["attention"] if "credentials lack" in a]
        assert len(lines) == 5 and "node sv1: the Proxmox credentials lack VM.Clone on /vms/8000" \
            in lines[0], rep["attention"]
        r = ctl(px, admin, "node", "list")
        assert "lacks: VM.Clone on /vms/8000" in r.stdout, r.stdout
        metrics = px.call("GET", "/metrics", admin).text
        assert 'proxd_node_privileges_missing{node="sv3"} 2' in metrics, metrics
        wait_for(lambda: "node sv1: the Proxmox credentials lack VM.Clone on /vms/8000"
                 in px.log_text(), deadline=10, what="the log's line")
        # the creation meets Proxmox's refusal on every node and leaves nothing
        j = create(px, admin, "refused")
        assert j["state"] == "failed", j
        assert "Permission check failed" in json.dumps(j), j
        assert ours(sim) == [], ours(sim)
        # granted on the templates: the next check finds nothing missing
        mark = len(px.log_text())
        for i in range(len(NODES)):
            for p in templates(i):
                r = sim.api("PUT", "/access/acl", data={"path": p, "roles": "PVEVMAdmin",
                                                        "tokens": SVC_ID})
                assert r.status_code == 200, r.text
        wait_for(lambda: all(n["privileges"]["missing"] == [] for n in nodes(px, admin).values()),
                 deadline=30, interval=0.2, what="nothing missing after the grant")
        wait_for(lambda: "the Proxmox credentials hold every privilege proxd needs"
                 in px.log_text()[mark:], deadline=10, what="the log's all-clear")
        rc, rep = status(px, admin)
        assert not [a for a in rep["attention"] if "credentials" in a], rep
        assert create(px, admin, "granted")["state"] == "done"
    finally:
        shutdown(px, sim)


@case
def the_documented_role_is_enough_for_every_job():
    sim = restricted_sim(PRIVS)
    px, admin = daemon(sim, pve_token=SVC, sections=POOL)
    try:
        px.start()
        nothing_missing(px, admin)
        j = create(px, admin, "every-job", ssh_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"
                                                     "l0f6sYz0qU7v5G3c0jv0m9e3ZJm2W3Jm7rU8cY0sTL"
                                                     " ops@example"])
        assert j["state"] == "done", j
        vmid = j["vmid"]
        v = "/v1/vms/%d" % vmid
        job(px, admin, "POST", v + "/resize", {"disk_gb": 16})
        job(px, admin, "POST", v + "/stop")
        job(px, admin, "POST", v + "/start")
        job(px, admin, "POST", v + "/snapshots", {"name": "s1"})
        job(px, admin, "POST", v + "/snapshots/s1/rollback")
        job(px, admin, "DELETE", v + "/snapshots/s1")
        job(px, admin, "POST", v + "/reinstall", {"os": "debian"})
        job(px, admin, "DELETE", v)
        assert ours(sim) == [], ours(sim)
    finally:
        shutdown(px, sim)


@case
def a_vm_hidden_from_the_token_is_not_marked_lost_and_a_deleted_one_is():
    """NoAccess on one VM's path hides it from /cluster/resources (PVE lists
    only what the caller may audit): the reconciler reads its status, gets
    403 and leaves the record alone (the old rule marked it lost and gave its
    VMID back); the check tells VM.Audit missing there. A VM deleted behind
    proxd's back is still marked lost."""
    sim = restricted_sim(PRIVS)
    px, admin = daemon(sim, proxd_extra="reconcile_interval = 1\n", pve_token=SVC)
    try:
        px.start()
        checked(px, admin)
        a, b = (create(px, admin, n) for n in ("hidden", "deleted"))
        assert a["state"] == "done" and b["state"] == "done", (a, b)
        mark = len(px.log_text())
        r = sim.api("PUT", "/access/acl", data={"path": "/vms/%d" % a["vmid"],
                                                "roles": "NoAccess", "tokens": SVC_ID})
        assert r.status_code == 200, r.text
        node_b = sim.vm(b["vmid"])["node"]
        upid = sim.data("POST", "/nodes/%s/qemu/%d/status/stop" % (node_b, b["vmid"]))
        assert sim.wait_task(node_b, upid)["exitstatus"] == "OK"
        upid = sim.data("DELETE", "/nodes/%s/qemu/%d" % (node_b, b["vmid"]))
        assert sim.wait_task(node_b, upid)["exitstatus"] == "OK"
        wait_for(lambda: b["vmid"] in [v["vmid"] for v in
                                       px.call("GET", "/v1/vms?state=lost", admin).json()["vms"]],
                 deadline=30, interval=0.2, what="the deleted VM marked lost")
        # the pass that marked it judged the hidden one too: still the customer's VM
        r = px.call("GET", "/v1/vms/%d" % a["vmid"], admin)
        assert r.status_code == 200 and r.json()["state"] == "enabled", r.text
        wait_for(lambda: "vmid=%d node=%s is not in the inventory and Proxmox refuses proxd a "
                 "look at it" % (a["vmid"], sim.vm(a["vmid"])["node"]) in px.log_text()[mark:],
                 deadline=30, what="the hidden VM told")
        # several passes later it is still the customer's running VM
        passes = px.log_text()[mark:].count("refuses proxd a look")
        wait_for(lambda: px.log_text()[mark:].count("refuses proxd a look") >= passes + 2,
                 deadline=30, what="two more passes")
        v = px.call("GET", "/v1/vms/%d" % a["vmid"], admin).json()
        assert v["state"] == "enabled", v
        if a["vmid"] == 1000:  # the range's first VMID: the check tells it
            miss = {(m["privilege"], m["path"])
                    for n in nodes(px, admin).values() for m in n["privileges"]["missing"]}
            assert ("VM.Audit", "/vms/1000") in miss, miss
        # shown again: nothing was lost on the way
        r = sim.api("PUT", "/access/acl", data={"path": "/vms/%d" % a["vmid"], "delete": 1,
                                                "roles": "NoAccess", "tokens": SVC_ID})
        assert r.status_code == 200, r.text
        j = job(px, admin, "POST", "/v1/vms/%d/stop" % a["vmid"])
        assert j["state"] == "done", j
    finally:
        shutdown(px, sim)


@case
def a_job_refused_for_a_privilege_brings_the_check_forward():
    """privilege_check at its default (600 s): after the check at start the
    token loses VM.PowerMgmt (PUT /access/acl); a stop is refused with
    Proxmox's 403, and within seconds, not ten minutes, the check tells
    what is missing (the old code said nothing until its next interval)."""
    no_power = [p for p in PRIVS if p != "VM.PowerMgmt"]
    sim = Sim(time_scale=0.02, extra=role_sim_args(PRIVS) +
              ["--role", "ProxdNoPower:" + ",".join(no_power)])
    px, admin = daemon(sim, pve_token=SVC, proxmox_extra="")
    try:
        px.start()
        nothing_missing(px, admin)
        j = create(px, admin, "loses-power")
        assert j["state"] == "done", j
        for body in ({"path": "/", "roles": "Proxd", "tokens": SVC_ID, "delete": 1},
                     {"path": "/", "roles": "ProxdNoPower", "tokens": SVC_ID}):
            r = sim.api("PUT", "/access/acl", data=body)
            assert r.status_code == 200, r.text
        r = px.call("POST", "/v1/vms/%d/stop" % j["vmid"], admin, {})
        assert r.status_code == 202, r.text
        stop = px.wait_job(r.json()["job"], admin, deadline=60)
        assert stop["state"] == "failed" and "Permission check failed" in stop["error"], stop
        wait_for(lambda: "the Proxmox credentials lack VM.PowerMgmt on /vms/1000" in
                 px.log_text(), deadline=30, interval=0.2, what="the check brought forward")
    finally:
        shutdown(px, sim)


@case
def a_creation_done_after_a_refusal_on_one_node_brings_the_check_forward_too():
    """The token loses VM.Clone on sv1's template only (a role without it
    on /vms/8000): a creation tries sv1 first (placement ordered), is
    refused there, fails over and is done on sv2; the check still comes
    forward and tells it within seconds (the old code brought it forward
    only for a job that ended failed: not within 30 s)."""
    no_clone = [p for p in PRIVS if p != "VM.Clone"]
    sim = Sim(time_scale=0.02, extra=role_sim_args(PRIVS) +
              ["--role", "ProxdNoClone:" + ",".join(no_clone)])
    px, admin = daemon(sim, proxd_extra=EXTRA + "placement = ordered\n", pve_token=SVC,
                       proxmox_extra="")
    try:
        px.start()
        nothing_missing(px, admin)
        tpl = TEMPLATE_BASE + OSES.index("ubuntu")  # sv1's
        r = sim.api("PUT", "/access/acl", data={"path": "/vms/%d" % tpl,
                                                "roles": "ProxdNoClone", "tokens": SVC_ID})
        assert r.status_code == 200, r.text
        j = create(px, admin, "fails-over")
        assert j["state"] == "done" and j["node"] != "sv1", j
        assert any(a["node"] == "sv1" and "Permission check failed" in a["error"]
                   for a in j["attempts"]), j["attempts"]
        wait_for(lambda: "the Proxmox credentials lack VM.Clone on /vms/%d" % tpl in
                 px.log_text(), deadline=30, interval=0.2, what="the check brought forward")
    finally:
        shutdown(px, sim)


@case
def pve_7_is_not_asked_for_sdn_use():
    """SDN.Use exists from PVE 8 on (PVE 7 checks no bridge): on a 7, the
    documented role without it (and with VM.Monitor, 7's agent privilege)
    leaves nothing missing, pools and all."""
    privs = [p for p in PRIVS if p not in ("SDN.Use", "VM.GuestAgent.Audit")] + ["VM.Monitor"]
    sim = Sim(time_scale=0.02, pve_version=7, extra=role_sim_args(privs))
    px, admin = daemon(sim, pve_token=SVC, sections=POOL)
    try:
        px.start()
        nothing_missing(px, admin)
    finally:
        shutdown(px, sim)


@case
def a_check_that_cannot_be_read_is_told_and_read_again():
    """Never read whole: an attention line of proxctl status. Read whole,
    then failing: that finding stands, node list shows the error, status
    does not page on it. Read again once Proxmox answers."""
    sim = Sim(time_scale=0.02)
    px, admin = daemon(sim)
    refuse = [{"kind": "error", "status": 500, "message": "injected: refused", "method": "GET",
               "path": r"^/access/permissions$"}]

    def told():
        ns = nodes(px, admin)
        return ns if all(n["privileges"]["error"] for n in ns.values()) else None
    try:
        sim.add_faults(refuse)
        px.start()
        ns = wait_for(told, deadline=30, interval=0.2, what="the failed reads told")
        assert "injected: refused" in ns["sv1"]["privileges"]["error"], ns["sv1"]
        assert ns["sv1"]["privileges"]["checked_at"] is None, ns["sv1"]
        rc, rep = status(px, admin)
        assert rc == 1 and [a for a in rep["attention"]
                            if a.startswith("node sv1: its privileges could not be read")], rep
        sim.clear_faults()
        checked(px, admin)
        sim.add_faults(refuse)
        ns = wait_for(told, deadline=30, interval=0.2, what="the failed reads told again")
        # the last whole read still stands
        assert ns["sv1"]["privileges"]["checked_at"] and ns["sv1"]["privileges"]["missing"] == []
        rc, rep = status(px, admin)
        assert not [a for a in rep["attention"] if "privileges" in a], rep
        r = ctl(px, admin, "node", "list")
        assert "privileges not read: GET /access/permissions?path=" in r.stdout, r.stdout
        sim.clear_faults()
        checked(px, admin)
    finally:
        shutdown(px, sim)


finish()
