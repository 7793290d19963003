"""proxd create --from FILE: many creations from one process. A batch of N
makes N jobs that all end done on pvesim; bad lines are reported with their
number and field and nothing is submitted; an idempotency key repeated
across runs (and through the API, by the owner's token) makes one VM; a
batch under random pvesim faults with a node offline still ends every job,
and each job's end agrees with pvesim and the database.
PROXD_TEST_DB=postgresql://... runs it on PostgreSQL (test_create_batch_pg.py)."""
import json
import os
import sqlite3
import subprocess

from lib import db as dbq
from lib.cases import case, finish
from lib.env import PROXD
from lib.faults import fault_rules
from lib.proxd import Proxd
from lib.sim import Sim
from lib.wait import wait_for

DB = os.environ.get("PROXD_TEST_DB")  # a PostgreSQL URL, else SQLite
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzq7NTAlFT4SImr0qHpVZ0HHVdVunThFP1ICflNG6d+ "
       "me@host")


def req(name, os_name="ubuntu", owner="alice", **kw):
    r = {"os": os_name, "name": name, "cores": 1, "memory_mb": 512, "disk_gb": 20,
         "owner": owner}
    r.update(kw)
    return r


def batch(px, lines, *extra, stdin=False):
    """proxd create --from (a file, or stdin); lines: dicts or raw strings."""
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    args = [PROXD, "create", "--config", px.conf] + list(extra)
    if stdin:
        return subprocess.run(args + ["--from", "-"], input=text, capture_output=True, text=True,
                              timeout=120)
    path = os.path.join(px.dir, "batch.jsonl")
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run(args + ["--from", path], capture_output=True, text=True, timeout=120)


def g_name(g):
    """the name of the fault case's request on line g["line"]"""
    return "flt-%02d" % (g["line"] - 1)


def out_json(r):
    return [json.loads(ln) for ln in r.stdout.splitlines()]


def njobs(px):
    return dbq.query(px.db, "SELECT count(*) FROM jobs")[0][0]


def quoted(ids):
    """job ids (UUIDs proxd made) as an SQL list: psql takes no parameters"""
    assert all(len(i) == 36 and set(i) <= set("0123456789abcdef-") for i in ids), ids
    return ",".join("'%s'" % i for i in ids)


def wait_ended(px, jobs, deadline=120):
    def ended():
        rows = dbq.query(px.db, "SELECT id, state FROM jobs WHERE id IN (%s)" % quoted(jobs))
        st = dict(rows)
        return st if len(st) == len(jobs) and all(s in ("done", "failed")
                                                  for s in st.values()) else None
    return wait_for(ended, deadline, 0.1, "%d jobs to end" % len(jobs))


def a_vm(px):
    """the VMID of a VM made and enabled (one made now when there is none)"""
    def enabled():
        return dbq.query(px.db, "SELECT vmid FROM vms WHERE state = 'enabled' LIMIT 1")
    if not enabled():
        r = batch(px, [req("a-vm")], "--wait", "120")
        assert r.returncode == 0, (r.stdout, r.stderr)
    return enabled()[0][0]


def main():
    with Sim(time_scale=0.01, extra=["--seed", "17"]) as sim:
        px = Proxd(sim, database=DB, proxmox_extra="connect_timeout = 1\ntimeout = 3\n")
        state = {"sim": sim, "px": px, "alice": px.token("alice", "user")}
        px.start()
        try:
            run_cases(state)
        finally:
            sim.ctl("DELETE", "/faults")
            px.stop()


