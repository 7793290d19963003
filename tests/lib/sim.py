"""A running pvesim for tests and benchmarks: started on a free block of
loopback ports, ready once it has printed its port map on stdout (one line
per listener, then "fingerprint ..."), talked to with plain `requests`, and
on a clean exit from `with Sim() as s:` checked for results that did not
match the official schema (--check-returns)."""
import atexit
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import weakref

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .env import PASSWORD, PVESIM, TOKEN_ID, TOKEN_SECRET
from .ports import free_port_block
from .wait import wait_for

urllib3.disable_warnings()


def _unverified_context():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


# One TLS context for every call: urllib3 builds a context per connection
# otherwise and loads the system's CA store into it even with verify=False,
# about 30 ms of CPU a call (2.5 ms with this one), most of the suite's
# Python CPU. Each call still gets a session and a connection of its own, as
# requests.request gives it.
_TLS = _unverified_context()


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kw):
        kw["ssl_context"] = _TLS
        return super().init_poolmanager(*args, **kw)


def request(method, url, **kw):
    """requests.request without verifying pvesim's self-signed certificate,
    on the shared context."""
    kw.setdefault("verify", False)
    with requests.Session() as s:
        s.mount("https://", _Adapter())
        return s.request(method, url, **kw)

PVF = "Parameter verification failed."  # the reason of Proxmox's 400 answers


def expect500(r, message):
    """A Proxmox error answer: 500 with `message` as the reason and as the
    body's message (with its newline)."""
    assert r.status_code == 500 and r.reason == message, (r.status_code, r.reason, r.text, message)
    assert r.json() == {"data": None, "message": message + "\n"}, r.text


def expect400(r, errors):
    """A parameter verification failure with exactly these field errors."""
    assert r.status_code == 400 and r.reason == PVF, (r.status_code, r.text)
    assert r.json()["errors"] == errors, r.json()


def task_ok(st):
    """A stopped task's status that ended OK; returned."""
    assert st["exitstatus"] == "OK", st
    return st


