"""Helpers for pvesim's black-box tests: start a simulator on free loopback
ports, talk to its API with plain `requests`, and check at the end that every
result it served matched the official schema (pvesim --check-returns).

Each test file is a plain script run by ctest (/usr/bin/python3, Debian's
python3-requests and python3-proxmoxer). It prints one line per case and a
closing `N passed, N failed` line; the exit status is non-zero on failure.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import requests
import urllib3

urllib3.disable_warnings()

PVESIM = os.environ.get("PVESIM", os.path.join(os.path.dirname(__file__), "../../build/asan/pvesim"))
TOKEN_ID = "root@pam!ci"
TOKEN_SECRET = "8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"
PASSWORD = "SECRET"


def free_port_block(n):
    """A base port such that base..base+n-1 are free on 127.0.0.1 (best effort)."""
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
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def wait_for(cond, deadline=10.0, interval=0.01, what="condition"):
    """Poll cond() until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + deadline
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class Sim:
    """A running pvesim. Use as a context manager."""

    def __init__(self, nodes="sv1,sv2,sv3,sv4,sv5", standalone=False, time_scale=0.02,
                 pve_version=None, extra=None, state_dir=None, auth_delay=0):
        n = len(nodes.split(","))
        self.base = free_port_block(n + 2)
        self.standalone = standalone
        args = [PVESIM, "--listen", "127.0.0.1:%d" % self.base, "--nodes", nodes,
                "--password", PASSWORD, "--token", "%s=%s" % (TOKEN_ID, TOKEN_SECRET),
                "--time-scale", str(time_scale), "--auth-delay", str(auth_delay),
                "--check-returns"]
        if standalone:
            args.append("--standalone")
        if pve_version:
            args += ["--pve-version", str(pve_version)]
        if state_dir:
            args += ["--state-dir", state_dir]
        args += extra or []
        self.args = args
        self.node_names = nodes.split(",")
        self.proc = None
        self.ports = {}
        # another test may take a port of our block between the check and the
        # bind: pick a new block and try again
        for attempt in range(5):
            try:
                self.start()
                break
            except RuntimeError:
                if attempt == 4 or state_dir:
                    raise
                self.base = free_port_block(n + 2)
                self.args[self.args.index("--listen") + 1] = "127.0.0.1:%d" % self.base

    def start(self):
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.errlog, text=True)
        # pvesim prints its port map, one line per listener, then "fingerprint ..."
        self.ports = {}
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pvesim exited early:\n" + self.stderr())
            parts = line.split()
            if parts[0] == "node":
                self.ports[parts[1]] = int(parts[2].rsplit(":", 1)[1])
            elif parts[0] in ("cluster", "control"):
                self.entry = int(parts[1].rsplit(":", 1)[1])
            elif parts[0] == "fingerprint":
                self.fingerprint = parts[1]
                break
        return self

    def stderr(self):
        self.errlog.seek(0)
        return self.errlog.read().decode(errors="replace")

    def stop(self, check_clean=True):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("pvesim did not stop on SIGTERM")
        rc = self.proc.returncode
        self.proc.stdout.close()
        if check_clean and rc != 0:
            raise AssertionError("pvesim exited with %s:\n%s" % (rc, self.stderr()[-4000:]))

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        try:
            if et is None:
                v = self.ctl("GET", "/violations")
                assert v == [], "results that do not match the schema: %s" % v
        finally:
            self.stop(check_clean=et is None)

    # ---- HTTP ----
    def url(self, path, port=None):
        return "https://127.0.0.1:%d%s" % (port or self.entry, path)

    def raw(self, method, path, port=None, **kw):
        kw.setdefault("verify", False)
        kw.setdefault("timeout", 30)
        return requests.request(method, self.url(path, port), **kw)

    def api(self, method, path, port=None, params=None, data=None, json_body=None, headers=None,
            auth="token", **kw):
        """Call /api2/json<path>; returns the requests.Response."""
        h = dict(headers or {})
        if auth == "token":
            h["Authorization"] = "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)
        elif isinstance(auth, dict):  # a login result
            h["Cookie"] = "PVEAuthCookie=" + auth["ticket"]
            if method != "GET":
                h["CSRFPreventionToken"] = auth["CSRFPreventionToken"]
        return self.raw(method, "/api2/json" + path, port=port, params=params, data=data,
                        json=json_body, headers=h, **kw)

    def data(self, method, path, **kw):
        """Call and return `data`, asserting a 200."""
        r = self.api(method, path, **kw)
        assert r.status_code == 200, "%s %s -> %d %s %s" % (method, path, r.status_code, r.reason, r.text)
        return r.json()["data"]

    def login(self, username="root@pam", password=PASSWORD, **kw):
        r = self.raw("POST", "/api2/json/access/ticket", data={"username": username, "password": password}, **kw)
        assert r.status_code == 200, (r.status_code, r.reason)
        return r.json()["data"]

    def ctl(self, method, path, body=None, port=None):
        r = self.raw(method, "/_sim" + path, port=port, json=body)
        assert r.status_code in (200, 201), "%s /_sim%s -> %d %s" % (method, path, r.status_code, r.text)
        return r.json()

    def wait_task(self, node, upid, deadline=30.0, port=None):
        """Poll a task until it stops; return its status object."""
        def done():
            st = self.data("GET", "/nodes/%s/tasks/%s/status" % (node, upid), port=port)
            return st if st["status"] == "stopped" else None
        return wait_for(done, deadline, what="task " + upid)

    def state(self):
        return self.ctl("GET", "/state")

    def vm(self, vmid, node=None):
        for v in self.state()["vms"]:
            if v["vmid"] == vmid and (node is None or v["node"] == node):
                return v
        return None


_results = {"passed": 0, "failed": 0}


def case(fn):
    """Run one test case, report it, keep going."""
    name = fn.__name__
    t0 = time.monotonic()
    try:
        fn()
        _results["passed"] += 1
        print("ok   %-50s %.2fs" % (name, time.monotonic() - t0), flush=True)
    except Exception:
        _results["failed"] += 1
        print("FAIL %s" % name, flush=True)
        traceback.print_exc()
    return fn


def finish():
    print("%d passed, %d failed" % (_results["passed"], _results["failed"]), flush=True)
    sys.exit(1 if _results["failed"] else 0)
