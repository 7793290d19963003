"""A reinstall onto another node (issue 14): the VM's node has no room for
the new disk, so the temporary VM is made on another node of its cluster
that its address pool reaches, and the VM moves there (offline, with its
disks) before the swap. Black-box against pvesim, cases on one pvesim and
one proxd:
  - the VM's node full: the reinstall lands on the one other node its pool
    reaches (not on the roomier nodes the pool does not), identity kept
    (VMID, name, net0 and MAC, ipconfig0, address, disk size), the record's
    node follows, vm.moved then vm.reinstalled once each, nothing left
    reserved in the store;
  - no other node fits (the pool's other node cordoned): failed, nothing
    changed;
  - a fault at the migration (its call, its task): failed, the old VM
    running on its node, untouched (config digest, disk); a fault after it
    (the disk reassignment on the new node): failed, the old disk back in
    the VM, running on the new node;
  - kill -9 at seeded random moments of cross-node reinstalls, under
    seeded random faults: after each restart one VM for the customer,
    running, no temporary VM in pvesim, nothing leaked in the store
    (reserved VMIDs, addresses, capacity), vm.reinstalled once per done job.
REINSTALL_MOVE_SEED overrides the seed, REINSTALL_MOVE_ROUNDS the kill rounds,
REINSTALL_FAULT_RATE the share of Proxmox calls that fail besides the kills.
PROXD_TEST_DB=postgresql://... runs it on PostgreSQL (test_reinstall_pg.py).
"""
import os
import random
import re
import time

from lib.cases import case, finish
from lib.db import execute, expire_leases, query, wait_step
from lib.faults import fault_mix
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

SEED = int(os.environ.get("REINSTALL_MOVE_SEED", "1415"))
# 3 here (the migration's task under way, a random moment, the migrate step); make soak: 20
ROUNDS = int(os.environ.get("REINSTALL_MOVE_ROUNDS", "3"))
RATE = float(os.environ.get("REINSTALL_FAULT_RATE", "0.03"))
rng = random.Random(SEED)
print("seed %d, %d rounds, fault rate %g" % (SEED, ROUNDS, RATE), flush=True)

# the pool reaches sv1 and sv3 only: a VM of it can move between those two
POOL = """
[ippool near]
cidr = 10.70.0.0/24
gateway = 10.70.0.1
bridge = vmbr0
nodes = sv1, sv3
"""

sim = Sim(time_scale=0.005, extra=["--seed", str(SEED)])
px = Proxd(sim, proxd_extra="reconcile_interval = 1\n", sections=POOL,
           database=os.environ.get("PROXD_TEST_DB"))
ALICE = px.token("alice")
ADMIN = px.token("root", role="admin")
px.start()
DB = px.db
OTHER = {"sv1": "sv3", "sv3": "sv1"}


def q(sql):
    return query(DB, sql)


def look(vmid, digest=True):
    """sim.vm_view, the disk's size and (not under faults: it asks the API)
    the config digest."""
    v = sim.vm_view(vmid)
    if digest:
        v["digest"] = sim.data("GET", "/nodes/%s/qemu/%d/config" % (v["node"], vmid))["digest"]
    v["size"] = sim.vm(vmid)["conf"]["scsi0"].split("size=")[-1]
    return v


def temps():
    return [v["vmid"] for v in sim.state()["vms"]
            if "reinstall of VM" in (v["conf"].get("description") or "")]


def node_view(name):
    for n in px.call("GET", "/v1/nodes", ALICE).json()["nodes"]:
        if n["name"] == name:
            return n


FULL = {}  # node: its storage's size before fill()


