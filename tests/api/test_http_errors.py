"""Every answer proxd's HTTP server sends is the documented JSON shape,
malformed request heads included (libmicrohttpd 0.9.75 answered these with
its own HTML page before proxd saw the request): the status, Content-Type
application/json, {"error": {"code", "message", "details"}}, and the
connection closed after a request whose end cannot be trusted. Also the
plain HTTP/1.1 behaviour kept across the change of server: keep-alive,
pipelined answers in order, HEAD, Expect: 100-continue, HTTP/1.0.
"""
import json
import socket
import time

from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.sock import recv_to_close
from lib.wait import wait_for


sim = Sim()
px = Proxd(sim)
ADMIN = px.token("ops", "admin")
px.start()


def exchange(data, deadline=10):
    """Send data, read until the server closes (or deadline). Returns the
    bytes and whether the server closed (EOF, not a reset or a timeout)."""
    s = socket.create_connection(("127.0.0.1", px.port), timeout=deadline)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, closed = b"", False
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return got, closed


def parse_one(got):
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    hdrs = {}
    for h in lines[1:]:
        k, _, v = h.partition(b":")
        hdrs[k.strip().lower().decode()] = v.strip().decode("latin-1")
    n = int(hdrs.get("content-length", "0"))
    return lines[0].decode("latin-1"), hdrs, rest[:n], rest[n:]


def refused(data, status, field=None, code=None):
    """data is answered with `status` in the JSON error shape, alone, and
    the connection is closed behind it."""
    got, closed = exchange(data)
    assert got.startswith(b"HTTP/1.1 %d " % status), (status, got[:300])
    line, hdrs, body, rest = parse_one(got)
    assert hdrs.get("content-type", "").startswith("application/json"), got[:300]
    e = json.loads(body)["error"]
    assert isinstance(e["code"], str) and e["code"], e
    assert isinstance(e["message"], str) and e["message"], e
    assert isinstance(e["details"], dict), e
    if field is not None:
        assert e["details"].get("field") == field, e
    if code is not None:
        assert e["code"] == code, e
    assert hdrs.get("connection", "").lower() == "close", got[:300]
    assert rest == b"", "one answer only: %r" % rest[:200]
    assert closed, "the connection stays open after a framing error"
    return e


H = b"Host: x\r\n"
SECOND = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # never answered


@case
def malformed_heads_get_the_json_error():
    cases = [
        # what libmicrohttpd 0.9.75 answered in HTML
        (b"GET /healthz HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n", 400, "headers"),
        (b"POST /v1/vms HTTP/1.1\r\n" + H + b"Content-Length: 1x\r\n\r\n", 400,
         "Content-Length"),
        (b"POST /v1/vms HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400,
         "Content-Length"),
        (b"POST /v1/vms HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n", 413,
         None),
        (b"POST /v1/vms HTTP/1.1\r\n" + H + b"Content-Length: 18446744073709551617\r\n\r\n",
         413, None),
        (b"GET /healthz HTTP/2.0\r\n" + H + b"\r\n", 505, None),
        (b"GET /healthz HTTP/3.1\r\n" + H + b"\r\n", 505, None),
        (b"GET /healthz\r\n\r\n", 400, None),               # HTTP/0.9
        (b"GET /healthz HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 100000 + b"\r\n\r\n", 431,
         None),
        (b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, None),
        # and other malformed heads
        (b"G(T /healthz HTTP/1.1\r\n" + H + b"\r\n", 400, None),          # method token
        (b"FROB /healthz HTTP/1.1\r\n" + H + b"\r\n", 400, None),         # unknown method
        (b"GET /heal\x01thz HTTP/1.1\r\n" + H + b"\r\n", 400, None),      # URL byte
        (b"GET /heal\x00thz HTTP/1.1\r\n" + H + b"\r\n", 400, None),      # NUL in the target
        (b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400, "headers"),
        (b"GET /healthz HTTP/1.1\r\n" + H + b"X-\x00A: b\r\n\r\n", 400, "headers"),
        (b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\r\n  folded\r\n\r\n", 400, "headers"),
        (b"GET /healthz HTTP/1.1\r\n" + H + b"\tX-A: a\r\n\r\n", 400, "headers"),
        (b"GET /healthz HTTP/1.1\r\n" + H + b": novalue\r\n\r\n", 400, "headers"),
        (b"GET /healthz HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431,
         None),
        (b"GET /healthz HTTP/1.1\r\n" + H + b"".join(b"X-%d: y\r\n" % i for i in range(150)) +
         b"\r\n", 431, None),
        (b"GET /healthz HTTP/1.x\r\n" + H + b"\r\n", 400, None),
        (b"GET /healthz HTTP\r\n" + H + b"\r\n", 400, None),             # no version number
        (b"GET /healthz \r\n" + H + b"\r\n", 400, None),                 # empty version
        (b"GET\r\n" + H + b"\r\n", 400, None),                           # no target
        (b"GET /v1/vms?a=%00 HTTP/1.1\r\n" + H + b"\r\n", 400, "query"),
        (b"GET /v1/%00 HTTP/1.1\r\n" + H + b"\r\n", 400, "path"),
        # a CONNECT's body was parsed as the next request (answered: SECOND's
        # 200 came after a 405); and a target one byte past 8192 was served
        (b"CONNECT /healthz HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(SECOND),
         400, "method"),
        (b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, None),
    ]
    codes = {
        411: "length_required", 413: "too_large", 414: "uri_too_long",
        431: "headers_too_large", 505: "http_version_not_supported",
    }
    for data, status, field in cases:
        try:
            refused(data + SECOND, status, field, codes.get(status))
        except AssertionError as ex:
            raise AssertionError("%r: %s" % (data[:60], ex)) from None


@case
def a_head_that_never_ends_within_the_limit_is_answered_early():
    """A head past the limits is refused as soon as the limit is passed,
    not when (if ever) it ends."""
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000)  # no end
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    s.close()
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]


