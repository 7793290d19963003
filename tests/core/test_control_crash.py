"""Crash test of VM operations: proxd is killed with SIGKILL at random
moments while it runs a mix of 100 creation, power, update, resize and
delete jobs on ~20 VMs, and restarted, ten times; in the end every job
ended exactly once (done or failed, one terminal event each, none left
queued or running), the database and Proxmox agree (live records' node,
power and disk match /_sim/state; deleted records have no VM; no VM without
a record), and the event log tells every committed change exactly once
(lib/eventcheck.py: one vm.created per creation, one vm.deleted per
deletion, one job.failed per failed job, each field's changes a chain that
ends at the record).

Against pvesim (5 nodes, --time-scale 0.05: a start takes ~75 ms, a
shutdown ~150 ms; two rounds in three wait for a task to run before the kill,
up to 5 s or until no job is left). Jobs are queued with
`proxd vm --config F VMID ...` against the running daemon (one per round
while it is down). The RNG is seeded (CRASH_SEED overrides the seed).

A killed proxd leaves its jobs leased for 30 s to its dead instance; the test
expires those leases in the database (what the clock would do 30 s later)
before it restarts proxd.

Beside that, two cases on their own, run at once with it (each on a pvesim
and a proxd of its own): a shutdown killed while it waits for its task,
resumed by a proxd whose configuration no longer has the VM's node; then a
delete of that VM fails, saying why (it still exists there). And a delete
resumed after its destroy, the inventory failing for a few reads.

Plain script run by ctest (/usr/bin/python3 with Debian's python3-requests);
prints one line per check and a closing `N passed, N failed` line.
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor
import random
import re
import sqlite3
import tempfile
import time

from lib.cases import case, finish
from lib import eventcheck
from lib.db import expire_leases, query as db_query, rows as db_rows, wait_settled, wait_step
from lib.env import TOKEN_SECRET
from lib.proxd import cluster_config as write_config, Daemon, OSES, run as proxd, TEMPLATE_BASE
from lib.sim import Sim
from lib.wait import wait_for

SEED = int(os.environ.get("CRASH_SEED", "20260125"))
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "10"))  # make soak: more
VMS = 20
JOBS = int(os.environ.get("CRASH_JOBS", "100"))
MAX_DELETES = 6 * JOBS // 100
MAX_CREATES = 12 * JOBS // 100

rng = random.Random(SEED)
print("seed %d" % SEED, flush=True)


def db_jobs(db):
    return db_rows(db, "jobs", ("kind", "state", "step", "vmid"))


def db_records(db):
    rows = db_query(db, "SELECT vmid, node, state, power, cores, memory_mb, disk_gb, job, pending "
                        "FROM vms ORDER BY id")
    return [dict(zip(("vmid", "node", "state", "power", "cores", "memory_mb", "disk_gb", "job",
                      "pending"), r)) for r in rows]


def disk_gb(spec):
    m = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", spec or "")
    if not m:
        return -1
    v, u = float(m.group(1)), m.group(2)
    return int({"T": v * 1024, "G": v, "M": v / 1024, "K": v / 1024 / 1024}.get(u, v / 2**30))


def tasks_running(sim, wait_ms=0):
    """Tasks running now; with wait_ms, pvesim answers once one runs."""
    return sim.running_tasks(wait_ms)["running"]


def without_node(conf, node):
    """The configuration at `conf` with the [node NODE] section left out."""
    with open(conf) as f:
        sections = re.split(r"(?m)^(?=\[)", f.read())
    with open(conf, "w") as f:
        f.write("".join(s for s in sections if not s.startswith("[node %s]" % node)))


def created(conf, db, d, name):
    """A VM created through the running daemon `d`: its VMID."""
    out = json.loads(proxd("create", "--config", conf, "--os", "ubuntu", "--name", name,
                           "--cores", "1", "--memory", "1024", "--disk", "10",
                           "--owner", "ci").stdout)
    wait_for(lambda: db_jobs(db)[out["job"]]["state"] in ("done", "failed"), 60, 0.05,
             "the creation")
    assert db_jobs(db)[out["job"]]["state"] == "done", d.tail()
    return out["vmid"]


def wait_resumed_on_a_node_no_longer_configured():
    # a shutdown killed during its task's wait, resumed by a proxd whose
    # configuration no longer has the VM's node (removed, or another
    # instance with another node list): no client for the task's node.
    # Once proxd crashed on every start here; the job must end, failed,
    # saying why, and proxd stay up.
    tmp = tempfile.TemporaryDirectory(prefix="proxd-ctlcrash-node-")
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.05)
    d = Daemon(conf, tmp.name)
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"])
        d.start()
        vmid = created(conf, db, d, "gone-node")
        node = db_query(db, "SELECT node FROM vms WHERE vmid = %d AND state = 'enabled'"
                        % vmid)[0][0]
        # a guest that ignores ACPI: the shutdown's task runs out its
        # timeout (60 s of pvesim's time, 3 s here), long enough to kill in
        sim.ctl("POST", "/vms/%d" % vmid, {"acpi": False})
        job = json.loads(proxd("vm", "--config", conf, str(vmid), "shutdown").stdout)["job"]
        step = wait_step(db, job, "wait", 30)
        assert step == "wait", "the shutdown is at %s, not waiting for its task" % step
        d.kill()
        expire_leases(db)
        without_node(conf, node)
        d.start()
        wait_for(lambda: not d.alive() or
                 db_jobs(db)[job]["state"] in ("done", "failed"), 30, 0.05,
                 "the resumed shutdown to end")
        assert d.alive(), "proxd died resuming the shutdown:\n" + d.tail()
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        assert j["state"] == "failed", j
        assert node in j["error"] and "not in proxd's configuration" in j["error"], j["error"]
        ends = [e for e in j["events"] if e["step"] in ("done", "failed")]
        assert len(ends) == 1, j["events"]
        # a delete of it fails, saying why: the VM is there, on a node of
        # its cluster proxd no longer manages (it was marked deleted, "it
        # was gone already", and ran on unbilled)
        job = json.loads(proxd("vm", "--config", conf, str(vmid), "delete").stdout)["job"]
        wait_for(lambda: db_jobs(db)[job]["state"] in ("done", "failed"), 30, 0.05, "the delete")
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        assert j["state"] == "failed", j
        assert node in j["error"] and "not in proxd's configuration" in j["error"], j["error"]
        assert sim.vm(vmid) is not None, "the VM is gone from pvesim"
        state = db_query(db, "SELECT state FROM vms WHERE vmid = %d ORDER BY id DESC" % vmid)
        assert state[0][0] == "enabled", state
        # removed from that node by hand: no managed cluster has the VMID,
        # and the delete ends done, saying the node was not looked at
        wait_for(lambda: tasks_running(sim) == 0, 30, 0.05, "the shutdown's task to end")
        sim.ctl("POST", "/vms/%d" % vmid, {"power": "stopped"})
        sim.data("DELETE", "/nodes/%s/qemu/%d" % (node, vmid))
        wait_for(lambda: sim.vm(vmid) is None, 30, 0.05, "the VM removed")
        job = json.loads(proxd("vm", "--config", conf, str(vmid), "delete").stdout)["job"]
        wait_for(lambda: db_jobs(db)[job]["state"] in ("done", "failed"), 30, 0.05, "the delete")
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        assert j["state"] == "done", j
        said = j["events"][-1]["message"]
        assert node in said and "not in proxd's configuration" in said, said
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop(check_clean=False)  # the shutdown task fails on its own timeout


def delete_resumed_after_its_destroy_waits_for_the_inventory():
    # a delete killed after its destroy was sent (the job at step destroy),
    # the destroy served (the VM gone), and at the restart the cluster's
    # inventory fails for a few reads: the delete asks again and ends done
    # (it failed "cannot reach VM", the record went back to enabled, and
    # the VM the destroy removed was marked lost)
    tmp = tempfile.TemporaryDirectory(prefix="proxd-ctlcrash-del-")
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.05)
    d = Daemon(conf, tmp.name)
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"])
        d.start()
        vmid = created(conf, db, d, "del-res")
        d.stop()
        job = json.loads(proxd("vm", "--config", conf, str(vmid), "delete").stdout)["job"]
        c = sqlite3.connect(db, timeout=30)
        with c:  # as if killed after its destroy was sent
            c.execute("UPDATE jobs SET step = 'destroy' WHERE id = ?", (job,))
        c.close()
        node = sim.vm(vmid)["node"]
        sim.data("POST", "/nodes/%s/qemu/%d/status/stop" % (node, vmid))
        wait_for(lambda: sim.vm(vmid)["power"] == "stopped", 30, 0.05, "the VM stopped")
        sim.data("DELETE", "/nodes/%s/qemu/%d" % (node, vmid))
        wait_for(lambda: sim.vm(vmid) is None, 30, 0.05, "the destroy served")
        sim.add_faults([{"method": "GET", "path": "^/cluster/resources", "kind": "error",
                         "status": 500, "count": 6, "message": "injected"}])
        d.start()
        wait_for(lambda: db_jobs(db)[job]["state"] in ("done", "failed"), 60, 0.05,
                 "the resumed delete")
        j = json.loads(proxd("job", "--config", conf, job).stdout)
        assert j["state"] == "done", j
        state = db_query(db, "SELECT state FROM vms WHERE vmid = %d ORDER BY id DESC" % vmid)
        assert state[0][0] == "deleted", state
        sim.clear_faults()
        d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop(check_clean=False)


def main():
    # the two cases on their own: independent of the run below and of each
    # other (a pvesim, a proxd, a directory each) and mostly waiting (a
    # shutdown's task timeout, proxd's retries of the inventory): run beside
    # it, ended before its checks
    pool = ThreadPoolExecutor(2)
    alone = [pool.submit(case, fn) for fn in
             (wait_resumed_on_a_node_no_longer_configured,
              delete_resumed_after_its_destroy_waits_for_the_inventory)]
    try:
        run_and_check()
    finally:
        for f in alone:
            f.result()
        pool.shutdown()
    finish()


def run_and_check():
    tmp = tempfile.TemporaryDirectory(prefix="proxd-ctlcrash-")
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.05)
    queued = []  # (job id, vmid, op)
    stats = {"kills": 0, "during_task": 0, "missed": 0, "expired": 0, "refused": 0,
             "deletes": 0, "creates": 0}
    d = Daemon(conf, tmp.name)
    t_start = time.monotonic()
    try:
        write_config(conf, db, sim.entry, ["reconcile_interval = 3600"])
        proxd("--check-config", conf)

        # ~20 VMs to work on, queued four at a time (each a run of the
        # sanitizer build)
        d.start()

        def create(i):
            o = OSES[i % 2]  # ubuntu, debian: 10 GiB templates, quick clones
            return json.loads(proxd("create", "--config", conf, "--os", o, "--name", "ctl-%02d" % i,
                                    "--cores", "1", "--memory", "1024", "--disk", "10",
                                    "--owner", "ci").stdout)["job"]
        with ThreadPoolExecutor(4) as pool:
            creates = list(pool.map(create, range(VMS)))

        def created():
            js = db_jobs(db)
            return all(js[j]["state"] in ("done", "failed") for j in creates)
        wait_for(created, 60, 0.1, "the creations")
        d.stop()
        vmids = [r["vmid"] for r in db_records(db) if r["state"] == "enabled"]
        print("%d VMs created in %.1fs" % (len(vmids), time.monotonic() - t_start), flush=True)
        assert len(vmids) >= VMS - 2, "only %d VMs were created" % len(vmids)

        def queue_create():
            i = stats["creates"]
            res = proxd("create", "--config", conf, "--os", OSES[i % 2], "--name", "new-%02d" % i,
                        "--cores", "1", "--memory", "1024", "--disk", "10", "--owner", "ci",
                        check=False)
            if res.returncode != 0:
                stats["refused"] += 1
                return None
            out = json.loads(res.stdout)
            queued.append((out["job"], out["vmid"], "create"))
            stats["creates"] += 1
            return out["job"]

        def queue_one():
            """Queue one job that makes sense for the VM's recorded state; None if refused."""
            if stats["creates"] < MAX_CREATES and rng.random() < 0.12:
                return queue_create()
            recs = {r["vmid"]: r for r in db_records(db) if r["state"] == "enabled"}
            if not recs:
                return None
            vmid = rng.choice(sorted(recs))
            r = recs[vmid]
            ops = {"running": ["shutdown", "stop", "pause", "reboot", "resize", "set"],
                   "paused": ["resume", "stop", "resize", "set"],
                   "stopped": ["start", "start", "resize", "set"]}.get(r["power"], ["resize"])
            if stats["deletes"] < MAX_DELETES and rng.random() < 0.08:
                ops = ["delete"]
            op = rng.choice(ops)
            args = ["vm", "--config", conf, str(vmid), op]
            if op == "resize":
                args.append(str(r["disk_gb"] + rng.randint(1, 5)))
            elif op == "set":
                args += [str(rng.randint(1, 4)), str(rng.choice([0, 1024, 2048]))]
            res = proxd(*args, check=False)
            if res.returncode != 0:
                stats["refused"] += 1
                return None
            job = json.loads(res.stdout)["job"]
            queued.append((job, vmid, op))
            if op == "delete":
                stats["deletes"] += 1
            return job

        per_round = JOBS // ROUNDS
        for rnd in range(ROUNDS):
            d.start()
            n = 0
            tries = 0
            while n < per_round - 1 and tries < 5 * per_round:
                tries += 1
                n += queue_one() is not None
            if rnd % 3 != 2:
                # land the kill inside a task: wait for one to run, up to 5 s
                # (pvesim answers the moment one starts: a task here lasts
                # 75-150 ms, less than a read of its whole state). Once every
                # job has ended there is none to come (nothing is queued
                # during the wait): the round stops waiting then, its kill
                # landing on an idle proxd as it did after the 5 s, and
                # counts as missed
                def seen():
                    if tasks_running(sim, wait_ms=250) > 0:
                        return "hit"
                    return None if db_query(db, "SELECT count(*) FROM jobs WHERE state"
                                                " NOT IN ('done', 'failed')")[0][0] else "none left"
                try:
                    got = wait_for(seen, 5, 0.01, "a task to run")
                except AssertionError:
                    got = None
                stats["missed"] += got != "hit"
                time.sleep(rng.uniform(0, 0.05))
            else:
                time.sleep(rng.uniform(0.05, 1.0))
            during = tasks_running(sim) > 0
            assert d.alive(), "proxd died on its own:\n" + d.tail()
            d.kill()
            stats["kills"] += 1
            stats["during_task"] += during
            for _ in range(5):  # one more queued while proxd is down
                if queue_one() is not None:
                    break
            stats["expired"] += expire_leases(db)
        print("%d kills (%d during a task, %d aimed at one that missed it), %d leases expired,"
              " %d jobs queued (%d refused) in %.1fs"
              % (stats["kills"], stats["during_task"], stats["missed"], stats["expired"],
                 len(queued), stats["refused"], time.monotonic() - t_start), flush=True)

        d.start()
        try:
            wait_settled(db, 60)
        finally:
            print("all jobs settled after %.1fs" % (time.monotonic() - t_start), flush=True)
            d.stop()
    except Exception:
        d.abort()
        sim.stop(check_clean=False)
        raise

    # proxd's view of each job: a hundred runs of the sanitizer build
    # (0.1-0.3 s each, mostly its start), independent reads: four at a time
    with ThreadPoolExecutor(4) as pool:
        jobs = dict(zip([jid for jid, _, _ in queued],
                        pool.map(lambda q: json.loads(proxd("job", "--config", conf, q[0]).stdout),
                                 queued)))
    all_db_jobs = db_jobs(db)
    records = db_records(db)
    state = sim.state()
    sim_vms = {v["vmid"]: v for v in state["vms"] if v["vmid"] < TEMPLATE_BASE}
    ndone = sum(1 for j in jobs.values() if j["state"] == "done")
    kinds = {}
    for _, _, op in queued:
        kinds[op] = kinds.get(op, 0) + 1
    print("%d jobs: %d done, %d failed; %s" % (len(jobs), ndone, len(jobs) - ndone,
                                               ", ".join("%s %d" % kv for kv in sorted(kinds.items()))),
          flush=True)
    for jid, vmid, op in queued:
        if jobs[jid]["state"] == "failed":
            print("  failed: %s %s VM %d: %s" % (jid[:8], op, vmid, jobs[jid]["error"]), flush=True)

    @case
    def enough_jobs_were_queued():
        assert len(queued) >= JOBS * 0.9, "only %d jobs queued" % len(queued)

    @case
    def every_job_ended_exactly_once():
        bad = []
        for jid, vmid, op in queued:
            j = jobs[jid]
            ends = [e for e in j["events"] if e["step"] in ("done", "failed")]
            if j["state"] not in ("done", "failed"):
                bad.append("%s (%s %d) is %s at step %s" % (jid, op, vmid, j["state"], j["step"]))
            elif len(ends) != 1:
                bad.append("%s (%s %d) has %d terminal events" % (jid, op, vmid, len(ends)))
            elif ends[0]["step"] != j["state"]:
                bad.append("%s (%s %d) is %s, its last event %s" % (jid, op, vmid, j["state"],
                                                                   ends[0]["step"]))
            elif j["state"] == "failed" and not j["error"]:
                bad.append("%s (%s %d) failed without a reason" % (jid, op, vmid))
        left = {k: v for k, v in all_db_jobs.items() if v["state"] not in ("done", "failed")}
        if left:
            bad.append("unfinished jobs in the DB: %s" % left)
        assert not bad, "\n".join(bad)

    @case
    def failures_are_not_crash_artifacts():
        # jobs may fail for Proxmox's reasons (a state changed by an earlier
        # job), never because a restart lost track of them
        bad = [(jid[:8], op, vmid, jobs[jid]["error"]) for jid, vmid, op in queued
               if jobs[jid]["state"] == "failed"
               and re.search(r"no client|no record|unknown job|cannot find|still exists|upid|UPID",
                             jobs[jid]["error"])]
        assert not bad, "failures after restarts: %s" % bad

    @case
    def live_records_match_proxmox():
        bad = []
        for r in records:
            if r["state"] in ("deleted", "lost", "failed"):
                continue
            if r["state"] != "enabled":
                bad.append("VM %d record is %s" % (r["vmid"], r["state"]))
                continue
            v = sim_vms.get(r["vmid"])
            if not v:
                bad.append("VM %d has a record but no VM" % r["vmid"])
                continue
            size = disk_gb((v.get("conf") or {}).get("scsi0"))
            if v["node"] != r["node"]:
                bad.append("VM %d on %s, record says %s" % (r["vmid"], v["node"], r["node"]))
            if v["power"] != r["power"]:
                bad.append("VM %d is %s, record says %s" % (r["vmid"], v["power"], r["power"]))
            if size != r["disk_gb"]:
                bad.append("VM %d disk %d GiB, record says %d" % (r["vmid"], size, r["disk_gb"]))
        assert not bad, "\n".join(bad)

    @case
    def deleted_records_have_no_vm():
        live = {r["vmid"] for r in records if r["state"] == "enabled"}
        gone = [r["vmid"] for r in records if r["state"] in ("deleted", "lost")]
        bad = [v for v in gone if v in sim_vms and v not in live]
        assert not bad, "deleted records whose VM still exists: %s" % bad
        for jid, vmid, op in queued:
            if op == "delete" and jobs[jid]["state"] == "done":
                assert vmid not in sim_vms, "delete job %s done, VM %d still there" % (jid, vmid)

    @case
    def no_secret_in_the_logs():
        assert not d.logs_contain(TOKEN_SECRET), "the token secret is in proxd's log"

    @case
    def no_vm_without_a_record():
        live = {r["vmid"] for r in records if r["state"] == "enabled"}
        stray = sorted(set(sim_vms) - live)
        assert not stray, "VMs without a live record: %s" % stray

    @case
    def completed_changes_are_in_the_records():
        by_vmid = {r["vmid"]: r for r in records if r["state"] == "enabled"}
        bad = []
        for jid, vmid, op in queued:
            j = jobs[jid]
            if op != "resize" or j["state"] != "done" or vmid not in by_vmid:
                continue
            m = re.search(r"disk is (\d+) GiB", " ".join(e["message"] for e in j["events"]))
            if m and by_vmid[vmid]["disk_gb"] < int(m.group(1)):
                bad.append("VM %d: resize to %s done, record %d" % (vmid, m.group(1),
                                                                    by_vmid[vmid]["disk_gb"]))
        assert not bad, "\n".join(bad)

    @case
    def every_committed_change_is_logged_once():
        print("events: %s" % eventcheck.summary(db), flush=True)
        bad = eventcheck.problems(db)
        assert not bad, "\n".join(bad[:40])
        created = [j for j, _, op in queued if op == "create" and jobs[j]["state"] == "done"]
        assert len(created) >= MAX_CREATES // 2, "only %d creations done" % len(created)

    @case
    def the_event_check_sees_a_lost_or_doubled_event():
        # the check above can fail: on a copy, one event of each kind that
        # matters removed, or written twice, is reported
        import shutil
        import sqlite3
        if "://" in db:
            return
        missed = []
        for t in ("vm.created", "vm.deleted", "vm.stopped", "vm.resized", "job.failed"):
            for how in ("lost", "doubled"):
                copy = os.path.join(tmp.name, "copy.db")
                shutil.copyfile(db, copy)
                c = sqlite3.connect(copy)
                with c:
                    row = c.execute("SELECT min(id) FROM events WHERE type = ?", (t,)).fetchone()
                    if row[0] is None:
                        continue
                    if how == "lost":
                        c.execute("DELETE FROM events WHERE id = ?", row)
                    else:
                        c.execute("INSERT INTO events (ts, type, owner, vmid, node, job, data) "
                                  "SELECT ts, type, owner, vmid, node, job, data FROM events "
                                  "WHERE id = ?", row)
                c.close()
                if not eventcheck.problems(copy):
                    missed.append("%s %s" % (how, t))
        assert not missed, "not noticed: %s" % missed

    @case
    def simulator_served_schema_conformant_results():
        v = sim.ctl("GET", "/violations")
        assert v == [], "results that do not match the schema: %s" % v[:5]
        sim.stop()

    print("total %.1fs" % (time.monotonic() - t_start), flush=True)


if __name__ == "__main__":
    main()
