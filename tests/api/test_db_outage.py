"""The database out of reach while jobs run: a PostgreSQL server gone for
longer than a job's lease (a failover, a restart), and a SQLite file whose
lock another process holds as long (an operator's open transaction, a
backup); and a SQLite lock held as creations end (their last writes meet
it). proxd rides it out: a job's store operations wait for the database
(at its next checkpoint it calls nothing), and it goes on once the
database answers; the API answers 503 meanwhile
(PostgreSQL: /readyz says the database is down; SQLite: a write is refused
after its busy timeout, reads go on). Checked after: proxd never died and
stops cleanly (and a proxd started during the PostgreSQL outage waited for
the database, then ran: it used to exit at once, 1), every creation ended done with one VM each (none twice, none
leaked), no VMID left reserved, every capacity reservation settled, the
event log tells every change once.

It used to die: a checkpoint that failed 21 times in a row (23 s of
PostgreSQL refusing connections; SQLite's 5 s busy timeout each, so
about two minutes of a held lock) aborted the process (SIGABRT, without a
word), and every job of the instance with it.

The three cases run at once (each its own pvesim, proxd and database):
each mostly waits out its outage."""
import json
import os
import re
import sqlite3
import subprocess
import threading
import time

import requests

from lib import db, eventcheck
from lib.cases import case, finish
from lib.env import PROXCTL
from lib.pg import PrivatePG
from lib.proxd import Proxd
from lib.sim import Sim
from lib.wait import wait_for

OUTAGE_S = 35  # longer than a lease (30 s) and than the 23 s that used to abort
VMS = 6


def start_creations(px, token):
    jobs = []
    for i in range(VMS):
        r = px.call("POST", "/v1/vms", token, {"os": "ubuntu", "name": "o%d" % i, "cores": 1,
                                               "memory_mb": 512, "disk_gb": 10})
        assert r.status_code == 202, r.text
        jobs.append(r.json()["job"])
    return jobs


def readyz_says_down(px, token):
    """/readyz says the database is down; the first time, proxctl status
    reports it as its attention line, exit 1 (it failed on its nodes'
    section, exit 5)."""
    r = requests.get(px.base + "/readyz", timeout=30)
    down = r.status_code == 503 and r.json()["database"] is False
    if down and not getattr(px, "status_seen", False):
        st = subprocess.run([PROXCTL, "status"], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=token))
        px.status_seen = True
        assert st.returncode == 1 and \
            "proxd is not ready: its database does not answer" in st.stdout, st
    return down


def writes_refused(px, token):
    """A SQLite reader is not held by a lock (WAL): /readyz stays ready; a
    write waits out the busy timeout, then is refused, 503."""
    r = px.call("POST", "/v1/vms", token, {"os": "ubuntu", "name": "late", "cores": 1,
                                           "memory_mb": 512, "disk_gb": 10})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
    return True


def converged(px, sim, jobs):
    """Every job ended done with one VM each (none twice, none leaked), no
    VMID left reserved, every capacity reservation settled, the event log
    telling every change once."""
    def ended():
        try:
            rows = db.query(px.db, "SELECT id, state, error FROM jobs")
        except Exception:  # the database coming back
            return None
        return rows if all(r[1] in ("done", "failed") for r in rows) else None
    rows = wait_for(ended, 90, 0.5, "every job to end after the outage")
    assert px.alive(), "proxd died:\n" + px.tail()
    assert sorted(r[0] for r in rows) == sorted(jobs), rows
    assert all(r[1] == "done" for r in rows), rows
    recs = db.query(px.db, "SELECT vmid, node FROM vms WHERE state = 'enabled'")
    assert len(recs) == len(jobs), recs
    ours = sorted((v["vmid"], v["node"]) for v in sim.state()["vms"] if v["vmid"] < 8000)
    assert ours == sorted(tuple(r) for r in recs), (ours, recs)
    left = db.query(px.db, "SELECT vmid, job FROM vmid_alloc WHERE state = 'reserved'")
    assert left == [], left
    unsettled = db.query(px.db, "SELECT job FROM capacity WHERE settled_at IS NULL")
    assert unsettled == [], unsettled
    bad = eventcheck.problems(px.db)
    assert not bad, bad