def fill(node):
    """Only `node` full (its storage: what it holds plus 5 GiB; a VM's disk
    is 12), the one filled before back to its size; waits until proxd sees
    both (one inventory refresh)."""
    if node in FULL:
        return
    back = list(FULL.items())
    for n, total in back:
        sim.ctl("POST", "/nodes/" + n, {"storage_gb": {"local-lvm": total}})
        del FULL[n]
    st = [x for n in sim.state()["nodes"] if n["name"] == node
          for x in n["storages"] if x["id"] == "local-lvm"][0]
    FULL[node] = st["total"] // 2**30
    sim.ctl("POST", "/nodes/" + node, {"storage_gb": {"local-lvm": st["used"] // 2**30 + 5}})
    wait_for(lambda: node_view(node)["disk_gb"]["available"] <= 6 and
             all(node_view(n)["disk_gb"]["total"] == total for n, total in back),
             deadline=30, interval=0.1, what="proxd to see %s full" % node)


def unfill():
    for node, total in list(FULL.items()):
        sim.ctl("POST", "/nodes/" + node, {"storage_gb": {"local-lvm": total}})
        del FULL[node]


def create(name):
    r = px.call("POST", "/v1/vms", ALICE, {"os": "ubuntu", "name": name, "cores": 1,
                                          "memory_mb": 1024, "disk_gb": 12,
                                          "ippools": ["near"]})
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], ALICE)
    assert j["state"] == "done", j
    return r.json()["vmid"]


def reinstall(vmid, body, want=None):
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, body)
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], ALICE, deadline=180)
    assert want is None or j["state"] == want, j
    return j


def same_identity(a, b, node=True):
    for k in ("name", "net0", "ipconfig0", "mac", "boot", "size") + (("node",) if node else ()):
        assert a[k] == b[k], (k, a[k], b[k])


def nothing_held(job, vm_rec_id):
    """The job holds no VMID and no room (a reservation left settled after a
    move counts until the inventory shows the VM, then is pruned; a
    temporary VMID whose clone may have been asked for twice, a fault's 596
    on the first request, stays with a leftover for the reconciler); the
    VM's address is still its own, once."""
    held = q("SELECT vmid FROM vmid_alloc WHERE job = '%s' AND state = 'reserved'"
             " AND vmid NOT IN (SELECT vmid FROM leftovers WHERE job = '%s')" % (job, job))
    assert not held, held
    held = q("SELECT node FROM capacity WHERE job = '%s' AND settled_at IS NULL" % job)
    assert not held, held
    addrs = q("SELECT state FROM addr_alloc WHERE vm_id = %d" % vm_rec_id)
    assert [a[0] for a in addrs] == ["used"], addrs
    assert not q("SELECT addr FROM addr_alloc WHERE job = '%s' AND state = 'reserved'" % job)


def rec_id(vmid):
    return q("SELECT id FROM vms WHERE vmid = %d AND state = 'enabled'" % vmid)[0][0]


def events(job, kind):
    ev = px.call("GET", "/v1/events?type=%s&limit=1000" % kind, ALICE).json()["events"]
    return [e for e in ev if e["job"] == job]


VM = {}
SPAN = []


@case
def lands_on_the_other_node_of_its_pool():
    vmid = VM["a"] = create("mv-a")
    before = look(vmid)
    a = before["node"]
    assert a in OTHER, before  # the pool's nodes only
    fill(a)
    t0 = time.monotonic()
    j = reinstall(vmid, {"os": "debian"}, want="done")
    SPAN.append(time.monotonic() - t0)  # how long one takes here, for the kills
    after = look(vmid)
    same_identity(before, after, node=False)
    assert after["node"] == OTHER[a], (a, after)
    assert after["os"] == "debian" and after["power"] == "running", after
    assert after["unused"] == [] and temps() == [], (after, temps())
    assert [v["vmid"] for v in sim.state()["vms"]].count(vmid) == 1
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["node"] == OTHER[a] and rec["os"] == "debian" and rec["vmid"] == vmid, rec
    assert rec["name"] == "mv-a" and rec["disk_gb"] == 12, rec
    moved, done = events(j["id"], "vm.moved"), events(j["id"], "vm.reinstalled")
    assert len(moved) == 1 and len(done) == 1, (moved, done)
    assert moved[0]["id"] < done[0]["id"] and done[0]["node"] == OTHER[a], (moved, done)
    assert moved[0]["data"]["changes"]["node"] == {"from": a, "to": OTHER[a]}, moved
    nothing_held(j["id"], rec_id(vmid))


