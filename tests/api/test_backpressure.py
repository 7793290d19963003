"""A client that does not read what proxd answers makes it neither buffer
without bound nor hold back other clients (src/api/http_conn.c):

- one that pipelines thousands of requests and reads nothing: proxd stops
  reading that connection once HTTP_OUT_CAP of answers wait (the client's
  own sending then stops, held by TCP), its memory stays flat, other
  clients are served meanwhile, and once the client reads it gets every
  answer, in order (answers made on the loop thread and by the workers
  mixed);
- an event stream whose client reads nothing: proxd's buffer for it is
  capped, and the stream is dropped with its reason in the log, its slot
  freed.
"""
import json
import os
import socket
import sqlite3
import threading
import time

# The sanitizer build keeps freed memory in quarantine (256 MB by default),
# which would hide what this test measures: proxd's resident memory.
os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                              ":quarantine_size_mb=1:thread_local_quarantine_size_kb=64")

from lib.cases import case, finish  # noqa: E402
from lib.proxd import Proxd, shutdown  # noqa: E402
from lib.sim import Sim  # noqa: E402
from lib.wait import wait_for  # noqa: E402

sim = Sim()
IDLE_S = 6  # a connection whose answers make no progress this long is cut (room for
# the pipelining case's look at proxd before it reads, on a loaded machine)
px = Proxd(sim, proxd_extra="idle_timeout = %d\n" % IDLE_S)
ADMIN = px.token("ops", "admin")
px.start()

# The 404's message names the path, a control byte in it written \u0001: a
# request of ~2.3 KB gets an answer of ~4.8 KB.
PAD = "%01" * 760
N = 4000  # ~9 MB of requests, ~18 MB of answers


