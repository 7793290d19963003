"""Node maintenance through proxd's API, black-box against pvesim (issue 15):
cordon and uncordon (admins only, 404 for an unknown node, shown in GET
/v1/nodes), a cordoned node that takes none of 100 creations, the
configuration's `state = cordoned` held by every proxd on the database
(written at start-up, lifted by a start without it, `proxd uncordon`), a drain of 30 VMs off one node of a
cluster of five (every VM moved, running if it ran, identity kept, no
node's memory or storage ever over its size, a kill -9 in the middle and
the drain finishing after the restart, never two migrations of one VM at
once by pvesim's own task list), a drain under seeded migrate faults (what
fails stays, reported; the rest moves; the job ends), an uncordon by
proxctl during a drain (it cancels the drain, naming it; the moves under
way finish; the drain fails saying the node was uncordoned), a standalone
host's drain (cordon only, said so), and drains of one node asked at the
same moment of two proxd on one database (one accepted, the others refused
naming it). One pvesim and one proxd serve the cluster cases.

PROXD_TEST_DB=postgresql://... runs it on PostgreSQL (test_drain_pg.py).
"""
import os
import re
import socket
import subprocess
import threading
import time

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

DB = os.environ.get("PROXD_TEST_DB")
SEED = int(os.environ.get("DRAIN_SEED", "1515"))
N_VMS = int(os.environ.get("DRAIN_VMS", "30"))  # the drained node's VMs (make soak: more)
GIB_PER_NODE = (N_VMS + 3) // 4 + 2  # the four targets' memory: room for all, 1 GiB margin
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
LIMITS = ("\n[limits]\nmemory_margin_mb = 1024\ndisk_margin_gb = 10\ndrain_parallel = 3\n"
          "clones_per_node = 6\n")


def once(fn):
    """A case whose subject does not depend on the database: run on SQLite
    only (test_drain_pg.py runs the others again on PostgreSQL)."""
    return fn if DB else case(fn)

