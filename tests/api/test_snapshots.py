"""Snapshots through proxd's API, black-box against pvesim (issue 14).

A create/list/rollback/delete lifecycle with RAM state (the record's power
follows Proxmox after a rollback), the per-VM and per-owner limits (409 from
what proxd knows; the job enforces them against Proxmox's lists), another
owner's 404 on every snapshot route, per-VM serialisation with a running
control job, seeded random faults on the snapshot calls (every job ends, no
snapshot half-made or doubled, record power true), and retention plus the
sync pass that notices snapshots made or removed outside proxd.

PROXD_TEST_DB=postgresql://... (and PROXD_TEST_DB2, PROXD_TEST_DB3 for the
second and third parts, each a database of its own) run it on PostgreSQL:
test_snapshots_pg.py does. There `make test` runs the first part only (the
limits, two instances on one database: what depends on the database; its
control-job wait, proxctl and random-fault cases in the full run); the
second (retention, the sync pass) and third (kill -9) parts make the same
store calls (job submit, claim, lease takeover, conditional record writes)
that store/test_store, the first part, core/test_crash_pg and
api/test_drain_pg make on PostgreSQL in every run, and run on PostgreSQL in
the full run (`make test-full`, PROXD_TEST_FULL=1).
"""
import json
import os
import random
import re
import subprocess
import time

import requests

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.pg import case_full_on_pg, full_run
from lib.faults import fault_mix
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

DB = os.environ.get("PROXD_TEST_DB")  # a PostgreSQL URL, else SQLite


def start_sim(**kw):
    return Sim(**kw)


class Api:
    def __init__(self, px):
        self.px = px

    def call(self, method, path, token, body=None, **kw):
        h = {"Authorization": "Bearer " + token}
        data = None
        if body is not None:
            data = json.dumps(body)
            h["Content-Type"] = "application/json"
        return requests.request(method, self.px.base + path, data=data, headers=h, timeout=30,
                                **kw)

    def job(self, token, job, deadline=90):
        def done():
            j = self.call("GET", "/v1/jobs/" + job, token).json()
            return j if j["state"] in ("done", "failed") else None
        return wait_for(done, deadline=deadline, interval=0.05, what="job " + job)

    def create_vm(self, token, name):
        return self.create_vms(token, [name])[0]

    def create_vms(self, token, names):
        """Made at once (their creations overlap); the VMIDs, in order."""
        made = []
        for name in names:
            r = self.call("POST", "/v1/vms", token, {"os": "ubuntu", "name": name, "cores": 1,
                                                     "memory_mb": 1024, "disk_gb": 10})
            assert r.status_code == 202, r.text
            made.append(r.json())
        for m in made:
            j = self.job(token, m["job"])
            assert j["state"] == "done", j
        return [m["vmid"] for m in made]

    def vm(self, token, vmid):
        r = self.call("GET", "/v1/vms/%d" % vmid, token)
        assert r.status_code == 200, r.text
        return r.json()

    def snap(self, token, vmid, name, vmstate=False, description=None, want="done"):
        body = {"name": name, "vmstate": vmstate}
        if description is not None:
            body["description"] = description
        r = self.call("POST", "/v1/vms/%d/snapshots" % vmid, token, body)
        assert r.status_code == 202, r.text
        j = self.job(token, r.json()["job"])
        assert want is None or j["state"] == want, j
        return j

    def op(self, token, vmid, name, what, want="done"):
        if what == "delete":
            r = self.call("DELETE", "/v1/vms/%d/snapshots/%s" % (vmid, name), token)
        else:
            r = self.call("POST", "/v1/vms/%d/snapshots/%s/rollback" % (vmid, name), token)
        assert r.status_code == 202, r.text
        j = self.job(token, r.json()["job"])
        assert want is None or j["state"] == want, j
        return j

    def snaps(self, token, vmid, refresh=True):
        """The list, through a list job when proxd answers 202."""
        r = self.call("GET", "/v1/vms/%d/snapshots%s" % (vmid, "?refresh=1" if refresh else ""),
                      token)
        if r.status_code == 202:
            job = r.json()["job"]
            assert r.headers["Location"].endswith("?job=" + job), r.headers
            assert self.job(token, job)["state"] == "done"
            r = self.call("GET", "/v1/vms/%d/snapshots?job=%s" % (vmid, job), token)
        assert r.status_code == 200, r.text
        return {s["name"]: s for s in r.json()["snapshots"]}


# Proxmox's side is read from pvesim's control API (/_sim/state), which the
# fault rules do not touch.
def pve_snaps(sim, vmid):
    return dict(sim.vm(vmid).get("snapshots") or {})


def pve_power(sim, vmid):
    return sim.vm(vmid)["power"]


def pve_lock(sim, vmid):
    return sim.vm(vmid)["conf"].get("lock")


