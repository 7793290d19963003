#!/usr/bin/python3
"""Instructions per creation at real speed and at the fast scale (not a
test: it reports, it never fails the build). `make bench` runs it against
the release build; results go to stdout and bench/results/instr.txt.

Why instructions: proxd's CPU time per creation at time scale 1 against the
fast scale (issue 17) is the ratio of two noisy figures: on this shared
2-core guest the same binary measured 6.9 to 12.1 ms per creation at the
fast scale within ten minutes, and a wake-up after a sleep costs several
times a warm one (bench/wakecost.c), whatever the code does. The count of
instructions the daemon executes does not depend on the machine's load or
its caches: it tells whether proxd does more *work* per creation at real
speed, and where (the job threads against the threads whose work is
proportional to time: node probes, inventory reads, the reconciler, lease
renewals).

How: the daemon runs under valgrind's callgrind (the other proxd commands,
which queue the creations, run natively). Its counters are zeroed when
/readyz answers and dumped when the last job ends (the run), then, at time
scale 1, dumped again after the daemon has stayed idle as long as the run
lasted (what the daemon spends in that time whatever it creates). The job
threads' share is the inclusive count of worker_main; the creation jobs'
own is that less the snapshot sync jobs the reconciler queues every minute
(snap_run), which a run of 88 s has and one of 3 s has not. Under valgrind the
daemon runs 20-50x slower, so the fast scale's timing stretches (its run
takes seconds); the counts of Proxmox calls are reported beside the
instructions to show the runs did the same calls.

The same window: a fast run ends in seconds, a scale-1 run of the same
creations lasts a minute and a half, and the daemon's duties (probes, the
reconcile pass and its snapshot sync, a cost of time whatever it creates)
run through it. So each round runs time scale 1 first, then counts the
fast run's daemon on until as long after its batch began as the scale-1
run lasted: the two windows hold the same creations and the same time,
and their ratio tells whether real speed makes the creations cost more.

Cold and warm: a cold run measures a daemon's first creations, when its
client has seen no task of any kind end (its first looks at a start or a
resize follow the schedule for an unknown kind: 250 ms, doubling); a warm
run first lets the same daemon create N VMs unmeasured, then measures the
next N, queued while it runs: what a long-running daemon pays. Both report
the idle daemon's instructions per second at time scale 1 (probes, the
reconciler, inventory reads: a cost of time, not of creations) and the run
net of them, with and without the new TLS connections.

Environment: as bench_create.py (PVESIM, PROXD), BENCH_N_REAL (20
creations), BENCH_ROUNDS (2: rounds of a scale-1 run then a fast run, cold
and then warm), BENCH_FAST_SCALE (0.02), BENCH_WARM (both: cold and warm
rounds; 0: cold only; only: warm only), BENCH_KEEP_DUMPS (a directory the
callgrind dumps are copied to, for callgrind_annotate), BENCH_WINDOW (1;
0: the fast runs are not counted on to the scale-1 run's length).
"""
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_PROXD = os.path.abspath(os.environ.get("PROXD", os.path.join(ROOT, "build", "proxd")))
WORK = tempfile.mkdtemp(prefix="proxd-instr-")
WRAPPER = os.path.join(WORK, "proxd-callgrind")
with open(WRAPPER, "w") as f:
    # the daemon is the command whose first argument is --config
    f.write('#!/bin/sh\nif [ "$1" = "--config" ]; then\n'
            '  exec valgrind --tool=callgrind -q --callgrind-out-file="$CG_OUT.%%p" "%s" "$@"\n'
            'fi\nexec "%s" "$@"\n' % (REAL_PROXD, REAL_PROXD))
os.chmod(WRAPPER, 0o755)
os.environ["PROXD"] = WRAPPER
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_create as bc  # noqa: E402