@case
def no_other_node_fits_nothing_changed():
    vmid = VM["a"]
    before = look(vmid)
    a = before["node"]
    r = px.call("POST", "/v1/nodes/%s/cordon" % OTHER[a], ADMIN)
    assert r.status_code == 200, r.text
    fill(a)
    try:
        j = reinstall(vmid, {"os": "ubuntu"}, want="failed")
    finally:
        px.call("POST", "/v1/nodes/%s/uncordon" % OTHER[a], ADMIN)
    assert "no room" in j["error"] and "nothing was changed" in j["error"], j
    assert "%s: cordoned" % OTHER[a] in j["error"], j
    # the roomy nodes the pool does not reach are said why not
    assert "pool near" in j["error"], j
    after = look(vmid)
    assert after["digest"] == before["digest"] and after == before, (before, after)
    assert temps() == []
    nothing_held(j["id"], rec_id(vmid))


MIGRATE = r"^/nodes/%s/qemu/%d/migrate$"


@case
def a_fault_at_the_migration_leaves_the_vm_on_its_node():
    vmid = VM["a"]
    for kind, count in (("error", 4), ("task_error", 1)):
        before = look(vmid)
        a = before["node"]
        sim.ctl("POST", "/faults", {"method": "POST", "path": MIGRATE % (a, vmid), "kind": kind,
                                    "count": count, "status": 500,
                                    "message": "injected at the migration"})
        fill(a)
        try:
            j = reinstall(vmid, {"os": "debian"}, want="failed")
        finally:
            hits = sim.clear_faults()
        assert hits, "%s: the fault never hit" % kind
        assert "keeps %s" % before["os"] in j["error"], (kind, j)
        after = look(vmid)
        same_identity(before, after)
        assert after["os"] == before["os"] and after["disk"] == before["disk"], (kind, after)
        assert after["power"] == "running" and after["unused"] == [], (kind, after)
        assert after["digest"] == before["digest"], (kind, before, after)
        assert temps() == [], (kind, temps())
        rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
        assert rec["node"] == a and rec["os"] == before["os"] and rec["power"] == "running", rec
        assert not events(j["id"], "vm.moved") and not events(j["id"], "vm.reinstalled")
        nothing_held(j["id"], rec_id(vmid))


@case
def a_fault_after_the_migration_keeps_the_old_os_on_the_new_node():
    """The disk reassignment fails on the new node: the old disk goes back
    in its slot there and the VM runs it there (never none)."""
    vmid = VM["a"]
    before = look(vmid)
    a = before["node"]
    sim.ctl("POST", "/faults", {"method": "POST", "path": r"^/nodes/%s/qemu/\d+/move_disk$"
                                % OTHER[a], "kind": "error", "count": 4, "status": 500,
                                "message": "injected at the swap"})
    fill(a)
    try:
        j = reinstall(vmid, {"os": "debian"}, want="failed")
    finally:
        hits = sim.clear_faults()
    assert hits, "the fault never hit"
    assert "keeps %s" % before["os"] in j["error"] and "on %s now" % OTHER[a] in j["error"], j
    after = look(vmid)
    same_identity(before, after, node=False)
    assert after["node"] == OTHER[a] and after["os"] == before["os"], after
    assert after["disk"] == before["disk"] and after["unused"] == [], after
    assert after["power"] == "running" and temps() == [], (after, temps())
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["node"] == OTHER[a] and rec["os"] == before["os"], rec
    assert rec["power"] == "running", rec
    assert len(events(j["id"], "vm.moved")) == 1 and not events(j["id"], "vm.reinstalled")
    nothing_held(j["id"], rec_id(vmid))