# ---- phase 1: limits (max_per_vm 3, max_per_owner 5), no sync pass after start ----
SEED = int(os.environ.get("SNAP_SEED", "1414"))
sim = start_sim(time_scale=0.005, extra=["--seed", str(SEED)])
LIMITS = "reconcile_interval = 3600\n\n[snapshots]\nmax_per_vm = 3\nmax_per_owner = 5\n"
px = Proxd(sim, database=DB, proxd_extra=LIMITS)
ALICE = px.token("alice")
BOB = px.token("bob")
CAROL = px.token("carol")
FRANK = px.token("frank")
GINA = px.token("gina")
ADMIN = px.token("ops", "admin")
px.start()
api = Api(px)
VM = {}


@case
def lifecycle_with_ram_and_rollback():
    vmid = VM["a"] = api.create_vm(ALICE, "snap-a")
    assert api.vm(ALICE, vmid)["power"] == "running"
    j = api.snap(ALICE, vmid, "disk-only", description="before the upgrade")
    assert j["kind"] == "snap-create"
    api.snap(ALICE, vmid, "with-ram", vmstate=True)
    pv = pve_snaps(sim, vmid)
    assert set(pv) == {"disk-only", "with-ram"}, pv
    assert pv["with-ram"].get("vmstate") and not pv["disk-only"].get("vmstate"), pv
    # proxd's marker names the job; the API shows the description without it
    assert "proxd-snapshot job=" + j["id"] in pv["disk-only"]["description"], pv
    ls = api.snaps(ALICE, vmid, refresh=False)  # known from the jobs: no list job
    assert set(ls) == {"disk-only", "with-ram"}, ls
    assert ls["disk-only"]["description"] == "before the upgrade", ls
    assert ls["disk-only"]["proxd"] and ls["with-ram"]["vmstate"], ls
    assert ls["with-ram"]["parent"] == "disk-only" and ls["disk-only"]["state"] == "complete"
    # stop, then roll back to the RAM snapshot: running again, same identity
    before = api.vm(ALICE, vmid)
    r = api.call("POST", "/v1/vms/%d/stop" % vmid, ALICE)
    assert r.status_code == 202 and api.job(ALICE, r.json()["job"])["state"] == "done"
    assert api.vm(ALICE, vmid)["power"] == "stopped"
    api.op(ALICE, vmid, "with-ram", "rollback")
    after = api.vm(ALICE, vmid)
    assert after["power"] == "running" == pve_power(sim, vmid), after
    for k in ("vmid", "name", "owner", "node", "os", "state"):
        assert after[k] == before[k], (k, before, after)
    # a snapshot without RAM: the rollback leaves the VM stopped
    api.op(ALICE, vmid, "disk-only", "rollback")
    assert api.vm(ALICE, vmid)["power"] == "stopped" == pve_power(sim, vmid)
    api.op(ALICE, vmid, "disk-only", "delete")
    assert set(pve_snaps(sim, vmid)) == {"with-ram"}
    assert set(api.snaps(ALICE, vmid)) == {"with-ram"}
    assert pve_lock(sim, vmid) is None


