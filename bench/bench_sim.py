#!/usr/bin/python3
"""Benchmark of pvesim at fleet scale (issue 16; not a test: it reports its
targets and never fails the build). `make bench` runs it against the release
build (build/pvesim); results go to stdout and bench/results/sim.txt.

The fleets come from tests/lib/fleet.py (a fleet file and a state file
read at start, the fast way to seed pvesim). pvesim runs with
--check-returns, as in the tests.

1. 10,000 VMs on 5 nodes: start-up time (exec -> port map printed, which
   includes loading the state file); GET /cluster/resources (all types, and
   type=vm), GET /nodes/sv1/qemu and GET /nodes/sv1/tasks driven by wrk
   (-t THREADS -c CONNS -d DURATION --latency over keep-alive, token auth),
   median of RUNS runs: requests/s and p99. Target for /cluster/resources:
   >= 200 requests/s on 2 cores with p99 < 50 ms (wrk shares the 2 cores),
   judged on a run with LAT_CONNS (4) connections polling back to back (a
   few readers such as proxd; with 16 connections queueing alone makes the
   mean latency 16 / throughput); the CONNS run shows the saturation
   throughput. pvesim's and wrk's CPU per answer are reported.
   BENCH_SIM_BASELINE=/path/to/an/older/pvesim: the /cluster/resources runs
   alternate, run by run, with that binary on the same fleet, and the ratio
   of the medians is reported (the machine is shared: a ratio measured in
   the same minutes says more than a figure).
2. 100,000 VMs on 100 nodes: start-up time (target < 5 s); time per answer
   of /cluster/resources and type=vm (median of SEQ sequential requests,
   target < 1 s); /nodes/sv1/qemu; GET /_sim/state (time and size).
3. Memory at both sizes: VmRSS after start, after 10 answers of
   /cluster/resources and after 1,000 (MEM_REQS), over 2 keep-alive
   connections. Target: < 1 GiB at 100,000 VMs and no growth from 10 to
   1,000 answers (we report the ratio; up to 10 % is noise).
4. /_sim/violations stays empty.

Environment: PVESIM, PVESIM_SCHEMA_DIR, BENCH_SIM_RUNS (3),
BENCH_SIM_DURATION (10s), BENCH_SIM_THREADS (2), BENCH_SIM_CONNS (16),
BENCH_SIM_LAT_CONNS (4), BENCH_SIM_BASELINE, BENCH_SIM_SEQ (5), BENCH_SIM_MEM_REQS (1000), BENCH_SIM_BIG (100000),
BENCH_SIM_BIG_NODES (100), BENCH_SIM_SMALL (10000), BENCH_SIM_ONLY
(small|big: one part), BENCH_SIM_NO_RESULTS=1 (do not write the file).
"""
import http.client
import json
import os
import re
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PVESIM", os.path.join(ROOT, "build", "pvesim"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib import fleet as simfleet  # noqa: E402
from lib.env import PVESIM  # noqa: E402
from lib.sim import Sim  # noqa: E402

RUNS = int(os.environ.get("BENCH_SIM_RUNS", "3"))
DURATION = os.environ.get("BENCH_SIM_DURATION", "10s")
THREADS = int(os.environ.get("BENCH_SIM_THREADS", "2"))
CONNS = int(os.environ.get("BENCH_SIM_CONNS", "16"))
LAT_CONNS = int(os.environ.get("BENCH_SIM_LAT_CONNS", "4"))
BASELINE = os.environ.get("BENCH_SIM_BASELINE", "")
SEQ = int(os.environ.get("BENCH_SIM_SEQ", "5"))
MEM_REQS = int(os.environ.get("BENCH_SIM_MEM_REQS", "1000"))
BIG = int(os.environ.get("BENCH_SIM_BIG", "100000"))
BIG_NODES = int(os.environ.get("BENCH_SIM_BIG_NODES", "100"))
SMALL = int(os.environ.get("BENCH_SIM_SMALL", "10000"))
ONLY = os.environ.get("BENCH_SIM_ONLY", "")
RESULTS = os.path.join(ROOT, "bench", "results", "sim.txt")
TOKEN_ID = "root@pam!bench"
TOKEN_SECRET = "8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"
AUTH = "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)
MiB = 1024 * 1024

out_lines = []


def say(line=""):
    print(line, flush=True)
    out_lines.append(line)


