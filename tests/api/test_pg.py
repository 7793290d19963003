"""Two proxd instances on one PostgreSQL database, in front of one pvesim:
the service as it runs when several instances share the work.

A private PostgreSQL server (lib.pg) on 127.0.0.1; both instances take
requests at once. Checks: concurrent creations through both make distinct
VMs that all run; one Idempotency-Key sent to both makes one VM; an owner's
quota holds across both; a VM made through one is shut down, grown and
deleted through the other; both stop cleanly and never log a secret.
"""
import concurrent.futures

from lib.cases import case, finish
from lib.pg import PrivatePG
from lib.proxd import Proxd
from lib.sim import Sim

pg = PrivatePG()
try:
    sim = Sim()
except Exception:
    pg.stop()
    raise
px1 = Proxd(sim, database=pg.url)
ADMIN = px1.token("ops", "admin")
DAVE = px1.token("dave")
px2 = Proxd(sim, database=pg.url)
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