@case
def bad_input_and_known_refusals():
    vmid = VM["a"]
    for name, why in (("1abc", "start with a letter"), ("a", "2 to 40"), ("x" * 41, None),
                      ("bad name", "letters, digits"), ("current", "reserved"),
                      ("Pending", "reserved")):
        r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": name})
        assert r.status_code == 400, (name, r.text)
        e = r.json()["error"]
        assert e["details"]["field"] == "name", e
        assert why is None or why in e["message"], e
    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": "ok1", "vmstate": "yes"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "vmstate", r.text
    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": "ok1", "extra": 1})
    assert r.status_code == 400, r.text
    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE,
                 {"name": "ok1", "description": "two\nlines"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "description"
    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "name"
    # proxd knows the list: a taken name is 409, a missing snapshot 404
    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": "with-ram"})
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "name", r.text
    for m, p in (("DELETE", ""), ("POST", "/rollback")):
        r = api.call(m, "/v1/vms/%d/snapshots/nosuch%s" % (vmid, p), ALICE)
        assert r.status_code == 404, r.text
    r = api.call("GET", "/v1/vms/%d/snapshots?refresh=maybe" % vmid, ALICE)
    assert r.status_code == 400, r.text
    # proxd knows the list, yet a bare ?refresh (a flag with no value) asks
    # for a fresh read: a list job, not the known list
    r = api.call("GET", "/v1/vms/%d/snapshots?refresh" % vmid, ALICE)
    assert r.status_code == 202, r.text
    assert api.job(ALICE, r.json()["job"])["state"] == "done"
    r = api.call("GET", "/v1/vms/%d/snapshots?other=1" % vmid, ALICE)
    assert r.status_code == 400, r.text
    r = api.call("GET", "/v1/vms/%d/snapshots?job=%s" % (vmid, "0" * 36), ALICE)
    assert r.status_code == 404, r.text
    r = api.call("PUT", "/v1/vms/%d/snapshots" % vmid, ALICE)
    assert r.status_code == 405, r.text


@case
def other_owners_get_404_on_every_route():
    vmid = VM["a"]
    r = api.call("GET", "/v1/vms/%d/snapshots" % vmid, ALICE)
    assert r.status_code in (200, 202), r.text
    listjob = api.call("GET", "/v1/vms/%d/snapshots?refresh=1" % vmid, ALICE).json()["job"]
    api.job(ALICE, listjob)
    routes = [("GET", "/v1/vms/%d/snapshots" % vmid, None),
              ("GET", "/v1/vms/%d/snapshots?refresh=1" % vmid, None),
              ("GET", "/v1/vms/%d/snapshots?job=%s" % (vmid, listjob), None),
              ("POST", "/v1/vms/%d/snapshots" % vmid, {"name": "theirs"}),
              ("POST", "/v1/vms/%d/snapshots" % vmid, {"name": "1bad"}),  # 404 before 400
              ("DELETE", "/v1/vms/%d/snapshots/with-ram" % vmid, None),
              ("POST", "/v1/vms/%d/snapshots/with-ram/rollback" % vmid, None)]
    for m, p, b in routes:
        r = api.call(m, p, BOB, b)
        assert r.status_code == 404, (m, p, r.status_code, r.text)
        assert r.json()["error"]["code"] == "not_found"
        # a VM that does not exist answers the same
        r2 = api.call(m, p.replace("/%d/" % vmid, "/999999/"), BOB, b)
        assert r2.status_code == 404 and r2.json()["error"]["message"].startswith("no VM")
    # the admin sees it; bob changed nothing
    assert api.call("GET", "/v1/vms/%d/snapshots" % vmid, ADMIN).status_code in (200, 202)
    assert set(pve_snaps(sim, vmid)) == {"with-ram"}
    assert pve_power(sim, vmid) == "stopped"


@case
def per_vm_limit():
    vmid = VM["a"]  # holds with-ram
    api.snap(ALICE, vmid, "two")
    api.snap(ALICE, vmid, "three")
    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ALICE, {"name": "four"})
    assert r.status_code == 409, r.text
    e = r.json()["error"]
    assert e["details"]["field"] == "snapshots" and "max_per_vm is 3" in e["message"], e
    # a VM proxd has no list of, filled outside proxd: the job enforces it
    other = VM["b"] = api.create_vm(ALICE, "snap-b")
    node = sim.vm(other)["node"]
    for n in ("x1", "x2", "x3"):
        up = sim.data("POST", "/nodes/%s/qemu/%d/snapshot" % (node, other), data={"snapname": n})
        assert sim.wait_task(node, up)["exitstatus"] == "OK"
    j = api.snap(ALICE, other, "four", want="failed")
    assert "limit" in j["error"] and "max_per_vm is 3" in j["error"], j
    assert set(pve_snaps(sim, other)) == {"x1", "x2", "x3"}
    # now proxd knows: refused at once
    r = api.call("POST", "/v1/vms/%d/snapshots" % other, ALICE, {"name": "five"})
    assert r.status_code == 409, r.text
    metrics = requests.get(px.base + "/metrics", timeout=10).text
    assert re.search(r"^proxd_snapshot_limit_refusals_total [2-9]", metrics, re.M), metrics[-800:]


@case
def per_owner_limit():
    a, b = api.create_vms(CAROL, ["carol-a", "carol-b"])
    for n in ("a1", "a2", "a3"):
        api.snap(CAROL, a, n)
    api.snap(CAROL, b, "b1")
    api.snap(CAROL, b, "b2")  # five in all
    r = api.call("POST", "/v1/vms/%d/snapshots" % b, CAROL, {"name": "b3"})
    assert r.status_code == 409, r.text
    e = r.json()["error"]
    assert "max_per_owner is 5" in e["message"] and "carol" in e["message"], e
    # another owner is not counted with carol
    r = api.call("POST", "/v1/vms/%d/snapshots" % VM["b"], ALICE, {"name": "alice-ok"})
    assert r.status_code == 409 and "max_per_vm" in r.text, r.text  # b is at its own limit
    # a deletion makes room again
    api.op(CAROL, a, "a1", "delete")
    api.snap(CAROL, b, "b3")
    assert len(pve_snaps(sim, a)) + len(pve_snaps(sim, b)) == 5


