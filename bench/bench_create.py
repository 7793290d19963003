#!/usr/bin/python3
"""Benchmark of VM creation (not a test: it reports targets, it never fails
the build). `make bench` runs it against the release build (build/pvesim,
build/proxd); results go to stdout and bench/results/create.txt.

1. Throughput: pvesim with 5 nodes at --time-scale TS; N creations of
   ubuntu VMs with a 20 GB disk, proxd's default placement, queued before
   the daemon starts. Makespan (daemon start -> last job finished) against
   the lower bound the storage bandwidth allows: every full clone copies its
   template's disk, so no schedule beats
       sum(template bytes) / sum(node bandwidths) * TS   (real seconds).
   Proxmox calls per creation (GET /_sim/calls before/after), split into task
   polls (GET .../tasks/{upid}/status and /log) and the rest; proxd's CPU time
   per creation (utime+stime of the daemon from /proc/<pid>/stat); the time
   to queue the creations (proxd create, 4 at a time); time to running per
   creation (daemon start -> job done), p50 and p99. Median of RUNS runs,
   on identical nodes and on an uneven fleet (1000/500/500/250/250 MiB/s,
   the same total), then one run with a mix of templates (ubuntu, windows).
2. Real speed: TS = 1 with N_REAL creations: task polls per creation per
   10 s of task time (task durations from the nodes' task lists), and CPU
   per creation against the fast runs.
3. A blackholed node: sequential creations (one at a time) with all nodes
   up, then with sv1 blackholed (every call to it hangs for pveproxy's 30 s);
   per-creation latency (job created_at -> finished_at from the database).
   The first creation after the blackhole may pay for finding out; the ones
   after it should cost what they cost before.

Environment: PVESIM, PROXD (default build/pvesim, build/proxd),
PVESIM_SCHEMA_DIR, BENCH_TIME_SCALE (0.02), BENCH_N (200), BENCH_RUNS (3),
BENCH_WORKERS (proxd's default), BENCH_N_REAL (20; 0 skips part 2).
"""
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests
import urllib3

urllib3.disable_warnings()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PVESIM = os.environ.get("PVESIM", os.path.join(ROOT, "build", "pvesim"))
PROXD = os.environ.get("PROXD", os.path.join(os.path.dirname(PVESIM), "proxd"))
TS = float(os.environ.get("BENCH_TIME_SCALE", "0.02"))
N = int(os.environ.get("BENCH_N", "200"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "0"))  # 0: proxd's default
NODES = ["sv1", "sv2", "sv3", "sv4", "sv5"]
TOKEN = "root@pam!bench=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"
OS_INDEX = {"ubuntu": 0, "debian": 1, "centos": 2, "windows": 3}
N_REAL = int(os.environ.get("BENCH_N_REAL", "20"))
UNEVEN = [1000, 500, 500, 250, 250]  # MiB/s, the same total as 5 x 500
TARGET_MAKESPAN = 1.10
TARGET_UNEVEN = 1.15
TARGET_CALLS = 8
TARGET_REAL_POLLS = 2.0  # per creation per 10 s of task time
RESULTS = os.path.join(ROOT, "bench", "results", "create.txt")

out_lines = []



