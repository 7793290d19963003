"""Two proxd instances on one PostgreSQL database, in front of one pvesim:
the service as it runs when several instances share the work.

A private PostgreSQL server (lib.pg) on 127.0.0.1; both instances take
requests at once. Checks: concurrent creations through both make distinct
VMs that all run; one Idempotency-Key sent to both makes one VM; an owner's
quota holds across both; a start whose request never reached Proxmox, run
by one instance, is not taken for the start the other made a moment before;
a VM made through one is shut down, grown and deleted through the other;
both stop cleanly and never log a secret.
"""
import concurrent.futures
import time

import requests

from lib import db
from lib.cases import case, finish
from lib.pg import PrivatePG
from lib.proxd import Proxd
from lib.sim import Sim
from lib.wait import wait_for

pg = PrivatePG()
try:
    sim = Sim()
except Exception:
    pg.stop()
    raise
# a hang costs a call's timeout (a_lost_start_is_not_the_other_instances)
px1 = Proxd(sim, database=pg.url, proxmox_extra="timeout = 8\n")
ADMIN = px1.token("ops", "admin")
DAVE = px1.token("dave")
px2 = Proxd(sim, database=pg.url, proxmox_extra="timeout = 8\n")
px2.secrets += px1.secrets
px1.start()
px2.start()
PX = (px1, px2)


def call(i, method, path, token=ADMIN, body=None, headers=None):
    return PX[i % 2].call(method, path, token, body, headers=headers)


def spec(name, **kw):
    b = {"os": "ubuntu", "name": name, "cores": 1, "memory_mb": 1024, "disk_gb": 10}
    b.update(kw)
    return b


def wait_job(job, via=0):
    return PX[via % 2].wait_job(job, ADMIN, deadline=90)


def in_parallel(fn, n):
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(fn, range(n)))


MADE = []


@case
def concurrent_creations_through_both():
    answers = in_parallel(lambda i: call(i, "POST", "/v1/vms", body=spec("pg-%d" % i)), 12)
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    vmids = [a.json()["vmid"] for a in answers]
    assert len(set(vmids)) == 12, vmids
    for i, a in enumerate(answers):
        j = wait_job(a.json()["job"], via=i + 1)  # read through the other instance
        assert j["state"] == "done", j
    running = {v["vmid"]: v for v in sim.state()["vms"] if v["power"] == "running"}
    for v in vmids:
        assert v in running, "VM %d does not run on pvesim" % v
        rec = call(0, "GET", "/v1/vms/%d" % v).json()
        assert rec["state"] == "enabled" and rec["node"] == running[v]["node"], rec
    MADE.extend(vmids)


@case
def one_key_one_vm_across_instances():
    key = "pg-key-1"
    answers = in_parallel(lambda i: call(i, "POST", "/v1/vms", body=spec("pg-idem"),
                                         headers={"Idempotency-Key": key}), 10)
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert len({(a.json()["vmid"], a.json()["job"]) for a in answers}) == 1
    # one made the job, on one instance; the others (either instance) replay it, marked
    assert sum(1 for a in answers if not a.json().get("replayed")) == 1, [a.text for a in answers]
    assert wait_job(answers[0].json()["job"])["state"] == "done"
    named = [v for v in call(1, "GET", "/v1/vms?limit=1000").json()["vms"]
             if v["name"] == "pg-idem"]
    assert len(named) == 1, named


@case
def quota_holds_across_instances():
    made = in_parallel(lambda i: call(i, "POST", "/v1/vms", DAVE, spec("pg-dave-%d" % i)), 8)
    ok = [a for a in made if a.status_code == 202]
    assert len(ok) == 3, [a.text for a in made]
    assert all(a.status_code in (202, 403) for a in made), [a.text for a in made]
    for a in ok:
        assert wait_job(a.json()["job"])["state"] == "done"


def power(i, vm, action):
    """The action through instance i, run there (the other is SIGSTOPped);
    its job, ended."""
    other = PX[1 - i]
    other.freeze()
    try:
        r = call(i, "POST", "/v1/vms/%d/%s" % (vm, action))
        assert r.status_code == 202, r.text
        return wait_job(r.json()["job"], via=i)
    finally:
        other.thaw()


def upid_time(upid):
    return int(upid.split(":")[4], 16)


def lost_start_once(vm):
    """The scenario once, its checks; how old px1's start was when px2's
    job was asked for (s)."""
    assert power(0, vm, "stop")["state"] == "done"
    assert power(0, vm, "start")["state"] == "done"
    assert power(0, vm, "stop")["state"] == "done"
    node = sim.vm(vm)["node"]
    sim.add_faults([{"method": "POST", "path": r"^/nodes/[^/]+/qemu/%d/status/start$" % vm,
                     "kind": "hang", "count": 1}])
    sent = time.time()
    j = power(1, vm, "start")
    assert sim.clear_faults() == 1
    for px in PX:  # the hang held the node down in px2 until its probe
        wait_for(lambda: all(n["health"] == "up" for n in px.call(
                     "GET", "/v1/nodes", ADMIN).json()["nodes"] if n["name"] == node),
                 deadline=30, interval=0.1, what="node %s up again" % node)
    assert j["state"] == "done", j
    assert sim.vm(vm)["power"] == "running", sim.vm(vm)
    rec = call(1, "GET", "/v1/vms/%d" % vm).json()
    assert rec["power"] == "running", rec
    starts = sim.data("GET", "/nodes/%s/tasks?vmid=%d&typefilter=qmstart&limit=10" % (node, vm))
    assert len(starts) >= 3, starts  # the creation's, px1's, px2's second request
    firsts = sorted(upid_time(t["upid"]) for t in starts)
    return sent - firsts[-2]  # px1's start, when px2's job was asked for