@case_full_on_pg
def snapshot_waits_for_a_running_control_job():
    vmid = api.create_vm(FRANK, "snap-wait")
    node = sim.vm(vmid)["node"]
    # the shutdown call is held for 3 s (by pvesim): the snapshot job must wait
    sim.ctl("POST", "/faults", {"kind": "delay", "method": "POST", "delay_ms": 3000, "count": 1,
                                "path": r"^/nodes/%s/qemu/%d/status/shutdown$" % (node, vmid)})
    try:
        r1 = api.call("POST", "/v1/vms/%d/shutdown" % vmid, FRANK, {"timeout": 30})
        assert r1.status_code == 202, r1.text
        r2 = api.call("POST", "/v1/vms/%d/snapshots" % vmid, FRANK, {"name": "after"})
        assert r2.status_code == 202, r2.text
        ctl, snap = r1.json()["job"], r2.json()["job"]
        seen_running = False
        end = time.monotonic() + 60
        while True:
            assert time.monotonic() < end, "the snapshot job did not end in 60 s"
            # the snapshot job first: when it has left the queue, the control
            # job (read after it) must have ended
            s = api.call("GET", "/v1/jobs/" + snap, FRANK).json()
            c = api.call("GET", "/v1/jobs/" + ctl, FRANK).json()
            if c["state"] == "running":
                seen_running = True
            if s["state"] != "queued":
                assert c["state"] in ("done", "failed"), (c, s)
            if s["state"] in ("done", "failed"):
                break
            time.sleep(0.05)
        assert seen_running
        assert c["state"] == "done" and s["state"] == "done", (c, s)
        assert s["finished_at"] > c["finished_at"]
    finally:
        sim.ctl("DELETE", "/faults")
    snap_ = pve_snaps(sim, vmid)["after"]
    assert not snap_.get("vmstate") and api.vm(FRANK, vmid)["power"] == "stopped"


def ctl(token, *args):
    e = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=token)
    e.pop("PROXCTL_CONFIG", None)
    return subprocess.run([PROXCTL] + list(args), capture_output=True, text=True, timeout=120,
                          env=e)


@case_full_on_pg
def proxctl_snapshot_commands():
    vmid = api.create_vm(FRANK, "ctl-snap")
    v = str(vmid)
    r = ctl(FRANK, "vm", "snapshot", "list", v)  # nothing known yet: a list job answers
    assert r.returncode == 0 and "(no snapshots)" in r.stdout, (r.stdout, r.stderr)
    r = ctl(FRANK, "vm", "snapshot", "create", v, "c1", "--description", "first one", "--ram")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "VM %d" % vmid in r.stdout and "running" in r.stdout, r.stdout
    r = ctl(FRANK, "--json", "vm", "snapshot", "list", v, "--refresh")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["snapshots"]
    assert [(x["name"], x["description"], x["vmstate"]) for x in got] == [
        ("c1", "first one", True)], got
    r = ctl(FRANK, "vm", "snapshot", "list", v)
    assert r.returncode == 0 and "c1" in r.stdout and "first one" in r.stdout, r.stdout
    r = ctl(FRANK, "vm", "snapshot", "create", v, "c1")  # taken: 409 -> exit 6
    assert r.returncode == 6 and "c1" in r.stderr, (r.returncode, r.stderr)
    r = ctl(FRANK, "vm", "snapshot", "create", v, "9bad")  # 400 -> exit 2
    assert r.returncode == 2 and "name" in r.stderr, (r.returncode, r.stderr)
    r = ctl(BOB, "vm", "snapshot", "list", v)  # another owner's: 404 -> exit 3
    assert r.returncode == 3, (r.returncode, r.stderr)
    r = ctl(FRANK, "vm", "snapshot", "rollback", v, "c1")
    assert r.returncode == 0 and "running" in r.stdout, (r.stdout, r.stderr)
    r = ctl(FRANK, "vm", "snapshot", "delete", v, "c1", "--no-wait")
    assert r.returncode == 0 and "queued" in r.stdout, (r.stdout, r.stderr)
    wait_for(lambda: not pve_snaps(sim, vmid) or None, 30, 0.1, "c1 deleted")
    r = ctl(FRANK, "vm", "snapshot", "frobnicate", v)
    assert r.returncode == 2 and "usage" in r.stderr
    r = ctl(FRANK, "vm", "snapshot", "list", v, "--ram")
    assert r.returncode == 2


@case
def a_list_jobs_answer_is_served_by_another_instance():
    vmid = VM["a"]
    r = api.call("GET", "/v1/vms/%d/snapshots?refresh=1" % vmid, ALICE)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert api.job(ALICE, job)["state"] == "done"
    other = Proxd(sim, share=px, proxd_extra=LIMITS)  # the same limits
    other.secrets += px.secrets
    other.start()
    try:
        r = requests.get(other.base + "/v1/vms/%d/snapshots?job=%s" % (vmid, job),
                         headers={"Authorization": "Bearer " + ALICE}, timeout=30)
        assert r.status_code == 200, r.text
        assert set(x["name"] for x in r.json()["snapshots"]) == set(pve_snaps(sim, vmid))
        r = requests.get(other.base + "/v1/vms/%d/snapshots?job=%s" % (vmid, job),
                         headers={"Authorization": "Bearer " + BOB}, timeout=30)
        assert r.status_code == 404, r.text
    finally:
        other.stop()


