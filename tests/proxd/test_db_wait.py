"""proxd started while its database does not answer (here: a SQLite file
whose write lock another process holds; a PostgreSQL server down is the
same wait, api/test_db_outage). proxd listens before it opens the
database, so:
  - while it waits, its port answers: /healthz 200 (alive), /readyz 503
    saying the wait, every other request 503 `unavailable` with
    Retry-After, naming the tries and their start, and `proxctl status`
    tells it in its report (it used to be "connection refused", as if proxd
    were not running);
  - the wait is in the configured log file (the log was set up only once
    the database answered: the file held nothing of it);
  - once the database answers, the same port serves the API;
  - a port another program holds is told at once, even while the
    database does not answer (it used to be told only when the database
    came back, after the wait);
  - a SIGTERM during the wait ends proxd (exit 0) and frees the port;
  - a database that opens at once (within 2 s) is told to nobody: a
    request that came meanwhile waits in the socket's backlog and is
    served by the API (it was answered 503 `starting`, an error to a
    client that does not ask again, at every restart under load)."""
import os
import select
import socket
import sqlite3
import subprocess
import time

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.proxd import Proxd
from lib.sim import Sim
from lib.sock import recv_to_close
from lib.wait import wait_for

import requests


def hold_lock(path):
    """A connection holding the file's write lock (BEGIN EXCLUSIVE)."""
    c = sqlite3.connect(path, timeout=30, isolation_level=None)
    c.execute("BEGIN EXCLUSIVE")
    return c


def release(c):
    c.execute("COMMIT")
    c.close()


def get(px, path, token=None):
    """One GET, or None when the port refuses it."""
    try:
        return px.call("GET", path, token, timeout=5)
    except (requests.ConnectionError, requests.Timeout):
        return None


def answers(px):
    r = get(px, "/healthz")
    return r is not None and r.status_code == 200


def daemon(sim, log_file=False):
    """A proxd whose database exists (its admin token made), not started;
    log_file: its log to a file (px.file_log) rather than to stderr."""
    px = Proxd(sim)
    if log_file:
        px.file_log = os.path.join(px.dir, "proxd-file.log")
        with open(px.conf) as f:
            text = f.read()
        assert "[proxd]\n" in text
        with open(px.conf, "w") as f:
            f.write(text.replace("[proxd]\n", "[proxd]\nlog_file = %s\n" % px.file_log, 1))
    px.admin = px.token("ops", "admin")
    return px


@case
def while_it_waits_its_port_says_so_and_then_serves():
    with Sim(time_scale=0.05) as sim:
        px = daemon(sim, log_file=True)
        lock = hold_lock(px.db)
        held = True
        px.spawn()
        try:
            wait_for(lambda: answers(px), 20, 0.1, "proxd's port to answer during the wait")
            assert px.alive()
            r = get(px, "/readyz")  # the first try under way (SQLite's busy timeout)
            assert r.status_code == 503, (r.status_code, r.text)

            def told():
                body = get(px, "/readyz").json()
                assert body["status"] == "not_ready" and body["database"] is False, body
                return "does not answer yet (1 failed try since" in body["database_error"]
            wait_for(told, 20, 0.2, "/readyz to tell the failed try")
            for method, path in (("GET", "/v1/vms"), ("POST", "/v1/vms"), ("GET", "/metrics")):
                r = px.call(method, path, px.admin, body={} if method == "POST" else None,
                            timeout=5)
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                err = r.json()["error"]
                # "unavailable" as for a database gone while proxd runs
                # (not "starting", which proxctl asks again for 15 s)
                assert err["code"] == "unavailable", (path, err)
                assert "its database does not answer yet (" in err["message"], err
                assert r.headers.get("Retry-After") == "5", r.headers
            env = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=px.admin)
            st = subprocess.run([PROXCTL, "status"], capture_output=True, text=True, timeout=30,
                                env=env)
            # the report, its attention line the wait (it used to fail on the
            # nodes' section after 15 s of asking again, exit 5)
            assert st.returncode == 1, (st.returncode, st.stdout, st.stderr)
            assert "NOT READY" in st.stdout and "proxd is not ready: its database does not " \
                "answer (proxd is starting: its database does not answer yet" in st.stdout, \
                st.stdout
            st = subprocess.run([PROXCTL, "vm", "list"], capture_output=True, text=True,
                                timeout=30, env=env)
            assert st.returncode != 0 and "does not answer yet" in st.stderr, st
            # the wait is in the configured log file, not only on stderr
            wait_for(lambda: "does not answer (try 1)" in open(px.file_log).read(), 20, 0.2,
                     "the wait in the log file")
            release(lock)
            held = False
            wait_for(lambda: (get(px, "/readyz") or requests.Response()).status_code == 200,
                     40, 0.2, "readiness once the database answers")
            r = px.call("GET", "/v1/vms", px.admin)
            assert r.status_code == 200, (r.status_code, r.text)
            text = open(px.file_log).read()
            assert "listening on" in text and "running with" in text, text[-2000:]
        finally:
            if held:
                release(lock)
            px.stop()


@case
def a_port_taken_is_told_at_once_while_the_database_does_not_answer():
    with Sim(time_scale=0.05) as sim:
        px = daemon(sim)
        lock = hold_lock(px.db)
        taker = socket.socket()
        try:
            taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taker.bind(("127.0.0.1", px.port))
            taker.listen(1)
            px.spawn()
            # before, proxd waited for the database first: it ran on, its
            # port never served, until the lock went
            wait_for(lambda: not px.alive(), 15, 0.1, "proxd to exit at once")
            rc = px.proc.returncode
            text = px.log_text()
            assert rc == 1 and "Address already in use" in text, (rc, text)
            assert "does not answer" not in text, text
        finally:
            taker.close()
            release(lock)


@case
def a_stop_during_the_wait_ends_it_and_frees_the_port():
    with Sim(time_scale=0.05) as sim:
        px = daemon(sim)
        lock = hold_lock(px.db)
        try:
            px.spawn()
            wait_for(lambda: answers(px), 20, 0.1, "proxd's port to answer during the wait")
            px.stop()  # exit 0 within 30 s, asserted
            assert px.logs_contain("stopped while waiting for the database"), px.tail()
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", px.port))  # free again
            finally:
                s.close()
        finally:
            release(lock)


def connect(port, deadline_s):
    """A connection to the port once it is bound (refused before)."""
    end = time.monotonic() + deadline_s
    while True:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return s
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > end:
                raise AssertionError("the port was not bound within %d s" % deadline_s)
            time.sleep(0.01)


@case
def a_request_during_a_quick_open_waits_and_is_served():
    with Sim(time_scale=0.05) as sim:
        px = daemon(sim)
        lock = hold_lock(px.db)  # the open waits on it (SQLite's busy timeout: 5 s)
        held = True
        try:
            px.spawn()
            s = connect(px.port, 20)
            try:
                s.sendall(("GET /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                           "Connection: close\r\n\r\n" % px.admin).encode())
                # held while the open is under way, well inside its grace
                # (the old early server answered 503 `starting` at once)
                ready, _, _ = select.select([s], [], [], 0.5)
                assert not ready, s.recv(4096)
                release(lock)
                held = False
                s.settimeout(20)
                data = recv_to_close(s)
            finally:
                s.close()
            head = data.split(b"\r\n", 1)[0]
            assert head.startswith(b"HTTP/1.1 200"), data[:500]
            assert px.alive()
            assert not px.logs_contain("does not answer"), px.tail()
        finally:
            if held:
                release(lock)
            px.stop()


finish()
