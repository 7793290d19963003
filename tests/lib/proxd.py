"""A real proxd for black-box tests: its configuration in front of a pvesim,
the daemon (started with one log file per run, killed, stopped cleanly), and
the admin command line (`proxd create|job|token ...`)."""
import atexit
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import requests

from .cases import scratch
from .db import no_write_open
from .env import PROXD, TOKEN
from .ports import free_port
from .wait import wait_for

OSES = ["ubuntu", "debian", "centos", "windows"]
TEMPLATE_BASE = 8000  # pvesim's templates are 8000 + 10*i + k, k the index in OSES


def run(*args, check=True):
    """`proxd ARGS...`; the CompletedProcess (asserts exit 0 with check)."""
    r = subprocess.run([PROXD] + list(args), capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, "proxd %s -> %d\n%s%s" % (" ".join(args), r.returncode,
                                                         r.stdout, r.stderr)
    return r


def _url(db):
    return db if "://" in db else "sqlite:" + db


def _nodes(names, where, oses, storage="local-lvm"):
    """[node ...] sections: where(i, name) gives the host lines; templates
    of `oses` by pvesim's numbering; storage: every node's VM storage, or
    {node: storage} (local-lvm for the nodes it does not name)."""
    text = ""
    for i, name in enumerate(names):
        st = storage.get(name, "local-lvm") if isinstance(storage, dict) else storage
        text += "[node %s]\n%sstorage = %s\n" % (name, where(i, name), st)
        text += "".join("template.%s = %d\n" % (o, TEMPLATE_BASE + 10 * i + OSES.index(o))
                        for o in oses)
        text += "\n"
    return text


def live_stats(proxd_extra):
    """pvesim serves /cluster/resources live (its --pvestatd-cycle is 0 by
    default): "stats_lag = 0" for the [proxd] section, unless the test sets
    it (proxd's default, 15 s, for a real cluster's RRD lag)."""
    return "" if "stats_lag" in proxd_extra else "stats_lag = 0\n"


def api_config(port, entry, db, proxd_extra="", standalone=None, proxmox_extra="", sections="",
               storage="local-lvm", token=TOKEN, os_extra=None):
    """The API tests' configuration (quotas for bob, dave, erin): standalone,
    the sim's {node: port} map, every node its own host; else five nodes of
    one cluster behind `entry`; storage: the nodes' VM storage (_nodes).
    log_level debug: the most proxd ever logs, so that stop() can check it
    for secrets."""
    names = list(standalone) if standalone else ["sv%d" % (i + 1) for i in range(5)]
    if standalone:
        nodes = _nodes(names, lambda i, n: "host = 127.0.0.1:%d\n" % standalone[n],
                       ["ubuntu", "debian"], storage)
    else:
        nodes = _nodes(names, lambda i, n: "host = 127.0.0.1:%d\ncluster = pvesim\n" % entry,
                       ["ubuntu", "debian"], storage)
    return ("[proxd]\nlisten = 127.0.0.1:%d\ndatabase = %s\nworkers = 8\nquarantine = 0\n"
            "log_level = debug\n%s%s\n"
            "[proxmox]\ntoken = %s\nverify_tls = no\n%s\n"
            "[os ubuntu]\nvmid_range = 1000-1999\n%s[os debian]\nvmid_range = 4000-4009\n%s\n%s"
            "[quota default]\nvms = 100\ncores = 0\nmemory_mb = 0\ndisk_gb = 0\n"
            "[quota bob]\nvms = 1\ncores = 2\nmemory_mb = 4096\ndisk_gb = 40\n"
            "[quota dave]\nvms = 3\ncores = 0\nmemory_mb = 0\ndisk_gb = 0\n"
            "[quota erin]\nvms = 0\ncores = 6\nmemory_mb = 0\ndisk_gb = 0\n%s"
            % (port, _url(db), live_stats(proxd_extra), proxd_extra, token, proxmox_extra,
               (os_extra or {}).get("ubuntu", ""), (os_extra or {}).get("debian", ""), nodes,
               sections))


def cluster_config(path, db, entry, proxd_extra=(), token=TOKEN, log_level="info",
                   placement="spread", workers=8, proxmox_extra=("connect_timeout = 3",
                                                                 "timeout = 30"),
                   storage="local-lvm", standalone=None, password=None, hosts=None,
                   clusters=None, linked=()):
    """The crash tests' and benchmarks' configuration: five nodes of one
    cluster behind `entry`, all four OSes (a VMID range of 1000 each),
    proxd_extra/proxmox_extra lines appended to [proxd]/[proxmox]; placement
    or workers None: proxd's default; storage: the nodes' VM storage
    (_nodes); standalone: a standalone sim's {node: port} map, every node a
    standalone host of its own (clusters: {node: name} makes those hosts
    one-node clusters, a mixed fleet); hosts: a cluster sim's {node: port} map, each
    member listing its own pveproxy (the cluster's endpoints are the five, in
    order, and a node down takes one of them down) instead of the entry;
    password: root@pam's password, logged in with (tickets) instead of the
    token; linked: the OSes whose creations are linked clones ([os] clone =
    linked). Written to `path`; returns the API's port."""
    port = free_port()
    lines = ["[proxd]", "listen = 127.0.0.1:%d" % port, "database = %s" % _url(db)]
    if placement:
        lines.append("placement = " + placement)
    if workers:
        lines.append("workers = %d" % workers)
    lines += ["log_level = " + log_level] + list(proxd_extra)
    lines += live_stats("\n".join(proxd_extra)).splitlines()
    creds = ["user = root@pam", "password = " + password] if password else ["token = " + token]
    lines += ["", "[proxmox]"] + creds + ["verify_tls = no"] + list(proxmox_extra) + [""]
    for k, os_name in enumerate(["ubuntu", "centos", "windows", "debian"]):
        lines += ["[os %s]" % os_name,
                  "vmid_range = %d-%d" % (1000 * (k + 1), 1000 * (k + 1) + 999)] + (
                      ["clone = linked"] if os_name in linked else []) + [""]
    text = "\n".join(lines) + "\n"
    if standalone:
        text += _nodes(["sv%d" % (i + 1) for i in range(5)],
                       lambda i, n: "host = 127.0.0.1:%d\n%s" % (
                           standalone[n], "cluster = %s\n" % clusters[n]
                           if clusters and n in clusters else ""), OSES, storage)
    else:
        text += _nodes(["sv%d" % (i + 1) for i in range(5)],
                       lambda i, n: "host = 127.0.0.1:%d\ncluster = pvesim\n" % (
                           hosts[n] if hosts else entry), OSES, storage)
    with open(path, "w") as f:
        f.write(text)
    return port


def wait_answer(url, deadline=30, interval=0.1, timeout=1, gone=None):
    """Until GET url answers 200 (proxd's /readyz or /healthz). gone: a
    check that the server has exited, which ends the wait at once."""
    def up():
        if gone and gone():
            raise AssertionError("the server exited while waiting for " + url)
        try:
            return requests.get(url, timeout=timeout).status_code == 200
        except requests.RequestException:
            return False
    wait_for(up, deadline=deadline, interval=interval, what=url)


class Daemon:
    """proxd on a configuration; each start() writes its own log,
    logdir/proxd.NN.log (NN from 01), so that a killed run's log stays."""

    def __init__(self, conf, logdir):
        self.conf, self.logdir, self.proc, self.n = conf, logdir, None, 0

    def thread_switches(self, name):
        """voluntary context switches (wake-ups) of each running thread
        called `name` (proxd names its threads), by tid"""
        out = {}
        d = "/proc/%d/task" % self.proc.pid
        for tid in os.listdir(d):
            try:
                if open("%s/%s/comm" % (d, tid)).read().strip() != name:
                    continue
                for line in open("%s/%s/status" % (d, tid)):
                    if line.startswith("voluntary_ctxt_switches:"):
                        out[tid] = int(line.split()[1])
            except OSError:
                continue
        return out

    def log_path(self, n=None):
        return os.path.join(self.logdir, "proxd.%02d.log" % (n or self.n))

    def start(self):
        """Start the process without waiting for it to be ready."""
        self.n += 1
        self.log = self.log_path()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([PROXD, "--config", self.conf], stdout=out,
                                         stderr=subprocess.STDOUT)
        atexit.register(self._at_exit, self.proc, self.log)
        return self

    @staticmethod
    def _at_exit(proc, log):
        """A test that ended without stopping this run (a failure at a
        script's top level): one still running is killed (a proxd left
        behind ran on for minutes after a CI failure, beside later tests);
        one that ended on its own (not killed, not stopped cleanly) says
        so, its log's end on the test's stderr."""
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            return
        if proc.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
            try:
                with open(log, errors="replace") as f:
                    tail = f.read()[-4000:]
            except OSError as e:  # its directory already removed
                tail = str(e)
            sys.stderr.write("proxd (%s) had ended with %s:\n%s\n" % (log, proc.returncode, tail))

    def kill(self):
        """SIGKILL; it is an error when proxd had already ended by itself."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        rc = self.proc.returncode
        assert rc == -signal.SIGKILL, "proxd ended by itself before the kill (rc %s):\n%s" % (
            rc, self.tail())

    def stop(self):
        """SIGTERM; proxd must exit 0 within 30 s (else it is killed, an error)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("proxd did not stop within 30 s of SIGTERM")
        assert rc == 0, "proxd exited with %s on SIGTERM:\n%s" % (rc, self.tail())

    def abort(self):
        """On an error path: SIGKILL when still running, nothing checked."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, n=None):
        """The log of run n (default: the latest)."""
        with open(self.log_path(n), errors="replace") as f:
            return f.read()

    def tail(self, n=40):
        return "".join(self.log_text().splitlines(True)[-n:])

    def logs_contain(self, text):
        """Does any run's log contain text?"""
        return any(text in self.log_text(n) for n in range(1, self.n + 1))


class Proxd(Daemon):
    """proxd in front of a Sim with the API tests' configuration (api_config)
    in a directory of its own; tokens made with `proxd token create`; stop()
    also asserts a log free of sanitizer reports and of every secret."""

    def __init__(self, sim, share=None, proxd_extra="", database=None, proxmox_extra="",
                 sections="", storage="local-lvm", pve_token=TOKEN, os_extra=None):
        """share: another Proxd whose database this instance uses too;
        proxd_extra, proxmox_extra: lines for the [proxd] and [proxmox]
        sections; sections: more sections ([ippool ...]) at the end;
        database: a store URL (postgresql://...) instead of a
        SQLite file of its own; storage: the nodes' VM storage, one for
        all or {node: storage}; pve_token: the Proxmox API token proxd calls
        with (ID=SECRET); os_extra: {os: lines} for the [os ubuntu] and
        [os debian] sections. A standalone sim gives one host per node."""
        self.dir = scratch(tempfile.mkdtemp(prefix="proxd-api-"))
        super().__init__(os.path.join(self.dir, "proxd.conf"), self.dir)
        self.port = free_port()
        self.db = share.db if share else database or os.path.join(self.dir, "proxd.db")
        with open(self.conf, "w") as f:
            f.write(api_config(self.port, sim.entry, self.db, proxd_extra,
                               standalone=sim.ports if sim.standalone else None,
                               proxmox_extra=proxmox_extra, sections=sections,
                               storage=storage, token=pve_token, os_extra=os_extra))
        self.base = "http://127.0.0.1:%d" % self.port
        # never to appear in the log: the Proxmox token's secret, every API token
        self.secrets = [pve_token.split("=", 1)[1]]

    def cli(self, *args, check=True):
        r = run(*args, check=False)
        if check and r.returncode != 0:
            raise AssertionError("proxd %s: %s" % (args, r.stderr))
        return r

    def call(self, method, path, token=None, body=None, raw=None, headers=None, timeout=30,
             want=None, **kw):
        """One request to the API: token as a Bearer token, body sent as
        JSON (or raw as it is); the requests.Response, whose status must be
        `want` when given."""
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if body is not None:
            raw = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        r = requests.request(method, self.base + path, data=raw, headers=h, timeout=timeout, **kw)
        if want is not None:
            assert r.status_code == want, (method, path, r.status_code, r.text)
        return r

    def wait_job(self, job, token, deadline=60):
        """Poll the job until it is done or failed; the job."""
        def done():
            j = self.call("GET", "/v1/jobs/" + job, token).json()
            return j if j["state"] in ("done", "failed") else None
        return wait_for(done, deadline=deadline, interval=0.1, what="job " + job)

    def token(self, owner, role="user"):
        r = self.cli("token", "create", "--config", self.conf, "--owner", owner, "--role", role)
        self.secrets.append(r.stdout.strip())
        return r.stdout.strip()

    def spawn(self):
        return Daemon.start(self)

    def start(self):
        """Start and wait until ready (wait_ready)."""
        self.spawn()
        return self.wait_ready()

    def wait_ready(self):
        """Wait until the spawned proxd is ready. Another program may take
        the port between two runs of this proxd (or between free_port and
        the first, or while a proxd started in a database outage waits for
        the database before it listens): the kernel hands a released port to
        other tests' outgoing connections, and proxd exits "Address already
        in use" (a -j5 CI run waited 30 s for its /readyz): then a new port,
        and start again."""
        for attempt in range(5):
            try:
                wait_answer(self.base + "/readyz", gone=lambda: not self.alive())
                return self
            except AssertionError:
                if attempt == 4 or self.alive() or "Address already in use" not in self.log_text():
                    raise
            self.port = free_port()
            self.base = "http://127.0.0.1:%d" % self.port
            with open(self.conf) as f:
                text = f.read()
            with open(self.conf, "w") as f:
                f.write(re.sub(r"(?m)^listen = 127\.0\.0\.1:\d+$",
                               "listen = 127.0.0.1:%d" % self.port, text, count=1))
            self.spawn()
        return self

    def freeze(self, deadline=30):
        """SIGSTOP, at an instant when it holds no database write open: a
        daemon frozen inside a transaction would hold SQLite's write lock
        (or PostgreSQL's row locks) and the awake instance's next write
        would wait on it until the store gives up (a 503 seen in CI). Each
        try waits until every thread is stopped, checks, and thaws again
        when a write is open. thaw() undoes it."""
        def frozen_clear():
            self.proc.send_signal(signal.SIGSTOP)
            wait_for(lambda: all_stopped(self.proc.pid), deadline=10, interval=0.002,
                     what="proxd's threads stopped")
            if no_write_open(self.db):
                return True
            self.thaw()
            return False
        wait_for(frozen_clear, deadline=deadline, interval=0.02,
                 what="proxd frozen with no database write open")

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(30)
        out = self.log_text()
        assert rc == 0, "proxd exited with %s:\n%s" % (rc, out[-4000:])
        assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out, out[-6000:]
        leaked = [sec[:6] + "..." for sec in self.secrets if sec and sec in out]
        assert not leaked, "secrets in proxd's log: %s" % leaked


def all_stopped(pid):
    """Every thread of pid in the stopped state (T): SIGSTOP's delivery is
    asynchronous, a thread on another core runs on for a moment."""
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


def shutdown(px, sim):
    """The end of a test on a Proxd and its Sim: proxd stopped (when still
    running, with stop()'s checks), then pvesim, whatever happened."""
    try:
        if px.alive():
            px.stop()
    finally:
        sim.stop()