class Sim:
    """A running pvesim. Use as a context manager.

    nodes: comma-separated node names, or None for the fleet file's (then
    pvesim picks its ports itself, --listen 127.0.0.1:0); standalone: every
    node its own host;
    token_id/token_secret, password (None: no password login); check_returns:
    pvesim checks every result against the schema (off in benchmarks, it
    costs CPU); log_level: pvesim's, None for its default; fleet: a fleet
    file's content (a dict: nodes, storages, templates...), written to a
    temporary file for --fleet; binary: another pvesim (a benchmark's
    baseline); extra: more arguments."""

    def __init__(self, nodes="sv1,sv2,sv3,sv4,sv5", standalone=False, time_scale=0.02,
                 pve_version=None, extra=None, state_dir=None, auth_delay=0,
                 token_id=TOKEN_ID, token_secret=TOKEN_SECRET, password=PASSWORD,
                 check_returns=True, log_level=None, fleet=None, binary=PVESIM):
        self.node_names = nodes.split(",") if nodes else []
        n = len(self.node_names)
        self.base = free_port_block(n + 2) if nodes else 0
        self.standalone = standalone
        self.token_id, self.token_secret = token_id, token_secret
        args = [binary, "--listen", "127.0.0.1:%d" % self.base]
        if nodes:
            args += ["--nodes", nodes]
        if password is not None:
            args += ["--password", password]
        args += ["--token", "%s=%s" % (token_id, token_secret),
                 "--time-scale", str(time_scale), "--auth-delay", str(auth_delay)]
        if check_returns:
            args.append("--check-returns")
        if log_level:
            args += ["--log-level", log_level]
        if standalone:
            args.append("--standalone")
        if pve_version:
            args += ["--pve-version", str(pve_version)]
        if state_dir:
            args += ["--state-dir", state_dir]
        if fleet is not None:
            args += ["--fleet", self._fleet_file(fleet)]
        args += extra or []
        # the build's test certificate (CMakeLists.txt): no RSA key made per start
        cert, key = os.environ.get("PVESIM_TLS_CERT"), os.environ.get("PVESIM_TLS_KEY")
        if cert and key and "--tls-cert" not in args:
            args += ["--tls-cert", cert, "--tls-key", key]
        # and its ticket key: not a second RSA key made per start
        tkey = os.environ.get("PVESIM_TICKET_KEY")
        if tkey and "--ticket-key" not in args:
            args += ["--ticket-key", tkey]
        self.args = args
        self.proc = None
        self.ports = {}
        # another program may take a port of our block between the check and
        # the bind (pvesim then exits, "cannot listen on ..."): pick a new
        # block and try again. With a state directory too: a pvesim that could
        # not listen exits before it writes its state (sim/test_scale once
        # failed here, "Address already in use", while other tests ran beside
        # the suite). Any other failure to start is raised at once.
        for attempt in range(5):
            try:
                self.start()
                break
            except RuntimeError as e:
                if attempt == 4 or not nodes or "cannot listen" not in str(e):
                    raise
                self.base = free_port_block(n + 2)
                self.args[self.args.index("--listen") + 1] = "127.0.0.1:%d" % self.base

    def _fleet_file(self, fleet):
        fd, path = tempfile.mkstemp(prefix="pvesim-fleet-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(fleet, f)
        weakref.finalize(self, os.unlink, path)  # kept for restarts, gone with the Sim
        return path

    def start(self):
        """Start pvesim and read its port map: self.ports {node: port},
        self.entry (the cluster's or control port), self.fingerprint."""
        self.errlog = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.errlog, text=True)
        atexit.register(self._at_exit, self.proc, self.errlog)
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

    @staticmethod
    def _at_exit(proc, errlog):
        """A test that ended without stopping this pvesim (a failure at a
        script's top level): one still running is stopped; one that died
        on its own (not killed or stopped by the test) says why, its
        stderr's end (a sanitizer's report) on the test's."""
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            return
        if proc.returncode not in (0, -9, -15):
            errlog.seek(0)
            tail = errlog.read().decode(errors="replace")[-4000:]
            sys.stderr.write("pvesim had ended with %s:\n%s\n" % (proc.returncode, tail))

    def stop(self, check_clean=True, timeout=15):
        """SIGTERM; a pvesim that does not stop within timeout seconds is
        killed and is an error, and so is (with check_clean) a non-zero exit
        status."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
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
        kw.setdefault("timeout", 30)
        return request(method, self.url(path, port), **kw)

    def api(self, method, path, port=None, params=None, data=None, json_body=None, headers=None,
            auth="token", **kw):
        """Call /api2/json<path>; returns the requests.Response."""
        h = dict(headers or {})
        if auth == "token":
            h["Authorization"] = "PVEAPIToken=%s=%s" % (self.token_id, self.token_secret)
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
        """A /_sim<path> control call; the parsed answer (asserts 200/201)."""
        r = self.raw(method, "/_sim" + path, port=port, json=body)
        assert r.status_code in (200, 201), "%s /_sim%s -> %d %s" % (method, path, r.status_code, r.text)
        return r.json()

    def add_faults(self, rules):
        """Add fault rules (a list of /_sim/faults bodies, e.g. lib.faults')."""
        for r in rules:
            self.ctl("POST", "/faults", r)

    def clear_faults(self):
        """Remove every fault rule; how many calls they hit, in all."""
        hits = sum(f.get("hits", 0) for f in self.ctl("GET", "/faults"))
        self.ctl("DELETE", "/faults")
        return hits

    def wait_late(self, deadline=30.0):
        """Wait until every call under a `late` fault has been served:
        what the faults did is all there before a test compares Proxmox with
        proxd (clear_faults leaves them waiting)."""
        wait_for(lambda: self.ctl("GET", "/calls").get("late_pending", 0) == 0, deadline, 0.05,
                 "the late calls served")

    def release_late(self):
        """Serve the late calls still waiting now, not when their delay
        runs out, and send the answers `delay` rules hold back now (POST
        /_sim/late): a test that has seen what had to come first need not
        sleep out a delay long enough for a loaded machine. How many late
        calls; wait_late() then waits until they are served."""
        return self.ctl("POST", "/late")["released"]

    def wait_task(self, node, upid, deadline=30.0, port=None):
        """Poll a task until it stops; return its status object."""
        def done():
            st = self.data("GET", "/nodes/%s/tasks/%s/status" % (node, upid), port=port)
            return st if st["status"] == "stopped" else None
        return wait_for(done, deadline, what="task " + upid)

    def state(self):
        return self.ctl("GET", "/state")

    def running_tasks(self, wait_ms=0):
        """The tasks running now (GET /_sim/tasks): {"running": n, "started":
        count since pvesim's start, "types": [...]}. With wait_ms, pvesim
        answers once one runs or that time has passed: a kill aimed at a
        task lands while it runs, where one /_sim/state read can take longer
        than the task of a fast time scale."""
        return self.ctl("GET", "/tasks?wait_ms=%d" % wait_ms if wait_ms else "/tasks")

    def vm(self, vmid, node=None):
        for v in self.state()["vms"]:
            if v["vmid"] == vmid and (node is None or v["node"] == node):
                return v
        return None

    def vm_view(self, vmid):
        """What Proxmox holds of a VM that a reinstall must keep or change:
        node, power, name, boot, net0 (and its MAC), ipconfig0, the boot disk's
        volume and the OS it was cloned from (its origin), unusedN keys."""
        v = self.vm(vmid)
        assert v, "VM %d is gone" % vmid
        c = v["conf"]
        disk = volume_name(c.get("scsi0", ""))
        mac = re.search(r"([0-9A-F]{2}(:[0-9A-F]{2}){5})", c.get("net0", ""))
        return {"node": v["node"], "power": v["power"], "name": c.get("name"),
                "boot": c.get("boot"), "net0": c.get("net0"), "ipconfig0": c.get("ipconfig0"),
                "mac": mac.group(1) if mac else None, "disk": disk,
                "os": (v.get("origin") or {}).get(disk),
                "unused": sorted(k for k in c if k.startswith("unused"))}


def volume_name(drive):
    """"local-lvm:vm-1000-disk-0,size=12G" -> "vm-1000-disk-0"."""
    return drive.split(",")[0].split(":")[-1].split("/")[-1]