@case
def a_cancel_seen_at_a_resumed_migration_restores_where_the_vm_went():
    """Killed once the VM's migration to the temporary VM's node is under
    way, the job cancelled while proxd is down (another instance's API
    records it so): the restarted job waits for the migration and puts the
    old disk back where the VM went, and the VM runs its old OS there, its
    record on that node. The cancel took the way out at once: the restore
    looked for the VM on the node it had left, failed "could not put the
    old disk back", and the record kept the old node."""
    vmid = create("mv-cancel")
    before = look(vmid)
    a = before["node"]
    fill(a)
    job = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": "debian"},
                  want=202).json()["job"]
    assert wait_step(DB, job, "migrating") == "migrate"
    px.kill()
    execute(DB, "UPDATE jobs SET cancel_at = %d, cancel_by = 'alice' WHERE id = '%s'"
            % (int(time.time() * 1000), job))
    expire_leases(DB)
    px.start()
    try:
        j = px.wait_job(job, ALICE, deadline=120)
    except AssertionError:
        print(px.tail(60))
        raise
    assert j["state"] == "failed", j
    assert "cancel" in j["error"] and "keeps %s" % before["os"] in j["error"], j
    after = look(vmid)
    same_identity(before, after, node=False)
    assert after["node"] == OTHER[a], after
    assert after["os"] == before["os"] and after["disk"] == before["disk"], after
    assert after["power"] == "running" and after["unused"] == [], after
    assert temps() == [], temps()
    rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert rec["node"] == after["node"] and rec["os"] == before["os"], rec
    assert rec["power"] == "running", rec
    nothing_held(job, rec_id(vmid))
    unfill()


def without_node(conf, node, keep):
    """The configuration without [node NODE], the pool reaching `keep` only."""
    out = re.sub(r"(?m)^\[node %s\]\n(?:[^\n\[]+\n)*\n?" % node, "", conf)
    out = out.replace("nodes = sv1, sv3", "nodes = " + keep)
    assert "[node %s]" % node not in out and "nodes = " + keep in out, out
    return out


@case
def the_temporary_vms_node_leaving_the_config_ends_the_job():
    """Killed while the temporary VM is cloned on the other node (its copy
    slowed by pvesim), or at the migration (its call held), then started
    with that node gone from the configuration: the job cannot go on there,
    so it stops the clone and removes the temporary VM (abort), or puts the
    VM back as it was on its node (restore, no migration started), and
    ends. It used to stay claimed for good at the clone (no clone slot on
    an unknown node: the run returned, the lease ran out, again and again,
    the VM's jobs queued behind it) and to crash proxd at every start at
    the migration (the node's storage read through a NULL node)."""
    vmid = create("mv-gone")
    conf = open(px.conf).read()
    for at in ("wait_clone", "migrating"):
        before = look(vmid)
        a = before["node"]
        b = OTHER[a]
        fill(a)
        if at == "wait_clone":  # a clone of minutes
            sim.ctl("POST", "/nodes/" + b, {"bandwidth_mb": 1})
        else:  # the migration's call never answered
            sim.ctl("POST", "/faults", {"method": "POST", "path": MIGRATE % (a, vmid),
                                        "kind": "hang"})
        job = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": "debian"},
                      want=202).json()["job"]
        try:
            if at == "wait_clone":
                assert wait_step(DB, job, "wait_clone") == "wait_clone"
                wait_for(lambda: q("SELECT upid FROM jobs WHERE id = '%s'" % job)[0][0], 30,
                         0.01, "the clone's task written")
            else:
                assert wait_step(DB, job, "migrate") == "migrate"
                wait_for(lambda: sim.ctl("GET", "/faults")[0].get("hits", 0) >= 1, 30, 0.01,
                         "the migration sent")
            px.kill()
        finally:
            sim.clear_faults()
        try:
            with open(px.conf, "w") as f:
                f.write(without_node(conf, b, a))
            expire_leases(DB)
            px.start()
            j = px.wait_job(job, ALICE, deadline=120)
        finally:
            sim.ctl("POST", "/nodes/" + b, {"bandwidth_mb": 500})
            if px.alive():
                px.stop()
            with open(px.conf, "w") as f:
                f.write(conf)
            expire_leases(DB)
            px.start()
        assert j["state"] == "failed", (at, j)
        assert "node %s of the temporary VM is no longer configured" % b in j["error"], (at, j)
        assert "keeps %s" % before["os"] in j["error"], (at, j)
        after = look(vmid)
        same_identity(before, after)
        assert after["os"] == before["os"] and after["disk"] == before["disk"], (at, after)
        assert after["power"] == "running" and after["unused"] == [], (at, after)
        if at == "wait_clone":  # never touched
            assert after["digest"] == before["digest"], (at, before, after)
        assert temps() == [], (at, temps())
        assert [v["vmid"] for v in sim.state()["vms"]].count(vmid) == 1, at
        assert not events(job, "vm.moved") and not events(job, "vm.reinstalled"), at
        nothing_held(job, rec_id(vmid))
    unfill()


