"""A private PostgreSQL server for black-box tests: initdb + pg_ctl from
/usr/lib/postgresql/<newest>/bin (or $PROXD_TEST_PG_BIN) in a temporary
directory, TCP on 127.0.0.1 only, no Unix socket, trust authentication for
the user "proxd". As root the server runs as Debian's postgres user (initdb
refuses root). Missing binaries are an error: CI installs them."""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class PrivatePG:
    def __init__(self):
        bindir = os.environ.get("PROXD_TEST_PG_BIN")
        if not bindir:
            found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                           key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
            bindir = os.path.dirname(found[-1]) if found else ""
        self.initdb = os.path.join(bindir, "initdb")
        self.pg_ctl = os.path.join(bindir, "pg_ctl")
        if not (bindir and os.access(self.initdb, os.X_OK) and os.access(self.pg_ctl, os.X_OK)):
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: "
                               "install the postgresql package (scripts/deps.sh)")
        self.dir = tempfile.mkdtemp(prefix="proxd-pgapi-")
        self.data = os.path.join(self.dir, "data")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([self.initdb, "-D", self.data, "-U", "proxd", "-A", "trust", "-E", "UTF8",
                   "--no-sync"], "initdb.log")
        self.port = None
        for _ in range(3):  # a port taken between the probe and the bind: another
            port = _free_port()
            opts = ("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories='' "
                    "-c fsync=off -c synchronous_commit=off -c max_connections=200" % port)
            try:
                self._run([self.pg_ctl, "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                           "-w", "-t", "60", "-o", opts, "start"], "pg_ctl.log")
                self.port = port
                break
            except RuntimeError:
                continue
        if self.port is None:
            raise RuntimeError("PostgreSQL did not start:\n" + self._log("server.log"))
        self.url = "postgresql://proxd@127.0.0.1:%d/postgres" % self.port

    def _run(self, argv, log):
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        with open(os.path.join(self.dir, log), "ab") as out:
            r = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s" % (argv[0 if not self.as_root else 4],
                                                         r.returncode, self._log(log)))

    def _log(self, name):
        try:
            with open(os.path.join(self.dir, name), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        try:
            self._run([self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"],
                      "pg_ctl.log")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