class BenchSim(Sim):
    """lib.sim's pvesim on a fleet and state file, timed from exec to its
    port map (self.startup), with the process's memory and CPU, and GETs
    through http.client."""

    def __init__(self, fleet, state_dir, binary=PVESIM):
        t0 = time.monotonic()
        super().__init__(nodes=None, time_scale=0.02, state_dir=state_dir, token_id=TOKEN_ID,
                         token_secret=TOKEN_SECRET, password=None, extra=["--fleet", fleet],
                         binary=binary)
        self.startup = time.monotonic() - t0
        self.port = self.entry

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_s(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")

    def conn(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=120)

    def get(self, c, path, api=True):
        c.request("GET", ("/api2/json" if api else "") + path, headers={"Authorization": AUTH})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("GET %s -> %d %s" % (path, r.status, body[:300]))
        return body

    def stop(self):
        Sim.stop(self, check_clean=False, timeout=60)


def wrk_once(sim, path, conns):
    """One wrk run: requests/s, p99 (ms), requests, pvesim CPU s, wrk CPU s."""
    url = "https://127.0.0.1:%d/api2/json%s" % (sim.port, path)
    cpu0, ru0 = sim.cpu_s(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["nice", "-n", "0", "wrk", "-t%d" % THREADS, "-c%d" % conns, "-d" + DURATION,
                          "--latency", "--timeout", "30s", "-H", "Authorization: " + AUTH, url],
                         capture_output=True, text=True, check=True).stdout
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sim.cpu_s() - cpu0
    wcpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    if "Non-2xx" in out:
        raise RuntimeError("wrk saw errors on %s:\n%s" % (path, out))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    v = float(m.group(1))
    p99 = v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    n = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, p99, n, cpu, wcpu


def wrk(sims, path, conns):
    """RUNS wrk runs against each sim, alternating: per sim the medians of
    requests/s and p99 (ms), pvesim and wrk CPU ms per answer."""
    runs = [[] for _ in sims]
    for _ in range(RUNS):
        for i, sim in enumerate(sims):
            runs[i].append(wrk_once(sim, path, conns))
    out = []
    for r in runs:
        n = max(1, sum(x[2] for x in r))
        out.append((statistics.median(x[0] for x in r), statistics.median(x[1] for x in r),
                    1000 * sum(x[3] for x in r) / n, 1000 * sum(x[4] for x in r) / n))
    return out


def seq_time(sim, path, n=SEQ):
    """Median wall time per answer, pvesim CPU per answer, answer size."""
    c = sim.conn()
    ts, size = [], 0
    cpu0 = sim.cpu_s()
    for _ in range(n):
        t0 = time.monotonic()
        size = len(sim.get(c, path))
        ts.append(time.monotonic() - t0)
    cpu = (sim.cpu_s() - cpu0) / n
    c.close()
    return statistics.median(ts), cpu, size


def hammer(sim, path, n, conns=2):
    """n GETs over `conns` keep-alive connections."""
    errs = []

    def run(k):
        try:
            c = sim.conn()
            for _ in range(k):
                sim.get(c, path)
            c.close()
        except Exception as e:  # reported below
            errs.append(e)
    ths = [threading.Thread(target=run, args=(n // conns + (i < n % conns),)) for i in range(conns)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    if errs:
        raise errs[0]


def memory(sim, label, path="/cluster/resources"):
    r0 = sim.rss()
    hammer(sim, path, 10)
    r10 = sim.rss()
    t0 = time.monotonic()
    hammer(sim, path, MEM_REQS)
    dt = time.monotonic() - t0
    r1k = sim.rss()
    ok = r1k <= r10 * 1.10
    say("  memory (%s): VmRSS after start %.0f MiB, after 10 answers %.0f MiB, after %d more %.0f MiB"
        " (x%.2f, %.1f s)  %s" % (label, r0 / MiB, r10 / MiB, MEM_REQS, r1k / MiB, r1k / r10, dt,
                                 "PASS" if ok else "FAIL (target: no growth)"))
    return r1k


def violations(sim):
    c = sim.conn()
    v = json.loads(sim.get(c, "/_sim/violations", api=False))
    c.close()
    say("  /_sim/violations: %s" % ("empty  PASS" if v == [] else "%d  FAIL %s" % (len(v), v[:1])))


def part_small(work):
    fleet, state_dir, nodes = simfleet.write(os.path.join(work, "small"), SMALL, 5)
    sim = BenchSim(fleet, state_dir)
    base = None
    try:
        say("%d VMs on %d nodes: start-up %.2f s (pvesim CPU %.2f s), VmRSS %.0f MiB" % (
            SMALL, len(nodes), sim.startup, sim.cpu_s(), sim.rss() / MiB))
        if BASELINE:
            base_state = os.path.join(work, "small", "base-state")
            shutil.copytree(state_dir, base_state)
            base = BenchSim(fleet, base_state, BASELINE)
            say("  baseline %s alternates with this build run by run" % BASELINE)
        c = sim.conn()
        sizes = {p: len(sim.get(c, p)) for p in ("/cluster/resources", "/cluster/resources?type=vm",
                                                 "/nodes/sv1/qemu", "/nodes/sv1/tasks")}
        c.close()
        for p in ("/cluster/resources", "/cluster/resources?type=vm", "/nodes/sv1/qemu", "/nodes/sv1/tasks"):
            target = p.startswith("/cluster/resources")
            for conns in ((LAT_CONNS, CONNS) if target else (CONNS,)):
                sims = [sim, base] if target and base else [sim]
                res = wrk(sims, p, conns)
                rps, p99, cpu, wcpu = res[0]
                verdict = ""
                if target and conns == LAT_CONNS:
                    verdict = ("PASS" if rps >= 200 and p99 < 50 else "FAIL") + " (target >= 200 req/s, p99 < 50 ms)"
                say("  GET %-28s -c%-3d %8.1f req/s  p99 %8.2f ms  %7d bytes  CPU/answer pvesim %.2f ms, wrk %.2f ms  %s"
                    % (p, conns, rps, p99, sizes[p], cpu, wcpu, verdict))
                if len(res) > 1:
                    brps, bp99, bcpu, bwcpu = res[1]
                    say("      baseline, same minutes:  %8.1f req/s  p99 %8.2f ms  CPU/answer pvesim %.2f ms, wrk %.2f ms"
                        "  -> ratio %.2f x req/s, %.2f x pvesim CPU" % (brps, bp99, bcpu, bwcpu, rps / brps, cpu / bcpu))
        if base:
            base.stop()
            base = None
        memory(sim, "%d VMs" % SMALL)
        violations(sim)
    finally:
        if base:
            base.stop()
        sim.stop()


def part_big(work):
    fleet, state_dir, nodes = simfleet.write(os.path.join(work, "big"), BIG, BIG_NODES)
    sim = BenchSim(fleet, state_dir)
    try:
        say("%d VMs on %d nodes: start-up %.2f s (pvesim CPU %.2f s)  %s, VmRSS %.0f MiB" % (
            BIG, len(nodes), sim.startup, sim.cpu_s(), "PASS" if sim.startup < 5 else "FAIL (target < 5 s)",
            sim.rss() / MiB))
        for p in ("/cluster/resources", "/cluster/resources?type=vm"):
            t, cpu, size = seq_time(sim, p)
            say("  GET %-30s %8.3f s per answer (median of %d, pvesim CPU %.3f s)  %9d bytes  %s"
                % (p, t, SEQ, cpu, size, "PASS" if t < 1 else "FAIL (target < 1 s)"))
        for p in ("/nodes/sv1/qemu", "/nodes/sv1/tasks"):
            t, cpu, size = seq_time(sim, p, 20)
            say("  GET %-30s %8.4f s per answer (median of 20, pvesim CPU %.4f s)  %9d bytes"
                % (p, t, cpu, size))
        c = sim.conn()
        t0 = time.monotonic()
        size = len(sim.get(c, "/_sim/state", api=False))
        say("  GET /_sim/state %.3f s, %d bytes" % (time.monotonic() - t0, size))
        c.close()
        rss = memory(sim, "%d VMs" % BIG)
        say("  VmRSS at %d VMs: %.0f MiB  %s" % (BIG, rss / MiB, "PASS" if rss < 1024 * MiB else "FAIL (target < 1 GiB)"))
        violations(sim)
    finally:
        sim.stop()


def ensure_wrk():
    if shutil.which("wrk"):
        return
    print("== wrk is missing: installing it (apt-get install -y wrk)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def main():
    ensure_wrk()
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    say("pvesim fleet-scale benchmark, %s, git %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), git))
    say("machine: %d CPUs, shared; wrk (-t%d -c%d and -c%d, -d%s --latency, median of %d) and pvesim on the"
        " same cores; load average before: %s" % (os.cpu_count(), THREADS, LAT_CONNS, CONNS, DURATION, RUNS,
                                                  open("/proc/loadavg").read().split()[:3]))
    work = tempfile.mkdtemp(prefix="pvesim-bench-")
    try:
        if ONLY in ("", "small"):
            part_small(work)
        if ONLY in ("", "big"):
            part_big(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("load average after: %s" % open("/proc/loadavg").read().split()[:3])
    if not ONLY and not os.environ.get("BENCH_SIM_NO_RESULTS"):
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            f.write("\n".join(out_lines) + "\n")


if __name__ == "__main__":
    main()
