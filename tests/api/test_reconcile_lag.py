"""The reconciler against an inventory whose stats lag (pvesim
--pvestatd-cycle): on a real cluster /cluster/resources serves a VM's
status, cores, memory and disk from the RRD cache pvestatd refreshes about
every 10 s, the VM list live.

  - a stop and a memory change proxd made just before a pass are kept: the
    pass read them as "running" with the old memory (the last report
    predates them), and took those back as "changed outside proxd" (power
    running, memory undone, vm.started and vm.drift events), wrong until
    the next pass;
  - a real change behind proxd's back (a start, a memory change) is still
    taken over once a report has it and the record's last change is older
    than the lag margin (15 s);
  - a VM no report has seen yet (status "unknown", no maxmem or maxcpu) is
    not drift.

Each pass is `proxd reconcile` with the daemon stopped (its own passes
would race the checks).
"""
import time

from lib.cases import case, finish
from lib.db import query
from lib.proxd import Proxd, run as proxd_cli, shutdown
from lib.sim import Sim
from lib.wait import wait_for

MiB = 1024 ** 2
LAG_MARGIN_S = 15  # [proxd] stats_lag, proxd's default


def start(cycle):
    """pvesim at 0.02 whose pvestatd reports every `cycle` PVE seconds, and
    proxd in front of it"""
    sim = Sim(time_scale=0.02, extra=["--pvestatd-cycle", str(cycle)])
    px = Proxd(sim, proxd_extra="placement = ordered\nreconcile_interval = 3600\n"
               "stats_lag = %d\n" % LAG_MARGIN_S)
    token = px.token("ops", "admin")
    px.start()
    return sim, px, token


def create(px, token, name):
    r = px.call("POST", "/v1/vms", token, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 1024, "disk_gb": 12}, want=202)
    j = px.wait_job(r.json()["job"], token, deadline=120)
    assert j["state"] == "done", j
    return j["vmid"]


def job(px, token, method, path, body=None):
    r = px.call(method, path, token, body, want=202)
    j = px.wait_job(r.json()["job"], token, deadline=60)
    assert j["state"] == "done", j


def inventory(sim, vmid):
    """the VM's entry in /cluster/resources"""
    return next(e for e in sim.data("GET", "/cluster/resources", params={"type": "vm"})
                if e["vmid"] == vmid)


def next_report(sim, deadline=60.0):
    """Wait for pvestatd's next report: the nodes' uptimes move on only then."""
    def uptimes():
        return [e["uptime"] for e in sim.data("GET", "/cluster/resources", params={"type": "node"})]
    u0 = uptimes()
    wait_for(lambda: uptimes() != u0, deadline=deadline, interval=0.02, what="a pvestatd report")


def record(px, vmid):
    power, memory, cores, updated = query(
        px.db, "SELECT power, memory_mb, cores, updated_at FROM vms WHERE vmid = %d" % vmid)[0]
    return power, memory, cores, updated


def events(px, vmid):
    """The VM's record events (a guest check's, vm.guest_*, tells no
    change of the record: left out)."""
    return [t for (t,) in query(px.db, "SELECT type FROM events WHERE vmid = %d ORDER BY id"
                                % vmid) if not t.startswith("vm.guest_")]


def reconcile(px, after=None):
    """A pass with the daemon stopped; `after()` runs right after it,
    before the daemon's start (which may take a while on a loaded
    machine)."""
    px.stop()
    r = proxd_cli("reconcile", "--config", px.conf)
    if after:
        after()
    px.start()
    return r.stdout + r.stderr


@case
def a_stop_and_an_update_just_before_a_pass_are_kept():
    sim, px, token = start(500)  # a report every 10 real seconds
    try:
        vmid = create(px, token, "lag")
        wait_for(lambda: inventory(sim, vmid)["status"] == "running", deadline=30, interval=0.1,
                 what="the new VM reported")
        next_report(sim)  # a whole cycle ahead
        job(px, token, "POST", "/v1/vms/%d/stop" % vmid)
        job(px, token, "PATCH", "/v1/vms/%d" % vmid, {"memory_mb": 2048})
        before = events(px, vmid)
        e = inventory(sim, vmid)
        assert (e["status"], e["maxmem"]) == ("running", 1024 * MiB), e  # the lag
        seen = []
        reconcile(px, lambda: seen.append(inventory(sim, vmid)))
        assert (seen[0]["status"], seen[0]["maxmem"]) == ("running", 1024 * MiB), (
            "a report came before the pass: the test saw no lag", seen[0])
        power, memory, _, _ = record(px, vmid)
        assert (power, memory) == ("stopped", 2048), (power, memory, px.tail())
        assert events(px, vmid) == before, (before, events(px, vmid))

        # a start and a memory change behind proxd's back: taken over once
        # a report has them and the record's last change is past the margin
        sim.ctl("POST", "/vms/%d" % vmid, {"power": "running", "conf": {"memory": "3072"}})
        next_report(sim)
        _, _, _, updated = record(px, vmid)
        wait = updated / 1000.0 + LAG_MARGIN_S + 0.5 - time.time()
        if wait > 0:
            time.sleep(wait)
        reconcile(px)
        power, memory, _, _ = record(px, vmid)
        assert (power, memory) == ("running", 3072), (power, memory, px.tail())
        new = events(px, vmid)[len(before):]
        assert "vm.started" in new and "vm.drift" in new, new
    finally:
        shutdown(px, sim)


@case
def a_vm_not_reported_yet_is_not_drift():
    sim, px, token = start(3600)  # a report every 72 real seconds: the VM stays unknown
    try:
        vmid = create(px, token, "unseen")
        e = inventory(sim, vmid)
        assert e["status"] == "unknown" and "maxmem" not in e and "maxcpu" not in e, e
        rec = record(px, vmid)
        before = events(px, vmid)
        wait = rec[3] / 1000.0 + LAG_MARGIN_S + 0.5 - time.time()
        if wait > 0:
            time.sleep(wait)
        reconcile(px)
        assert inventory(sim, vmid)["status"] == "unknown", "reported meanwhile: nothing tested"
        assert record(px, vmid) == rec, (record(px, vmid), rec)
        assert events(px, vmid) == before, (before, events(px, vmid))
    finally:
        shutdown(px, sim)


finish()