@case
def per_owner_limit_holds_across_instances():
    # two instances on one database, each snapshot call held 1 s by pvesim:
    # an owner's counts made at once in both would both pass
    vms = api.create_vms(GINA, ["gina-%d" % i for i in range(3)])
    other = Proxd(sim, share=px, proxd_extra=LIMITS)  # the same limits
    other.secrets += px.secrets
    other.start()
    sim.ctl("POST", "/faults", {"kind": "delay", "method": "POST", "delay_ms": 1000,
                                "path": r"^/nodes/[^/]+/qemu/\d+/snapshot$"})
    try:
        jobs, refused = [], 0
        for i in range(3):  # 9 requests, alternating instances, for max_per_owner = 5
            for vm in vms:
                base = (px, other)[(len(jobs) + refused) % 2].base
                r = requests.post(base + "/v1/vms/%d/snapshots" % vm, json={"name": "g%d" % i},
                                  headers={"Authorization": "Bearer " + GINA}, timeout=30)
                if r.status_code == 202:
                    jobs.append(r.json()["job"])
                else:
                    assert r.status_code == 409 and "max_per" in r.text, r.text
                    refused += 1
        ended = [api.job(GINA, j, deadline=120) for j in jobs]
        per_vm = [len(pve_snaps(sim, v)) for v in vms]
        assert sum(per_vm) == 5 and max(per_vm) <= 3, per_vm
        assert sum(j["state"] == "done" for j in ended) == 5, [j["state"] for j in ended]
        for j in ended:
            assert j["state"] == "done" or "limit" in j["error"], j
    finally:
        sim.ctl("DELETE", "/faults")
        other.stop()


@case
def an_instances_stale_lists_do_not_pass_the_owner_limit():
    # Each job runs in the instance that is awake (the other is SIGSTOPped),
    # alternately, so each instance's cached lists are ones the other has
    # changed since: counted from them, six snapshots would pass a limit of 5.
    hana = px.token("hana")
    vms = api.create_vms(hana, ["hana-%d" % i for i in range(3)])
    other = Proxd(sim, share=px, proxd_extra=LIMITS)  # the same limits
    other.secrets += px.secrets
    other.start()
    apis, daemons = (api, Api(other)), (px, other)
    results = []
    try:
        for n, vm in enumerate(vms + vms):
            live, asleep = apis[n % 2], daemons[1 - n % 2]
            asleep.freeze()
            try:
                r = live.call("POST", "/v1/vms/%d/snapshots" % vm, hana, {"name": "h%d" % n})
                if r.status_code == 409:
                    results.append("refused")
                    continue
                assert r.status_code == 202, r.text
                j = live.job(hana, r.json()["job"])
                results.append("done" if j["state"] == "done" else j["error"])
            finally:
                asleep.thaw()
        total = sum(len(pve_snaps(sim, v)) for v in vms)
        assert total == 5, (total, results)
        assert results[:5] == ["done"] * 5 and "limit" in results[5], results
    finally:
        other.stop()


# the snapshot calls' faults, lock timeouts the most
SNAP_MIX = (("lock_timeout", 0.3), ("error", 0.25), ("task_error", 0.25), ("596", 0.1),
            ("delay", 0.1))


@case
def a_half_made_snapshot_left_behind_is_named():
    # the snapshot's task fails half way and every removal of what it left
    # fails too: the job must not say the half-made snapshot is removed
    tok = px.token("hank")
    vmid = api.create_vm(tok, "snap-half")
    sim.add_faults([{"method": "POST", "path": r"^/nodes/[^/]+/qemu/%d/snapshot$" % vmid,
                     "kind": "task_error", "message": "snapshot broken by the test",
                     "cleanup_fails": True},
                    {"method": "DELETE", "path": r"^/nodes/[^/]+/qemu/%d/snapshot/" % vmid,
                     "kind": "error", "status": 500, "message": "removal refused by the test"}])
    try:
        j = api.snap(tok, vmid, "half", want="failed")
    finally:
        sim.clear_faults()
    assert pve_snaps(sim, vmid)["half"].get("snapstate"), pve_snaps(sim, vmid)
    assert "could not be removed" in j["error"], j
    assert "qm delsnapshot %d half --force" % vmid in j["error"], j
    assert "is removed" not in j["error"], j


@case
def a_long_multibyte_description_is_cut_between_characters():
    # made outside proxd with 600 bytes of 3-byte characters: proxd keeps
    # 512 bytes at most, and byte 512 falls inside the 171st character.
    # Cut there, the text was no UTF-8, its entry could not be encoded and
    # the list left the snapshot out.
    tok = px.token("ivan")
    vmid = api.create_vm(tok, "snap-euro")
    node = sim.vm(vmid)["node"]
    up = sim.data("POST", "/nodes/%s/qemu/%d/snapshot" % (node, vmid),
                  data={"snapname": "euros", "description": "\u20ac" * 200})
    assert sim.wait_task(node, up)["exitstatus"] == "OK"
    assert pve_snaps(sim, vmid)["euros"]["description"] == "\u20ac" * 200
    ls = api.snaps(tok, vmid)  # a list job reads Proxmox's list
    assert set(ls) == {"euros"}, ls
    assert ls["euros"]["description"] == "\u20ac" * 170, ls["euros"]
    assert not ls["euros"]["proxd"], ls


