"""proxd under systemd (src/proxd/svc.c):
  - Type=notify: READY=1 once the API serves (a request sent on that word
    is answered), not at the process's start; while the database does not
    answer, STATUS= says the wait and each failed try extends the start
    timeout (EXTEND_TIMEOUT_USEC), so that a long wait is not killed as a
    start that hangs; STOPPING=1 when a stop begins. (It told systemd
    nothing: a Type=simple unit, ready the moment it forked.)
  - socket activation (proxd.socket): proxd serves on the listening socket
    systemd passes (LISTEN_FDS) instead of binding `listen`, and a request
    that comes while proxd restarts waits in the socket's backlog and is
    answered by the new process (it was refused: proxd closed its port at
    the stop and bound it again at the start);
  - a passed socket proxd cannot use (not a listening TCP socket) ends it
    at once, saying what the unit needs.
systemd itself is played by the test: a Unix datagram socket for
NOTIFY_SOCKET, a TCP socket handed over as fd 3 with LISTEN_FDS and
LISTEN_PID (sd_listen_fds(3)), as systemd-socket-activate does."""
import os
import socket
import sqlite3
import subprocess

from lib.cases import case, finish
from lib.env import PROXD
from lib.proxd import Proxd
from lib.sim import Sim
from lib.sock import recv_to_close
from lib.wait import wait_for

import requests


def launch(px, env, listen=None):
    """Start px's proxd as systemd would: env added; listen: a socket
    handed over as fd 3 (LISTEN_FDS=1, LISTEN_PID its pid)."""
    px.n += 1
    px.log = px.log_path()
    env = dict(os.environ, **env)
    kw = {}
    if listen is not None:
        env["LISTEN_FDS"] = "1"
        kw = dict(pass_fds=(3,), preexec_fn=lambda: os.dup2(listen.fileno(), 3))
    # sh gives proxd its pid for LISTEN_PID (exec keeps it), and fd 3
    cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', PROXD, "--config", px.conf]
    if listen is None:
        cmd = cmd[3:]
    with open(px.log, "wb") as out:
        px.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, **kw)


class Notify:
    """The service manager's end of NOTIFY_SOCKET: every message, in order."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.msgs = []

    def read(self):
        while True:
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.msgs

    def wait(self, word, deadline=30):
        """The first message holding `word` (a line such as READY=1)."""
        def seen():
            return next((m for m in self.read() if word in m.split("\n")), None)
        return wait_for(seen, deadline, 0.02, "%s told to systemd" % word)

    def close(self):
        self.sock.close()


def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def get(base, path, token, timeout=5):
    return requests.get(base + path, headers={"Authorization": "Bearer " + token},
                        timeout=timeout)


def refused(base):
    try:
        requests.get(base + "/healthz", timeout=5)
    except requests.ConnectionError:
        return True
    return False


@case
def systemd_is_told_the_wait_the_readiness_and_the_stop():
    with Sim(time_scale=0.05) as sim:
        px = Proxd(sim)
        admin = px.token("ops", "admin")
        note = Notify(os.path.join(px.dir, "notify"))
        lock = sqlite3.connect(px.db, timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # the open waits, then fails a try
        held = True
        try:
            launch(px, {"NOTIFY_SOCKET": note.path})
            m = note.wait("EXTEND_TIMEOUT_USEC=120000000")
            assert "STATUS=waiting for the database: 1 failed try (see the log)" in m, m
            assert not any("READY=1" in x for x in note.read()), note.msgs
            lock.execute("COMMIT")
            held = False
            note.wait("READY=1")
            # ready means served: asked on that word, the API answers
            r = get(px.base, "/v1/vms", admin)
            assert r.status_code == 200, (r.status_code, r.text)
            ready = next(x for x in note.msgs if "READY=1" in x)
            assert "STATUS=running with 5 nodes, database sqlite:" in ready, ready
            assert not any("STOPPING=1" in x for x in note.msgs), note.msgs
            px.proc.terminate()
            m = note.wait("STOPPING=1")
            assert "STATUS=stopping: no new jobs" in m, m
            px.stop()
        finally:
            if held:
                lock.execute("COMMIT")
            lock.close()
            note.close()
            px.abort()


@case
def a_restart_on_the_socket_systemd_holds_refuses_nothing():
    with Sim(time_scale=0.05) as sim:
        px = Proxd(sim)
        admin = px.token("ops", "admin")
        sock = listener()
        base = "http://127.0.0.1:%d" % sock.getsockname()[1]
        try:
            launch(px, {}, listen=sock)
            wait_for(lambda: get(base, "/readyz", admin).status_code == 200, 30, 0.1,
                     "proxd ready on the passed socket")
            assert get(base, "/v1/vms", admin).status_code == 200
            # the configuration's own port is not bound
            assert refused(px.base), "proxd bound its configured listen too"
            assert px.logs_contain("listening on the socket systemd passed, 127.0.0.1:%d "
                                   "(the configuration's listen, 127.0.0.1:%d, is not used)"
                                   % (sock.getsockname()[1], px.port)), px.tail()
            px.stop()
            # no proxd runs: a request now waits in the socket's backlog
            c = socket.create_connection(sock.getsockname(), timeout=5)
            try:
                c.sendall(("GET /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                           "Connection: close\r\n\r\n" % admin).encode())
                launch(px, {}, listen=sock)
                c.settimeout(30)
                data = recv_to_close(c)
            finally:
                c.close()
            assert data.startswith(b"HTTP/1.1 200"), data[:300]
            px.stop()
        finally:
            px.abort()
            sock.close()


@case
def a_passed_socket_that_is_not_a_tcp_listener_ends_proxd_at_once():
    with Sim(time_scale=0.05) as sim:
        px = Proxd(sim)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        try:
            launch(px, {}, listen=udp)
            rc = px.proc.wait(30)
            text = px.log_text()
            assert rc == 1, (rc, text)
            assert "the socket systemd passed is not a listening TCP socket (its unit needs " \
                "ListenStream=ADDRESS:PORT)" in text, text
        finally:
            px.abort()
            udp.close()


finish()