def rss():
    with open("/proc/%d/status" % px.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def request(i):
    """Request i of the flood and what its answer must say: most are
    unknown paths (answered on the loop thread), every 10th the health
    probe (loop), every 10th an authenticated read (a worker)."""
    if i % 10 == 3:
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", (200, '"ok"')
    if i % 10 == 7:
        return (b"GET /v1/vms/%d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                % (900000 + i, ADMIN.encode()), (404, "no VM %d" % (900000 + i)))
    return (b"GET /nope/%d/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (i, PAD.encode()),
            (404, "no route /nope/%d/" % i))


class Reader:
    """Answers read off a socket one by one (Content-Length framing)."""

    def __init__(self, s):
        self.s, self.buf = s, b""

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        assert chunk, "proxd closed the connection"
        self.buf += chunk

    def answer(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        n = 0
        for h in lines[1:]:
            k, _, v = h.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
        self.buf = rest
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), body.decode()


def others_are_served():
    """A second client's probe and authenticated read, answered promptly."""
    t0 = time.monotonic()
    for req, want in (request(3), request(7)):
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        s.sendall(req)
        st, body = Reader(s).answer()
        s.close()
        assert st == want[0] and want[1] in body, (st, body)
    return time.monotonic() - t0


@case
def a_pipelining_client_that_does_not_read_is_held_back_and_gets_all_in_order():
    reqs = [request(i) for i in range(N)]
    data = b"".join(r for r, _ in reqs)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # before connect: a small window, and a small segment size, which keeps
    # proxd's side from growing its send buffer to megabytes (loopback's
    # 64 KB segments would)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(60)
    s.connect(("127.0.0.1", px.port))
    before = rss()
    sent = [0]
    err = []

    def send_all():
        try:
            while sent[0] < len(data):
                sent[0] += s.send(data[sent[0]:sent[0] + 65536])
        except OSError as e:
            err.append(e)
    th = threading.Thread(target=send_all, daemon=True)
    th.start()

    # The client's sending stops well short of the flood: proxd stopped
    # reading this connection.
    last = [-1, time.monotonic()]

    def stalled():
        if sent[0] != last[0]:
            last[0], last[1] = sent[0], time.monotonic()
            return False
        return time.monotonic() - last[1] >= 1.0
    wait_for(stalled, deadline=30, interval=0.1, what="the flood's sending to stall")
    assert not err, err
    assert sent[0] < len(data) // 2, "proxd read %d of %d bytes" % (sent[0], len(data))
    grown = rss() - before
    print("  stalled after %.1f of %.1f MB sent; proxd VmRSS %+.1f MB"
          % (sent[0] / 1e6, len(data) / 1e6, grown / 1e6))
    # a server reading on would hold ~18 MB of answers for this client
    assert grown < 8 << 20, "proxd grew by %d bytes" % grown
    took = others_are_served()
    print("  another client served in %.3f s meanwhile" % took)

    # Now read: every answer arrives, in request order.
    r = Reader(s)
    peak = before
    for i, (_, want) in enumerate(reqs):
        st, body = r.answer()
        assert st == want[0] and want[1] in body, (i, st, body[:200], want)
        if i % 500 == 0:
            peak = max(peak, rss())
    th.join(30)
    assert not th.is_alive() and not err and sent[0] == len(data), (sent[0], err)
    s.close()
    print("  %d answers in order; proxd VmRSS peak %+.1f MB while reading"
          % (N, (peak - before) / 1e6))
    assert peak - before < 8 << 20, peak - before


def add_events(n, size):
    """n events in the log, size bytes of data each (the store's own table:
    the stream reads them from there as from any writer)."""
    c = sqlite3.connect(px.db, timeout=30)
    now = int(time.time() * 1000)
    pad = "e" * size
    with c:
        c.executemany("INSERT INTO events (ts, type, owner, vmid, node, job, data) "
                      "VALUES (?, 'node.cordoned', '', 0, 'sv1', '', ?)",
                      [(now, json.dumps({"node": "sv1", "pad": pad})) for _ in range(n)])
    c.close()


def open_stream(slow=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if slow:  # as above: a small window, and proxd's send buffer kept small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(10)
    s.connect(("127.0.0.1", px.port))
    s.sendall(b"GET /v1/events/stream?after=0 HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: Bearer %s\r\n\r\n" % ADMIN.encode())
    return s


def open_streams():
    m = px.call("GET", "/metrics").text
    return sum(int(x.split()[-1]) for x in m.splitlines() if x.startswith("proxd_event_streams{"))


def dropped_stream(s, why, deadline):
    """s, reading nothing, is dropped with why in the log (within
    deadline s), its connection closed and its slot freed."""
    t0 = time.monotonic()
    mark = "streamed answer to 127.0.0.1 dropped"
    n = px.log_text().count(mark)
    wait_for(lambda: px.log_text().count(mark) > n, deadline=deadline, interval=0.1,
             what="the dropped stream in the log")
    took = time.monotonic() - t0
    line = [x for x in px.log_text().splitlines() if mark in x][n]
    print("  after %.1f s: %s" % (took, line.split("msg=", 1)[-1]))
    assert why in line, line
    left = int(line.rsplit("(", 1)[1].split()[0])  # "(N bytes unwritten)"
    got, end = 0, time.monotonic() + 20
    try:
        while time.monotonic() < end:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except ConnectionResetError:
        pass
    assert time.monotonic() < end, "the dropped stream's connection stays open"
    s.close()
    wait_for(lambda: open_streams() == 0, deadline=5, interval=0.1, what="its slot freed")
    return took, got, left


@case
def an_event_stream_whose_writes_stall_is_dropped_after_idle_timeout():
    add_events(300, 1000)  # ~0.3 MB: more than the kernel's buffers take
    s = open_stream(slow=True)
    took, _, _ = dropped_stream(s, "the client read nothing for %d s" % IDLE_S, 3 * IDLE_S)
    assert took >= IDLE_S - 0.5, took


@case
def an_event_stream_not_read_is_capped_and_dropped_with_its_reason():
    add_events(2500, 1000)  # ~2.8 MB more to send from the start of the log
    before = rss()
    s = open_stream(slow=True)
    took, got, left = dropped_stream(s, "the client does not read, its stream's buffer is full",
                                     IDLE_S - 1)
    print("  proxd VmRSS %+.1f MB while the stream filled" % ((rss() - before) / 1e6))
    # what proxd held for it: its stream's buffer (1 MiB at most) and the
    # chunk being written (one buffer's worth moved over)
    assert left <= (2 << 20) + 4096, left
    assert got < 2_000_000, "all of it was sent: %d bytes" % got
    # a client that reads is served the whole log
    r = open_stream()
    seen, buf, end = 0, b"", time.monotonic() + 30
    while seen < 2800 and time.monotonic() < end:
        buf += r.recv(1 << 20)
        seen = buf.count(b"event: node.cordoned")
    r.close()
    assert seen == 2800, seen


@case
def alive():
    assert px.alive(), "proxd died:\n" + px.log_text()[-3000:]
    assert px.call("GET", "/healthz").status_code == 200


shutdown(px, sim)
finish()
