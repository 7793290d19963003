"""A real proxd for black-box tests: a configuration in front of a pvesim
(five nodes, quotas for bob), tokens made with `proxd token create`, start
and a clean stop (exit 0, no sanitizer report)."""
import os
import socket
import subprocess
import sys
import tempfile

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sim"))
from simlib import wait_for  # noqa: E402

BIN = os.environ.get("BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build/asan"))
PROXD = os.path.join(BIN, "proxd")
TOKEN = "root@pam!ci=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def config_text(port, entry, db, proxd_extra="", standalone=None, proxmox_extra=""):
    """standalone: the sim's {node: port} map, every node its own host;
    else five nodes of one cluster behind `entry`."""
    nodes = ""
    names = list(standalone) if standalone else ["sv%d" % (i + 1) for i in range(5)]
    for i, name in enumerate(names):
        where = ("host = 127.0.0.1:%d\n" % standalone[name] if standalone else
                 "host = 127.0.0.1:%d\ncluster = pvesim\n" % entry)
        nodes += ("[node %s]\n%sstorage = local-lvm\n"
                  "template.ubuntu = %d\ntemplate.debian = %d\n\n" % (name, where, 8000 + 10 * i,
                                                                      8001 + 10 * i))
    # debug: the most proxd ever logs, so that stop() can check it for secrets
    db = db if "://" in db else "sqlite:" + db
    return ("[proxd]\nlisten = 127.0.0.1:%d\ndatabase = %s\nworkers = 8\nquarantine = 0\n"
            "log_level = debug\n%s\n"
            "[proxmox]\ntoken = %s\nverify_tls = no\n%s\n"
            "[os ubuntu]\nvmid_range = 1000-1999\n[os debian]\nvmid_range = 4000-4009\n\n%s"
            "[quota default]\nvms = 100\ncores = 0\nmemory_mb = 0\ndisk_gb = 0\n"
            "[quota bob]\nvms = 1\ncores = 2\nmemory_mb = 4096\ndisk_gb = 40\n"
            "[quota dave]\nvms = 3\ncores = 0\nmemory_mb = 0\ndisk_gb = 0\n"
            "[quota erin]\nvms = 0\ncores = 6\nmemory_mb = 0\ndisk_gb = 0\n"
            % (port, db, proxd_extra, TOKEN, proxmox_extra, nodes))


class Proxd:
    def __init__(self, sim, share=None, proxd_extra="", database=None, proxmox_extra=""):
        """share: another Proxd whose database this instance uses too;
        proxd_extra, proxmox_extra: lines for the [proxd] and [proxmox]
        sections; database: a store URL (postgresql://...) instead of a
        SQLite file of its own. A standalone sim gives one host per node."""
        self.dir = tempfile.mkdtemp(prefix="proxd-api-")
        self.port = free_port()
        self.conf = os.path.join(self.dir, "proxd.conf")
        self.db = share.db if share else database or os.path.join(self.dir, "proxd.db")
        with open(self.conf, "w") as f:
            f.write(config_text(self.port, sim.entry, self.db, proxd_extra,
                                standalone=sim.ports if sim.standalone else None,
                                proxmox_extra=proxmox_extra))
        self.base = "http://127.0.0.1:%d" % self.port
        self.proc = None
        # never to appear in the log: the Proxmox token's secret, every API token
        self.secrets = [TOKEN.split("=", 1)[1]]

    def cli(self, *args, check=True):
        r = subprocess.run([PROXD] + list(args), capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("proxd %s: %s" % (args, r.stderr))
        return r

    def token(self, owner, role="user"):
        r = self.cli("token", "create", "--config", self.conf, "--owner", owner, "--role", role)
        self.secrets.append(r.stdout.strip())
        return r.stdout.strip()

    def spawn(self):
        """Start the process without waiting for it to be ready."""
        self.log = open(os.path.join(self.dir, "proxd.log"), "w+", errors="replace")
        self.proc = subprocess.Popen([PROXD, "--config", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        return self

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def start(self):
        self.spawn()

        def up():
            try:
                return requests.get(self.base + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, deadline=30, interval=0.1, what="proxd ready")
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(30)
        self.log.seek(0)
        out = self.log.read()
        assert rc == 0, "proxd exited with %s:\n%s" % (rc, out[-4000:])
        assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out, out[-6000:]
        leaked = [sec[:6] + "..." for sec in self.secrets if sec and sec in out]
        assert not leaked, "secrets in proxd's log: %s" % leaked