@case
def keep_alive_pipelining_head_and_http10():
    auth = b"Authorization: Bearer " + ADMIN.encode() + b"\r\n"
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    # three requests in one write: three answers, in order, on one connection
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /v1/vms?limit=1 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
    got = b""
    while got.count(b"HTTP/1.1 ") < 3 or not got.endswith(b"}"):
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
        if got.count(b"HTTP/1.1 ") == 3:
            _, _, rest = got.rpartition(b"HTTP/1.1 ")
            line, hdrs, body, _ = parse_one(b"HTTP/1.1 " + rest)
            if len(body) == int(hdrs["content-length"]):
                break
    statuses = [int(x.split(b" ")[0]) for x in got.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200, 404, 200], statuses
    # HEAD: the GET's headers, no body; the connection goes on
    s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    line, hdrs, _, rest = parse_one(head)
    assert line.startswith("HTTP/1.1 200"), head
    assert int(hdrs["content-length"]) > 0 and rest == b"", head
    # Expect: 100-continue gets its interim answer before the body is sent
    body = b'{"bogus": 1}'
    s.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: x\r\n" + auth +
              b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    cont = b""
    while b"\r\n\r\n" not in cont:
        cont += s.recv(4096)
    assert cont.startswith(b"HTTP/1.1 100 "), cont
    s.sendall(body)
    got = cont.partition(b"\r\n\r\n")[2]
    while b"}}}" not in got:
        got += s.recv(4096)
    line, hdrs, b, _ = parse_one(got)
    assert line.startswith("HTTP/1.1 400"), got
    assert json.loads(b)["error"]["details"]["field"] == "bogus", b
    # Connection: close is honoured
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = recv_to_close(s)
    assert got.startswith(b"HTTP/1.1 200") and b"connection: close" in got.lower(), got
    s.close()
    # HTTP/1.0 without keep-alive: answered, then closed
    got, closed = exchange(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and closed, got


@case
def connections_per_address_are_capped():
    """512 connections per client address: the next one from that address is
    closed without an answer, one from another address is served, and a
    closed connection gives its slot back."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2048), hard))
    held = []
    try:
        for _ in range(512):
            held.append(socket.create_connection(("127.0.0.1", px.port), timeout=10))
        # the server has taken them all once an answer on the last one comes back
        held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[-1].recv(4096).startswith(b"HTTP/1.1 200"), "the 512th is served"
        over = socket.create_connection(("127.0.0.1", px.port), timeout=10)
        try:
            over.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = over.recv(4096)
        except ConnectionResetError:
            got = b""
        over.close()
        assert got == b"", "the 513th connection from one address is refused: %r" % got[:100]
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.settimeout(10)
        other.connect(("127.0.0.1", px.port))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.recv(4096).startswith(b"HTTP/1.1 200"), "another address is served"
        other.close()
        held.pop(0).close()

        def slot_back():
            s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                ok = s.recv(4096).startswith(b"HTTP/1.1 200")
            except ConnectionResetError:
                ok = False
            if ok:
                held.append(s)
            else:
                s.close()
            return ok
        wait_for(slot_back, deadline=5, interval=0.2, what="the freed slot")
    finally:
        for s in held:
            s.close()


shutdown(px, sim)  # proxd stopped with stop()'s checks (sanitizers, secrets), then pvesim
finish()
