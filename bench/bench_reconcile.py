#!/usr/bin/python3
"""What one reconciler pass costs on a large fleet (not a test: it reports,
it never fails the build). `make bench` runs it against the release build;
results go to stdout and bench/results/reconcile.txt.

The fleet: pvesim with 5 nodes and N VMs (tests/lib/fleet.py: BENCH_REC_N,
10,000), and a proxd database with a record for each VM whose last job is a
finished power job (as after a start or a stop), every record matching its
VM. `proxd reconcile --config FILE` runs one pass and exits: it is run once
to settle (a first pass takes over what differs: none should), then timed
RUNS times (wall clock of the whole command, start-up included, and of the
pass alone from its log), then once under callgrind, collecting only inside
reconcile_pass: its instructions per record. The inventory read (one GET
/cluster/resources of N VMs) is part of the pass.

Environment: PVESIM, PROXD (default build/), BENCH_REC_N (10000),
BENCH_REC_RUNS (3), BENCH_REC_CALLGRIND (1; 0 skips the callgrind run),
BENCH_REC_KEEP (a path the callgrind output is copied to).
"""
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PVESIM", os.path.join(ROOT, "build", "pvesim"))
os.environ.setdefault("PROXD", os.path.join(ROOT, "build", "proxd"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib import fleet as simfleet  # noqa: E402
from lib.env import PROXD, TOKEN  # noqa: E402
from lib.sim import Sim  # noqa: E402

N = int(os.environ.get("BENCH_REC_N", "10000"))
RUNS = int(os.environ.get("BENCH_REC_RUNS", "3"))
FIRST = 10000
RESULTS = os.path.join(ROOT, "bench", "results", "reconcile.txt")


def config(path, db, entry):
    lines = ["[proxd]", "listen = 127.0.0.1:1", "database = sqlite:" + db, "log_level = info",
             "[proxmox]", "token = " + TOKEN, "verify_tls = no",
             "[os ubuntu]", "vmid_range = %d-%d" % (FIRST, FIRST + N + 999)]
    for i in range(5):
        lines += ["[node sv%d]" % (i + 1), "host = 127.0.0.1:%d" % entry, "cluster = pvesim",
                  "storage = local-lvm", "template.ubuntu = %d" % (8000 + 10 * i)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def records(db, nodes):
    """A record per VM, as lib.fleet made it, and its last job (a start or
    stop that ended an hour ago)."""
    now = int(time.time() * 1000)
    rows, jobs = [], []
    for i in range(N):
        vmid = FIRST + i
        job = str(uuid.uuid4())
        power = "running" if i % 3 == 0 else "stopped"
        rows.append((vmid, "vm-%d" % vmid, "bench", nodes[i % len(nodes)], power, 1 + i % 4,
                     1024 * (1 + i % 8), 10 * (1 + i % 4), job, now - 7200000, now - 3600000))
        jobs.append((job, "start" if power == "running" else "stop", vmid, now - 3600000,
                     now - 3600000, now - 3600000))
    c = sqlite3.connect(db)
    with c:
        c.executemany(
            "INSERT INTO vms (vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb,"
            " job, error, pending, created_at, updated_at) VALUES (?, 'ubuntu', ?, ?, ?, 'enabled',"
            " ?, ?, ?, ?, ?, '', NULL, ?, ?)", rows)
        c.executemany(
            "INSERT INTO jobs (id, kind, state, vmid, owner, step, node, upid, progress, request,"
            " attempts, error, lease_owner, lease_until, created_at, updated_at, finished_at, seq)"
            " VALUES (?, ?, 'done', ?, 'bench', 'done', '', '', 100, '{}', NULL, '', '', 0, ?, ?, ?,"
            " (SELECT coalesce(max(seq), 0) + 1 FROM jobs))", jobs)
        c.executemany("INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
                      " VALUES (?, 'used', '', 0, ?)", ((FIRST + i, now) for i in range(N)))
    c.close()


def reconcile(conf, wrap=()):
    t = time.monotonic()
    p = subprocess.run(list(wrap) + [PROXD, "reconcile", "--config", conf], capture_output=True,
                       text=True, timeout=1800)
    took = time.monotonic() - t
    if p.returncode != 0:
        sys.exit("proxd reconcile failed (%d):\n%s" % (p.returncode, p.stderr[-3000:]))
    return took, p.stdout


def main():
    work = tempfile.mkdtemp(prefix="proxd-bench-rec-")
    out = []

    def say(s=""):
        print(s, flush=True)
        out.append(s)
    try:
        fleet, state_dir, nodes = simfleet.write(work, N, 5, first_vmid=FIRST)
        with Sim(nodes=",".join(nodes), state_dir=state_dir, extra=["--fleet", fleet],
                 time_scale=0.02, check_returns=False) as sim:
            db = os.path.join(work, "proxd.db")
            conf = os.path.join(work, "proxd.conf")
            config(conf, db, sim.entry)
            subprocess.run([PROXD, "token", "create", "--config", conf, "--owner", "bench",
                            "--role", "admin"], check=True, capture_output=True, timeout=60)
            records(db, nodes)
            _, first = reconcile(conf)
            times = [reconcile(conf)[0] for _ in range(RUNS)]
            say("proxd reconcile pass: %d VMs and records (5 nodes of one cluster), git %s, %s, %s" % (
                N, subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True).stdout.strip(),
                time.strftime("%Y-%m-%d %H:%M:%S"), PROXD))
            say("  the first pass: %s" % (first.strip().replace("\n", "; ") or "(nothing printed)"))
            say("  proxd reconcile (start-up, one pass, exit): median %.2f s (runs %s)" % (
                statistics.median(times), " ".join("%.2f" % t for t in times)))
            if os.environ.get("BENCH_REC_CALLGRIND", "1") != "0" and shutil.which("valgrind"):
                cg = os.path.join(work, "cg.out")
                reconcile(conf, ["valgrind", "--tool=callgrind", "-q", "--toggle-collect=reconcile_pass",
                                 "--callgrind-out-file=" + cg])
                total = 0
                with open(cg) as f:
                    for line in f:
                        if line.startswith(("summary:", "totals:")):
                            total = int(line.split()[1])
                            break
                say("  instructions in reconcile_pass: %.1f M, %.1f K per record" % (
                    total / 1e6, total / 1e3 / N))
                if os.environ.get("BENCH_REC_KEEP"):  # for callgrind_annotate
                    shutil.copy(cg, os.environ["BENCH_REC_KEEP"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(RESULTS, "a") as f:
        f.write("\n".join(out) + "\n\n")


if __name__ == "__main__":
    main()
