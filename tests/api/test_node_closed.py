"""A node that closes a connection without an answer after a request went
out (pvesim's `drop`: served, then the connection closed; in life a
pveproxy worker or a proxy that gave up) was there a moment ago: it is not
held down on that alone (the API then refused every request on its VMs,
503 node_down, until the re-probe a second later) but probed at once, in
full, and held down only if it does not answer that.
  - a stop whose answer is dropped: the job ends done, the node is never
    marked down, the log says it was probed;
  - the same with the node's status probe dropped too: it is marked down
    ("does not answer a status probe"), and up again once it answers.
"""
from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

sim = Sim(time_scale=0.05)
px = Proxd(sim, proxd_extra="placement = ordered\n")
ALICE = px.token("alice")
px.start()


def health(node):
    return [n["health"] for n in px.call("GET", "/v1/nodes", ALICE).json()["nodes"]
            if n["name"] == node][0]


def created(name):
    r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 12})
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], ALICE, deadline=120)
    assert j["state"] == "done", j
    return j["vmid"]


def power(vmid, action, drops):
    """A power action with `drops` fault rules in place; its job, ended."""
    sim.add_faults(drops)
    r = px.call("POST", "/v1/vms/%d/%s" % (vmid, action), ALICE, {})
    assert r.status_code == 202, r.text
    return px.wait_job(r.json()["job"], ALICE, deadline=120)


def log_since(mark):
    return px.log_text()[mark:]


def vm_on_an_up_node(name):
    """A VM made, its node up; (vmid, node, where the log stands)."""
    vmid = created(name)
    node = sim.vm(vmid)["node"]
    wait_for(lambda: health(node) == "up", deadline=30, interval=0.1, what="node up")
    return vmid, node, len(px.log_text())


@case
def a_dropped_answer_does_not_hold_its_node_down():
    vmid, node, mark = vm_on_an_up_node("closed")
    j = power(vmid, "stop", [{"kind": "drop", "method": "POST",
                              "path": r"^/nodes/[^/]+/qemu/%d/status/stop$" % vmid, "count": 1}])
    assert sim.clear_faults() == 1
    assert j["state"] == "done", j
    assert sim.vm(vmid)["power"] == "stopped", sim.vm(vmid)
    log = log_since(mark)
    assert "node %s marked down" % node not in log, log
    assert "node %s closed a connection without an answer" % node in log, log
    assert health(node) == "up"


@case
def a_node_that_closed_and_does_not_answer_its_probe_is_held_down():
    vmid, node, mark = vm_on_an_up_node("closed-silent")
    sim.add_faults([{"kind": "drop", "method": "GET", "path": r"^/nodes/%s/version$" % node}])
    j = power(vmid, "stop", [{"kind": "drop", "method": "POST",
                              "path": r"^/nodes/[^/]+/qemu/%d/status/stop$" % vmid, "count": 1}])
    # the job ends either way (its task may be looked at while the node is
    # held down); the node was marked down by its probe
    assert j["state"] in ("done", "failed"), j
    wait_for(lambda: "node %s marked down" % node in log_since(mark), deadline=30, interval=0.1,
             what="node marked down")
    log = log_since(mark)
    assert "does not answer a status probe" in log, log
    assert "node %s closed a connection without an answer" % node in log, log
    sim.clear_faults()
    wait_for(lambda: health(node) == "up", deadline=60, interval=0.1, what="node up again")


shutdown(px, sim)
finish()
