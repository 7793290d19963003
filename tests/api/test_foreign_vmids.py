"""Foreign VMIDs are given back once their VM is gone.

A VMID is marked foreign when Proxmox has a VM of it that is not proxd's
(here: a creation whose clone met "already exists" for a stranger's VM made
after proxd last read the inventory; it reallocates past it). The mark
keeps the VMID out of the OS's range while that VM exists; nothing ever
cleared it, so once the stranger's VM was deleted the VMID stayed out for
good and a hosting operator's ranges shrank over months. Now a reconciler
pass gives back every foreign VMID that no world shows any more,
quarantined like any release (the configured quarantine), when every
configured world's inventory was read in a read that began after the mark:
  - on a cluster: kept while the stranger's VM exists; given back
    (quarantined: the next creation does not take it) once it is deleted;
    with quarantine 0, free at once: the next creation takes it;
  - on standalone hosts: one host that does not answer (its VMs unseen, not
    gone) means nothing is given back in that pass; once it answers again,
    the next pass gives the VMID back.
Containers (lxc) take VMIDs as VMs do (a clone onto one fails "already
exists"), but proxd's inventory left them out: a creation was given the
VMID of a container, its clone failed, the VMID was marked foreign, and the
next pass gave it back (no world showed a VM of it), to be met and marked
again once per quarantine. Now a container's VMID is taken: no creation is
given it (no failed clone), and a foreign mark on it stays while it exists;
the container is still no VM of proxd's (not counted in a node's VMs).
Each pass runs as `proxd reconcile` with the daemon stopped (its own passes
would race the checks); its report counts the given-back VMIDs
("foreign_released").
"""
import json

from lib.cases import case, finish
from lib.db import execute, query
from lib.proxd import Proxd, run as proxd_cli
from lib.sim import Sim
from lib.wait import wait_for

EXTRA = "placement = ordered\nreconcile_interval = 3600\n"


NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
CLONES = "POST /nodes/{node}/qemu/{vmid}/clone"


def setup(standalone, containers=None):
    """containers: (vmid, node) pairs pvesim holds from its start."""
    fleet = None
    if containers:
        fleet = {"nodes": [{"name": n} for n in NODES],
                 "containers": [{"vmid": v, "node": n, "hostname": "ct%d" % v, "status": "running"}
                                for v, n in containers]}
    sim = Sim(nodes=",".join(NODES), time_scale=0.05, standalone=standalone, fleet=fleet)
    px = Proxd(sim, proxd_extra=EXTRA, proxmox_extra="timeout = 3\nconnect_timeout = 2\n")
    px.alice = px.token("alice")
    px.start()
    return sim, px


def create(px, name):
    r = px.call("POST", "/v1/vms", px.alice, {"os": "ubuntu", "name": name, "cores": 1,
                                              "memory_mb": 512, "disk_gb": 12}, want=202)
    return r.json()["job"]


def wait(px, job):
    j = px.wait_job(job, px.alice, deadline=120)
    ev = [m for (m,) in query(px.db, "SELECT message FROM job_events WHERE job = ?"
                                     " ORDER BY seq", (job,))]
    return j, ev


def vmid_state(px, vmid):
    rows = query(px.db, "SELECT state FROM vmid_alloc WHERE vmid = ?", (vmid,))
    return rows[0][0] if rows else None


def next_vmid(sim, px):
    """The VMID the next ubuntu creation reserves (quarantine 0 here): the
    lowest of its range that neither the database nor Proxmox has."""
    used = {r[0] for r in query(px.db, "SELECT vmid FROM vmid_alloc")}
    used |= {v["vmid"] for v in sim.state()["vms"]}
    return min(v for v in range(1000, 2000) if v not in used)


def locked(sim):
    return [v["vmid"] for v in sim.state()["vms"] if (v.get("conf") or {}).get("lock")]


def port_of(sim, node):
    return sim.ports[node] if sim.standalone else None


def strangers_vm(sim, node, vmid):
    """A VM not proxd's, made on node by hand (no tag, no marker)."""
    tpl = [v["vmid"] for v in sim.state()["vms"] if v["node"] == node and v["vmid"] >= 8000][0]
    upid = sim.data("POST", "/nodes/%s/qemu/%d/clone" % (node, tpl), port=port_of(sim, node),
                    data={"newid": str(vmid), "name": "strangers", "full": "1",
                          "description": "made outside proxd"})
    return upid


def delete_strangers(sim, node, vmid):
    upid = sim.data("DELETE", "/nodes/%s/qemu/%d" % (node, vmid), port=port_of(sim, node))
    assert sim.wait_task(node, upid, deadline=60, port=port_of(sim, node))["exitstatus"] == "OK"
    assert vmid not in [v["vmid"] for v in sim.state()["vms"]]


def met_by_a_creation(sim, px, node, name):
    """A stranger's VM at the VMID the next creation reserves, made after
    proxd's last inventory read (the daemon is idle: the next read is a
    minute away): the creation's clone meets "already exists", the VMID is
    marked foreign and the creation goes on under another. Its VMIDs."""
    want = next_vmid(sim, px)
    strangers_vm(sim, node, want)
    job = create(px, name)  # the VMID is reserved here, from the inventory read before
    j, ev = wait(px, job)
    wait_for(lambda: not locked(sim), deadline=60, what="the stranger's clone done")
    assert j["state"] == "done", (j, ev)
    assert j["vmid"] != want, (j, want, ev)
    assert any("VMID %d exists outside proxd" % want in m for m in ev), ev
    assert vmid_state(px, want) == "foreign", vmid_state(px, want)
    return want, j["vmid"]


def reconcile(px, conf=None):
    """One pass with the daemon stopped; its report."""
    if px.alive():
        px.stop()
    r = proxd_cli("reconcile", "--config", conf or px.conf)
    return json.loads(r.stdout.strip().splitlines()[-1])