def _free_port():
    """proxd serves its API too: each test's daemon needs its own port."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def say(line=""):
    print(line, flush=True)
    out_lines.append(line)


def schema_env():
    # pvesim finds its bundled schema data itself (beside the binary, or
    # PVESIM_SCHEMA_DIR when set); nothing outside the repository is read.
    return dict(os.environ)


def free_port_block(n):
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n >= 65000:
            continue
        ok = True
        for p in range(base, base + n):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                t.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port block")


def wait_for(cond, deadline, interval, what):
    end = time.monotonic() + deadline
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(interval)


class Sim:
    def __init__(self, ts=None):
        ts = TS if ts is None else ts
        self.base = free_port_block(len(NODES) + 2)
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [PVESIM, "--listen", "127.0.0.1:%d" % self.base, "--nodes", ",".join(NODES),
             "--token", TOKEN, "--time-scale", str(ts), "--auth-delay", "0", "--log-level", "error"],
            stdout=subprocess.PIPE, stderr=self.errlog, text=True, env=schema_env())
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.errlog.seek(0)
                raise RuntimeError("pvesim exited early: " + self.errlog.read().decode()[-2000:])
            if line.startswith("fingerprint"):
                break
        self.s = requests.Session()

    def ctl(self, method, path, body=None):
        r = self.s.request(method, "https://127.0.0.1:%d/_sim%s" % (self.base, path), json=body,
                           verify=False, timeout=30)
        assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
        return r.json()

    def api(self, path):
        r = self.s.get("https://127.0.0.1:%d/api2/json%s" % (self.base, path), verify=False,
                       timeout=30, headers={"Authorization": "PVEAPIToken=" + TOKEN})
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()["data"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def write_config(path, db, entry, placement=None):
    lines = ["[proxd]", "listen = 127.0.0.1:%d" % _free_port(), "database = sqlite:%s" % db,
             "log_level = info"]
    if placement:
        lines.append("placement = " + placement)
    if WORKERS:
        lines.append("workers = %d" % WORKERS)
    lines += ["",
             "[proxmox]", "token = " + TOKEN, "verify_tls = no", "",
             "[os ubuntu]", "vmid_range = 1000-1999", "", "[os centos]", "vmid_range = 2000-2999", "",
             "[os windows]", "vmid_range = 3000-3999", "", "[os debian]", "vmid_range = 4000-4999", ""]
    for i, n in enumerate(NODES):
        lines += ["[node %s]" % n, "host = 127.0.0.1:%d" % entry, "cluster = pvesim",
                  "storage = local-lvm"]
        lines += ["template.%s = %d" % (o, 8000 + 10 * i + k) for o, k in OS_INDEX.items()]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


class World:
    """A pvesim, a config and a database; the daemon is started on demand."""

    def __init__(self, ts=None, placement=None, bandwidths=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="proxd-bench-")
        self.db = os.path.join(self.tmp.name, "proxd.db")
        self.conf = os.path.join(self.tmp.name, "proxd.conf")
        self.sim = Sim(ts)
        for n, mb in zip(NODES, bandwidths or []):
            # room for every VM on any node: this scenario is about bandwidth,
            # room for every VM on any node (memory, storage): this scenario is
            # about bandwidth, and a fast node must not fill up at 46 VMs
            self.sim.ctl("POST", "/nodes/" + n, {"bandwidth_mb": mb, "memory_gb": 256,
                                                 "storage_gb": {"local-lvm": 4096}})
        write_config(self.conf, self.db, self.sim.base, placement)
        self.daemon = None

    def create(self, name, os_name="ubuntu", disk=20):
        r = subprocess.run([PROXD, "create", "--config", self.conf, "--os", os_name, "--name", name,
                            "--cores", "1", "--memory", "1024", "--disk", str(disk), "--owner",
                            "bench"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("proxd create: %s" % r.stderr)
        return json.loads(r.stdout)["job"]

    def start(self):
        self.log = open(os.path.join(self.tmp.name, "proxd.log"), "ab")
        self.daemon = subprocess.Popen([PROXD, "--config", self.conf], stdout=self.log,
                                       stderr=subprocess.STDOUT)

    def cpu_s(self):
        with open("/proc/%d/stat" % self.daemon.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime is field 14, stime 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def jobs(self, ids=None):
        c = sqlite3.connect(self.db, timeout=30)
        try:
            rows = c.execute("SELECT id, state, node, created_at, finished_at FROM jobs").fetchall()
        finally:
            c.close()
        js = {r[0]: {"state": r[1], "node": r[2], "created": r[3], "finished": r[4]} for r in rows}
        return {k: v for k, v in js.items() if ids is None or k in ids}

    def wait_jobs(self, ids, deadline):
        def done():
            js = self.jobs(ids)
            return js if all(j["state"] in ("done", "failed") for j in js.values()) else None
        return wait_for(done, deadline, 0.05, "%d jobs" % len(ids))

    def close(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.sim.stop()
        self.tmp.cleanup()


def is_poll(key):
    method, path = key.split(" ", 1)
    return method == "GET" and "/tasks/{upid}/" in path and path.rsplit("/", 1)[1] in ("status", "log")


def calls_diff(before, after):
    polls = rest = 0
    per = {}
    for k, v in after["calls"].items():
        d = v - before["calls"].get(k, 0)
        if d <= 0:
            continue
        per[k] = d
        if is_poll(k):
            polls += d
        else:
            rest += d
    return polls, rest, per


def template_sizes(state):
    """bytes of each (node, os) template's boot disk, from its config"""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    sizes = {}
    names = {8000 + 10 * i + k: (n, o) for i, n in enumerate(NODES) for o, k in OS_INDEX.items()}
    for v in state["vms"]:
        if v["vmid"] not in names:
            continue
        disk = v["conf"].get("scsi0", "")
        size = [p for p in disk.split(",") if p.startswith("size=")][0][5:]
        sizes[names[v["vmid"]]] = int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)
    return sizes


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def throughput_run(run, label="", n=None, bandwidths=None, oses=("ubuntu",), ts=None,
                   placement=None):
    n = n or N
    ts = TS if ts is None else ts
    w = World(ts, placement, bandwidths)
    try:
        q0 = time.time()
        with ThreadPoolExecutor(4) as ex:
            ids = list(ex.map(lambda i: w.create("bench-%03d" % i, oses[i % len(oses)]), range(n)))
        queue_s = time.time() - q0
        os_of = {jid: oses[i % len(oses)] for i, jid in enumerate(ids)}
        before = w.sim.ctl("GET", "/calls")
        t0 = time.time()
        w.start()
        cpu0 = w.cpu_s()
        js = w.wait_jobs(set(ids), 600 + 30 * n * ts)
        cpu1 = w.cpu_s()
        after = w.sim.ctl("GET", "/calls")
        state = w.sim.ctl("GET", "/state")
        done = {k: j for k, j in js.items() if j["state"] == "done"}
        makespan = (max(j["finished"] for j in js.values()) / 1000.0) - t0
        sizes = template_sizes(state)
        total = sum(sizes[(j["node"], os_of[k])] for k, j in done.items())
        bw = sum(nd["bandwidth"] for nd in state["nodes"])
        lb = total / bw * ts
        polls, rest, per = calls_diff(before, after)
        spread = {nd: sum(1 for j in done.values() if j["node"] == nd) for nd in NODES}
        ttr = [j["finished"] / 1000.0 - t0 for j in done.values()]
        task_s = 0.0
        for nd in NODES:
            for t in w.sim.api("/nodes/%s/tasks?limit=%d" % (nd, 10 * n)):
                if t.get("endtime") and t.get("type") in ("qmclone", "qmresize", "resize",
                                                           "qmstart", "qmconfig"):
                    task_s += t["endtime"] - t["starttime"]
        r = {"makespan": makespan, "lb": lb, "ratio": makespan / lb, "done": len(done),
             "polls": polls / len(ids), "rest": rest / len(ids), "cpu": (cpu1 - cpu0) / len(ids),
             "per": per, "spread": spread, "bytes": total, "bw": bw, "queue": queue_s,
             "ttr50": pct(ttr, 50) if ttr else 0, "ttr99": pct(ttr, 99) if ttr else 0,
             "task_s": task_s / len(ids)}
        say("%srun %d: %d/%d done in %.2fs, lower bound %.2fs (%.1f GiB over %.0f MiB/s x %g), "
            "ratio %.3f; calls/creation %.2f polls + %.2f other; CPU %.2f ms/creation; per node %s; "
            "queued in %.1fs; to running p50 %.2fs p99 %.2fs" % (
                label, run + 1, len(done), len(ids), makespan, lb, total / 2**30, bw / 2**20, ts,
                r["ratio"], r["polls"], r["rest"], r["cpu"] * 1000, spread, queue_s, r["ttr50"],
                r["ttr99"]))
        return r
    finally:
        w.close()


