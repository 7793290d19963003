"""A webhook receiver for tests: a small HTTP server on 127.0.0.1 that
records every post proxd makes (headers, body, whether it answered), checks
nothing itself, and can be down (not listening), slow (answers after a
delay, for the first `slow_count` posts) or up; flaky(rng, fail, slow)
makes it answer a drawn share of posts 500 and another share late (after
`delay`); `refuse` answers 400 to the events it picks. `concurrent_max` is the most
posts it had in flight at once (one deliverer at a time means 1); each post
records when it was read ("t") and answered ("end"), for overlaps."""
import hashlib
import hmac
import http.server
import json
import threading
import time

from .ports import free_port


def verify(secret, header, body, tolerance=None):
    """A receiver's check of Proxd-Signature "t=<unix>,v1=<hex>": the HMAC
    of "<t>.<body>" with the secret, compared in constant time; with
    tolerance (s), t must be that recent. True when valid."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    want = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    if tolerance is not None and abs(time.time() - int(parts["t"])) > tolerance:
        return False
    return hmac.compare_digest(want, parts["v1"])


class Receiver:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d/hook" % self.port
        self.posts = []  # dicts: delivery, event, signature, body, answered, t
        self.mu = threading.Lock()
        self.inflight = 0
        self.concurrent_max = 0
        self.delay = 0.0
        self.slow_count = 0
        self.status = 200
        self.server = None
        self.chaos = None  # (rng, fail share, slow share): flaky()
        self.refuse = None  # event (parsed body) -> True: answered 400, every time

    def flaky(self, rng, fail, slow):
        """Each post drawn: answered 500 (fail), late (slow), else 200."""
        self.chaos = (rng, fail, slow)
        return self

    def _handler(self):
        rc = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rc.mu:
                    rc.inflight += 1
                    rc.concurrent_max = max(rc.concurrent_max, rc.inflight)
                    slow = rc.slow_count > 0
                    if slow:
                        rc.slow_count -= 1
                    status = rc.status
                    if rc.chaos:
                        draw = rc.chaos[0].random()
                        if draw < rc.chaos[1]:
                            status = 500
                        slow = slow or rc.chaos[1] <= draw < rc.chaos[1] + rc.chaos[2]
                    if rc.refuse and rc.refuse(json.loads(body)):
                        status = 400
                    rec = {"delivery": self.headers.get("Proxd-Delivery"),
                           "event": self.headers.get("Proxd-Event"),
                           "signature": self.headers.get("Proxd-Signature", ""),
                           "body": body, "answered": not slow and status < 300,
                           "t": time.monotonic()}
                    rc.posts.append(rec)
                try:
                    if slow:
                        time.sleep(rc.delay)
                finally:
                    # in flight until the answer is sent: "end" is taken
                    # before it, so the sender's next post (which needs the
                    # answer) can never look as if it overlapped this one,
                    # however late this thread runs again after writing
                    with rc.mu:
                        rc.inflight -= 1
                        rec["end"] = time.monotonic()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass
        return H

    def up(self):
        if not self.server:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                          self._handler())
            self.server.daemon_threads = True
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def down(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def overlaps(self, gave_up=None):
        """Pairs of posts (a, b) that were in flight at once. With gave_up
        (the sender's timeout, s), not those where b came that long after a
        was read: a's sender had given up on it by then (it sent a before
        this receiver read it), so b may be its next post or retry."""
        with self.mu:
            done = [p for p in self.posts if "end" in p]
        done.sort(key=lambda p: p["t"])
        return [(a, b) for i, a in enumerate(done) for b in done[i + 1:]
                if b["t"] < a["end"] and (gave_up is None or b["t"] - a["t"] < gave_up)]

    def snapshot(self):
        with self.mu:
            return list(self.posts)

    def events(self):
        """Every post's decoded body, in the order received."""
        return [json.loads(p["body"]) for p in self.snapshot()]