def run_cases(s):
    sim, px = s["sim"], s["px"]

    @case
    def batch_of_n_makes_n_jobs_that_all_end_done():
        lines = [req("bat-%02d" % i, "debian" if i % 4 == 0 else "ubuntu") for i in range(10)]
        lines[3]["ssh_keys"] = [KEY]
        lines.insert(5, "")  # a blank line is skipped, and counted
        before = njobs(px)
        r = batch(px, lines, "--json")
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        got = out_json(r)
        assert [g["line"] for g in got] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11], got
        assert len({g["job"] for g in got}) == 10 and len({g["vmid"] for g in got}) == 10
        assert njobs(px) == before + 10
        st = wait_ended(px, [g["job"] for g in got])
        assert set(st.values()) == {"done"}, st
        names = {v["vmid"]: v["conf"].get("name") for v in sim.state()["vms"]}
        for g, ln in zip(got, [x for x in lines if x]):
            assert names.get(g["vmid"]) == ln["name"], (g, names.get(g["vmid"]))
        v = px.call("GET", "/v1/vms/%d" % got[3]["vmid"], s["alice"]).json()
        assert v["state"] == "enabled" and v["power"] == "running" and v["owner"] == "alice", v
        # the text form from stdin: one line per request; --wait: then each one's end
        r = batch(px, [req("bat-t1"), req("bat-t2")], "--wait", "120", stdin=True)
        assert r.returncode == 0, (r.stdout, r.stderr)
        rows = r.stdout.splitlines()
        assert len(rows) == 4 and rows[0].startswith("line 1: job ") and "vmid" in rows[0], rows
        jobs = [ln.split()[3] for ln in rows[:2]]
        assert rows[2:] == ["line 1: job %s done" % jobs[0], "line 2: job %s done" % jobs[1]], rows
        assert set(wait_ended(px, jobs, 1).values()) == {"done"}

    @case
    def bad_lines_are_named_and_nothing_is_submitted():
        lines = [req("ok-1"),
                 '{"os": "ubuntu", "name": ',                        # 2: not JSON
                 {k: v for k, v in req("ok-x").items() if k != "disk_gb"},  # 3: missing
                 req("bad name"),                                    # 4: invalid name
                 req("ok-2", cores=0),                               # 5: out of range
                 req("ok-3", "plan9"),                               # 6: unknown OS
                 "[1, 2]",                                           # 7: not an object
                 req("ok-4", colour="blue"),                         # 8: unknown field
                 req("ok-5", idempotency_key="has space"),           # 9: bad key
                 req("ok-6", owner=""),                              # 10: no owner
                 req("ok-7", ssh_keys=["not a key"]),                # 11: bad key text
                 req("ok-8")]
        before, vms = njobs(px), len(sim.state()["vms"])
        r = batch(px, lines)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert r.stdout == "", r.stdout
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("proxd: line ")]
        want = {2: "not JSON", 3: "disk_gb: required", 4: "name: must be a DNS label",
                5: "cores: must be between", 6: "os: unknown OS 'plan9'", 7: "must be a JSON object",
                8: "colour: unknown field", 9: "idempotency_key:", 10: "owner: required",
                11: "ssh_keys: key 1 is not"}
        assert len(err) == len(want), err
        for ln, (no, text) in zip(err, sorted(want.items())):
            assert ln.startswith("proxd: line %d: %s" % (no, text)), (ln, no, text)
        assert "10 bad lines: nothing submitted" in r.stderr, r.stderr
        assert njobs(px) == before and len(sim.state()["vms"]) == vms
        # --json: the same as objects on stdout, naming the field
        got = out_json(batch(px, lines, "--json"))
        assert [g["line"] for g in got] == sorted(want), got
        assert got[1]["error"] == {"field": "disk_gb", "message": "required"}, got[1]
        assert njobs(px) == before
        # usage: --from takes nothing else
        r = subprocess.run([PROXD, "create", "--config", px.conf, "--from", "-", "--os",
                            "ubuntu"], input="", capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "--from" in r.stderr, r.stderr

    @case
    def an_idempotency_key_repeated_across_runs_makes_one_vm():
        lines = [req("idem-%d" % i, idempotency_key="order-17-%d" % i) for i in range(3)]
        first = out_json(batch(px, lines, "--json"))
        assert len(first) == 3 and not any(g.get("replayed") for g in first), first
        before = njobs(px)
        again = batch(px, lines, "--json")
        assert again.returncode == 0, again.stderr
        again = out_json(again)
        assert [(g["job"], g["vmid"]) for g in again] == [(g["job"], g["vmid"]) for g in first]
        assert all(g["replayed"] for g in again) and njobs(px) == before, again
        # the same key through the API by the owner's token: the same job
        body = {k: v for k, v in lines[1].items() if k != "idempotency_key"}
        a = px.call("POST", "/v1/vms", s["alice"], body,
                    headers={"Idempotency-Key": "order-17-1"})
        assert a.status_code == 202 and a.json()["job"] == first[1]["job"], a.text
        # a key used before for another request: the line is bad, nothing submitted
        changed = [lines[0], dict(lines[1], cores=2), req("idem-new")]
        r = batch(px, changed)
        assert r.returncode == 2 and "line 2: idempotency_key: " in r.stderr, r.stderr
        assert njobs(px) == before
        # a key twice in one file for one request: one job
        twice = [req("idem-tw", idempotency_key="tw"), req("idem-tw", idempotency_key="tw")]
        got = out_json(batch(px, twice, "--json"))
        assert got[0]["job"] == got[1]["job"] and got[1]["replayed"], got
        assert njobs(px) == before + 1
        # a key twice in one file for two requests: found by the check, so
        # nothing is submitted (the store knew neither line: the first was
        # queued, then the second refused)
        clash = [req("idem-c1", idempotency_key="cl"), req("idem-c2", idempotency_key="cl"),
                 req("idem-c3", owner="bob", idempotency_key="cl")]  # bob's key: another scope
        r = batch(px, clash)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert "proxd: line 2: idempotency_key: this key of owner alice is used on line 1 " \
            "for a different request" in r.stderr, r.stderr
        assert "1 bad line: nothing submitted" in r.stderr and r.stdout == "", r.stderr
        assert njobs(px) == before + 1
        wait_ended(px, [g["job"] for g in first] + [got[0]["job"]])

    @case
    def a_refusal_at_submission_is_its_lines_alone():
        # bob's quota is one VM: the check passes every line (quota is the
        # submission's to decide), so the first is queued, the second refused
        # and named, and the third (another owner) queued all the same
        before = njobs(px)
        r = batch(px, [req("q-1", owner="bob"), req("q-2", owner="bob"), req("q-3")], "--json")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        got = out_json(r)
        assert [g["line"] for g in got] == [1, 2, 3] and "job" in got[0] and "job" in got[2], got
        assert got[1]["error"]["field"] == "quota" and "VM quota of 'bob'" in \
            got[1]["error"]["message"], got[1]
        assert njobs(px) == before + 2
        assert set(wait_ended(px, [got[0]["job"], got[2]["job"]]).values()) == {"done"}

    @case
    def the_single_forms_refuse_what_they_would_cut_or_misread():
        def write(sql, args):
            c = sqlite3.connect(px.db, timeout=30)
            try:
                with c:
                    c.execute(sql, args)
            finally:
                c.close()

        def proxd(*args):
            return subprocess.run([PROXD] + list(args), capture_output=True, text=True,
                                  timeout=60)
        one = ["create", "--config", px.conf, "--os", "ubuntu", "--name", "one-1", "--cores",
               "1", "--memory", "512", "--disk", "20", "--owner", "alice"]
        vmid = a_vm(px)
        vm = ["vm", "--config", px.conf]
        before = njobs(px)
        # each was cut or read as another number (atoi) and queued: a
        # 70-character owner became its first 63, "2x" cores 2, "--wait 2m"
        # 2 s, "100x" VM 100, and "set four 4096" cores 0, which keeps them
        for args, opt in ((one[:-1] + ["o" * 70], "--owner"),
                          (one[:5] + ["n" * 70] + one[6:], "--name"),
                          (one[:3] + ["u" * 40] + one[4:], "--os"),
                          (one[:7] + ["2x"] + one[8:], "--cores"),
                          (one[:9] + ["4G"] + one[10:], "--memory"),
                          (one + ["--wait", "2m"], "--wait"),
                          (one + ["--wait", "99999999999999999"], "--wait"),
                          (vm + ["100x", "start"], "VMID"),
                          (vm + [str(vmid), "set", "four", "4096"], "CORES"),
                          (vm + [str(vmid), "set", "1", "4G"], "MEMORY_MB"),
                          (vm + [str(vmid), "resize", "30x"], "GB"),
                          (vm + [str(vmid), "start", "--wait", "2m"], "--wait"),
                          (vm + [str(vmid), "start", "now"], "usage")):
            r = proxd(*args)
            assert r.returncode == 2 and opt in r.stderr, (args, r.returncode, r.stderr)
            assert r.stdout == "", (args, r.stdout)
        assert njobs(px) == before
        # what fits is taken whole
        r = proxd(*(one[:-1] + ["o" * 63]))
        assert r.returncode == 0, r.stderr
        job = json.loads(r.stdout)["job"]
        assert dbq.query(px.db, "SELECT owner FROM jobs WHERE id = %s" % quoted([job])) == \
            [("o" * 63,)]
        wait_ended(px, [job])
        if DB:
            return  # PostgreSQL keeps no text that is not UTF-8
        # a text that is not UTF-8 (an error cut inside a character): the
        # record was dropped from `proxd vms`, and `proxd job` printed "(null)"
        bad = "CAST(X'6375742063ff' AS TEXT)"  # "cut c" and a byte no UTF-8 text has
        write("UPDATE vms SET error = %s WHERE vmid = ?" % bad, (vmid,))
        write("UPDATE jobs SET error = %s WHERE id = ?" % bad, (job,))
        r = proxd("vms", "--config", px.conf)
        assert r.returncode == 0, r.stderr
        got = [v for v in json.loads(r.stdout) if v["vmid"] == vmid]
        assert [v["error"] for v in got if v["state"] == "enabled"] == ["cut c?"], got
        r = proxd("job", "--config", px.conf, job)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["error"] == "cut c?", r.stdout
        write("UPDATE vms SET error = '' WHERE vmid = ?", (vmid,))

    @case
    def faults_and_a_dead_node_still_end_every_job():
        sim.ctl("POST", "/nodes/sv2", {"state": "offline"})
        for rule in fault_rules(0.25):
            sim.ctl("POST", "/faults", rule)
        hits = 0
        try:
            lines = [req("flt-%02d" % i, owner="ops") for i in range(12)]
            r = batch(px, lines, "--json")
            assert r.returncode == 0, (r.stdout, r.stderr)
            got = out_json(r)
            assert len(got) == 12
            st = wait_ended(px, [g["job"] for g in got], deadline=240)
        finally:
            hits = sum(f.get("hits", 0) for f in sim.ctl("GET", "/faults") or [])
            sim.ctl("DELETE", "/faults")
            sim.ctl("POST", "/nodes/sv2", {"state": "online"})
        # a creation may go on under another VMID than the one it was queued
        # with (one found taken on Proxmox): the job has the final one
        final = dict(dbq.query(px.db, "SELECT id, vmid FROM jobs WHERE id IN (%s)" % quoted(
            [g["job"] for g in got])))
        on_sim = {v["vmid"]: v for v in sim.state()["vms"]}
        for g in got:
            recs = dbq.query(px.db, "SELECT vmid, state, node, name FROM vms WHERE job = %s"
                             % quoted([g["job"]]))
            live = [r for r in recs if r[1] not in ("failed", "deleted")]
            if st[g["job"]] == "done":  # made, where it is recorded, not on the dead node
                vmid = final[g["job"]]
                vm = on_sim.get(vmid)
                assert live == [(vmid, "enabled", vm and vm["node"], g_name(g))], (g, recs, vm)
                assert vm["conf"].get("name") == g_name(g) and vm["node"] != "sv2", (g, vm)
            else:  # a failed creation leaves no live record
                assert not live, (g, recs)
        print("faults: %d done, %d failed, %d fault hits" % (
            sum(1 for v in st.values() if v == "done"),
            sum(1 for v in st.values() if v == "failed"), hits), flush=True)

    @case
    def a_reconcile_whose_config_walk_fails_exits_1():
        # with an address pool, `proxd reconcile` also walks the VMs'
        # configurations; one it cannot read was said, and the exit was 0
        conf = os.path.join(px.dir, "pool.conf")
        with open(px.conf) as f, open(conf, "w") as g:
            g.write(f.read() + "\n[ippool rec]\ncidr = 10.62.0.0/24\ngateway = 10.62.0.1\n"
                    "bridge = vmbr0\nquarantine = 0\n")
        a_vm(px)
        args = [PROXD, "reconcile", "--config", conf]
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        sim.add_faults([{"kind": "error", "status": 500, "method": "GET", "message": "no",
                         "path": r"/qemu/\d+/config$"}])
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        finally:
            sim.clear_faults()
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "the config walk could not read every VM" in r.stderr, r.stderr
        assert json.loads(r.stdout)["lost"] == 0, r.stdout  # the pass itself was whole


main()
finish()
