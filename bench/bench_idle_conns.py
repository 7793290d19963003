#!/usr/bin/python3
"""Memory of proxd per idle keep-alive connection (not a test: it reports
and never fails the build). `make bench` runs it against the release build;
results go to stdout and bench/results/idle_conns.txt.

Each of ROUNDS rounds starts a fresh proxd (on a pvesim), reads its VmRSS,
opens CONNS connections from 4 loopback source addresses (the per-address
limit is 512), sends GET /healthz on each and reads the answer, so every
connection has served one request and now waits idle (keep-alive), then
reads VmRSS again: (after - before) / CONNS. The median of the rounds is
quoted. Environment: BENCH_IDLE_CONNS (2000), BENCH_IDLE_ROUNDS (3).
"""
import os
import resource
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PVESIM", os.path.join(ROOT, "build", "pvesim"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from lib.proxd import Proxd  # noqa: E402
from lib.sim import Sim  # noqa: E402

CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "2000"))
ROUNDS = int(os.environ.get("BENCH_IDLE_ROUNDS", "3"))
RESULTS = os.path.join(ROOT, "bench", "results", "idle_conns.txt")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def one_round(sim):
    px = Proxd(sim)
    px.start()
    pid = px.proc.pid
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    for i in range(CONNS):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (2 + i % 4), 0))
        s.connect(("127.0.0.1", px.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    for s in socks:
        got = b""
        while b"}" not in got:
            chunk = s.recv(4096)
            assert chunk, "a connection was closed"
            got += chunk
    time.sleep(0.5)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    px.stop()
    return before, after


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sim = Sim()
    out, per = [], []
    out.append("proxd memory per idle keep-alive connection, %s" %
               time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    for r in range(ROUNDS):
        before, after = one_round(sim)
        per.append((after - before) * 1024 / CONNS)
        out.append("  round %d: VmRSS %d KiB -> %d KiB with %d idle connections: %.0f bytes each"
                   % (r + 1, before, after, CONNS, per[-1]))
    out.append("median: %.0f bytes per idle connection" % statistics.median(per))
    print("\n".join(out))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
