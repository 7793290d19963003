"""Bad input never crashes pvesim or corrupts its state: oversized bodies,
broken percent-encodings, garbage and deeply nested JSON, unknown methods and
paths, random bytes over TLS and plain TCP, and 2000 seeded random requests
on the real endpoints. Afterwards pvesim still answers, the VM list is what
it was, every served result matched the schema, and it exits cleanly (ASan)."""
import json
import random
import socket
import ssl
import threading
import time

import requests

from lib.cases import case, finish
from lib.env import TOKEN_ID, TOKEN_SECRET
from lib.sim import Sim
from lib.wait import wait_for

AUTH = {"Authorization": "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)}


def vm_list(s):
    """(vmid, node) of every VM, as the API and as /_sim/state see them."""
    api = sorted((e["vmid"], e["node"]) for e in s.data("GET", "/cluster/resources",
                                                         params={"type": "vm"}))
    st = sorted((v["vmid"], v["node"]) for v in s.state()["vms"])
    assert api == st, (api, st)
    return api


def healthy(s):
    assert s.data("GET", "/version")["version"] == "9.1.3"
    assert len(s.data("GET", "/nodes/sv2/qemu")) >= 4


def pve_error(r, status, reason=None, nl=True):
    """An error as a PVE API handler renders it: JSON body with data null; the
    message ends in a newline (die "...\n"), except rest_handler's own 501
    "Method ... not implemented" (nl=False)."""
    assert r.status_code == status, (r.status_code, r.reason, r.text[:300])
    if reason is not None:
        assert r.reason == reason, (r.reason, reason)
    assert r.headers.get("Connection") == "close", r.headers
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8", r.headers
    b = r.json()
    # the reason phrase is the message's first line (its UTF-8 bytes, which
    # http.client decodes as Latin-1)
    first = b["message"].split("\n")[0].encode("utf-8")
    assert b["data"] is None and b["message"].endswith("\n") == nl, b
    assert first == r.reason.encode("latin-1"), (b, r.reason)
    return b


def plain_error(r, status, reason):
    """An error of the HTTP layer: the message as plain text (no newline), no content type."""
    assert r.status_code == status and r.reason == reason, (r.status_code, r.reason, reason)
    assert r.text == reason and "Content-Type" not in r.headers, (r.text, r.headers)
    assert r.headers.get("Connection") == "close"


def exchange(port, data, tls=True, timeout=3.0, shut=True):
    """Send raw bytes, read until the server closes; returns what came back.
    A reset by the peer counts as a close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        try:
            sock.sendall(data)
            if shut and not tls:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server already hung up on the garbage
            pass
        out = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise AssertionError("the server neither answered nor closed: %r" % out[:200])
            except (OSError, ssl.SSLError):  # reset or closed: the server hung up
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        sock.close()


@case
def oversized_bodies():
    with Sim(nodes="sv1,sv2") as s:
        before = vm_list(s)
        big = "description=" + "x" * (600 * 1024)
        r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data=big,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        plain_error(r, 501, "for data too large")
        # the same as JSON
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone",
                  data=json.dumps({"newid": 300, "description": "y" * (600 * 1024)}),
                  headers={"Content-Type": "application/json"})
        plain_error(r, 501, "for data too large")
        # a lying Content-Length: refused before the body arrives
        head = ("POST /api2/json/nodes/sv1/qemu/8000/clone HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                "Authorization: PVEAPIToken=%s=%s\r\nContent-Length: 99999999\r\n\r\n"
                % (TOKEN_ID, TOKEN_SECRET)).encode()
        out = exchange(s.entry, head + b"newid=301")
        assert out.startswith(b"HTTP/1.1 501 for data too large\r\n"), out[:200]
        # just under the limit is fine (512 KiB; _dc is dropped), within
        # description's own limit of 8 KiB
        desc = "z" * 8192
        s.data("PUT", "/nodes/sv1/qemu/8001/config",
               data={"description": desc, "_dc": "x" * (500 * 1024)})
        assert s.data("GET", "/nodes/sv1/qemu/8001/config")["description"] == desc
        r = s.api("PUT", "/nodes/sv1/qemu/8001/config", data={"description": desc + "z"})
        b = pve_error(r, 400, "Parameter verification failed.")
        assert b["errors"] == {"description": "value may only be 8192 characters long"}, b
        assert vm_list(s) == before
        healthy(s)


@case
def broken_percent_encodings():
    with Sim(nodes="sv1,sv2") as s:
        before = vm_list(s)
        # an undecodable escape in the path stays as it is: not a VM ID
        for bad in ("%zz", "%", "%4", "80%0", "%25"):
            r = s.api("GET", "/nodes/sv1/qemu/%s/config" % bad)
            b = pve_error(r, 400, "Parameter verification failed.")
            assert b["errors"] == {"vmid": "invalid format - value does not look like a valid "
                                   "VM ID"} or "vmid" in b["errors"], b
        # %2F splits a segment: /nodes/sv1%2Fqemu is /nodes/sv1/qemu
        r = s.api("GET", "/nodes/sv1%2Fqemu")
        assert r.status_code == 200 and len(r.json()["data"]) == 4, r.text[:200]
        # in the query and in a form body
        r = s.raw("GET", "/api2/json/cluster/resources?type=%zz%", headers=AUTH)
        b = pve_error(r, 400, "Parameter verification failed.")
        assert "type" in b["errors"], b
        for body in ("description=%E0%A4%A", "description=%ff%fe%00", "description=%",
                     "name=%G1&cores=2", "%=%&=&&;;=", "cores=%32"):
            r = s.api("PUT", "/nodes/sv1/qemu/8002/config", data=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code in (200, 400, 500), (body, r.status_code, r.reason)
            if r.status_code != 200:
                pve_error(r, r.status_code)
        # "cores=%32" is cores=2
        assert s.data("GET", "/nodes/sv1/qemu/8002/config")["cores"] == 2
        # raw non-UTF-8 and control bytes in the request target
        out = exchange(s.entry, b"GET /api2/json/nodes/sv1/qemu/\xff\xfe/config HTTP/1.1\r\n"
                       b"Host: x\r\nAuthorization: " + AUTH["Authorization"].encode()
                       + b"\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 "), out[:100]
        assert vm_list(s) == before
        healthy(s)


@case
def garbage_json():
    with Sim(nodes="sv1,sv2") as s:
        before = vm_list(s)
        hj = {"Content-Type": "application/json"}
        # what decode_json refuses, and what is no object: a 500 of the HTTP
        # layer (tests/sim/test_request_decoding.py has the texts); the
        # schema's refusals: 400 (duplicate keys: the last wins, also there)
        for body in ('{"newid": 300', "[1,2,3]", '"newid"', "nul", "{'newid': 300}",
                     "\x00\x01\x02", '{"newid": NaN}', '{"newid": 1e999}', '{"newid": [300]}',
                     '{"newid": {"a": 1}}', '{"newid": 300}garbage', "\ufeff{}",
                     '{"name": "\\ud800"}'):
            r = s.api("POST", "/nodes/sv1/qemu/8000/clone", data=body.encode("utf-8", "replace"),
                      headers=hj)
            assert r.status_code in (400, 500), (body, r.status_code, r.reason)
            if r.status_code == 500:
                # (the reason: its UTF-8 bytes, which http.client decodes as Latin-1)
                assert "Content-Type" not in r.headers, (body, r.headers)
                assert r.content == r.reason.encode("latin-1") + b"\n", (body, r.content)
            else:
                assert pve_error(r, 400)["errors"], body
        # a JSON body that is fine is accepted, with JSON types
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", json_body={"newid": 300, "full": 1})
        assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        s.data("PUT", "/nodes/sv1/qemu/300/config", json_body={"cores": 3, "onboot": True})
        c = s.data("GET", "/nodes/sv1/qemu/300/config")
        assert c["cores"] == 3 and c["onboot"] == 1, c
        # reals read back as Perl prints them (%.15g), not 0.10000000000000001
        s.data("PUT", "/nodes/sv1/qemu/300/config", json_body={"cpulimit": 0.1, "description": 0.3})
        c = s.data("GET", "/nodes/sv1/qemu/300/config")
        assert str(c["cpulimit"]) == "0.1" and c["description"] == "0.3", c
        before.append((300, "sv1"))
        assert vm_list(s) == sorted(before)
        healthy(s)


@case
def deep_nesting():
    with Sim(nodes="sv1,sv2") as s:
        before = vm_list(s)
        for depth in (100, 5000, 100000):
            body = '{"description": ' + "[" * depth + "]" * depth + "}"
            r = s.api("PUT", "/nodes/sv1/qemu/8000/config", data=body,
                      headers={"Content-Type": "application/json"})
            # too deep for the decoder: its 500 (JSON::XS stops at 512 levels)
            assert r.status_code in (400, 500, 501), (depth, r.status_code, r.reason)
            if r.status_code == 400:
                pve_error(r, 400)
            body = '{"x": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
            r = s.api("POST", "/nodes/sv1/qemu/8000/clone", data=body,
                      headers={"Content-Type": "application/json"})
            assert r.status_code in (400, 500, 501), (depth, r.status_code, r.reason)
        # deep in the control API too
        r = s.raw("POST", "/_sim/faults", data="[" * 100000 + "]" * 100000,
                  headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 501), r.status_code
        assert s.ctl("GET", "/faults") == []
        assert vm_list(s) == before
        healthy(s)


@case
def methods_and_paths():
    with Sim(nodes="sv1,sv2") as s:
        for m in ("HEAD", "OPTIONS", "PATCH", "TRACE", "PROPFIND"):
            r = s.api(m, "/version")
            assert r.status_code == 501 and r.reason == "method '%s' not available" % m, \
                (m, r.status_code, r.reason)
            # a bare HTTP::Response: no body at all
            assert r.text == "" and "Content-Type" not in r.headers, (m, r.text, r.headers)
        # no authentication needed to be refused
        r = s.raw("OPTIONS", "/api2/json/nodes")
        assert r.status_code == 501
        for path in ("/x", "/nodes/sv1/nothing", "/nodes/sv1/qemu/8000/nothing",
                     "/cluster/resources/extra", "/access/ticket/x"):
            r = s.api("GET", path)
            pve_error(r, 501, "Method 'GET %s' not implemented" % path, nl=False)
        # a known path with the wrong method
        r = s.api("DELETE", "/version")
        pve_error(r, 501, "Method 'DELETE /version' not implemented", nl=False)
        r = s.api("POST", "/nodes/sv1/qemu/8000/config/", data={"cores": 1})
        assert r.status_code == 200  # a trailing / is harmless, POST config is a task
        s.wait_task("sv1", r.json()["data"])
        # outside /api2/json
        for path, reason in (("/", "no such uri"), ("/api2", "no such uri"),
                             ("/api2/", "no such uri"), ("/foo/bar", "no such uri"),
                             ("/api2/xml/version", "no formatter for uri /version, xml")):
            plain_error(s.raw("GET", path, headers=AUTH), 501, reason)
        # the root index
        idx = s.data("GET", "")
        assert idx == [{"subdir": d} for d in ("version", "cluster", "nodes", "storage", "access",
                                                "pools")], idx
        assert s.data("GET", "/") == idx
        assert s.api("GET", "", auth=None).status_code == 401
        # oversized and strange request lines
        out = exchange(s.entry, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ") or out.startswith(b"HTTP/1.1 414 "), out[:80]
        out = exchange(s.entry, b"GET /api2/json/version HTTP/1.1\r\n"
                       + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n")
        assert out.startswith(b"HTTP/1.1 400 "), out[:80]
        healthy(s)


@case
def random_bytes():
    rnd = random.Random(4711)
    with Sim(nodes="sv1,sv2") as s:
        before = vm_list(s)
        ports = [s.entry, s.ports["sv1"]]
        for i in range(60):
            n = rnd.choice([1, 7, 100, 1000, 20000])
            data = bytes(rnd.getrandbits(8) for _ in range(n))
            port = ports[i % 2]
            kind = i % 3
            if kind == 0:  # inside a TLS session
                exchange(port, data, tls=True)
            elif kind == 1:  # plain TCP, no TLS
                exchange(port, data, tls=False)
            else:  # something that looks like a TLS record, then junk
                exchange(port, b"\x16\x03\x01" + data, tls=False)
        # half a request, then the client goes away
        for port in ports:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
            sock.sendall(b"POST /api2/json/nodes/sv1/qemu/8000/clone HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: " + AUTH["Authorization"].encode() +
                         b"\r\nContent-Length: 100\r\n\r\nnewid=3")
            sock.close()
        # random printable junk that parses as HTTP
        for _ in range(40):
            line = "".join(rnd.choice("GETPOS /%?&=:\t\r\nabc") for _ in range(rnd.randint(1, 80)))
            exchange(s.entry, line.encode() + b"\r\n\r\n", tls=True)
        assert vm_list(s) == before
        healthy(s)
        assert s.data("GET", "/version", port=s.ports["sv1"])["release"] == "9.1"


# ---- 2000 random requests --------------------------------------------------

JUNK = ["", "-1", "0", "1", "abc", "1e5", "%zz", "\u00e9t\u00e9", "true", "x" * 3000, "99999999999",
        "1.5", " ", "a,b", "+1G", "null", "[]", "{}", "\n", "local-lvm", "2048", "sv1"]


def gen_request(rnd, upids):
    """One random request: (method, path, params, as_json). Never one that can
    create or destroy a VM: clone/create targets exist or are invalid,
    deletes name missing VMs or carry an invalid parameter."""
    def pick(valid, p_valid=0.6):
        return rnd.choice(valid) if rnd.random() < p_valid else rnd.choice(JUNK)

    node = pick(["sv1", "sv2", "sv1", "sv2"], 0.9) if rnd.random() < 0.95 else "nosuch"
    if not node or "/" in node or "?" in node or "%" in node:
        node = "sv1"
    vmid = pick([4000, 8000, 8001, 8010, 8011, 4242], 0.9)
    vmid = str(vmid).replace("/", "").replace("?", "") or "0"
    existing = rnd.choice(["4000", "8000", "8001", "8010", "99", "1000000000", "abc", "-3", "0"])
    r = rnd.random()
    params = {}
    if r < 0.30:
        path, params = rnd.choice([
            ("/version", {}),
            ("/nodes", {}),
            ("/nodes/%s/status" % node, {}),
            ("/nodes/%s/qemu" % node, {"full": pick(["0", "1"])}),
            ("/nodes/%s/qemu/%s/config" % (node, vmid), {"current": pick(["0", "1"])}),
            ("/nodes/%s/qemu/%s/pending" % (node, vmid), {}),
            ("/nodes/%s/qemu/%s/status/current" % (node, vmid), {}),
            ("/nodes/%s/storage" % node, {"content": pick(["images", "iso"]),
                                          "enabled": pick(["1"])}),
            ("/nodes/%s/storage/%s/status" % (node, pick(["local", "local-lvm", "nfs"])), {}),
            ("/cluster/resources", {"type": pick(["vm", "node", "storage", "sdn"])}),
            ("/cluster/nextid", {"vmid": pick(["4000", "300", "100"])}),
            ("/cluster/status", {}),
            ("/nodes/%s/tasks" % node, {"limit": pick(["5", "0"]), "start": pick(["0", "2"]),
                                        "vmid": pick(["4000"]), "errors": pick(["1"])}),
        ])
        params = {k: v for k, v in params.items() if rnd.random() < 0.7}
        return "GET", path, params, False
    if r < 0.38:
        upid = rnd.choice(upids) if upids and rnd.random() < 0.7 else pick(["UPID:sv1:x"])
        what = rnd.choice(["status", "log"])
        p = {"start": pick(["0", "3"]), "limit": pick(["0", "10"])} if what == "log" else {}
        n = upid.split(":")[1] if upid.startswith("UPID:") and upid.count(":") > 2 else node
        return "GET", "/nodes/%s/tasks/%s/%s" % (n, upid, what), p, False
    if r < 0.58:
        method = rnd.choice(["PUT", "POST"])
        opts = {
            "cores": pick(["1", "2", "4", "64", "0"]),
            "memory": pick(["512", "2048", "4096", "current=1024", "8"]),
            "name": pick(["web-1", "a.b.c", "under_score", "-x"]),
            "tags": pick(["a;b", "x", "UP", "a b"]),
            "description": pick(["hello", "multi\nline", "\u00fcml\u00e4ut"]),
            "onboot": pick(["0", "1"]),
            "balloon": pick(["0", "256", "99999"]),
            "net0": pick(["virtio,bridge=vmbr0", "model=e1000,bridge=vmbr1,tag=5", "bogus=1"]),
            "ipconfig0": pick(["ip=dhcp", "ip=10.0.0.5/24,gw=10.0.0.1", "gw=1.2.3.4"]),
            "sshkeys": pick(["ssh-ed25519%20AAAA", "%0A"]),
            "delete": pick(["tags", "description", "nosuch", "cores"]),
            "digest": pick(["0" * 40]),
            "skiplock": pick(["1", "0"]),
            "bogus": "1",
        }
        chosen = {k: v for k, v in opts.items() if rnd.random() < 0.2}
        if method == "POST" and rnd.random() < 0.2:
            chosen["background_delay"] = pick(["1", "5", "31"])
        return method, "/nodes/%s/qemu/%s/config" % (node, vmid), chosen, rnd.random() < 0.3
    if r < 0.64:
        p = {"disk": pick(["scsi0", "ide2", "virtio9", "efidisk0"]),
             "size": pick(["+1G", "+512M", "20G", "1", "+0", "-1G", "1g", "+1.5G"])}
        p = {k: v for k, v in p.items() if rnd.random() < 0.9}
        return "PUT", "/nodes/%s/qemu/%s/resize" % (node, vmid), p, rnd.random() < 0.3
    if r < 0.72:
        p = {"newid": existing, "full": pick(["0", "1"]), "name": pick(["c1", "bad_name"]),
             "storage": pick(["local-lvm", "local", "nope"]), "target": pick(["sv2", "nosuch"]),
             "format": pick(["raw", "qcow2"]), "snapname": pick(["snap1"])}
        p = {k: v for k, v in p.items() if k == "newid" or rnd.random() < 0.3}
        return "POST", "/nodes/%s/qemu/%s/clone" % (node, vmid), p, rnd.random() < 0.3
    if r < 0.76:
        p = {"vmid": existing, "cores": pick(["1", "x"]), "memory": pick(["512"]),
             "scsi0": pick(["local-lvm:4", "nope:4", "local-lvm:0"]), "start": pick(["0", "1"])}
        p = {k: v for k, v in p.items() if k == "vmid" or rnd.random() < 0.4}
        return "POST", "/nodes/%s/qemu" % node, p, rnd.random() < 0.3
    if r < 0.93:
        action = rnd.choice(["start", "stop", "shutdown", "reboot", "suspend", "resume", "reset"])
        p = {"timeout": pick(["0", "1", "5"]), "forceStop": pick(["1", "0"]),
             "skiplock": pick(["1"]), "todisk": pick(["0"]), "overrule-shutdown": pick(["1"])}
        p = {k: v for k, v in p.items() if rnd.random() < 0.2}
        return "POST", "/nodes/%s/qemu/%s/status/%s" % (node, vmid, action), p, rnd.random() < 0.3
    # DELETE: a VM that does not exist, or an invalid parameter
    if rnd.random() < 0.5:
        return "DELETE", "/nodes/%s/qemu/%s" % (node, rnd.choice(["4242", "99", "abc"])), \
            {"purge": pick(["1"])}, False
    return "DELETE", "/nodes/%s/qemu/%s" % (node, vmid), \
        {rnd.choice(["purge", "skiplock", "destroy-unreferenced-disks"]):
         rnd.choice(["yes", "2", "true", "-1"])}, False


def check_response(r, method, path):
    ctx = (method, path, r.status_code, r.reason, r.text[:300])
    assert r.status_code in (200, 400, 500, 501), ctx
    if r.status_code == 200:
        assert r.headers["Content-Type"] == "application/json;charset=UTF-8", ctx
        assert "data" in r.json(), ctx
        return r.json()["data"]
    assert r.headers.get("Connection") == "close", ctx
    if r.headers.get("Content-Type"):
        b = r.json()
        assert b["data"] is None and \
            b["message"].split("\n")[0].encode() == r.reason.encode("latin-1"), ctx
        if r.status_code == 400:
            assert b.get("errors") or r.reason != "Parameter verification failed.", ctx
    else:
        assert r.status_code == 501 and r.text == r.reason + "\n", ctx
    return None


@case
def random_requests():
    with Sim(nodes="sv1,sv2", time_scale=0.005) as s:
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": 4000, "full": 1})
        s.wait_task("sv1", upid)
        before = vm_list(s)
        upids = [upid]
        stats = {}
        errors = []
        lock = threading.Lock()

        def worker(seed, count):
            rnd = random.Random(seed)
            sess = requests.Session()
            sess.verify = False
            sess.headers.update(AUTH)
            for _ in range(count):
                method, path, params, as_json = gen_request(rnd, upids)
                url = s.url("/api2/json" + path)
                kw = {"timeout": 20, "verify": False}  # REQUESTS_CA_BUNDLE beats sess.verify
                if method in ("GET", "DELETE"):
                    kw["params"] = params
                elif as_json:
                    kw["json"] = params
                else:
                    kw["data"] = params
                try:
                    r = sess.request(method, url, **kw)
                    data = check_response(r, method, path)
                except Exception as e:  # noqa: BLE001 - collect, report at the end
                    with lock:
                        errors.append("%s %s %r: %r" % (method, path, params, e))
                    continue
                with lock:
                    stats[r.status_code] = stats.get(r.status_code, 0) + 1
                    if isinstance(data, str) and data.startswith("UPID:") and len(upids) < 200:
                        upids.append(data)

        threads = [threading.Thread(target=worker, args=(1000 + i, 500)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, "%d bad responses, first: %s" % (len(errors), errors[:5])
        assert sum(stats.values()) == 2000, stats
        # a healthy mix of outcomes
        assert stats.get(200, 0) > 300 and stats.get(400, 0) > 200 and stats.get(500, 0) > 100, stats
        # let every task end, then the world is what it was
        def idle():
            return all(not t["running"] for t in s.state()["tasks"])
        wait_for(idle, 20, what="all tasks to end")
        assert vm_list(s) == before
        for v in s.state()["vms"]:
            assert v["flock_shared"] == 0 and v["flock_exclusive"] == 0, v
        healthy(s)
        c = s.data("GET", "/nodes/sv1/qemu/4000/config")
        assert c["scsi0"].startswith("local-lvm:vm-4000-disk-0"), c
        print("     status counts: %s" % dict(sorted(stats.items())), flush=True)


finish()
