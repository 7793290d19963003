"""A private PostgreSQL server for tests: initdb + pg_ctl from
/usr/lib/postgresql/<newest>/bin (or $PROXD_TEST_PG_BIN) in a temporary
directory, TCP on 127.0.0.1 only, no Unix socket, trust authentication for
the user "proxd", durability off (it is not what is tested). As root the
server runs as Debian's postgres user (initdb refuses root). Missing
binaries are an error: CI installs them (scripts/deps.sh).

As a program, for the C tests (tests/store):
    python3 -m lib.pg start      prints the URL, then the server's directory
    python3 -m lib.pg stop DIR   stops that server and removes DIR
"""
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

from .ports import free_port


def _bindir():
    bindir = os.environ.get("PROXD_TEST_PG_BIN")
    if bindir:
        return bindir
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else ""


class PrivatePG:
    """Started by the constructor; self.url names the database "postgres";
    stop() ends it and removes its directory. PrivatePG(dir=D) is a handle
    on a server started earlier in D (for stop)."""

    def __init__(self, dir=None):
        bindir = _bindir()
        self.initdb = os.path.join(bindir, "initdb")
        self.pg_ctl = os.path.join(bindir, "pg_ctl")
        self.as_root = os.geteuid() == 0
        if dir:
            self.dir, self.data = dir, os.path.join(dir, "data")
            return
        if not (bindir and os.access(self.initdb, os.X_OK) and os.access(self.pg_ctl, os.X_OK)):
            raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: "
                               "install the postgresql package (scripts/deps.sh)")
        self.dir = tempfile.mkdtemp(prefix="proxd-pg-")
        self.data = os.path.join(self.dir, "data")
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([self.initdb, "-D", self.data, "-U", "proxd", "-A", "trust", "-E", "UTF8",
                   "--no-sync"], "initdb.log")
        self.port = None
        for _ in range(3):  # a port taken between the probe and the bind: another
            port = free_port()
            opts = ("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories='' "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                    "-c max_connections=200" % port)
            try:
                self._run([self.pg_ctl, "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                           "-w", "-t", "60", "-o", opts, "start"], "pg_ctl.log")
                self.port, self.opts = port, opts
                break
            except RuntimeError:
                continue
        if self.port is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError("PostgreSQL did not start:\n" + self._log("server.log"))
        self.url = "postgresql://proxd@127.0.0.1:%d/postgres" % self.port

    def _run(self, argv, log):
        name = argv[0]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        with open(os.path.join(self.dir, log), "ab") as out:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s" % (name, r.returncode, self._log(log)))

    def _log(self, name):
        try:
            with open(os.path.join(self.dir, name), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def halt(self):
        """Stop the server, keeping its data: resume() starts it again on
        the same port (a database gone away and back)."""
        self._run([self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop"], "pg_ctl.log")

    def resume(self):
        self._run([self.pg_ctl, "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                   "-w", "-t", "60", "-o", self.opts, "start"], "pg_ctl.log")

    def stop(self):
        try:
            self._run([self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"],
                      "pg_ctl.log")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def full_run():
    """True in `make test-full` (PROXD_TEST_FULL=1): the PostgreSQL runs of
    test suites whose store calls store/test_store already covers on
    PostgreSQL are made too."""
    return os.environ.get("PROXD_TEST_FULL") == "1"


def case_full_on_pg(fn):
    """@case_full_on_pg: a case whose store calls the file's other cases (or
    store/test_store) already make on PostgreSQL: it runs on SQLite always,
    on PostgreSQL (PROXD_TEST_DB set) in the full run only. The suite's time."""
    from .cases import case
    return case(fn) if not os.environ.get("PROXD_TEST_DB") or full_run() else fn


def rerun_script(script, servers=1):
    """Run the Python test `script` (a path) again with proxd's database on
    `servers` private PostgreSQL servers (PROXD_TEST_DB, PROXD_TEST_DB2,
    ...), then exit with its status."""
    pgs = []
    rc = 1
    try:
        for _ in range(servers):
            pgs.append(PrivatePG())
        env = dict(os.environ)
        for i, pg in enumerate(pgs):
            env["PROXD_TEST_DB" + (str(i + 1) if i else "")] = pg.url
        rc = subprocess.run([sys.executable, script], env=env).returncode
    finally:
        for pg in pgs:
            pg.stop()
    sys.exit(rc)


def run_c_tests(names, timeout=280):
    """Run the C test binaries `names` (in $TESTS_DIR; a name or a pair
    (name, its time limit in seconds)) once each as a case, with
    PROXD_TEST_PG naming a private server (each of their cases makes a
    schema of its own in it); then finish() (summary, exit status)."""
    from .cases import finish, run_case
    pg = PrivatePG()
    try:
        for item in names:
            name, limit = item if isinstance(item, tuple) else (item, timeout)

            def one(name=name, limit=limit):
                env = dict(os.environ, PROXD_TEST_PG=pg.url)
                r = subprocess.run([os.path.join(os.environ["TESTS_DIR"], name)], env=env,
                                   timeout=limit)
                assert r.returncode == 0, "%s on PostgreSQL: exit %d" % (name, r.returncode)
            run_case(name + "_on_postgresql", one)
    finally:
        pg.stop()
    finish()


def main(argv):
    if argv[:1] == ["start"] and len(argv) == 1:
        try:
            pg = PrivatePG()
        except RuntimeError as e:
            sys.exit(str(e))
        print(pg.url)
        print(pg.dir, flush=True)
        return
    if argv[:1] == ["stop"] and len(argv) == 2:
        try:
            PrivatePG(dir=argv[1]).stop()
        except RuntimeError as e:
            sys.exit(str(e))
        return
    sys.exit("usage: python3 -m lib.pg start | stop DIR")


if __name__ == "__main__":
    main(sys.argv[1:])
