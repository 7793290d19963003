"""What the crash tests share: a proxd configuration in front of a five-node
pvesim cluster, a daemon that can be killed and restarted (one log file per
run), the admin commands, and the database as the tests read it."""
import os
import signal
import socket
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sim"))
from simlib import PVESIM, TOKEN_ID, TOKEN_SECRET  # noqa: E402

PROXD = os.path.join(os.path.dirname(PVESIM), "proxd")
OSES = ["ubuntu", "debian", "centos", "windows"]
TEMPLATE_BASE = 8000  # pvesim's templates are 8000 + 10*i + k


def free_port():
    """proxd serves its API too: each test's daemon needs its own port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def write_config(path, db, entry, proxd_extra=()):
    url = db if "://" in db else "sqlite:" + db
    lines = ["[proxd]", "listen = 127.0.0.1:%d" % free_port(), "database = %s" % url,
             "placement = spread", "workers = 8", "log_level = info"] + list(proxd_extra) + [
             "", "[proxmox]", "token = %s=%s" % (TOKEN_ID, TOKEN_SECRET), "verify_tls = no",
             "connect_timeout = 3", "timeout = 30", ""]
    for k, os_name in enumerate(["ubuntu", "centos", "windows", "debian"]):
        lines += ["[os %s]" % os_name,
                  "vmid_range = %d-%d" % (1000 * (k + 1), 1000 * (k + 1) + 999), ""]
    order = {"ubuntu": 0, "debian": 1, "centos": 2, "windows": 3}
    for i in range(5):
        lines += ["[node sv%d]" % (i + 1), "host = 127.0.0.1:%d" % entry, "cluster = pvesim",
                  "storage = local-lvm"]
        lines += ["template.%s = %d" % (o, TEMPLATE_BASE + 10 * i + order[o]) for o in OSES]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


class Daemon:
    def __init__(self, conf, logdir):
        self.conf, self.logdir, self.proc, self.n = conf, logdir, None, 0

    def start(self):
        self.n += 1
        self.log = os.path.join(self.logdir, "proxd.%02d.log" % self.n)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([PROXD, "--config", self.conf], stdout=out,
                                         stderr=subprocess.STDOUT)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        rc = self.proc.returncode
        assert rc == -signal.SIGKILL, "proxd ended by itself before the kill (rc %s):\n%s" % (
            rc, self.tail())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("proxd did not stop within 30 s of SIGTERM")
        assert rc == 0, "proxd exited with %s on SIGTERM:\n%s" % (rc, self.tail())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=40):
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def logs_contain(self, text):
        """Does any run's log contain text?"""
        for n in range(1, self.n + 1):
            with open(os.path.join(self.logdir, "proxd.%02d.log" % n), errors="replace") as f:
                if text in f.read():
                    return True
        return False


def proxd(*args, check=True):
    r = subprocess.run([PROXD] + list(args), capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, "proxd %s -> %d\n%s%s" % (" ".join(args), r.returncode,
                                                         r.stdout, r.stderr)
    return r


def _psql(url, sql):
    """Rows of a statement through psql (no driver needed): tab-separated,
    NULL as \\N, integers as int."""
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-P", "null=\\N",
                        "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "psql: %s" % r.stderr

    def value(v):
        if v == "\\N":
            return None
        return int(v) if v.lstrip("-").isdigit() else v
    return [tuple(value(v) for v in line.split("\t")) for line in r.stdout.splitlines() if line]


def db_query(db, sql, args=()):
    """db: a SQLite file or a postgresql:// URL (then without args)."""
    if "://" in db:
        assert not args, "no parameters through psql"
        return _psql(db, sql)
    c = sqlite3.connect(db, timeout=30)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def db_rows(db, table, cols, key="id"):
    """{key: {col: value}} of a table, read behind proxd's back."""
    rows = db_query(db, "SELECT %s, %s FROM %s" % (key, ", ".join(cols), table))
    return {r[0]: dict(zip(cols, r[1:])) for r in rows}


def expire_leases(db):
    """The dead instance's leases run out now instead of in 30 s."""
    sql = "UPDATE jobs SET lease_until = 0 WHERE state = 'running'"
    if "://" in db:
        return len(_psql(db, sql + " RETURNING id"))
    c = sqlite3.connect(db, timeout=30)
    try:
        with c:
            return c.execute(sql).rowcount
    finally:
        c.close()