# where the aimed kills land (the other rounds: at a random moment); "migrating":
# the migration's task under way (step migrate, its UPID written)
LATE = ["migrating", "migrate", "detach", "clone", "stop", "swap", "start", "commit"]


@case
def kill_during_cross_node_reinstalls():
    vmid = VM["a"]
    ident = look(vmid, digest=False)
    os_now = ident["os"]
    span = SPAN[0] if SPAN else 2.0
    print("one cross-node reinstall takes %.2f s" % span, flush=True)
    if RATE:
        sim.add_faults(fault_mix(RATE, message="soak fault"))
    hit = {}
    outcomes = {"done": 0, "failed": 0}
    for n in range(ROUNDS):
        before = look(vmid, digest=False)
        a = before["node"]
        fill(a)
        new = "debian" if os_now == "ubuntu" else "ubuntu"
        job = px.call("POST", "/v1/vms/%d/reinstall" % vmid, ALICE, {"os": new},
                      want=202).json()["job"]
        if n % 2:  # at a random moment
            time.sleep(rng.uniform(0, span * 1.1))
        else:  # as soon as a later step is reached: the migration first
            wait_step(DB, job, LATE[n // 2] if n // 2 < 2 else rng.choice(LATE))
        px.kill()
        t1 = time.monotonic()
        at = q("SELECT step, upid FROM jobs WHERE id = '%s'" % job)[0]
        at = at[0] + (" (task under way)" if at[0] == "migrate" and at[1] else "")
        hit[at] = hit.get(at, 0) + 1
        expire_leases(DB)
        px.start()
        j = px.wait_job(job, ALICE, deadline=240)
        outcomes[j["state"]] += 1
        got = look(vmid, digest=False)
        same_identity(ident, got, node=False)
        want = new if j["state"] == "done" else os_now
        assert got["os"] == want, (n, j["state"], j.get("error"), got)
        assert got["power"] == "running" and got["unused"] == [], (n, got)
        assert [v["vmid"] for v in sim.state()["vms"]].count(vmid) == 1, n
        assert temps() == [], (n, temps())
        rec = px.call("GET", "/v1/vms/%d" % vmid, ALICE).json()
        assert rec["os"] == want and rec["node"] == got["node"], (n, rec, got)
        assert len(events(job, "vm.reinstalled")) == (j["state"] == "done"), (n, j)
        nothing_held(job, rec_id(vmid))
        os_now = want
        print("round %d: VM %d on %s -> %s, killed at %s: %s %s (%.1f s after the kill)" %
              (n, vmid, a, got["node"], at, j["state"], j.get("error") or "",
               time.monotonic() - t1), flush=True)
    print("outcomes: %s; killed at: %s" % (outcomes, hit), flush=True)
    if RATE:
        hits = sim.clear_faults()
        sim.wait_late()
        print("faults hit: %d" % hits)
        assert hits > 0, "no fault was injected"
    assert outcomes["done"] > 0, outcomes
    unfill()


try:
    finish()
finally:
    shutdown(px, sim)
