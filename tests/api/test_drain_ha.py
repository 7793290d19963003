"""A drain's move of an HA-managed VM waits for the HA manager as long as
its migration runs, and no longer than [proxd] ha_wait when the HA manager
does not act (black-box against pvesim). Proxmox answers the migration of
an HA-managed VM with a hamigrate task that only queues `ha-manager migrate
vm:N TARGET`; the source's LRM then runs the migration in a qmigrate task
of its own. ha_wait is 2 s here; before, proxd waited a fixed 120 s
whatever ha_wait said, and gave up ("did not move") while a qmigrate that
takes longer (a large guest's live migration) still ran.

  - a running VM on shared storage whose live migration (its memory over a
    slow link) takes several times ha_wait: the move ends done, the VM
    recorded on the target;
  - a resource frozen (HA state 'freeze': its LRM restarting, the HA stack
    disarmed): the hamigrate task ends OK and nothing happens; the move
    fails after ha_wait saying the HA manager did not act and naming the
    state, the record on the source where the VM is; the freeze lifted, the
    HA manager carries out the request it kept and the record follows;
  - a resource in HA state 'error': ha-manager refuses, the task fails, the
    VM stays, saying so.
"""
import os
import time

from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

HA_WAIT = 2
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
TIME_SCALE = 0.05
# the long migration's length in seconds: 512 MiB of dirtied RAM (half of
# 1 GiB) over sv1's slow link (MiB per PVE second). DRAIN_HA_MIGRATION_S=130
# outlasts the 120 s proxd waited before, whatever ha_wait said
MIGRATION_S = float(os.environ.get("DRAIN_HA_MIGRATION_S", "7"))
SLOW_MB = 512 * TIME_SCALE / MIGRATION_S


def storages(node):
    # the templates on a storage of their own, the VMs on a shared pool: the
    # LRM's migration is online and without local disks
    return [{"id": "tpl", "type": "dir", "content": "images,iso", "total_gb": 300},
            {"id": "ceph", "type": "rbd", "content": "images", "total_gb": 500, "shared": True}]


sim = Sim(time_scale=TIME_SCALE, fleet={"nodes": [{"name": n, "storages": storages(n)}
                                                  for n in NODES]})
px = Proxd(sim, storage="ceph",
           proxd_extra="ha_wait = %d\nreconcile_interval = 2\n\n[limits]\nmemory_margin_mb = 1024\n"
           "drain_parallel = 2\n" % HA_WAIT)
ADMIN = px.token("ops", "admin")
USER = px.token("dh")
px.start()


def call(method, path, token=ADMIN, body=None, want=None):
    r = px.call(method, path, token, body)
    if want is not None:
        assert r.status_code == want, (method, path, r.status_code, r.text)
    return r


def cordon(node, on=True):
    call("POST", "/v1/nodes/%s/%s" % (node, "cordon" if on else "uncordon"), want=200)


def create_on_sv1(name):
    """A running VM on sv1 (the other nodes cordoned meanwhile): its VMID."""
    for n in NODES[1:]:
        cordon(n)
    try:
        r = call("POST", "/v1/vms", USER, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 1024, "disk_gb": 10}, want=202)
        v = r.json()
        j = px.wait_job(v["job"], USER, deadline=120)
        assert j["state"] == "done", j
    finally:
        for n in NODES[1:]:
            cordon(n, False)
    vm = sim.vm(v["vmid"])
    assert vm["node"] == "sv1" and vm["power"] == "running", vm
    return v["vmid"]


def drain_sv1(deadline):
    """Drain sv1 (uncordoned after): the drain's result, and how long it took."""
    t0 = time.monotonic()
    r = call("POST", "/v1/nodes/sv1/drain", want=202)
    try:
        j = px.wait_job(r.json()["job"], ADMIN, deadline=deadline)
    finally:
        cordon("sv1", False)
    assert j["state"] == "done", j
    return j["result"], time.monotonic() - t0


def record_node(vmid):
    return call("GET", "/v1/vms/%d" % vmid, want=200).json()["node"]


def qmigrates(vmid, node="sv1"):
    """pvesim's qmigrate tasks of the VM on `node`: [(start, end or None)]."""
    return [(t["starttime"], t.get("endtime"))
            for t in sim.data("GET", "/nodes/%s/tasks" % node, params={"limit": 1000})
            if t["type"] == "qmigrate" and int(t["id"]) == vmid]


@case
def a_migration_longer_than_ha_wait_ends_on_the_target():
    vmid = create_on_sv1("ha-long")
    sim.ctl("POST", "/vms/%d" % vmid, {"ha": True, "ha_state": "started"})
    sim.ctl("POST", "/nodes/sv1", {"bandwidth_mb": SLOW_MB})
    try:
        res, took = drain_sv1(deadline=MIGRATION_S + 90)
    finally:
        sim.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 500})
    moved = {m["vmid"]: m for m in res["moved"]}
    assert vmid in moved and not res["stayed"], res
    to = moved[vmid]["to"]
    vm = sim.vm(vmid)
    assert vm["node"] == to != "sv1" and vm["power"] == "running", vm
    assert record_node(vmid) == to
    # the LRM's migration ran for several times ha_wait (task times: the
    # host's clock)
    (start, end), = qmigrates(vmid)
    assert end is not None and end - start > 2 * HA_WAIT, (start, end)
    assert took > 2 * HA_WAIT, took
    print("    moved to %s in %.1f s (qmigrate %d s, ha_wait %d s)" %
          (to, took, end - start, HA_WAIT))


@case
def a_frozen_resource_fails_after_ha_wait_naming_its_state():
    vmid = create_on_sv1("ha-frozen")
    sim.ctl("POST", "/vms/%d" % vmid, {"ha": True, "ha_state": "freeze"})
    res, took = drain_sv1(deadline=60)
    stayed = {s["vmid"]: s["reason"] for s in res["stayed"]}
    assert vmid in stayed and not res["moved"], res
    why = stayed[vmid]
    assert "the HA manager did not act on it in %d s (HA state 'freeze'" % HA_WAIT in why, why
    # ha_wait, and not much more (a drain, its inventory reads)
    assert HA_WAIT <= took < HA_WAIT + 20, (took, why)
    assert qmigrates(vmid) == [], qmigrates(vmid)  # the HA manager did nothing
    assert sim.vm(vmid)["node"] == "sv1"
    assert record_node(vmid) == "sv1"
    print("    stayed after %.1f s: %s" % (took, why))
    # the freeze lifted: the HA manager carries out the migration it kept
    # queued; the record follows the VM (the reconciler)
    sim.ctl("POST", "/vms/%d" % vmid, {"ha": True, "ha_state": "started"})
    wait_for(lambda: sim.vm(vmid)["node"] != "sv1", deadline=30, interval=0.1,
             what="the kept HA migration")
    to = sim.vm(vmid)["node"]
    wait_for(lambda: record_node(vmid) == to, deadline=30, interval=0.2,
             what="the record to follow the VM to %s" % to)


@case
def a_resource_in_error_state_is_refused():
    vmid = create_on_sv1("ha-error")
    sim.ctl("POST", "/vms/%d" % vmid, {"ha": True, "ha_state": "error"})
    res, took = drain_sv1(deadline=60)
    stayed = {s["vmid"]: s["reason"] for s in res["stayed"]}
    assert vmid in stayed and not res["moved"], res
    assert "command 'ha-manager migrate vm:%d " % vmid in stayed[vmid], stayed[vmid]
    assert qmigrates(vmid) == []
    assert sim.vm(vmid)["node"] == "sv1" and record_node(vmid) == "sv1"


shutdown(px, sim)
finish()