def with_quarantine(px, seconds):
    """A copy of px's configuration with another quarantine."""
    conf = px.conf + ".q%d" % seconds
    with open(px.conf) as f:
        text = f.read()
    assert "quarantine = 0\n" in text
    with open(conf, "w") as f:
        f.write(text.replace("quarantine = 0\n", "quarantine = %d\n" % seconds))
    return conf


@case
def a_foreign_vmid_goes_back_once_its_vm_is_gone():
    sim, px = setup(False)
    try:
        # quarantined as configured
        foreign, _ = met_by_a_creation(sim, px, "sv1", "first")
        rep = reconcile(px)
        assert vmid_state(px, foreign) == "foreign"  # its VM is still there
        assert rep.get("foreign_released", 0) == 0, rep
        delete_strangers(sim, "sv1", foreign)
        rep = reconcile(px, with_quarantine(px, 600))
        assert vmid_state(px, foreign) == "quarantine", vmid_state(px, foreign)
        assert rep["foreign_released"] == 1, rep
        until = query(px.db, "SELECT until - updated_at FROM vmid_alloc WHERE vmid = ?",
                      (foreign,))[0][0]
        assert 599000 <= until <= 600000, until
        px.start()
        j, ev = wait(px, create(px, "second"))
        assert j["state"] == "done" and j["vmid"] != foreign, (j, ev)
        # quarantine 0: free at once, the next creation takes it
        again, _ = met_by_a_creation(sim, px, "sv1", "third")
        assert again != foreign
        delete_strangers(sim, "sv1", again)
        rep = reconcile(px)
        assert vmid_state(px, again) is None, vmid_state(px, again)
        assert rep["foreign_released"] == 1, rep
        rep = reconcile(px)
        assert rep["foreign_released"] == 0, rep
        px.start()
        j, ev = wait(px, create(px, "fourth"))
        assert j["state"] == "done" and j["vmid"] == again, (j, again, ev)
        assert vmid_state(px, again) == "used"
        assert vmid_state(px, foreign) == "quarantine"
    finally:
        if px.alive():
            px.stop()
        sim.stop()


def clones(sim):
    return sim.ctl("GET", "/calls")["calls"].get(CLONES, 0)


@case
def a_containers_vmid_is_never_handed_out():
    # the range's first two VMIDs are containers': the creation takes the
    # third with one clone, marks nothing foreign
    sim, px = setup(False, [(1000, "sv2"), (1001, "sv1")])
    try:
        admin = px.token("root", role="admin")
        nodes = px.call("GET", "/v1/nodes", admin).json()["nodes"]
        for n in nodes:  # a container is no VM of the node's: its 4 templates
            assert n["vms"] == 4, nodes
        sim.ctl("DELETE", "/calls")
        j, ev = wait(px, create(px, "first"))
        assert j["state"] == "done" and j["vmid"] == 1002, (j, ev)
        assert clones(sim) == 1, (sim.ctl("GET", "/calls")["calls"], ev)
        assert not any("outside proxd" in m for m in ev), ev
        assert vmid_state(px, 1000) is None and vmid_state(px, 1001) is None
        # the reconciler leaves the containers alone: no orphan, no repair
        rep = reconcile(px)
        assert rep.get("orphans", 0) == 0 and rep.get("foreign_released", 0) == 0, rep
    finally:
        if px.alive():
            px.stop()
        sim.stop()


@case
def a_foreign_vmid_a_container_holds_is_kept():
    # marked foreign while proxd could not see containers (as an older proxd
    # left it): the container still holds it, so no pass gives it back
    sim, px = setup(False, [(1000, "sv3")])
    try:
        px.stop()
        execute(px.db, "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
                       " VALUES (1000, 'foreign', '', 0, 1)")
        for _ in range(2):
            rep = reconcile(px)
            assert vmid_state(px, 1000) == "foreign", vmid_state(px, 1000)
            assert rep.get("foreign_released", 0) == 0, rep
        # a foreign VMID of a VM that is gone still goes back in the same pass
        execute(px.db, "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
                       " VALUES (1001, 'foreign', '', 0, 1)")
        rep = reconcile(px)
        assert rep["foreign_released"] == 1, rep
        assert vmid_state(px, 1001) is None and vmid_state(px, 1000) == "foreign"
        px.start()
        sim.ctl("DELETE", "/calls")
        j, ev = wait(px, create(px, "first"))
        assert j["state"] == "done" and j["vmid"] == 1001, (j, ev)
        assert clones(sim) == 1, (sim.ctl("GET", "/calls")["calls"], ev)
    finally:
        if px.alive():
            px.stop()
        sim.stop()


@case
def a_host_that_does_not_answer_keeps_every_foreign_vmid():
    sim, px = setup(True)
    try:
        foreign, _ = met_by_a_creation(sim, px, "sv1", "first")
        delete_strangers(sim, "sv1", foreign)
        # sv3 does not answer: what it holds is unseen, not gone
        sim.ctl("POST", "/nodes/sv3", {"state": "offline"})
        rep = reconcile(px)
        assert vmid_state(px, foreign) == "foreign", vmid_state(px, foreign)
        assert rep["foreign_released"] == 0, rep
        sim.ctl("POST", "/nodes/sv3", {"state": "online"})
        rep = reconcile(px)
        assert vmid_state(px, foreign) is None, vmid_state(px, foreign)
        assert rep["foreign_released"] == 1, rep
        px.start()
        j, ev = wait(px, create(px, "second"))
        assert j["state"] == "done" and j["vmid"] == foreign, (j, foreign, ev)
    finally:
        if px.alive():
            px.stop()
        sim.stop()


finish()