def ride_out(px, sim, cut, restore, down, late=None):
    """Creations under way, the database cut for OUTAGE_S while clones run,
    then restored: everything checked (the module's docstring); down(px,
    token) says the API saw the outage; late: a second proxd on the same
    database, started during the outage (it waits for the database, then
    runs)."""
    token = px.token("ops", "admin")
    px.start()
    try:
        started = sim.running_tasks()["started"]
        jobs = start_creations(px, token)
        # every creation placed and cloning: the outage meets them at their
        # checkpoints (a placement during it waits for the database too:
        # core/test_store_errors)
        wait_for(lambda: sim.running_tasks()["started"] >= started + VMS, 60, 0.05,
                 "every creation's clone to start")
        cut()
        if late:
            late.spawn()
        t_end = time.monotonic() + OUTAGE_S
        try:
            seen_down = False
            while time.monotonic() < t_end:
                assert px.alive(), "proxd died in the outage:\n" + px.tail()
                assert not late or late.alive(), \
                    "proxd started in the outage ended:\n" + late.tail()
                seen_down = seen_down or down(px, token)
                time.sleep(0.5)
            assert seen_down, "the API never saw the database out of reach"
        finally:
            restore()
        if late:  # it waited for the database, and answers once it is back
            assert late.logs_contain("does not answer (try 1)"), late.tail()
            late.wait_ready()  # (a new port if its own was taken while it waited)
            # and left the leases that ran out to their runner, which renews
            # them (taken at once, the first proxd had to end its process)
            wait_for(lambda: late.logs_contain("jobs whose lease ran out are left to their"),
                     30, 0.2, "the second proxd to leave the lapsed leases alone a while")
        converged(px, sim, jobs)
        # the outage was met by the jobs' store operations, which waited
        assert px.logs_contain("waits for the database")
        log = px.log_text()
        print("%s: %d waits of a job for the database, %d claims of a job a worker here held "
              "refused" % (px.db.split("/")[-1], log.count("waits for the database"),
                           log.count("not run twice")), flush=True)
    finally:
        try:
            px.stop()  # exit 0, no sanitizer report
        finally:
            if late:  # stopped even when the first's stop failed (else left running)
                late.stop()


def postgresql_gone_longer_than_a_lease():
    pg = PrivatePG()
    try:
        with Sim(time_scale=0.05) as sim:
            px = Proxd(sim, database=pg.url)
            late = Proxd(sim, database=pg.url)
            ride_out(px, sim, pg.halt, pg.resume, readyz_says_down, late)
    finally:
        pg.stop()


def sqlite_locked_longer_than_a_lease():
    with Sim(time_scale=0.05) as sim:
        px = Proxd(sim)
        holder = {}

        def lock():
            holder["c"] = hold_sqlite_lock(px.db)

        def unlock():
            holder["c"].execute("COMMIT")
            holder["c"].close()
        ride_out(px, sim, lock, unlock, writes_refused)


def hold_sqlite_lock(path):
    """A connection holding the file's write lock (BEGIN EXCLUSIVE)."""
    c = sqlite3.connect(path, timeout=30, isolation_level=None)
    c.execute("BEGIN EXCLUSIVE")
    return c


# longer than the three writes a creation's end used to try, 10 s each,
# before it dropped them
FINISH_HOLD_S = 35


def sqlite_locked_as_creations_finish():
    """The lock taken while every creation is at its last step (its status
    call held 6 s by pvesim), so that their last writes meet it: the room
    settled, the VMID marked used, the record enabled. Each used to be
    dropped after 10 s of trying (only the job's own end waited): a done
    job left its VMID reserved for ever and its record `creating`. Now a
    job's store operations wait for the database."""
    with Sim(time_scale=0.05) as sim:
        px = Proxd(sim)
        token = px.token("ops", "admin")
        px.start()
        try:
            sim.ctl("POST", "/faults", {"kind": "delay", "method": "GET", "delay_ms": 6000,
                                        "path": r"^/nodes/[^/]+/qemu/\d+/status/current$"})
            jobs = start_creations(px, token)

            def all_verifying():
                rows = db.query(px.db, "SELECT step, state FROM jobs")
                return len(rows) == VMS and all(r == ("verify", "running") for r in rows)
            wait_for(all_verifying, 120, 0.05, "every creation at its last step")
            c = hold_sqlite_lock(px.db)
            try:
                time.sleep(FINISH_HOLD_S)  # the outage's length, not a wait on a condition
            finally:
                c.execute("COMMIT")
                c.close()
            sim.ctl("DELETE", "/faults")
            converged(px, sim, jobs)
            waited = set(re.findall(r"job=(\S+) waits for the database", px.log_text()))
            assert waited == set(jobs), (waited, jobs)
        finally:
            px.stop()


@case
def the_database_out_of_reach_is_waited_out():
    errors = {}

    def run(name, fn):
        try:
            fn()
        except BaseException as e:  # reported below, with its case's name
            import traceback
            errors[name] = "".join(traceback.format_exception(e))
    ts = [threading.Thread(target=run, args=(f.__name__, f))
          for f in (postgresql_gone_longer_than_a_lease, sqlite_locked_longer_than_a_lease,
                    sqlite_locked_as_creations_finish)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, json.dumps(errors, indent=1)


finish()