def fault_rules(rate):
    return fault_mix(rate, r"^/nodes/[^/]+/qemu/\d+/(snapshot|status/current)", SNAP_MIX,
                     message="injected fault") + [
        # deletes fail their tasks too
        {"kind": "task_error", "method": "DELETE", "rate": rate * 0.25,
         "path": r"^/nodes/[^/]+/qemu/\d+/snapshot/", "message": "injected fault"}]


@case_full_on_pg
def random_faults_on_snapshot_calls():
    seed = SEED
    rng = random.Random(seed)
    vms = api.create_vms(ADMIN, ["flt-%d" % i for i in range(3)])
    sim.add_faults(fault_rules(0.35))
    jobs = []
    t0 = time.monotonic()
    try:
        for i in range(14):
            vmid = rng.choice(vms)
            known = [n for n in pve_snaps(sim, vmid)]
            what = rng.choice(["create", "create", "rollback", "delete"]) if known else "create"
            if what == "create":
                name = "f%d" % i
                r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ADMIN,
                             {"name": name, "vmstate": rng.random() < 0.4})
            elif what == "delete":
                name = rng.choice(known)
                r = api.call("DELETE", "/v1/vms/%d/snapshots/%s" % (vmid, name), ADMIN)
            else:
                name = rng.choice(known)
                r = api.call("POST", "/v1/vms/%d/snapshots/%s/rollback" % (vmid, name), ADMIN)
            if r.status_code in (404, 409):  # what proxd knows refused it
                continue
            if r.status_code == 503 and r.json()["error"]["code"] == "node_down":
                # a fault held the VM's node down until its next probe (a
                # second): refused at once, as it should be; not a job
                continue
            assert r.status_code == 202, r.text
            j = api.job(ADMIN, r.json()["job"], deadline=150)
            jobs.append((what, vmid, name, j))
            if pve_lock(sim, vmid):
                # Proxmox keeps "rollback" on a VM whose rollback failed (nothing
                # else ever stays): the job says so, and so does every job after
                # it until an operator unlocks the VM (qm unlock)
                assert pve_lock(sim, vmid) == "rollback", (pve_lock(sim, vmid), j)
                assert what == "rollback" and j["state"] == "failed", j
                assert "qm unlock %d" % vmid in j["error"], j
                r = api.call("POST", "/v1/vms/%d/snapshots/%s/rollback" % (vmid, name), ADMIN)
                assert r.status_code == 202, r.text
                t0j = time.monotonic()
                j2 = api.job(ADMIN, r.json()["job"], deadline=150)
                assert j2["state"] == "failed" and "qm unlock" in j2["error"], j2
                assert time.monotonic() - t0j < 30, "a stuck lock is not waited for"
                sim.ctl("POST", "/vms/%d" % vmid, {"conf": {"lock": None}})
    finally:
        hits = sim.clear_faults()
    assert hits > 0, "no fault was injected"
    # a node the last faults held down answers 503 node_down until its next
    # probe (a second): the checks below ask every VM's node
    wait_for(lambda: all(n["health"] == "up" for n in
                         api.call("GET", "/v1/nodes", ADMIN).json()["nodes"]) or None, 30,
             0.1, "every node up after the faults")
    done = sum(1 for _, _, _, j in jobs if j["state"] == "done")
    print("  seed %d: %d jobs (%d done), %d faults, %.1f s" % (seed, len(jobs), done, hits,
                                                              time.monotonic() - t0))
    assert done > 0
    for what, vmid, name, j in jobs:
        if what == "create" and j["state"] == "failed":
            # a failed creation leaves nothing of itself behind
            s = pve_snaps(sim, vmid).get(name)
            assert s is None or "proxd-snapshot job=" + j["id"] not in s.get("description", ""), \
                (j, s)
    for vmid in vms:
        pv = pve_snaps(sim, vmid)
        for n, s in pv.items():
            assert not s.get("snapstate"), ("half-made snapshot", vmid, n, s)
        assert pve_lock(sim, vmid) is None, (vmid, pve_lock(sim, vmid), pv, [
            (w, n, j["state"], j["error"]) for w, v, n, j in jobs if v == vmid])
        # proxd's list is Proxmox's, and the record's power is what Proxmox shows
        assert set(api.snaps(ADMIN, vmid)) == set(pv)
        wait_for(lambda: api.vm(ADMIN, vmid)["power"] == pve_power(sim, vmid) or None, 5,
                 what="record power of %d" % vmid)
    # every done creation's snapshot is there unless a later job deleted it or rolled past it
    for k, (what, vmid, name, j) in enumerate(jobs):
        later = [x for x in jobs[k + 1:] if x[1] == vmid and x[2] == name and x[0] == "delete"
                 and x[3]["state"] == "done"]
        if what == "create" and j["state"] == "done" and not later:
            assert name in pve_snaps(sim, vmid), (name, vmid)


