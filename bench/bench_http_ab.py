#!/usr/bin/python3
"""A/B of proxd builds' HTTP serving, side by side on one pvesim (not a
test; for comparing the HTTP server layer under a noisy machine): all
daemons run at once and wrk alternates between them (the order rotated each
round), so that load from elsewhere falls on all alike.

usage: bench_http_ab.py [--rounds N] [--log-level L] PROXD_A PROXD_B [PROXD_C ...]
Endpoints: GET /healthz (the server alone) and GET /v1/vms/999999 with an
admin token (404: authentication and one store read). wrk -t2 -c64 -d4s,
keep-alive. Prints each run and the medians and ratios to A. The daemons
log at debug (the tests' configuration: a line per request) unless
--log-level says otherwise.
"""
import argparse
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

PATHS = ("/healthz", "/v1/vms/999999")


def wrk(url, token):
    out = subprocess.run(["wrk", "-t2", "-c64", "-d4s", "-H", "Authorization: Bearer " + token,
                          url], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--log-level", default=None)
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    if len(a.bins) < 2:
        ap.error("two builds at least")
    sim = Sim()
    daemons = []
    for b in a.bins:
        lp.PROXD = b
        px = lp.Proxd(sim)
        if a.log_level:
            with open(px.conf) as f:
                conf = f.read().replace("log_level = debug", "log_level = " + a.log_level)
            with open(px.conf, "w") as f:
                f.write(conf)
        tok = px.token("ops", "admin")
        px.start()
        daemons.append((px, tok))
    names = "ABCDEFGH"
    res = {}
    for path in PATHS:
        for r in range(a.rounds):
            k = r % len(daemons)
            for i in list(range(k, len(daemons))) + list(range(k)):
                px, tok = daemons[i]
                v = wrk("http://127.0.0.1:%d%s" % (px.port, path), tok)
                res.setdefault((path, i), []).append(v)
                print("%-16s %s run %d: %8.0f req/s" % (path, names[i], r + 1, v), flush=True)
    for i, b in enumerate(a.bins):
        print("%s = %s" % (names[i], b))
    for path in PATHS:
        med = [statistics.median(res[(path, i)]) for i in range(len(daemons))]
        print("GET %-16s median %s  (%d runs each)" % (path, "  ".join(
            "%s %8.0f%s" % (names[i], m, "" if i == 0 else " (%.2fx)" % (m / med[0]))
            for i, m in enumerate(med)), a.rounds))
    for px, _ in daemons:
        px.stop()


if __name__ == "__main__":
    main()