@case
def a_lost_start_is_not_the_other_instances():
    # px1 starts the VM and stops it; px2's start of it never reaches
    # Proxmox (a hang). Its lookup on the task list finds px1's start: the
    # same type, VMID and token, seconds old. Taken (the instances knew only
    # their own tasks), the job ended "done, VM stopped"; now the tasks are
    # known to both, the start is asked again and the VM runs. Shown only
    # while px1's start is within the lookup's 5 s of slack at px2's call
    # (0.5-0.8 s here): tried again once when it was not, then a failure.
    vm = MADE[1]
    for attempt in (1, 2):
        ago = lost_start_once(vm)
        if ago <= 4:
            return
        print("(attempt %d: px1's start was %.1f s old: outside the lookup's slack)"
              % (attempt, ago))
    raise AssertionError("px1's start was never recent enough to show anything")


@case
def lifecycle_through_the_other_instance():
    vm = MADE[0]  # made through px1
    r = call(1, "POST", "/v1/vms/%d/shutdown" % vm)
    assert r.status_code == 202, r.text
    assert wait_job(r.json()["job"], via=1)["state"] == "done"
    r = call(0, "POST", "/v1/vms/%d/resize" % vm, body={"disk_gb": 20})
    assert r.status_code == 202, r.text
    assert wait_job(r.json()["job"])["state"] == "done"
    rec = call(1, "GET", "/v1/vms/%d" % vm).json()
    assert rec["power"] == "stopped" and rec["disk_gb"] == 20, rec
    r = call(1, "DELETE", "/v1/vms/%d" % vm)
    assert r.status_code == 202, r.text
    assert wait_job(r.json()["job"], via=1)["state"] == "done"
    assert call(0, "GET", "/v1/vms/%d" % vm).status_code == 404
    assert all(v["vmid"] != vm for v in sim.state()["vms"])


DB_DOWN = "the database is not answering (the detail is in proxd's log)"
INTERNAL = ("proxd could not complete the request: the database is not answering or proxd "
            "failed inside (the detail is in proxd's log)")


def ready(px):
    r = requests.get(px.base + "/readyz", timeout=30)
    return r if r.status_code == 200 else None


@case
def database_failures_are_not_shown_to_callers():
    """The store's own words (libpq's name the server's host and port and
    the database user; SQL errors name tables) go to proxd's log, never to
    a caller: /readyz answers anyone."""
    vm = MADE[2]  # MADE[0] was deleted by lifecycle_through_the_other_instance
    job = call(0, "GET", "/v1/jobs?limit=1").json()["jobs"][0]["id"]
    # a table gone under proxd: the token is still read, the jobs are not
    db.query(pg.url, "ALTER TABLE jobs RENAME TO jobs_away")
    try:
        for method, path, want in [("GET", "/v1/jobs/" + job, DB_DOWN),
                                   ("GET", "/v1/jobs", DB_DOWN),
                                   ("POST", "/v1/vms/%d/reboot" % vm, INTERNAL)]:
            r = call(0, method, path)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            e = r.json()["error"]
            assert e["code"] == "unavailable" and e["message"] == want, (method, path, e)
        r = requests.get(px1.base + "/readyz", timeout=30)
        assert r.status_code == 503 and r.json()["database_error"] == DB_DOWN, r.text
    finally:
        db.query(pg.url, "ALTER TABLE jobs_away RENAME TO jobs")
    assert px1.logs_contain("does not exist (SQLSTATE 42P01)")  # the detail: in the log
    # the server gone: /readyz, unauthenticated, names no host, port or user
    pg.halt()
    try:
        r = requests.get(px1.base + "/readyz", timeout=30)
        assert r.status_code == 503, r.text
        b = r.json()
        assert b["database"] is False and b["database_error"] == DB_DOWN, b
        for leak in ("127.0.0.1", str(pg.port), "connection to server", "user"):
            assert leak not in r.text, (leak, r.text)
    finally:
        pg.resume()
    assert px1.logs_contain("connection to server")
    for p in PX:  # both reconnect by themselves
        wait_for(lambda: ready(p), deadline=30, interval=0.1, what="readyz 200 again")
    assert call(1, "GET", "/v1/jobs/" + job).status_code == 200


@case
def both_stop_cleanly():
    px1.stop()
    px2.stop()


try:
    for p in PX:
        p.abort()
finally:
    sim.stop()
    pg.stop()
finish()
