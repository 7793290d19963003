"""Jobs on one proxd and its pvesim, as the lost- and late-answer tests ask
for them (tests/api/test_lost_answers.py, test_late_calls.py): a creation,
its events, a node back up, a job that ends done through one fault rule."""
from .db import query
from .wait import wait_for


class VmJobs:
    """Helpers bound to a Proxd `px`, its Sim `sim` and a user's token."""

    def __init__(self, px, sim, token):
        self.px, self.sim, self.token = px, sim, token

    def events(self, job):
        """The job's event messages, in order."""
        return [m for (m,) in query(self.px.db, "SELECT message FROM job_events WHERE job = '%s' "
                                                "ORDER BY seq" % job)]

    def wait_node_up(self, vmid):
        """Until proxd shows the VM's node up (a lost answer holds it down
        until its probe)."""
        node = self.sim.vm(vmid)["node"]
        wait_for(lambda: all(n["health"] == "up" for n in self.px.call(
                     "GET", "/v1/nodes", self.token).json()["nodes"] if n["name"] == node),
                 deadline=30, interval=0.1, what="node %s up again" % node)

    def post_vm(self, name, os="ubuntu"):
        """A creation asked for; its job."""
        r = self.px.call("POST", "/v1/vms", self.token, {"os": os, "name": name, "cores": 1,
                                                         "memory_mb": 512, "disk_gb": 12})
        assert r.status_code == 202, r.text
        return r.json()["job"]

    def created(self, name):
        """A creation asked for and ended done; its job."""
        j = self.px.wait_job(self.post_vm(name), self.token, deadline=120)
        assert j["state"] == "done", j
        return j

    def named(self, name):
        """VMIDs of pvesim's VMs called `name`."""
        return [v["vmid"] for v in self.sim.state()["vms"] if v["conf"].get("name") == name]

    def done_through_the_fault(self, r):
        """A job asked for (r: the API's answer) with one fault rule in
        place: it ends done, the rule hit once (then cleared); its events."""
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        j = self.px.wait_job(job, self.token, deadline=120)
        ev = self.events(job)
        assert self.sim.clear_faults() == 1, ev
        assert j["state"] == "done", (j, ev)
        return ev