def latency_phase():
    w = World()
    try:
        # sv1 has the most free memory, so spread placement tries it first:
        # the first creation after the blackhole meets it
        w.sim.ctl("POST", "/nodes/sv1", {"memory_gb": 256})
        w.start()
        # let the daemon come up before timing anything
        warm = w.create("warm")
        w.wait_jobs({warm}, 120)

        def one(name):
            jid = w.create(name)
            j = w.wait_jobs({jid}, 200)[jid]
            return (j["finished"] - j["created"]) / 1000.0, j["state"], j["node"]
        base = [one("base-%d" % i) for i in range(5)]
        w.sim.ctl("POST", "/nodes/sv1", {"state": "blackhole"})
        bh = [one("bh-%d" % i) for i in range(6)]
        return base, bh
    finally:
        w.close()


def main():
    for p in (PVESIM, PROXD):
        if not os.access(p, os.X_OK):
            sys.exit("bench: %s is missing (make build)" % p)
    say("proxd creation benchmark: %d x ubuntu (20 GB disk), 5 pvesim nodes, proxd's default "
        "placement, --time-scale %g" % (N, TS))
    say("git %s, %s" % (subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip(),
                        time.strftime("%Y-%m-%d %H:%M:%S")))
    say("%d CPUs, load average at start %.2f (pvesim and proxd share the machine with whatever "
        "else runs)" % (os.cpu_count(), os.getloadavg()[0]))
    say()
    runs = [throughput_run(i, "identical ") for i in range(RUNS)]
    med = lambda k, rs=runs: statistics.median(r[k] for r in rs)  # noqa: E731
    uneven = [throughput_run(i, "uneven ", bandwidths=UNEVEN) for i in range(RUNS)]
    say()
    mixed = throughput_run(0, "mixed ubuntu+windows ", oses=("ubuntu", "windows"))
    ordered = throughput_run(0, "identical, placement = ordered ", placement="ordered")
    extra = None
    if not WORKERS and os.environ.get("BENCH_EXTRA", "1") == "1":
        # one run with more workers than clone slots (5 nodes x 2), for comparison
        globals()["WORKERS"] = 16
        say("with workers = 16 (one run, for comparison):")
        extra = throughput_run(0)
        globals()["WORKERS"] = 0
    real = throughput_run(0, "time scale 1 ", n=N_REAL, ts=1.0) if N_REAL else None
    say()
    say("calls in run 1 (all creations): %s" % json.dumps(runs[0]["per"], sort_keys=True))
    if real:
        say("calls at time scale 1: %s" % json.dumps(real["per"], sort_keys=True))
    say()
    base, bh = latency_phase()
    fmt = lambda xs: ", ".join("%.2fs%s" % (x[0], "" if x[1] == "done" else " " + x[1]) + "@" + x[2]  # noqa: E731
                               for x in xs)
    say("latency, all nodes up (sequential): %s" % fmt(base))
    say("latency, sv1 blackholed:           %s" % fmt(bh))
    base_med = statistics.median(x[0] for x in base)
    after_first = [x[0] for x in bh[1:]]
    bh_med, bh_max = statistics.median(after_first), max(after_first)
    say()
    ratio, uratio = med("ratio"), med("ratio", uneven)
    ok1 = ratio <= TARGET_MAKESPAN
    ok1u = uratio <= TARGET_UNEVEN
    ok2 = med("rest") <= TARGET_CALLS
    # "loses no time": no creation after the first is slower than the slowest
    # creation with all nodes up, give or take the daemon's 200 ms claim tick
    ok3 = bh_max <= max(x[0] for x in base) + 0.25 and all(x[1] == "done" for x in bh)
    say("RESULTS (median of %d runs, workers = %s)" % (
        len(runs), WORKERS or "proxd's default (sized from the clone slots)"))
    say("  identical nodes: makespan %.2fs, lower bound %.2fs, ratio %.3f (target <= %.2f): %s" % (
        med("makespan"), med("lb"), ratio, TARGET_MAKESPAN, "PASS" if ok1 else "FAIL"))
    say("  uneven fleet %s MiB/s: makespan %.2fs, lower bound %.2fs, ratio %.3f (target <= %.2f): "
        "%s; per node %s" % ("/".join(map(str, UNEVEN)), med("makespan", uneven),
                              med("lb", uneven), uratio, TARGET_UNEVEN, "PASS" if ok1u else "FAIL",
                              uneven[0]["spread"]))
    say("  mixed templates: ratio %.3f; placement = ordered: ratio %.3f" % (
        mixed["ratio"], ordered["ratio"]))
    say("  Proxmox calls per creation: %.2f task polls, %.2f other (target other <= %d): %s" % (
        med("polls"), med("rest"), TARGET_CALLS, "PASS" if ok2 else "FAIL"))
    if extra:
        say("  (workers = 16: ratio %.3f)" % extra["ratio"])
    say("  proxd CPU time per creation: %.2f ms" % (med("cpu") * 1000))
    say("  queueing %d creations (proxd create, 4 at a time): %.1fs; to running p50 %.2fs, p99 "
        "%.2fs" % (N, med("queue"), med("ttr50"), med("ttr99")))
    if real:
        per10 = real["polls"] / (real["task_s"] / 10.0) if real["task_s"] else float("inf")
        say("  time scale 1 (%d creations): %.2f task polls per creation over %.1f s of task time "
            "= %.2f per 10 s (target <= %.1f): %s; CPU %.2f ms/creation (fast scale %.2f)" % (
                N_REAL, real["polls"], real["task_s"], per10, TARGET_REAL_POLLS,
                "PASS" if per10 <= TARGET_REAL_POLLS else "FAIL", real["cpu"] * 1000,
                med("cpu") * 1000))
    say("  sv1 blackholed: first creation %.2fs; after it median %.2fs, max %.2fs; all up median "
        "%.2fs (target: no time lost after the first): %s" % (
            bh[0][0], bh_med, bh_max, base_med, "PASS" if ok3 else "FAIL"))
    say("  load average at the end %.2f" % os.getloadavg()[0])
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write("\n".join(out_lines) + "\n")
    print("written to %s" % os.path.relpath(RESULTS, os.getcwd()))


if __name__ == "__main__":
    main()