def vm_tasks(vmid):
    """The types of the tasks of VM vmid on its node, oldest first."""
    node = sim.vm(vmid)["node"]
    ts = sim.data("GET", "/nodes/%s/tasks" % node, params={"vmid": vmid, "limit": 500})
    return [t["type"] for t in sorted(ts, key=lambda t: t["starttime"])]


@case
def a_lost_answer_leaves_the_snapshot_being_made():
    # The call is served and its answer lost (the connection drops) while
    # the snapshot, with the VM's RAM, takes seconds to make (pvesim's
    # bandwidth lowered): the list shows it half-made (`prepare`) under the
    # `snapshot` lock. The job must find the task and wait for it, never
    # take it for a failed one's leftover and force its removal.
    tok = px.token("ivan")
    vmid = api.create_vm(tok, "snap-lost")
    node = sim.vm(vmid)["node"]
    bw = [n["bandwidth"] for n in sim.state()["nodes"] if n["name"] == node][0]
    sim.ctl("POST", "/nodes/" + node, {"bandwidth_mb": 1})  # 512 MiB of RAM: ~2.5 s here
    sim.add_faults([{"method": "POST", "path": r"^/nodes/[^/]+/qemu/%d/snapshot$" % vmid,
                     "kind": "drop", "count": 1}])
    try:
        j = api.snap(tok, vmid, "lost", vmstate=True, want=None)
    finally:
        hits = sim.clear_faults()
        sim.ctl("POST", "/nodes/" + node, {"bandwidth_mb": bw / 2**20})
    assert hits == 1, "the answer was not dropped"
    assert j["state"] == "done", j
    snap = pve_snaps(sim, vmid).get("lost")
    assert snap and not snap.get("snapstate") and snap.get("vmstate"), pve_snaps(sim, vmid)
    assert "proxd-snapshot job=" + j["id"] in snap["description"], snap
    # one snapshot task, the first call's; no removal of it, no second call
    kinds = [t for t in vm_tasks(vmid) if "snapshot" in t]
    assert kinds == ["qmsnapshot"], kinds
    assert pve_lock(sim, vmid) is None



@case
def the_owner_count_leaves_the_jobs_node_alone():
    # The per-owner count reads the owner's other VMs from Proxmox; one
    # moved behind proxd's back is looked for on every node. Where it was
    # found used to be written into the creating job's own node (the
    # other VM's context shared the job), and checkpointed with it.
    tok = px.token("jill")
    a, b = api.create_vms(tok, ["jill-a", "jill-b"])
    na, nb = sim.vm(a)["node"], sim.vm(b)["node"]
    elsewhere = [n for n in ("sv1", "sv2", "sv3", "sv4", "sv5") if n not in (na, nb)][0]
    sim.ctl("POST", "/vms/%d" % b, {"node": elsewhere})
    j = api.snap(tok, a, "mine")
    assert j["node"] == na, (j, na, elsewhere)
    assert api.vm(tok, a)["node"] == na
    assert set(pve_snaps(sim, a)) == {"mine"} and not pve_snaps(sim, b)

shutdown(px, sim)

if DB and not full_run():
    print("parts 2 and 3 (retention and the sync pass, kill -9) on PostgreSQL: in the full "
          "run only (make test-full)")
    finish()

# ---- phase 2: retention (keep 2) and the sync pass ----
sim = start_sim(time_scale=0.005)
px = Proxd(sim, database=os.environ.get("PROXD_TEST_DB2"),
           proxd_extra="reconcile_interval = 1\n\n[snapshots]\nkeep = 2\nsync_per_pass = 4\n")
DAN = px.token("dan")
px.start()
api = Api(px)


def metric(name):
    text = requests.get(px.base + "/metrics", timeout=10).text
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else 0


