#!/usr/bin/python3
"""What one Proxmox API call costs proxd's side in CPU, back to back and
spaced out (not a test: it reports and never fails the build). `make bench`
runs it against the release build; results go to stdout and
bench/results/callcost.txt.

Why: proxd's CPU per creation at real speed (time scale 1) is measured
against the fast scale, where the same calls come densely. bench/callcost
(libpve on one warm TLS connection to pvesim, GET /nodes/sv1/status) sends
calls in rounds: sleep GAP, then BURST calls one after another (on each of
THREADS threads released together, as job threads whose looks fall due at
the same moment); it reports
the process's CPU per call, the sleeps' wake-ups included. Each form runs
ROUNDS times interleaved with the others; medians are quoted, and the ratio
of each to back-to-back calls. Then bench/wakecost.c, no call at all: a
sleep and a walk over a buffer, against the same walk with no sleep (what
the machine charges for a wake-up and for caches gone cold meanwhile).
Environment: BENCH_CALLCOST_ROUNDS (3).
"""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PVESIM", os.path.join(ROOT, "build", "pvesim"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.env import TOKEN_ID, TOKEN_SECRET  # noqa: E402
from lib.sim import Sim  # noqa: E402

BIN = os.path.join(ROOT, "build", "bench_callcost")
WAKE_BIN = os.path.join(ROOT, "build", "bench_wakecost")
# (gap ms, KiB touched, rounds): a wake-up alone, and with a working set
WAKE_FORMS = [(0, 0, 1000), (1000, 0, 8), (0, 256, 1000), (1000, 256, 8), (0, 4096, 100),
              (1000, 4096, 8)]
ROUNDS = int(os.environ.get("BENCH_CALLCOST_ROUNDS", "3"))
RESULTS = os.path.join(ROOT, "bench", "results", "callcost.txt")
# (label, rounds of the program, burst, gap ms, threads)
FORMS = [("back to back", 1, 2000, 0, 1),
         ("1 call every 5 ms", 200, 1, 5, 1),
         ("1 call every 100 ms", 50, 1, 100, 1),
         ("1 call every 1 s", 15, 1, 1000, 1),
         ("10 calls in a row every 1 s", 15, 10, 1000, 1),
         ("10 threads, 1 call each, every 1 s", 15, 1, 1000, 10)]


def main():
    out = []

    def say(s):
        print(s)
        out.append(s)
    sim = Sim(check_returns=False, log_level="error")
    token = "%s=%s" % (TOKEN_ID, TOKEN_SECRET)
    got = {f[0]: [] for f in FORMS}
    try:
        for _ in range(ROUNDS):
            for label, rounds, burst, gap, threads in FORMS:
                r = subprocess.run([BIN, "127.0.0.1:%d" % sim.entry, token, "/nodes/sv1/status",
                                    str(rounds), str(burst), str(gap), str(threads)],
                                   capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    raise RuntimeError("bench_callcost: " + r.stderr)
                got[label].append(float(r.stdout))
    finally:
        sim.stop()
    say("proxd call cost: %s, %d CPUs, load %.2f, %d rounds interleaved (medians)" % (
        time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), os.cpu_count(), os.getloadavg()[0],
        ROUNDS))
    base = statistics.median(got[FORMS[0][0]])
    for label, _, _, _, _ in FORMS:
        m = statistics.median(got[label])
        say("  %-36s %7.1f us CPU per call (%.2fx back to back; runs %s)" % (
            label, m, m / base, " ".join("%.0f" % v for v in got[label])))
    # the same machine without a call: a sleep, then a walk over memory
    say("  no call (bench_wakecost): a sleep, then one read per 64 bytes of a buffer:")
    for gap, kib, rounds in WAKE_FORMS:
        vals = []
        for _ in range(ROUNDS):
            r = subprocess.run([WAKE_BIN, str(gap), str(rounds), str(kib)], capture_output=True,
                               text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError("bench_wakecost: " + r.stderr)
            vals.append(float(r.stdout))
        say("    sleep %4d ms, %4d KiB: %7.1f us CPU per round (runs %s)" % (
            gap, kib, statistics.median(vals), " ".join("%.0f" % v for v in vals)))
    with open(RESULTS, "a") as f:
        f.write("\n".join(out) + "\n\n")


if __name__ == "__main__":
    main()