sim = Sim(time_scale=0.005, extra=["--seed", str(SEED)])
px = Proxd(sim, database=DB, proxd_extra="reconcile_interval = 5\n" + LIMITS)
ADMIN = px.token("ops", "admin")
USER = px.token("dr")
OWNERS = [USER] + [px.token("dr%d" % i) for i in range(1, (N_VMS + 89) // 90)]  # quota: 100 each
CUST = [px.token("cust%d" % i) for i in range(2)]
px.start()


def nodes():
    return {n["name"]: n for n in px.call("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]}


def cordon(node, on=True):
    return px.call("POST", "/v1/nodes/%s/%s" % (node, "cordon" if on else "uncordon"), ADMIN,
                   want=200).json()


def submit(token, name, memory_mb=1024):
    r = px.call("POST", "/v1/vms", token, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": memory_mb, "disk_gb": 10}, want=202)
    return r.json()


def create_many(token, prefix, n):
    """n creations queued at once, all waited for: {vmid: job}."""
    subs = [submit(token, "%s-%d" % (prefix, i)) for i in range(n)]
    jobs = {s["vmid"]: px.wait_job(s["job"], token, deadline=240 + n) for s in subs}
    bad = [j for j in jobs.values() if j["state"] != "done"]
    assert not bad, bad[:3]
    return jobs


def pve_vms():
    return {v["vmid"]: v for v in sim.state()["vms"] if not v.get("template")}


@case
def cordon_is_for_admins_and_known_nodes():
    r = px.call("POST", "/v1/nodes/sv3/cordon", USER, want=403)
    assert r.json()["error"]["code"] == "forbidden", r.text
    px.call("POST", "/v1/nodes/sv9/cordon", ADMIN, want=404)
    px.call("POST", "/v1/nodes/sv9/drain", ADMIN, want=404)
    px.call("POST", "/v1/nodes/sv3/drain", USER, want=403)
    assert not nodes()["sv3"]["cordoned"]
    t0 = time.time()
    c = cordon("sv3")
    assert c["cordoned"] and c["cordoned_by"] == "ops" and c["cordon_source"] == "api", c
    n = nodes()["sv3"]
    assert n["cordoned"] and n["cordoned_by"] == "ops", n
    assert n["cordoned_at"] and abs(time.mktime(time.strptime(n["cordoned_at"][:19],
                                                               "%Y-%m-%dT%H:%M:%S"))
                                    - time.mktime(time.gmtime(t0))) < 120, n
    assert cordon("sv3")["cordoned_by"] == "ops"  # idempotent
    assert not nodes()["sv2"]["cordoned"]


@case
def cordoned_node_takes_none_of_100_creations():
    # sv3 is cordoned (above); 100 creations by two owners
    jobs = {}
    for i, tok in enumerate(CUST):
        jobs.update(create_many(tok, "c%d" % i, 50))
    on = {}
    pv = pve_vms()
    for vmid in jobs:
        on.setdefault(pv[vmid]["node"], []).append(vmid)
    assert "sv3" not in on, {k: len(v) for k, v in on.items()}
    assert len([n for n in on if on[n]]) >= 3, {k: len(v) for k, v in on.items()}
    # the attempts say why sv3 was passed over whenever placement looked at it
    why = [a["error"] for j in jobs.values() for a in j["attempts"] if a["node"] == "sv3"]
    assert all("cordoned by ops" in w for w in why), why[:3]
    # uncordoned: eligible again (the only node left open takes the next one)
    for n in ("sv1", "sv2", "sv4", "sv5"):
        cordon(n)
    cordon("sv3", False)
    assert not nodes()["sv3"]["cordoned"]
    one = create_many(CUST[0], "back", 1)
    vmid = list(one)[0]
    assert pve_vms()[vmid]["node"] == "sv3"
    # a cordoned node takes no reinstall either: refused before anything is done
    cordon("sv3")
    r = px.call("POST", "/v1/vms/%d/reinstall" % vmid, CUST[0], {"os": "ubuntu"}, want=409)
    assert r.json()["error"]["details"]["field"] == "node", r.text
    assert "cordoned" in r.json()["error"]["message"], r.text
    cordon("sv3", False)
    # the 101 VMs go (they would take the drain's room), and the cordons
    subs = [px.call("DELETE", "/v1/vms/%d" % v, ADMIN, want=202).json()["job"]
            for v in list(jobs) + [vmid]]
    for j in subs:
        assert px.wait_job(j, ADMIN, deadline=240)["state"] == "done"
    for n in NODES:
        cordon(n, False)


class Sampler(threading.Thread):
    """Reads pvesim's state until stopped: every node's memory of running
    VMs and its local-lvm use against their sizes, and each VM's
    migrations by pvesim's task list (never two of one VM at once)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.over, self.samples, self.error = [], 0, None

    def run(self):
        while not self.halt.is_set():
            try:
                st = sim.state()
            except Exception as e:  # pvesim answers throughout; note it
                self.error = repr(e)
                continue
            self.samples += 1
            for n in st["nodes"]:
                if n["mem_used"] > n["mem_total"]:
                    self.over.append((n["name"], "mem", n["mem_used"], n["mem_total"]))
                for s in n["storages"]:
                    if s["used"] > s["total"]:
                        self.over.append((n["name"], s["id"], s["used"], s["total"]))
            self.halt.wait(0.05)


def migrations(vmids):
    """pvesim's migrate tasks of these VMs: {vmid: [(start, end)]}."""
    out = {}
    for node in NODES:
        for t in sim.data("GET", "/nodes/%s/tasks" % node, params={"limit": 10000}):
            if t["type"] == "qmigrate" and int(t["id"]) in vmids:
                out.setdefault(int(t["id"]), []).append((t["starttime"], t.get("endtime")))
    return out


def set_memory(names, gb):
    """pvesim's nodes get gb of memory, and proxd's inventory has seen it."""
    for n in names:
        sim.ctl("POST", "/nodes/" + n, {"memory_gb": gb})
    wait_for(lambda: all(nodes()[n]["memory_mb"]["total"] == gb * 1024 for n in names),
             deadline=30, interval=0.1, what="inventory of the new memory sizes")


MADE = set()


def drain(node, want=202):
    return px.call("POST", "/v1/nodes/%s/drain" % node, ADMIN, want=want).json()


@case
def drain_of_n_vms_survives_a_kill():
    # N VMs (30) on sv1: every other node cordoned while they are made
    for n in NODES[1:]:
        cordon(n)
    # room: N VMs of 1 GiB (proxd reserves their memory, stopped or not)
    # on four nodes of N/4 + 2 GiB, 1 GiB margin (30: 9 GiB, 32 usable; set
    # now: the inventory sees it while the VMs are made)
    # (each size waited for in proxd's inventory: a creation placed on the
    # view before it found sv1 full, as in soak seed 203)
    set_memory(NODES[1:], GIB_PER_NODE)
    if N_VMS > 40:  # sv1 holds them all first (memory and disks)
        gb = 12 * N_VMS + 200
        for n in NODES:
            sim.ctl("POST", "/nodes/" + n, {"storage_gb": {"local-lvm": gb}})
        wait_for(lambda: all(v["disk_gb"]["total"] == gb for v in nodes().values()),
                 deadline=30, interval=0.1, what="inventory of the new storage sizes")
        set_memory(["sv1"], N_VMS + 8)
    t_make = time.monotonic()
    made = {}
    for i, tok in enumerate(OWNERS):
        k = min(90, N_VMS - 90 * i)
        made.update(create_many(tok, "d%d" % i, k))
    t_make = time.monotonic() - t_make
    vmids = sorted(made)
    MADE.update(vmids)
    pv = pve_vms()
    assert all(pv[v]["node"] == "sv1" for v in vmids)
    # a third stopped: they move offline
    stops = [px.call("POST", "/v1/vms/%d/stop" % v, ADMIN, want=202).json()["job"]
             for v in vmids[::3]]
    for j in stops:
        assert px.wait_job(j, ADMIN)["state"] == "done"
    # one HA-managed (stopped): it moves through the HA manager (hamigrate)
    sim.ctl("POST", "/vms/%d" % vmids[0], {"ha": True, "ha_state": "stopped"})
    before = {v: pve_vms()[v] for v in vmids}
    set_memory(NODES[1:], GIB_PER_NODE)
    for n in NODES[1:]:
        cordon(n, False)
    sampler = Sampler()
    sampler.start()
    t_drain = time.monotonic()
    try:
        d = drain("sv1")
        assert d["kind"] == "drain" and d["node"] == "sv1", d
        assert nodes()["sv1"]["cordoned"]
        # a second drain of the node while this one runs: 409 naming it
        r = px.call("POST", "/v1/nodes/sv1/drain", ADMIN, want=409)
        assert d["job"] in r.text, r.text

        def some_moved():
            j = px.call("GET", "/v1/jobs/" + d["job"], ADMIN, want=200).json()
            return len(j["result"]["moved"]) >= 6
        wait_for(some_moved, deadline=120 + N_VMS, interval=0.05, what="6 VMs moved")
        t_kill = time.monotonic() - t_drain
        px.kill()
        px.start()
        j = px.wait_job(d["job"], ADMIN, deadline=300 + 5 * N_VMS)
        t_drain = time.monotonic() - t_drain
    finally:
        sampler.halt.set()
        sampler.join()
    assert j["state"] == "done", j
    res = j["result"]
    assert not res["standalone"] and res["node"] == "sv1", res
    assert sorted(m["vmid"] for m in res["moved"]) == vmids, res
    assert res["stayed"] == [], res["stayed"]
    after = pve_vms()
    for v in vmids:
        a, b = after[v], before[v]
        assert a["node"] != "sv1", a
        assert a["power"] == b["power"], (v, b["power"], a["power"])
        for k in ("name", "net0", "smbios1", "cores", "memory"):
            assert a["conf"].get(k) == b["conf"].get(k), (v, k, b["conf"].get(k), a["conf"].get(k))
        rec = px.call("GET", "/v1/vms/%d" % v, ADMIN, want=200).json()
        assert rec["node"] == a["node"] and rec["state"] == "enabled", rec
    by = {}
    for m in res["moved"]:
        assert m["to"] == after[m["vmid"]]["node"], m
        by[m["to"]] = by.get(m["to"], 0) + 1
    assert sampler.samples > 10 and not sampler.over, (sampler.samples, sampler.over[:5])
    # every VM migrated once, and never two at once (pvesim's task list)
    mig = migrations(set(vmids))
    for v in vmids:
        spans = sorted(mig.get(v, []))
        assert spans, (v, "no migrate task")
        for (s1, e1), (s2, _) in zip(spans, spans[1:]):
            assert e1 is not None and e1 <= s2, (v, spans)
    # the restarted proxd took the drain up where it was
    log = px.log_text()
    assert "kind=drain vmid=0 claimed at step moving" in log, log[-3000:]
    resumed = log.count("kind=migrate") and len([l for l in log.splitlines()
                                                  if "kind=migrate" in l and "claimed at step migrate" in l])
    print("    moved %d VMs: %s; %d samples, %d migrate tasks, %d moves resumed in flight; "
          "%d creations %.1f s, drain %.1f s (killed at %.1f s)" % (
              len(res["moved"]), by, sampler.samples, sum(len(s) for s in mig.values()), resumed,
              N_VMS, t_make, t_drain, t_kill))
    # the next creations avoid sv1 (still cordoned after the drain)
    assert nodes()["sv1"]["cordoned"]
    # the event log: the cordon, and one vm.moved per VM off sv1 (the move's
    # record write), none twice
    def events(kind):
        out, after = [], 0
        while True:
            r = px.call("GET", "/v1/events?type=%s&after=%d&limit=1000" % (kind, after), ADMIN,
                        want=200).json()
            out += r["events"]
            if not r["more"]:
                return out
            after = r["next"]
    cord = [e for e in events("node.cordoned") if e["node"] == "sv1"]
    assert cord and cord[-1]["data"]["by"] == "ops", cord
    moves = [e for e in events("vm.moved") if e["vmid"] in set(vmids)]
    assert sorted(e["vmid"] for e in moves) == vmids, sorted(e["vmid"] for e in moves)


@case
def drain_under_migrate_faults_reports_what_stayed():
    # sv2 holds some of the drained VMs; faults on half its migrations
    on = sorted(v for v, x in pve_vms().items() if x["node"] == "sv2" and v in MADE)
    assert len(on) >= 4, on
    set_memory(("sv3", "sv4", "sv5"), 64)
    # a running HA-managed VM: HA's LRM migrates online without its local
    # disk, which PVE refuses: it stays, saying why
    ha_vm = [v for v in on if pve_vms()[v]["power"] == "running"][0]
    sim.ctl("POST", "/vms/%d" % ha_vm, {"ha": True, "ha_state": "started"})
    sim.ctl("POST", "/faults", {"kind": "task_error", "method": "POST",
                                "path": r"^/nodes/sv2/qemu/\d+/migrate$", "rate": 0.4,
                                "message": "injected migration failure"})
    sim.ctl("POST", "/faults", {"kind": "error", "method": "POST", "status": 500,
                                "path": r"^/nodes/sv2/qemu/\d+/migrate$", "rate": 0.2,
                                "message": "injected refusal"})
    try:
        d = drain("sv2")
        j = px.wait_job(d["job"], ADMIN, deadline=240)
    finally:
        sim.ctl("DELETE", "/faults")
    assert j["state"] == "done", j
    res = j["result"]
    moved = {m["vmid"] for m in res["moved"]}
    stayed = {s["vmid"]: s["reason"] for s in res["stayed"]}
    assert moved | set(stayed) == set(on) and not moved & set(stayed), (res, on)
    assert len(stayed) >= 2, "no migration failed at rates 0.4 + 0.2 (seed %d)" % SEED
    assert ha_vm in stayed, (ha_vm, res)
    assert "injected" in stayed[ha_vm] or "HA manager" in stayed[ha_vm], stayed[ha_vm]
    assert all("injected" in r for v, r in stayed.items() if v != ha_vm), stayed
    pv = pve_vms()
    for v in on:  # never lost: each one exists, where the drain says
        assert v in pv, v
        assert (pv[v]["node"] == "sv2") == (v in stayed), (v, pv[v]["node"])
        assert px.call("GET", "/v1/vms/%d" % v, ADMIN, want=200).json()["node"] == pv[v]["node"]
        assert pv[v]["conf"].get("lock") is None, pv[v]["conf"]
    print("    faults: %d moved, %d stayed; the HA VM: %s" % (len(moved), len(stayed),
                                                          stayed[ha_vm][:90]))


def proxctl(*args):
    e = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=ADMIN)
    e.pop("PROXCTL_CONFIG", None)
    return subprocess.run([PROXCTL] + list(args), capture_output=True, text=True, timeout=120,
                          env=e)


@once
def uncordon_cancels_a_drain():
    """`proxctl node uncordon` while the node's drain moves a VM (pvesim
    holds its migrate calls): it says which drain it cancelled; the moves
    under way finish, the drain fails saying the node was uncordoned by
    whom, and every VM is where the drain's lists say."""
    cordon("sv1", False)
    on = sorted(v for v, x in pve_vms().items() if x["node"] == "sv3" and v in MADE)
    assert on
    sim.ctl("POST", "/faults", {"kind": "delay", "method": "POST", "delay_ms": 1500,
                                "path": r"^/nodes/sv3/qemu/\d+/migrate$", "count": 3})
    try:
        d = drain("sv3")
        wait_for(lambda: px.call("GET", "/v1/jobs?kind=migrate&state=running", ADMIN,
                                 want=200).json()["jobs"], 30, 0.01, "a move under way")
        r = proxctl("node", "uncordon", "sv3")
    finally:
        sim.ctl("DELETE", "/faults")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "sv3 uncordoned; its drain (job %s) was cancelled" % d["job"] in r.stdout, r.stdout
    j = px.wait_job(d["job"], ADMIN, deadline=240)
    assert j["state"] == "failed" and j["cancel"]["by"] == "ops", j
    assert j["error"].startswith("cancelled by ops at step moving: the node was uncordoned; "), j
    res = j["result"]
    assert res["moved"], res  # the moves under way finished
    assert len(res["moved"]) + len(res["stayed"]) == len(on), (res, on)
    assert all("the node was uncordoned: the drain was cancelled by ops" in s["reason"]
               for s in res["stayed"]), res["stayed"]
    pv = pve_vms()
    assert all(pv[m["vmid"]]["node"] == m["to"] for m in res["moved"]), res
    assert all(pv[s["vmid"]]["node"] == "sv3" for s in res["stayed"]), res
    assert not nodes()["sv3"]["cordoned"]


@once
def proxctl_node_commands():
    r = proxctl("node", "cordon", "sv4")
    assert r.returncode == 0 and "sv4 cordoned by ops" in r.stdout, (r.stdout, r.stderr)
    r = proxctl("node", "list")
    line = [l for l in r.stdout.splitlines() if l.startswith("sv4 ")]
    assert r.returncode == 0 and "cordoned by ops" in line[0], r.stdout
    assert "CORDON" in r.stdout.splitlines()[0], r.stdout
    r = proxctl("node", "uncordon", "sv4")
    assert r.returncode == 0 and "sv4 uncordoned" in r.stdout, r.stdout
    r = proxctl("node", "cordon", "sv9")
    assert r.returncode == 3, (r.returncode, r.stderr)
    # a drain from the command line: followed to the end, its lists printed
    r = proxctl("node", "drain", "sv4")
    assert r.returncode == 0 and re.search(r"^\d+ moved, 0 stayed$", r.stdout, re.M), \
        (r.stdout, r.stderr)
    assert "(null)" not in r.stdout, r.stdout
    assert nodes()["sv4"]["cordoned"]
    proxctl("node", "uncordon", "sv4")
    r = proxctl("node", "drain")
    assert r.returncode == 2, r.returncode


def racing_drains(instances, node, rounds=4, per=2):
    """Drains of one node asked at the same moment of every instance (per
    requests each), each round: those accepted never unfinished at once
    (on an empty node a drain can end before the next request is decided:
    then that one is accepted too), each refused one naming an accepted
    drain under way. Before the store decided it (one drain per node was
    not atomic across instances), two got in together."""
    for rnd in range(rounds):
        asks = [inst for inst in instances for _ in range(per)]
        go = threading.Barrier(len(asks))
        got = [None] * len(asks)

        def ask(i):
            p, tok = asks[i]
            go.wait()
            got[i] = p.call("POST", "/v1/nodes/%s/drain" % node, tok)
        ts = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        won = [r.json()["job"] for r in got if r.status_code == 202]
        assert won, [(r.status_code, r.text[:120]) for r in got]
        jobs = sorted((px.wait_job(j, ADMIN, deadline=240) for j in won),
                      key=lambda j: j["created_at"])
        assert all(j["state"] == "done" for j in jobs), jobs
        for a, b in zip(jobs, jobs[1:]):
            assert b["created_at"] >= a["finished_at"], \
                ("two drains of %s unfinished at once" % node, rnd, a, b)
        for r in got:
            if r.status_code != 202:
                assert r.status_code == 409, (r.status_code, r.text)
                job = r.headers["Location"].rsplit("/", 1)[-1]
                assert job in won, (r.headers, won)
                assert "a drain of %s is under way: job %s" % (node, job) in r.text, r.text
    print("    %d rounds of %d drains of %s at once over %d instances: never two at once" %
          (rounds, len(instances) * per, node, len(instances)))


def node_events(after, node):
    """node.cordoned / node.uncordoned of node logged after id `after`: the
    events, and the last id of the log's node events."""
    out = []
    while True:
        r = px.call("GET", "/v1/events?type=node.*&after=%d&limit=1000" % after, ADMIN,
                    want=200).json()
        out += [(e["type"], e["data"]) for e in r["events"]
                if e["node"] == node and e["type"] in ("node.cordoned", "node.uncordoned")]
        if r["events"]:
            after = r["events"][-1]["id"]
        if not r["more"]:
            return out, after


@case
def configuration_cordon_and_a_second_instance():
    """A configuration's cordon holds in every instance on the database: a
    second proxd whose configuration cordons sv5 writes it to the store at
    start-up; the first (no such cordon in its configuration) places by it,
    also once the second has stopped; neither API lifts it; the second
    started without it lifts it, and an API cordon it replaced is back;
    `proxd uncordon` lifts one whose configuration is gone."""
    other = Proxd(sim, share=px, database=DB, proxd_extra="reconcile_interval = 3600\n" + LIMITS)
    with open(other.conf) as f:
        plain = f.read()
    cordoned = plain.replace("[node sv5]\n", "[node sv5]\nstate = cordoned\n")

    def restart(text):
        if other.proc and other.alive():
            other.stop()
        with open(other.conf, "w") as f:
            f.write(text)
        other.start()
    me = "%s:%s" % (socket.gethostname()[:40], os.path.realpath(other.conf))
    by_conf = {"by": "configuration", "configuration": me}
    tok = other.token("ops2", "admin")
    cordon("sv4")  # through the first instance
    _, seen = node_events(0, "sv5")
    restart(cordoned)
    try:
        for inst, t in ((px, ADMIN), (other, tok)):
            ns = {n["name"]: n for n in inst.call("GET", "/v1/nodes", t, want=200).json()["nodes"]}
            assert ns["sv4"]["cordoned"] and ns["sv4"]["cordoned_by"] == "ops", ns["sv4"]
            assert ns["sv4"]["cordon_configurations"] == [], ns["sv4"]
            n5 = ns["sv5"]
            assert n5["cordoned"] and n5["cordon_source"] == "configuration", n5
            assert n5["cordoned_by"] == "configuration" and n5["cordon_configurations"] == [me], n5
            r = inst.call("POST", "/v1/nodes/sv5/uncordon", t, want=409)
            assert "configuration" in r.text and me in r.text, r.text
        ev, seen = node_events(seen, "sv5")
        assert ev == [("node.cordoned", by_conf)], ev
        # creations through both instances (either may claim either's jobs)
        subs = [(other, tok, other.call("POST", "/v1/vms", tok, {
            "os": "ubuntu", "name": "o%d" % i, "cores": 1, "memory_mb": 512, "disk_gb": 10},
            want=202).json()) for i in range(6)]
        subs += [(px, CUST[0], submit(CUST[0], "p%d" % i, memory_mb=512)) for i in range(6)]
        for p, t, s in subs:
            assert p.wait_job(s["job"], t, deadline=120)["state"] == "done"
        pv = pve_vms()
        assert all(pv[s["vmid"]]["node"] not in ("sv4", "sv5") for _, _, s in subs), \
            [pv[s["vmid"]]["node"] for _, _, s in subs]
        racing_drains([(px, ADMIN), (other, tok)], "sv4")
        # the second instance stopped: its cordon stays, also across a
        # restart of the first (which never had it), and the first alone
        # places (before, it put this creation on sv5, the only node open)
        other.stop()
        px.stop()
        px.start()
        for n in ("sv1", "sv2", "sv3"):
            cordon(n)
        j = px.wait_job(submit(CUST[0], "only-sv5", memory_mb=512)["job"], CUST[0], deadline=120)
        for n in ("sv1", "sv2", "sv3"):
            cordon(n, False)
        assert j["state"] == "failed" and "sv5: cordoned by configuration" in j["error"], j
        assert nodes()["sv5"]["cordon_configurations"] == [me]
        # a third configuration saying it too: started without it, the
        # second's takes its name off, and the cordon holds while the
        # third's says it; lifted once no configuration does
        third = Proxd(sim, share=px, database=DB, proxd_extra="reconcile_interval = 3600\n")
        with open(third.conf) as f:
            third_plain = f.read()
        with open(third.conf, "w") as f:
            f.write(third_plain.replace("[node sv5]\n", "[node sv5]\nstate = cordoned\n"))
        him = "%s:%s" % (socket.gethostname()[:40], os.path.realpath(third.conf))
        third.start()
        try:
            assert nodes()["sv5"]["cordon_configurations"] == [me, him]
            restart(plain)
            n5 = nodes()["sv5"]
            assert n5["cordon_source"] == "configuration", n5
            assert n5["cordon_configurations"] == [him], n5
            ev, seen = node_events(seen, "sv5")
            assert ev == [], ev  # cordoned throughout: no edge
            third.stop()
            with open(third.conf, "w") as f:
                f.write(third_plain)
            third.start()
        finally:
            third.stop()
        n5 = nodes()["sv5"]
        assert not n5["cordoned"] and n5["cordon_configurations"] == [], n5
        ev, seen = node_events(seen, "sv5")
        assert ev == [("node.uncordoned", {"by": "configuration", "configuration": him})], ev
        # an API cordon the configuration's meets is back when it goes
        cordon("sv5")
        _, seen = node_events(seen, "sv5")
        restart(cordoned)
        n5 = nodes()["sv5"]
        assert n5["cordon_source"] == "configuration" and n5["cordon_configurations"] == [me], n5
        restart(plain)
        n5 = nodes()["sv5"]
        assert n5["cordon_source"] == "api" and n5["cordoned_by"] == "ops", n5
        ev, seen = node_events(seen, "sv5")
        assert ev == [], ev  # cordoned throughout: no edge
        cordon("sv5", False)
        # a configuration gone for good: `proxd uncordon` lifts its cordon
        restart(cordoned)
        other.stop()
        _, seen = node_events(seen, "sv5")
        r = other.cli("uncordon", "--config", px.conf, "sv5")
        assert "sv5: uncordoned" in r.stdout, r.stdout
        assert not nodes()["sv5"]["cordoned"]
        ev, seen = node_events(seen, "sv5")
        assert ev == [("node.uncordoned", {"by": "proxd uncordon"})], ev
        r = other.cli("uncordon", "--config", px.conf, "sv5", check=False)
        assert r.returncode == 1 and "no configuration's cordon" in r.stderr, r.stderr
    finally:
        if other.alive():
            other.stop()
        cordon("sv4", False)


@once
def standalone_drain_only_cordons():
    alone = Sim(nodes="sa1,sa2", standalone=True, time_scale=0.005)
    p2 = Proxd(alone)
    tok = p2.token("ops", "admin")
    p2.start()
    try:
        r = p2.call("POST", "/v1/vms", tok, {"os": "ubuntu", "name": "s1", "cores": 1,
                                             "memory_mb": 512, "disk_gb": 10})
        assert r.status_code == 202, r.text
        v = r.json()
        assert p2.wait_job(v["job"], tok)["state"] == "done"
        node = [x for x in alone.state()["vms"] if x["vmid"] == v["vmid"]][0]["node"]
        d = p2.call("POST", "/v1/nodes/%s/drain" % node, tok)
        assert d.status_code == 202, d.text
        j = p2.wait_job(d.json()["job"], tok)
        assert j["state"] == "done" and j["result"]["standalone"], j
        assert j["result"]["moved"] == [], j
        assert [s["vmid"] for s in j["result"]["stayed"]] == [v["vmid"]], j
        assert "standalone host" in j["result"]["stayed"][0]["reason"], j
        ev = p2.call("GET", "/v1/jobs/%s/events" % j["id"], tok,
                     headers={"Accept": "application/json"})
        assert "standalone host" in ev.text, ev.text[:500]
        ns = {n["name"]: n for n in p2.call("GET", "/v1/nodes", tok).json()["nodes"]}
        assert ns[node]["cordoned"], ns[node]
        assert [x for x in alone.state()["vms"] if x["vmid"] == v["vmid"]][0]["node"] == node
    finally:
        shutdown(p2, alone)


shutdown(px, sim)
finish()