@case
def retention_removes_the_oldest_and_sync_sees_outside_changes():
    # more VMs than one pass
    vmid, *others = api.create_vms(DAN, ["keep-me"] + ["filler-%d" % i for i in range(5)])
    node = sim.vm(vmid)["node"]
    # four proxd snapshots, in order (the sync pass runs meanwhile too)
    for n in ("s1", "s2", "s3", "s4"):
        api.snap(DAN, vmid, n)
    # one made outside proxd is never removed by retention
    up = sim.data("POST", "/nodes/%s/qemu/%d/snapshot" % (node, vmid), data={"snapname": "hand"})
    assert sim.wait_task(node, up)["exitstatus"] == "OK"
    wait_for(lambda: set(pve_snaps(sim, vmid)) == {"s3", "s4", "hand"} or None, 60, 0.2,
             "retention to keep s3, s4 (and hand)")
    assert metric("proxd_snapshot_retention_deletions_total") >= 2
    wait_for(lambda: metric('proxd_snapshots_outside_total{change="added"}') >= 1 or None, 30,
             0.2, "the sync pass to notice 'hand'")
    # removed outside proxd: noticed too
    up = sim.api("DELETE", "/nodes/%s/qemu/%d/snapshot/hand" % (node, vmid)).json()["data"]
    assert sim.wait_task(node, up)["exitstatus"] == "OK"
    wait_for(lambda: metric('proxd_snapshots_outside_total{change="removed"}') >= 1 or None, 30,
             0.2, "the sync pass to notice 'hand' gone")
    # retention jobs are ordinary snap-delete jobs; the sync reads the other VMs too (a pass
    # a second, 4 VMs each: waited for, since a fast machine gets here in fewer passes)
    wait_for(lambda: metric("proxd_snapshot_syncs_total") >= len(others) + 1 or None, 30, 0.2,
             "the sync passes to read every VM")
    ls = api.snaps(DAN, vmid, refresh=False)
    assert set(ls) == {"s3", "s4"}, ls


shutdown(px, sim)

# ---- phase 3: kill -9 at random points of snapshot jobs ----
sim = start_sim(time_scale=0.5, extra=["--seed", str(SEED)])
px = Proxd(sim, database=os.environ.get("PROXD_TEST_DB3"),
           proxd_extra="reconcile_interval = 2\n")
ERIN = px.token("gina")
px.start()
api = Api(px)


def kill_and_restart():
    px.kill()
    px.start()


@case
def kill_9_during_snapshot_jobs():
    rng = random.Random(SEED)
    vms = api.create_vms(ERIN, ["crash-%d" % i for i in range(2)])  # slow here: together
    jobs, killed_running = [], []
    for i in range(8):
        vmid = vms[i % 2]
        have = list(pve_snaps(sim, vmid))
        what = rng.choice(["create", "create", "rollback", "delete"]) if have else "create"
        name = "k%d" % i if what == "create" else rng.choice(have)
        if what == "create":
            r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, ERIN,
                         {"name": name, "vmstate": rng.random() < 0.5})
        elif what == "delete":
            r = api.call("DELETE", "/v1/vms/%d/snapshots/%s" % (vmid, name), ERIN)
        else:
            r = api.call("POST", "/v1/vms/%d/snapshots/%s/rollback" % (vmid, name), ERIN)
        if r.status_code in (404, 409):
            continue
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        # the kill point: once a worker runs the job, a random moment of its
        # steps (pvesim's snapshot tasks take a few hundred ms here)
        st = wait_for(lambda: (lambda j: j if j["state"] != "queued" else None)(
            api.call("GET", "/v1/jobs/" + job, ERIN).json()), 30, 0.005, "job claimed")
        if st["state"] == "running":
            time.sleep(rng.uniform(0.0, 0.3))
        killed_running.append(api.call("GET", "/v1/jobs/" + job, ERIN).json()["state"]
                              == "running")
        kill_and_restart()
        j = api.job(ERIN, job, deadline=120)  # resumed after the restart, and ended
        jobs.append((what, vmid, name, j))
    assert len(jobs) >= 4, jobs
    assert sum(killed_running) >= 2, ("too few kills landed in a running job", killed_running)
    for vmid in vms:
        pv = pve_snaps(sim, vmid)
        for n, sn in pv.items():
            assert not sn.get("snapstate"), ("half-made", vmid, n, sn)
        assert pve_lock(sim, vmid) in (None, "rollback"), pve_lock(sim, vmid)
        assert set(api.snaps(ERIN, vmid)) == set(pv)
        wait_for(lambda: api.vm(ERIN, vmid)["power"] == pve_power(sim, vmid) or None, 10,
                 what="record power of %d" % vmid)
        # one snapshot per creation job at most (the marker names the job)
        marks = [sn.get("description", "") for sn in pv.values()]
        ids = [m.split("proxd-snapshot job=")[1] for m in marks if "proxd-snapshot job=" in m]
        assert len(ids) == len(set(ids)), marks
    for k, (what, vmid, name, j) in enumerate(jobs):
        later = [x for x in jobs[k + 1:] if x[1] == vmid and x[2] == name and x[0] == "delete"
                 and x[3]["state"] == "done"]
        if what == "create" and j["state"] == "done" and not later:
            assert name in pve_snaps(sim, vmid), (name, vmid, j)
        if what == "delete" and j["state"] == "done":
            assert name not in pve_snaps(sim, vmid), (name, vmid, j)
    print("  %d jobs through kill -9 (%d killed while running): %s" % (
        len(jobs), sum(killed_running), [(w, j["state"]) for w, _, _, j in jobs]))


shutdown(px, sim)
finish()
