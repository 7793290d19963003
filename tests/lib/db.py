"""proxd's database read (and poked) behind its back: a SQLite file through
Python's sqlite3, or a postgresql:// URL through psql (no driver needed)."""
import sqlite3
import subprocess
import time

from .wait import wait_for


PSQL = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-P", "null=\\N", "-v", "ON_ERROR_STOP=1"]


def _psql_rows(lines):
    """psql's unaligned rows: tab-separated, NULL as \\N, integers as int."""
    def value(v):
        if v == "\\N":
            return None
        return int(v) if v.lstrip("-").isdigit() else v
    return [tuple(value(v) for v in line.split("\t")) for line in lines if line]


def _psql(url, sql):
    """Rows of a statement through psql: tab-separated, NULL as \\N,
    integers as int."""
    r = subprocess.run(PSQL + [url, "-c", sql], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "psql: %s" % r.stderr
    return _psql_rows(r.stdout.splitlines())


def query(db, sql, args=()):
    """The rows of sql. db: a SQLite file or a postgresql:// URL (then
    without args)."""
    if "://" in db:
        assert not args, "no parameters through psql"
        return _psql(db, sql)
    c = sqlite3.connect(db, timeout=30)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


class Reader:
    """Reads of one database made many times a second (a poll aimed at a
    moment a few hundred ms long): a SQLite file as query() reads it; a
    postgresql:// URL through one psql kept running for them all, about
    2 ms a query, where a psql started per query takes 0.1-0.2 s on a
    loaded machine and misses such moments. close() ends it."""

    END = "-- proxd-test: end of rows --"

    def __init__(self, db):
        self.db, self.proc = db, None
        if "://" in db:
            self.proc = subprocess.Popen(PSQL + [db], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, bufsize=1)

    def query(self, sql):
        """The rows of sql (no parameters), as query() gives them."""
        if not self.proc:
            return query(self.db, sql)
        self.proc.stdin.write("%s;\n\\echo '%s'\n" % (sql.rstrip().rstrip(";"), self.END))
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            assert line, "psql ended: %s" % self.proc.stderr.read()  # ON_ERROR_STOP
            if line.rstrip("\n") == self.END:
                return _psql_rows(l.rstrip("\n") for l in lines)
            lines.append(line)

    def close(self):
        if self.proc:
            self.proc.stdin.close()
            self.proc.wait(30)
            self.proc.stdout.close()
            self.proc.stderr.close()
            self.proc = None


def execute(db, sql):
    """A write, committed. db: a SQLite file or a postgresql:// URL."""
    if "://" in db:
        _psql(db, sql)
        return
    c = sqlite3.connect(db, timeout=30)
    try:
        with c:
            c.execute(sql)
    finally:
        c.close()


def rows(db, table, cols, key="id"):
    """{key: {col: value}} of a table."""
    got = query(db, "SELECT %s, %s FROM %s" % (key, ", ".join(cols), table))
    return {r[0]: dict(zip(cols, r[1:])) for r in got}


def expire_leases(db):
    """A dead instance's leases run out now instead of in 30 s; how many.
    The daemons' idle workers are told, as store_job_expire_owner tells
    them (PostgreSQL: NOTIFY; SQLite: the database's -jobs file)."""
    sql = "UPDATE jobs SET lease_until = 0 WHERE state = 'running'"
    if "://" in db:
        n = len(_psql(db, sql + " RETURNING id"))
        _psql(db, "SELECT pg_notify(CASE coalesce(current_schema(), 'public') "
              "WHEN 'public' THEN 'proxd_jobs' "
              "ELSE 'proxd_jobs_' || md5(current_schema()) END, '')")
        return n
    c = sqlite3.connect(db, timeout=30)
    try:
        with c:
            n = c.execute(sql).rowcount
    finally:
        c.close()
    with open(db + "-jobs", "w") as f:
        f.write("t")
    return n


def wait_settled(db, deadline, interval=0.25):
    """Until every job is done or failed (AssertionError at the deadline)."""
    wait_for(lambda: not query(db, "SELECT id FROM jobs WHERE state NOT IN ('done', 'failed')"),
             deadline, interval, "every job to finish")


def wait_step(db, job, aim, deadline=60):
    """Until the job is at step `aim` ("migrating": step migrate with the
    migration's task started, its UPID written) or has ended, looked at
    every 2 ms (a kill aimed at a step); gives up after deadline seconds.
    The step it is at."""
    end = time.monotonic() + deadline
    while True:
        step, state, upid = query(db, "SELECT step, state, upid FROM jobs WHERE id = '%s'"
                                  % job)[0]
        if state in ("done", "failed") or step == aim or time.monotonic() > end or \
                (aim == "migrating" and step == "migrate" and upid):
            return step
        time.sleep(0.002)


def no_write_open(db):
    """True when no other client holds a write transaction open on db at
    this instant: SQLite's write lock is free (BEGIN IMMEDIATE succeeds at
    once), or no other PostgreSQL session is inside a transaction or a
    statement. A test freezing a daemon checks this after the freeze, so the
    frozen daemon cannot be holding what the awake one needs."""
    if "://" in db:
        busy = _psql(db, "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                         "AND datname = current_database() AND backend_type = 'client backend' "
                         "AND state <> 'idle'")
        return busy[0][0] == 0
    c = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        c.execute("BEGIN IMMEDIATE")
        c.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e):
            raise
        return False
    finally:
        c.close()
