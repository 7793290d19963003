#!/usr/bin/python3
"""A/B of two proxd builds' HTTP serving, side by side on one pvesim (not a
test; for comparing the HTTP server layer under a noisy machine): both
daemons run at once and wrk alternates between them (order swapped each
round), so that load from elsewhere falls on both alike.

usage: bench_http_ab.py PROXD_A PROXD_B [ROUNDS]
Endpoints: GET /healthz (the server alone) and GET /v1/vms/999999 with an
admin token (404: authentication and one store read). wrk -t2 -c64 -d4s,
keep-alive. Prints each run and the medians and B/A ratios.
"""
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PVESIM", os.path.join(ROOT, "build", "pvesim"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import lib.proxd as lp  # noqa: E402
from lib.sim import Sim  # noqa: E402


def wrk(url, token):
    out = subprocess.run(["wrk", "-t2", "-c64", "-d4s", "-H", "Authorization: Bearer " + token,
                          url], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    a_bin, b_bin = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    sim = Sim()
    daemons = []
    for b in (a_bin, b_bin):
        lp.PROXD = b
        px = lp.Proxd(sim)
        tok = px.token("ops", "admin")
        px.start()
        daemons.append((px, tok))
    res = {}
    for path in ("/healthz", "/v1/vms/999999"):
        for r in range(rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                px, tok = daemons[i]
                v = wrk("http://127.0.0.1:%d%s" % (px.port, path), tok)
                res.setdefault((path, i), []).append(v)
                print("%-16s %s run %d: %8.0f req/s" % (path, "AB"[i], r + 1, v), flush=True)
    print("A = %s\nB = %s" % (a_bin, b_bin))
    for path in ("/healthz", "/v1/vms/999999"):
        ma, mb = statistics.median(res[(path, 0)]), statistics.median(res[(path, 1)])
        print("GET %-16s median A %8.0f  B %8.0f req/s  B/A %.2f  (%d runs each)"
              % (path, ma, mb, mb / ma, rounds))
    for px, _ in daemons:
        px.stop()


if __name__ == "__main__":
    main()
