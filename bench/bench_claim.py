#!/usr/bin/python3
"""What one job claim costs the store with many jobs queued (not a test:
it reports and never fails the build). `make bench` runs it against the
release build; results go to stdout and bench/results/claim.txt.

Why: the owners take turns for the workers (a claim takes the job of the
owner with the fewest jobs running, store_job.c's JOB_PICK), which orders
every claimable job instead of taking the oldest: its cost grows with the
queue. bench/claimcost.c (the store on a SQLite file of its own) queues N
creations, all but ten of one owner, 32 of that owner running, and times
whole claims (look, write transaction, commit) over the same queue; each
N runs ROUNDS times, the medians of the rounds' medians are quoted.
A claim is made once per job started (when a worker frees), so its cost
counts per job, not per second.
Environment: BENCH_CLAIM_ROUNDS (3), BENCH_CLAIM_QUEUED (10,1000,5000).
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bench_claimcost")
ROUNDS = int(os.environ.get("BENCH_CLAIM_ROUNDS", "3"))
QUEUED = [int(x) for x in os.environ.get("BENCH_CLAIM_QUEUED", "10,1000,5000").split(",")]
CLAIMS = 201


def one(n):
    with tempfile.TemporaryDirectory(prefix="bench-claim-") as d:
        r = subprocess.run([BIN, "sqlite:" + os.path.join(d, "c.db"), str(n), str(CLAIMS)],
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("bench_claimcost: " + r.stderr)
    m = re.search(r"median (\d+) us, p90 (\d+) us \(first claimed: (\S+) (\S+)\)", r.stdout)
    return int(m.group(1)), int(m.group(2)), m.group(4)


def main():
    if not os.path.exists(BIN):
        sys.exit("no %s: make bench builds it" % BIN)
    lines = ["Job claim cost with many jobs queued (bench/bench_claim.py; SQLite, release "
             "build; %d claims a run, %d rounds, medians)" % (CLAIMS, ROUNDS)]
    for n in QUEUED:
        med, p90, owners = [], [], set()
        for _ in range(ROUNDS):
            a, b, who = one(n)
            med.append(a)
            p90.append(b)
            owners.add(who)
        lines.append("  %5d queued: claim %5d us (p90 %5d us); first claimed of owner %s" % (
            n, statistics.median(med), statistics.median(p90), ",".join(sorted(owners))))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(ROOT, "bench", "results", "claim.txt"), "w") as f:
        f.write(text)


main()