N = int(os.environ.get("BENCH_N_REAL", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
FAST = float(os.environ.get("BENCH_FAST_SCALE", "0.02"))
WINDOW = os.environ.get("BENCH_WINDOW", "1") != "0"
RESULTS = os.path.join(ROOT, "bench", "results", "instr.txt")
lines = []


def say(s=""):
    print(s, flush=True)
    lines.append(s)


def control(pid, *args):
    subprocess.run(["callgrind_control"] + list(args) + [str(pid)], check=True,
                   capture_output=True, timeout=120)


# The daemon's duties: work its clock drives, whatever it creates (node
# probes every probe interval, the reconcile pass every minute with the
# snapshot sync it queues, the node health events); inclusive, by function.
# Left in the run: the keeper's inventory reads between passes (those the
# creations' placements bring forward cannot be told from the others).
DUTIES = ("core/fleet.c:prober_main ", "core/fleet.c:suspect_main ", "core/reconcile.c:reconcile_pass ",
          "core/events.c:keeper_main ")


def counts(path):
    """(total Ir, Ir inclusive of worker_main, Ir of new TLS connections, Ir
    of the snapshot sync jobs, Ir of the other duties) of one callgrind
    dump: a connection's cost is curl's SSL_CTX_new and the handshake
    (SSL_connect), both inclusive; the snapshot sync (snap_run: the only
    jobs but the creations these runs have, queued by the reconciler's pass
    every minute) runs on the job threads too"""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", path],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    total = worker = tls = snap = 0
    duty = {}
    for line in out.splitlines():
        parts = line.split()
        if not parts or not parts[0][0].isdigit():
            continue
        n = int(parts[0].replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = n
        elif "core/core.c:worker_main " in line:  # the job workers (not the API's)
            worker = max(worker, n)
        elif "core/snapshot_job.c:snap_run " in line:
            snap = max(snap, n)
        elif any(p in ("???:SSL_connect", "???:SSL_CTX_new") for p in parts):
            tls += n
        for d in DUTIES:
            if d in line:
                duty[d] = max(duty.get(d, 0), n)
    return total, worker, tls, snap, sum(duty.values())


def one_run(ts, tag, warm=False, window_s=0.0):
    """One measured batch at time scale ts; window_s (the fast scale): the
    daemon, its batch done, is left idle until that long after the batch
    began and counted again (the same window as a scale-1 run's)"""
    os.environ["CG_OUT"] = os.path.join(WORK, tag)
    w = bc.World(ts)
    try:
        first = [w.create("warm-%03d" % i) for i in range(N)] if warm else \
            [w.create("instr-%03d" % i) for i in range(N)]
        before = w.sim.ctl("GET", "/calls")
        w.start()
        w.wait_ready()
        pid = w.daemon.proc.pid
        if warm:
            # the unmeasured batch: the client learns how long each kind of
            # task takes on each node, as a daemon that has run for a while
            w.wait_jobs(set(first), 1800 + 30 * N * ts)
        control(pid, "-z")
        m0 = time.monotonic()
        if warm:
            before = w.sim.ctl("GET", "/calls")
            ids = [w.create("instr-%03d" % i) for i in range(N)]
        else:
            ids = first
        js = w.wait_jobs(set(ids), 1800 + 30 * N * ts)
        run_s = time.monotonic() - m0
        control(pid, "-d", "run")
        after = w.sim.ctl("GET", "/calls")
        idle_s = 0.0
        if ts >= 1:
            time.sleep(run_s)
            idle_s = time.monotonic() - m0 - run_s
            control(pid, "-d", "idle")
        elif window_s > run_s:
            time.sleep(window_s - run_s)
            control(pid, "-d", "window")
        polls, rest, _ = bc.calls_diff(before, after)
        # new TLS connections proxd opened (the /calls read that took `after`
        # is one of its own): 3.5-3.8 M instructions each
        conns = after["tls_handshakes"] - before["tls_handshakes"] - 1
        # of the connections closed meanwhile, those pvesim closed at its
        # (pveproxy's) 100 requests a connection
        at_limit = after.get("tls_closed_at_limit", 0) - before.get("tls_closed_at_limit", 0)
        done = sum(1 for j in js.values() if j["state"] == "done")
    finally:
        w.close()
    dumps = sorted(glob.glob(os.path.join(WORK, tag + ".*.*")), key=lambda p: int(p.rsplit(".", 1)[1]))
    keep = os.environ.get("BENCH_KEEP_DUMPS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for p in dumps:
            shutil.copy(p, keep)
    run_ir, run_worker, run_tls, run_snap, run_duty = counts(dumps[0])
    idle_ir, _, idle_tls, _, _ = counts(dumps[1]) if ts >= 1 and len(dumps) > 1 else (0, 0, 0, 0, 0)
    win_ir = counts(dumps[1])[0] if ts < 1 and window_s > run_s and len(dumps) > 1 else 0
    r = {"ts": ts, "done": done, "run_s": run_s, "at_limit": at_limit, "polls": polls / N, "rest": rest / N, "conns": conns,
         "ir": run_ir / N, "worker": run_worker / N, "back": (run_ir - run_worker) / N,
         # the creation jobs' own: the job threads less the snapshot sync
         "jobs": (run_worker - run_snap) / N,
         # the run less the daemon's duties during it (not the idle
         # daemon's rate: a node a job calls is not probed, so a busy
         # daemon spends less on them than an idle one)
         "duty": (run_duty + run_snap) / N, "less_duty": (run_ir - run_duty - run_snap) / N,
         "idle_per_s": idle_ir / idle_s if idle_s else 0.0,
         "idle_no_tls_per_s": (idle_ir - idle_tls) / idle_s if idle_s else 0.0,
         # without the new TLS connections, whose count is timing's (a burst
         # under callgrind outlasts the pool's wait for a busy connection)
         "no_tls": (run_ir - run_tls) / N}
    # the run and the idle daemon after it, as long as a scale-1 run lasted
    # (the fast scale; at time scale 1 the run is its own window)
    r["window"] = (run_ir + win_ir) / N if ts < 1 else r["ir"]
    r["window_s"] = max(window_s, run_s) if ts < 1 else run_s
    # the run less what the idle daemon spends in as long (time scale 1)
    r["net"] = r["ir"] - r["idle_per_s"] * run_s / N
    r["net_no_tls"] = r["no_tls"] - r["idle_no_tls_per_s"] * run_s / N
    say("%s time scale %-4g %d/%d done in %5.1f s: %.2f task polls + %.2f other calls per creation, "
        "%d new TLS connections (%d closed at the request limit); M instructions per creation: %.2f (job threads %.2f, of which the "
        "creation jobs %.2f; the others %.2f; the duties %.2f, less them %.2f; without the TLS connections "
        "%.2f)%s%s" % (
            "warm" if warm else "cold", ts, done, N, run_s, r["polls"], r["rest"], conns, at_limit, r["ir"] / 1e6,
            r["worker"] / 1e6, r["jobs"] / 1e6, r["back"] / 1e6, r["duty"] / 1e6, r["less_duty"] / 1e6,
            r["no_tls"] / 1e6,
            "; idle daemon %.2f M/s, net %.2f (without TLS %.2f)" % (
                r["idle_per_s"] / 1e6, r["net"] / 1e6, r["net_no_tls"] / 1e6) if ts >= 1 else "",
            "; in a %.1f s window (the run, then idle) %.2f" % (r["window_s"], r["window"] / 1e6)
            if ts < 1 and win_ir else ""))
    return r


def report(fast, real, label):
    def med(rs, key):
        return statistics.median(r[key] for r in rs)
    say()
    say("RESULTS, %s (median of %d runs each; M instructions per creation)" % (label, len(fast)))
    say("  fast scale:   %.2f (job threads %.2f, the creation jobs %.2f, the others %.2f)" % (
        med(fast, "ir") / 1e6, med(fast, "worker") / 1e6, med(fast, "jobs") / 1e6, med(fast, "back") / 1e6))
    say("  time scale 1: %.2f (job threads %.2f, the creation jobs %.2f, the others %.2f); net of the "
        "idle daemon %.2f" % (
            med(real, "ir") / 1e6, med(real, "worker") / 1e6, med(real, "jobs") / 1e6,
            med(real, "back") / 1e6, med(real, "net") / 1e6))
    say("  less the daemon's duties during the run (probes, reconcile passes, snapshot sync, health "
        "events): fast %.2f (runs %s), time scale 1 %.2f (runs %s); the duties: fast %.2f, time scale 1 "
        "%.2f" % (
            med(fast, "less_duty") / 1e6, " ".join("%.2f" % (r["less_duty"] / 1e6) for r in fast),
            med(real, "less_duty") / 1e6, " ".join("%.2f" % (r["less_duty"] / 1e6) for r in real),
            med(fast, "duty") / 1e6, med(real, "duty") / 1e6))
    say("  the creation jobs' own, runs: fast %s; time scale 1 %s" % (
        " ".join("%.2f" % (r["jobs"] / 1e6) for r in fast), " ".join("%.2f" % (r["jobs"] / 1e6) for r in real)))
    say("  the runs, in all: fast %s; time scale 1 %s (new TLS connections: fast %s, scale 1 %s)" % (
        " ".join("%.2f" % (r["ir"] / 1e6) for r in fast), " ".join("%.2f" % (r["ir"] / 1e6) for r in real),
        " ".join(str(r["conns"]) for r in fast), " ".join(str(r["conns"]) for r in real)))
    say("  without the new TLS connections' instructions: fast %.2f (runs %s), time scale 1 %.2f "
        "(runs %s), net of the idle daemon's %.2f (runs %s)" % (
            med(fast, "no_tls") / 1e6, " ".join("%.2f" % (r["no_tls"] / 1e6) for r in fast),
            med(real, "no_tls") / 1e6, " ".join("%.2f" % (r["no_tls"] / 1e6) for r in real),
            med(real, "net_no_tls") / 1e6, " ".join("%.2f" % (r["net_no_tls"] / 1e6) for r in real)))
    if all(r["window_s"] > r["run_s"] for r in fast):
        say("  in the same window (the fast run, then its daemon idle until the time scale 1 run's length, "
            "%.0f-%.0f s): fast %.2f (runs %s), time scale 1 %.2f: %.2fx" % (
                min(r["window_s"] for r in fast), max(r["window_s"] for r in fast), med(fast, "window") / 1e6,
                " ".join("%.2f" % (r["window"] / 1e6) for r in fast), med(real, "window") / 1e6,
                med(real, "window") / med(fast, "window")))
    say("  task polls per creation: fast %.2f, time scale 1 %.2f; other calls: fast %.2f, time scale 1 "
        "%.2f" % (med(fast, "polls"), med(real, "polls"), med(fast, "rest"), med(real, "rest")))
    say("  time scale 1 over fast: %.2fx in all, %.2fx less the duties, %.2fx the job threads, %.2fx the "
        "creation jobs, %.2fx net of the idle daemon, %.2fx without the TLS connections, %.2fx without them "
        "and net of the idle daemon" % (
            med(real, "ir") / med(fast, "ir"), med(real, "less_duty") / med(fast, "less_duty"),
            med(real, "worker") / med(fast, "worker"), med(real, "jobs") / med(fast, "jobs"),
            med(real, "net") / med(fast, "ir"), med(real, "no_tls") / med(fast, "no_tls"),
            med(real, "net_no_tls") / med(fast, "no_tls")))


def main():
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("bench_instr: valgrind not installed, skipped")
        return
    say("proxd instructions per creation (callgrind Ir): %d x ubuntu, 5 pvesim nodes, "
        "time scale 1 against %g" % (N, FAST))
    say("git %s, %s" % (subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip(),
                        time.strftime("%Y-%m-%d %H:%M:%S")))
    say()
    mode = os.environ.get("BENCH_WARM", "both")
    kinds = {"0": [False], "only": [True]}.get(mode, [False, True])
    for warm in kinds:
        fast, real = [], []
        for k in range(ROUNDS):
            tag = "%s%d" % ("w" if warm else "c", k)
            # time scale 1 first: the fast run is then counted in a window
            # as long as the scale-1 run's too
            real.append(one_run(1.0, "real" + tag, warm))
            fast.append(one_run(FAST, "fast" + tag, warm, real[-1]["run_s"] if WINDOW else 0.0))
        report(fast, real, "warm: the daemon's second batch" if warm else "cold: a new daemon's first batch")
        say()
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
