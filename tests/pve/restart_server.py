"""A TLS server for tests/pve/test_client.c that acts as a pveproxy
restarting just after it served a write: the first write (any method but
GET) is served, then its listening socket is closed before the connection
is dropped without an answer, so a client's immediate new connection is
refused; the port listens again HOLD seconds later. Later writes are
answered with a UPID. GET /count answers how many writes arrived (and was
not counted); any other GET a version.

usage: restart_server.py PORT CERT KEY HOLD
Prints "ready" once it listens; runs until killed."""
import json
import socket
import ssl
import sys
import threading
import time

port, cert, key, hold = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
lock = threading.Lock()
state = {"writes": 0, "restarted": False}


def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


ls = [listener()]


def answer(t, data):
    out = json.dumps({"data": data}).encode()
    t.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
              b"Connection: Keep-Alive\r\n\r\n" % len(out) + out)


def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError):
        return
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = t.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            n = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    n = int(line.split(":", 1)[1])
            while len(buf) < n:
                buf += t.recv(65536)
            buf = buf[n:]
            if method == "GET":
                with lock:
                    writes = state["writes"]
                answer(t, writes if path.endswith("/count") else {"version": "9.1"})
                continue
            with lock:
                state["writes"] += 1
                restart = not state["restarted"]
                state["restarted"] = True
            if restart:  # the daemon goes down: no answer, no new connection
                ls[0].close()
                t.close()
                time.sleep(hold)
                ls[0] = listener()
                return
            answer(t, "UPID:n1:00001234:00005678:00000000:qmdestroy:100:root@pam:")
    except (OSError, ssl.SSLError):
        return


print("ready", flush=True)
while True:
    try:
        s = ls[0]
        s.settimeout(0.05)
        c, _ = s.accept()
    except (socket.timeout, OSError):
        time.sleep(0.01)
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
