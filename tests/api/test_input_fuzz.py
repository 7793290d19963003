"""A seeded, randomized property test of what proxd takes from the network:
request bodies, query strings and path parameters of every write endpoint
of docs/openapi.yaml and the list endpoints' queries, each request a
mutation of a valid one (a wrong JSON type, a missing or unknown field, an
empty, over-long or control-character string, a number past its range or
past 64 bits, deep nesting, a duplicate key, a body that is no object or no
JSON, a wrong Content-Type, a bad path id, a bad or unknown query argument,
bad percent-encoding, a bad token, method or route, a body past 64 KiB), plus
valid requests (creations, dry runs, Idempotency-Key replays and reuses,
PATCH, resize, snapshots, cordons, holds and ranges).

The promise: bad input gets a clear error naming the field, and nothing is
lost or corrupted.

- every answer comes whole (no connection dropped), is never a 5xx (but a
  503 node_down/starting), and a 4xx is proxd's JSON error shape;
- a request with one wrong body field, query argument or header is refused
  (4xx) naming it in details.field;
- proxd stays alive with a log free of sanitizer reports;
- afterwards: every job, VM record, VMID, address hold or range, run-time
  range and Idempotency-Key in the database comes from an accepted request
  (or the fixture, or proxd's own snapshot sync), every accepted job ended,
  every accepted creation made the VM it asked for with its address, no
  VMID or address is left reserved or held twice.

FUZZ_SEED (default fixed) and FUZZ_N (requests, default 3000: about 5 s on
the ASan build) make a run repeatable; a failure prints the seed, each
problem's request number and mutation, a count by kind, and leaves every
problem in fuzz-problems.txt in proxd's directory. Before the run, one
example case for each bug such runs found (each failed on the code before
its fix).
"""
import ipaddress
import json
import os
import random
import socket
import sqlite3
import time

from lib.cases import case, finish
from lib.ports import free_port
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

SEED = int(os.environ.get("FUZZ_SEED", "20261206"))
N = int(os.environ.get("FUZZ_N", "3000"))
CREATIONS = 6  # real creations a run may make (the others are dry runs)

POOLS = """
[ippool lan]
cidr = 10.20.0.0/24
gateway = 10.20.0.1
ranges = 10.20.0.10-10.20.0.100
bridge = vmbr0

[ippool lan6]
cidr = fd00:20::/64
bridge = vmbr0
"""

sim = Sim()
px = Proxd(sim, sections=POOLS + "\n[webhook fz]\nurl = http://127.0.0.1:%d/hook\n"
           "secret = fuzz-webhook-secret-xx\n" % free_port())
ADMIN = px.token("ops", "admin")
ALICE = px.token("alice")
px.start()

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJzLXB1YmxpYy1rZXktZm9yLXRlc3RpbmctMDEy"
       " fuzz@test")


# ---- HTTP: a fresh connection per request, read to the end --------------------------------


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def send(method, target, token=None, body=None, ctype="application/json", headers=()):
    """One request; its Answer, or None when the connection dropped before
    a whole answer came. body: bytes as they are (None: no body)."""
    head = [b"%s %s HTTP/1.1" % (method.encode(), target.encode("latin-1")), b"Host: x",
            b"Connection: close"]
    if token:
        head.append(b"Authorization: Bearer " + token.encode())
    if body is not None:
        if ctype is not None:
            head.append(b"Content-Type: " + ctype.encode("latin-1"))
        head.append(b"Content-Length: %d" % len(body))
    head += [k.encode() + b": " + v.encode("latin-1") for k, v in headers]
    data = b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")
    s = socket.create_connection(("127.0.0.1", px.port), timeout=30)
    got = b""
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            h, sep, rest = got.partition(b"\r\n\r\n")
            if sep:
                cl = [x for x in h.split(b"\r\n") if x.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
    except OSError:
        pass
    finally:
        s.close()
    h, sep, rest = got.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = h.split(b"\r\n")
    hd = {}
    for x in lines[1:]:
        k, _, v = x.partition(b":")
        hd[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    n = int(hd.get("content-length", "0"))
    if len(rest) < n:
        return None
    return Answer(int(lines[0].split(b" ")[1]), hd, rest[:n])


def jbody(obj):
    return json.dumps(obj).encode()


def api(method, path, token, obj=None, want=None):
    """A well-formed JSON request; its Answer (status `want` asserted)."""
    a = send(method, path, token, None if obj is None else jbody(obj))
    assert a is not None, (method, path)
    if want is not None:
        assert a.status == want, (method, path, a.status, a.body[:400])
    return a


def db(sql, args=()):
    c = sqlite3.connect(px.db, timeout=30)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def wait_job(job, deadline=120):
    def ended():
        a = api("GET", "/v1/jobs/" + job, ADMIN)
        return a.json() if a.status == 200 and a.json()["state"] in ("done", "failed") else None
    return wait_for(ended, deadline=deadline, interval=0.1, what="job " + job)


# ---- the fixture: a VM of alice's with an address, one of the admin's ------------------------

FIX_JOBS = set()  # the fixture's creation jobs
FIX_KEYS = set()  # (owner, Idempotency-Key) of the fixture's creations


def fixture_vm(token, name, extra=None, key=None):
    body = {"os": "ubuntu", "name": name, "cores": 1, "memory_mb": 512, "disk_gb": 10}
    body.update(extra or {})
    a = send("POST", "/v1/vms", token, jbody(body),
             headers=[("Idempotency-Key", key)] if key else ())
    assert a.status == 202, a.body
    if key:
        FIX_KEYS.add(({ADMIN: "ops", ALICE: "alice"}[token], key))
    FIX_JOBS.add(a.json()["job"])
    j = wait_job(a.json()["job"])
    assert j["state"] == "done", j
    return a.json()["vmid"]


VM_ALICE = fixture_vm(ALICE, "fz-alice", {"ippools": ["lan"]})
VM_ADMIN = fixture_vm(ADMIN, "fz-ops", key="fixture-ops")
FIX_VMIDS = {VM_ALICE, VM_ADMIN}


def identity(vmid):
    """What no request of the run may change of a fixture VM."""
    v = api("GET", "/v1/vms/%d" % vmid, ADMIN, want=200).json()
    return {k: v[k] for k in ("vmid", "name", "os", "owner", "state", "id")}, v["network"]


FIX_IDENTITY = {vmid: identity(vmid) for vmid in FIX_VMIDS}
FIX_JOB = sorted(FIX_JOBS)[0]


# ---- what the run accepted, to hold the database to afterwards ------------------------------


class Ledger:
    def __init__(self):
        self.jobs = set()          # every job id an accepted answer named
        self.creations = []        # (request body, owner, vmid, job)
        self.vmids = set()         # VMIDs accepted creations were given
        self.idem_keys = set()     # keys of accepted creations (owner, key)
        self.idem_bodies = {}      # (owner, key) -> the body it was accepted with
        self.holds = set()         # addresses held now
        self.ranges = {}           # run-time range id -> (kind, first, last)
        self.cordoned = {}         # node -> cordoned, as the accepted requests left it
        self.resized = {}          # vmid -> the last disk_gb an accepted resize asked
        self.snaps = []            # (vmid, name) of accepted snapshot creations
        self.patched = {}          # vmid -> (cores, memory_mb) the last accepted PATCH asked
        self.deleted = set()       # the creation jobs whose VM an accepted DELETE removed


L = Ledger()
rng = random.Random(SEED)
PROBLEMS = []
KINDS = {}  # problems by endpoint, mutation and what went wrong
COUNTS = {}


# ---- requests and their expectations ---------------------------------------------------------


class Req:
    """A request and what it must get: kind "refuse" (a 4xx; status in
    `statuses` when given; details.field == field when given; code when
    given) or "any" (2xx or a well-formed 4xx)."""

    def __init__(self, endpoint, mutation, method, path, token, body=None, obj=None,
                 ctype="application/json", headers=(), query=""):
        self.endpoint, self.mutation = endpoint, mutation
        self.method, self.path, self.token = method, path, token
        self.body, self.obj, self.ctype, self.headers, self.query = body, obj, ctype, headers, query
        self.kind, self.field, self.statuses, self.code = "refuse", None, None, None
        self.on_accept = None
        self.alt_key = False  # a 409 idempotency_key_reused is a fine refusal too

    def refuse(self, field=None, statuses=None, code=None):
        self.kind, self.field, self.statuses, self.code = "refuse", field, statuses, code
        return self

    def any(self, on_accept=None):
        self.kind, self.on_accept = "any", on_accept
        return self

    def target(self):
        return self.path + ("?" + self.query if self.query else "")

    def describe(self):
        b = self.body if self.body is None or len(self.body) < 300 else \
            self.body[:300] + b"...(%d bytes)" % len(self.body)
        return "%s %s [%s/%s] body=%r headers=%r" % (self.method, self.target()[:300],
                                                     self.endpoint, self.mutation, b, self.headers)


def problem(i, rq, what, a=None):
    kind = "%s/%s: %s" % (rq.endpoint, rq.mutation.split(":")[0], what.split(",")[0][:40])
    KINDS[kind] = KINDS.get(kind, 0) + 1
    PROBLEMS.append("#%d seed %d %s\n    %s\n    -> %s" % (
        i, SEED, what, rq.describe(),
        "dropped" if a is None else "%d %r" % (a.status, a.body[:400])))


def check(i, rq, a):
    """The answer's properties; problems are collected, not raised, so that
    one run shows every kind of failure it found."""
    if a is None:
        problem(i, rq, "the connection dropped without an answer", a)
        return
    err = None
    if a.status >= 400:
        try:
            assert "application/json" in a.headers.get("content-type", "")
            err = a.json()["error"]
            assert isinstance(err["code"], str) and err["code"], err
            assert isinstance(err["message"], str) and err["message"], err
            assert isinstance(err["details"], dict), err
        except (AssertionError, ValueError, KeyError, TypeError) as e:
            problem(i, rq, "not proxd's JSON error shape (%r)" % e, a)
            return
    if a.status >= 500 and not (a.status == 503 and err["code"] in ("node_down", "starting")):
        problem(i, rq, "a server error", a)
        return
    if rq.kind == "refuse" and rq.alt_key and err and err["code"] == "idempotency_key_reused":
        if (a.status, err["details"].get("field")) != (409, "Idempotency-Key"):
            problem(i, rq, "a key reused but not said so", a)
        return
    if rq.kind == "refuse":
        if a.status < 400:
            problem(i, rq, "accepted, should be refused (field %s)" % rq.field, a)
            note_accepted(rq, a)
            return
        if rq.statuses and a.status not in rq.statuses:
            problem(i, rq, "status %d, want one of %s" % (a.status, rq.statuses), a)
        if rq.code and err["code"] != rq.code:
            problem(i, rq, "code %s, want %s" % (err["code"], rq.code), a)
        got = err["details"].get("field")
        if rq.field is not None and got != rq.field and not (
                rq.field.endswith(".") and (got == rq.field[:-1] or
                                            str(got).startswith(rq.field))):
            problem(i, rq, "details.field %r, want %r" % (err["details"].get("field"), rq.field),
                    a)
    elif a.status < 400:
        note_accepted(rq, a)


def note_accepted(rq, a):
    if a.status == 204:
        o = {}
    else:
        try:
            o = a.json()
        except ValueError:
            o = {}
    if isinstance(o, dict) and isinstance(o.get("job"), str):
        L.jobs.add(o["job"])
    if rq.on_accept:
        rq.on_accept(rq, a, o)


# ---- value generators -------------------------------------------------------------------------

WRONG = {
    "int": [1.5, 1e308, -0.0, 1.0, 1000.0, "1", "NaN", "Infinity", "-1", True, False, [], {},
            [1], {"v": 1}],
    "str": [1, 0, -1, 1.5, True, False, [], {}, ["x"], {"x": "y"}],
    "bool": [0, 1, "true", "false", "yes", "", [], {}, 1.0],
    "strs": ["x", 1, True, {}, {"k": "v"}, [1], [True], [None], [["x"]], [{}]],
    "obj": ["x", 1, True, [], ["lan"], [{"lan": "x"}]],
}
BIG_INT = [-1, 0, 2 ** 31, 2 ** 31 - 1, -2 ** 31, 2 ** 32, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1,
           -2 ** 63, -2 ** 31 - 1]
PAST_64 = ["9223372036854775808", "18446744073709551616", "-9223372036854775809",
           "1" + "0" * 30, "1e400", "-1e400"]
CTRL = ["\u0000", "a\u0000b", "\u0001", "\n", "\r", "\t", "\u007f", "\u00e9", "\U0001f600",
        "\u202e", "\ufeff", "\\", "\"", "%00", "../", "a b", "$(id)"]


def label(n=8):
    return "fz" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


class Field:
    """A body field: its JSON type, a valid value, required, its longest
    valid string (str), whether "" is valid, and values of the right type
    that are invalid (refused naming it)."""

    def __init__(self, type_, valid, required=False, maxlen=None, empty_ok=False, bad=(),
                 long_ok=False, ctrl_ok="", err=None, ok_ints=()):
        self.type, self.valid, self.required, self.maxlen = type_, valid, required, maxlen
        self.ok_ints = set(ok_ints)  # edge integers (BIG_INT) the field takes
        self.empty_ok, self.bad, self.long_ok = empty_ok, list(bad), long_ok
        # ctrl_ok: which of CTRL the field takes ("": none, "text": all but
        # NUL, "line": all but NUL, CR and LF, "printable": no control
        # character at all)
        self.ctrl_ok = ctrl_ok
        self.err = err  # the field the error names, when not the field's own name


# ---- endpoints --------------------------------------------------------------------------------

TOKENS = {"admin": ADMIN, "alice": ALICE}
OWNERS = {ADMIN: "ops", ALICE: "alice"}
state = {"creations": 0, "snaps": 0, "disk": {}, "addr": 200}


def fresh_addr():
    state["addr"] += 1
    return "10.20.0.%d" % (200 + state["addr"] % 50)


def create_fields(admin):
    f = {
        "os": Field("str", lambda: rng.choice(["ubuntu", "debian"]), True, 31,
                    bad=["nope", "Ubuntu", "ubuntu ", "centos", "x" * 31]),
        "name": Field("str", label, True, 63, long_ok=True,
                      bad=["-a", "a-", "a_b", "a.b", "x" * 64, "\u00e9t\u00e9", "a b"]),
        "cores": Field("int", lambda: rng.randint(1, 2), True, bad=[33, 1000, 1 << 20, 1 << 21]),
        "memory_mb": Field("int", lambda: rng.choice([512, 1024]), True,
                           bad=[511, 65537, 16, 1 << 40]),
        "disk_gb": Field("int", lambda: rng.choice([10, 12]), True, bad=[9, 1025, 1 << 40]),
        "ssh_keys": Field("strs", lambda: rng.choice([[], [KEY]]),
                          bad=[["not a key"], [KEY + "\n" + KEY], ["x" * 17000],
                               [KEY] * 200, ["ssh-rsa !!!"], [""]]),
        "owner": Field("str", lambda: OWNERS[ADMIN if admin else ALICE], maxlen=63, empty_ok=True,
                       bad=["bad owner", "x" * 64, "a/b", "\u00e9"] + ([] if admin else ["bob"])),
        "ippools": Field("strs", lambda: rng.choice([[], ["lan"], ["lan6"], ["lan", "lan6"]]),
                         bad=[["nope"], ["lan", "lan"], ["lan", "lan6", "lan"], [""],
                              ["x" * 40]]),
    }
    if admin:
        f["addresses"] = Field("obj", None, err="addresses.",
                               bad=[{"lan": "1.2.3.4"}, {"lan": "x"}, {"lan": "10.20.0.1"},
                                    {"lan": "10.20.0.150"}, {"nope": "10.20.0.5"},
                                    {"lan": "10.20.0.5", "lan6": "fd00:20::5", "x": "1"}])
    return f


def vm_target(admin):
    return VM_ADMIN if admin else VM_ALICE


def ep_create(admin):
    tok = ADMIN if admin else ALICE
    fields = create_fields(admin)
    body = {k: fields[k].valid() for k in ("os", "name", "cores", "memory_mb", "disk_gb")}
    if rng.random() < 0.3:
        body["ssh_keys"] = [KEY]
    if rng.random() < 0.4:
        body["ippools"] = ["lan"]
        if admin and rng.random() < 0.5:
            body["addresses"] = {"lan": "10.20.0.%d" % rng.randint(10, 100)}
    real = state["creations"] < CREATIONS and rng.random() < 0.5
    query = "" if real else rng.choice(["dry_run", "dry_run=true", "dry_run=1", "dry_run="])
    headers = []
    if rng.random() < 0.4:
        headers.append(("Idempotency-Key", "k-%d-%d" % (SEED, rng.randint(0, 6))))

    def accepted(rq, a, o):
        if a.status == 200:  # a dry run: {"dry_run": true, "valid": true}
            if o != {"dry_run": True, "valid": True}:
                PROBLEMS.append("dry run answered %r" % o)
            return
        owner = rq.obj.get("owner") or OWNERS[tok]
        if not o.get("replayed"):
            state["creations"] += 1
            L.creations.append((rq.obj, owner, o["vmid"], o["job"]))
            L.vmids.add(o["vmid"])
        for k, v in rq.headers:
            if k == "Idempotency-Key":
                L.idem_keys.add((OWNERS[tok], v))
                L.idem_bodies.setdefault((OWNERS[tok], v), (rq.obj, o["job"]))
    return ("create", "POST", "/v1/vms", tok, body, fields, query, headers, accepted, True)


def ep_patch(admin):
    vm = vm_target(admin)
    fields = {"cores": Field("int", lambda: rng.randint(1, 3), bad=[33, 1 << 20, 1 << 21]),
              "memory_mb": Field("int", lambda: rng.choice([512, 768, 1024]),
                                 bad=[1, 511, 65537, 1 << 40])}
    body = {"cores": fields["cores"].valid()} if rng.random() < 0.5 else {
        "memory_mb": fields["memory_mb"].valid()}

    def accepted(rq, a, o):
        c, m = L.patched.get(vm, (None, None))
        L.patched[vm] = (rq.obj.get("cores", c), rq.obj.get("memory_mb", m))
    return ("patch", "PATCH", "/v1/vms/%d" % vm, TOKENS["admin" if admin else "alice"], body,
            fields, "", [], accepted, True)


def ep_resize(admin):
    vm = vm_target(admin)
    nxt = state["disk"].get(vm, 10) + 1
    fields = {"disk_gb": Field("int", lambda: nxt, True, bad=[1, 5, 10, 1025, 1 << 40])}

    def accepted(rq, a, o):
        state["disk"][vm] = rq.obj["disk_gb"]
        L.resized[vm] = rq.obj["disk_gb"]
    return ("resize", "POST", "/v1/vms/%d/resize" % vm, TOKENS["admin" if admin else "alice"],
            {"disk_gb": nxt}, fields, "", [], accepted, True)


def ep_shutdown(admin):
    vm = vm_target(admin)
    fields = {"timeout": Field("int", lambda: 30, bad=[0, 3601, -5, 1 << 31]),
              "force": Field("bool", lambda: True)}
    return ("shutdown", "POST", "/v1/vms/%d/shutdown" % vm, TOKENS["admin" if admin else "alice"],
            {"timeout": 30, "force": True}, fields, "", [], None, False)


def ep_action(admin):
    vm = vm_target(admin)
    act = rng.choice(["start", "stop", "pause", "resume", "reboot"])
    return ("action-" + act, "POST", "/v1/vms/%d/%s" % (vm, act),
            TOKENS["admin" if admin else "alice"], {}, {}, "", [], None, False)


def ep_delete(admin):
    """A fixture VM's delete is only ever sent wrong; a VM the run made
    may be deleted for real (409 while its creation runs)."""
    made = [(vmid, job) for _, _, vmid, job in L.creations if job not in L.deleted]
    # at most half of them: the others' records are held to their requests
    if made and len(L.deleted) < len(L.creations) // 2 and rng.random() < 0.3:
        vm, job = rng.choice(made)

        def accepted(rq, a, o):
            L.deleted.add(job)
        return ("delete", "DELETE", "/v1/vms/%d" % vm, ADMIN, None, {}, "", [], accepted, True)
    vm = vm_target(admin)
    return ("delete", "DELETE", "/v1/vms/%d" % vm, TOKENS["admin" if admin else "alice"], None, {},
            "", [], None, False)


def ep_reinstall(admin):
    vm = vm_target(admin)
    fields = {"os": Field("str", lambda: "debian", True, 63, bad=["nope", "x" * 63, "Debian"]),
              "ssh_keys": Field("strs", lambda: [KEY], bad=[["nope"], ["x" * 17000]]),
              "password": Field("str", lambda: "s3cret-pass", maxlen=128, ctrl_ok="printable",
                                bad=["short", "x" * 129, "x" * 255, "pass\u0001word",
                                     "pass\nword1", "pass\u007fword"])}
    return ("reinstall", "POST", "/v1/vms/%d/reinstall" % vm, TOKENS["admin" if admin else "alice"],
            {"os": "debian", "ssh_keys": [KEY], "password": "s3cret-pass"}, fields, "", [], None,
            False)


def ep_snap_create(admin):
    vm = vm_target(admin)
    fields = {"name": Field("str", lambda: "s" + label(6), True, 40,
                            bad=["a", "1abc", "current", "pending", "a b", "x" * 41, "-ab",
                                 "ab.c", "\u00e9t\u00e9"]),
              "description": Field("str", lambda: "a snapshot", maxlen=512, empty_ok=True,
                                   long_ok=True, ctrl_ok="line", bad=["a\nb", "a\rb", "x" * 513]),
              "vmstate": Field("bool", lambda: False)}
    body = {"name": fields["name"].valid(), "description": "fuzz"}
    real = state["snaps"] < 3

    def accepted(rq, a, o):
        state["snaps"] += 1
        L.snaps.append((vm, rq.obj["name"]))
    return ("snap-create", "POST", "/v1/vms/%d/snapshots" % vm,
            TOKENS["admin" if admin else "alice"], body, fields, "", [], accepted, real)


def ep_snap_named(admin):
    vm = vm_target(admin)
    rb = rng.random() < 0.5
    path = "/v1/vms/%d/snapshots/nosuch%s" % (vm, "/rollback" if rb else "")
    return ("snap-rollback" if rb else "snap-delete", "POST" if rb else "DELETE", path,
            TOKENS["admin" if admin else "alice"], {} if rb else None, {}, "", [], None, False)


def ep_cancel(admin):
    return ("job-cancel", "POST", "/v1/jobs/%s/cancel" % FIX_JOB, ADMIN, None, {}, "", [], None,
            False)


def ep_node(admin):
    act = rng.choice(["cordon", "uncordon", "drain"])
    node = "sv5"

    def accepted(rq, a, o):
        L.cordoned[node] = act == "cordon"
    return ("node-" + act, "POST", "/v1/nodes/%s/%s" % (node, act), ADMIN, None, {}, "", [],
            accepted, act != "drain")


def canon(addr):
    return str(ipaddress.ip_address(addr))


def spelled(addr):
    """addr as a caller may write it: an IPv6 address in capitals or in
    full now and then (the same address)."""
    a = ipaddress.ip_address(addr)
    if a.version == 6 and rng.random() < 0.5:
        return rng.choice([a.exploded, str(a).upper(), a.exploded.upper()])
    return str(a)


def fresh_addr6():
    state["addr"] += 1
    return "fd00:20::%x" % (0x200 + state["addr"] % 50)


def ep_hold(admin):
    six = rng.random() < 0.3
    fresh = fresh_addr6 if six else fresh_addr
    fields = {"address": Field("str", lambda: spelled(fresh()), True, 47,
                               bad=["10.21.0.5", "x", "10.20.0.300", "::1", "10.20.0.5/24",
                                    "10.20.0", " 10.20.0.5", "10.020.0.5", "0x0a.20.0.5", "1" * 47,
                                    "fd00:21::5", "fd00:20::5%eth0", "::ffff:10.20.0.5",
                                    "fd00:20::5::1", "fd00:20:0:0:0:0:0:0:5"] +
                               (["10.20.0.5"] if six else ["fd00:20::5"])),
              "note": Field("str", lambda: "fuzz", maxlen=199, empty_ok=True, long_ok=True,
                            ctrl_ok="text")}
    body = {"address": fields["address"].valid(), "note": "fuzz"}

    def accepted(rq, a, o):
        L.holds.add(canon(rq.obj["address"]))
    return ("hold", "POST", "/v1/ippools/%s/addresses" % ("lan6" if six else "lan"), ADMIN, body,
            fields, "", [], accepted, True)


def ep_unhold(admin):
    held = sorted(L.holds)
    addr = rng.choice(held) if held and rng.random() < 0.7 else rng.choice(
        [fresh_addr, fresh_addr6])()
    pool = "lan6" if ":" in addr else "lan"

    def accepted(rq, a, o):
        L.holds.discard(canon(addr))
    return ("unhold", "DELETE", "/v1/ippools/%s/addresses/%s" % (pool, spelled(addr)), ADMIN,
            None, {}, "", [], accepted, True)


def ep_range_add(admin):
    lo = rng.randint(101, 180)
    fields = {"first": Field("str", lambda: "10.20.0.%d" % lo, True, 47,
                             bad=["10.21.0.1", "x", "fd00:20::1", "10.20.0.256"]),
              "last": Field("str", lambda: "10.20.0.%d" % (lo + 5), True, 47,
                            bad=["10.21.0.1", "y", "10.20.0.%d" % (lo - 1), "10.20.0.0/24"]),
              "kind": Field("str", lambda: "reserved", maxlen=15,
                            bad=["x", "Ranges", "reserved ", "range"])}
    body = {"first": "10.20.0.%d" % lo, "last": "10.20.0.%d" % (lo + 5), "kind": "reserved"}

    def accepted(rq, a, o):
        L.ranges[o["id"]] = (o["kind"], o["first"], o["last"])
    return ("range-add", "POST", "/v1/ippools/lan/ranges", ADMIN, body, fields, "", [], accepted,
            len(L.ranges) < 8)


def ep_range_del(admin):
    ids = sorted(L.ranges)
    rid = rng.choice(ids) if ids and rng.random() < 0.6 else rng.randint(1000, 2000)

    def accepted(rq, a, o):
        L.ranges.pop(rid, None)
    return ("range-del", "DELETE", "/v1/ippools/lan/ranges/%d" % rid, ADMIN, None, {}, "", [],
            accepted, True)


def ep_seek(admin):
    # from the log's start: the webhook (to a port nothing listens on) posts
    # it all again, failing; after past the log's end is refused naming it
    fields = {"after": Field("int", lambda: 0, True, bad=[1 << 40, -5], ok_ints=[0])}
    return ("seek", "POST", "/v1/webhooks/fz/seek", ADMIN, {"after": 0}, fields, "", [], None,
            True)


ENDPOINTS = [ep_create, ep_create, ep_create, ep_patch, ep_resize, ep_shutdown, ep_action,
             ep_delete, ep_reinstall, ep_snap_create, ep_snap_named, ep_cancel, ep_node, ep_hold,
             ep_unhold, ep_range_add, ep_range_del, ep_seek]

# list endpoints: their query arguments, each with valid values and bad ones
LISTS = {
    "/v1/vms": {"owner": (["alice", "ops", ""], []),
                "state": (["enabled", "creating", "failed", "deleted", ""],
                          ["bogus", "ENABLED", "enabled ", "x" * 300]),
                "node": (["sv1", "nope"], []), "os": (["ubuntu", "x"], []),
                "limit": (["1", "100", "1000"], ["0", "1001", "-1", "abc", "1e3", "1.0",
                                                 "9223372036854775808", " 5", "5 ", "0x10",
                                                 "99999999999999999999"]),
                "after": (["0", "1", "999999"], ["-1", "abc", "1.5", "9223372036854775808",
                                                 "1e9"])},
    "/v1/jobs": {"state": (["queued", "running", "done", "failed"], ["bogus", "DONE"]),
                 "kind": (["create", "snap-create"], ["CREATE", "a_b", "x" * 16, "cre ate"]),
                 "vmid": (["1000", "1"], ["0", "-1", "1000000000", "abc"]),
                 "owner": (["ops", "alice"], []),
                 "before": (["1", "100"], ["0", "-1", "abc"]),
                 "limit": (["1", "1000"], ["0", "1001", "abc", "-5"])},
    "/v1/events": {"after": (["0", "5"], ["-1", "abc", "18446744073709551616"]),
                   "limit": (["1", "1000"], ["0", "1001", "x"]),
                   "type": (["vm.created", "vm.*", "*"], ["bogus type", "vm.**", "x" * 100])},
    "/v1/ippools/lan/addresses": {"state": (["held", "used", "foreign"], ["bogus", "HELD"]),
                                  "after": (["10.20.0.5"], ["x", "10.21.0.1", "::1"]),
                                  "limit": (["1", "1000"], ["0", "1001", "z"])},
    "/v1/quota": {"owner": (["alice", "ops"], [])},
    "/v1/vms/%d/snapshots" % VM_ADMIN: {"refresh": (["1", "0", "true", "false", ""],
                                                     ["2", "yes", "TRUE", "-1"]),
                                         "job": (["00000000-0000-0000-0000-000000000000"],
                                                 [])},
    "/v1/webhooks": {},  # none: an unknown one is refused
}


def q(args):
    return "&".join(k if v is None else "%s=%s" % (k, v) for k, v in args)


def pct(s):
    """Percent-encode everything but unreserved characters."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._~") else
                   "".join("%%%02X" % b for b in c.encode("utf-8")) for c in s)


# ---- mutations --------------------------------------------------------------------------------


def body_mutation(name, method, path, tok, body, fields, query, headers, on_accept, allow_valid):
    """One request: the endpoint's valid request with one thing made wrong
    (or, now and then, left valid)."""
    choices = ["type", "int_edge", "past_64", "empty", "long", "bad", "ctrl", "missing", "extra",
               "dup", "nest", "nonobj", "badjson", "ctype", "query", "empty_body", "huge"]
    if allow_valid:
        choices += ["valid"] * 4 + ["maybe"]
    kinds = [k for k in choices if applicable(k, fields, body)]
    kind = rng.choice(kinds)
    obj = dict(body) if body is not None else None
    rq = Req(name, kind, method, path, tok, obj=obj, query=query, headers=list(headers))
    rq.on_accept = on_accept  # an answer accepted in error still changed things
    strs = [k for k, f in fields.items() if f.type == "str"]
    ints = [k for k, f in fields.items() if f.type == "int"]

    def fname(f):
        return fields[f].err or f

    def with_value(f, v):
        o = dict(body or {})
        o[f] = v
        rq.obj, rq.body = o, jbody(o)
        rq.mutation = "%s:%s" % (kind, f)

    if kind == "valid":
        rq.body = None if obj is None else jbody(obj)
        return rq.any(on_accept)
    if kind == "maybe":
        # valid-looking edges: null optional fields, "" where it is allowed,
        # strings exactly at their limit
        f = rng.choice(list(fields))
        fd = fields[f]
        if not fd.required and rng.random() < 0.4:
            with_value(f, None)
        elif fd.type == "str" and fd.empty_ok and rng.random() < 0.5:
            with_value(f, "")
        elif fd.type == "str" and fd.long_ok:
            with_value(f, "y" * fd.maxlen)
        else:
            rq.body = jbody(obj)
        return rq.any(on_accept)
    if kind == "type":
        f = rng.choice(list(fields))
        with_value(f, rng.choice(WRONG[fields[f].type]))
        return rq.refuse(fname(f).rstrip("."), {400})
    if kind == "int_edge":
        f = rng.choice(ints)
        with_value(f, rng.choice([v for v in BIG_INT + fields[f].bad
                                  if v not in fields[f].ok_ints]))
        return rq.refuse(f, {400, 403})
    if kind == "past_64":
        f = rng.choice(ints)
        o = dict(body)
        o[f] = 12345
        v = rng.choice(PAST_64)
        rq.body = jbody(o).replace(b"12345", v.encode())
        rq.mutation = "past_64:%s:%s" % (f, v[:8])
        if "e" in v:  # past a double: no JSON proxd reads
            return rq.refuse(None, {400}, "invalid_json")
        return rq.refuse(f, {400}, "invalid")
    if kind == "empty":
        f = rng.choice([k for k in strs if not fields[k].empty_ok])
        with_value(f, "")
        return rq.refuse(fname(f), {400})
    if kind == "long":
        f = rng.choice([k for k in strs if not fields[k].long_ok or rng.random() < 0.3])
        n = fields[f].maxlen + rng.choice([1, 2, 100, 5000])
        with_value(f, "z" * n)
        return rq.refuse(fname(f), {400})
    if kind == "bad":
        f = rng.choice([k for k in fields if fields[k].bad])
        with_value(f, rng.choice(fields[f].bad))
        return rq.refuse(fname(f), {400, 403, 409})
    if kind == "ctrl":
        f = rng.choice(strs)
        taken = [c for c in CTRL if ctrl_taken(fields[f].ctrl_ok, c)]
        c = rng.choice(CTRL if allow_valid else [c for c in CTRL if c not in taken])
        v = body.get(f) or fields[f].valid()
        v = v[:len(v) // 2] + c + v[len(v) // 2:]
        with_value(f, v)
        rq.mutation += ":%r" % c
        if c in taken:
            return rq.any(on_accept)
        return rq.refuse(fname(f), {400})
    if kind == "missing":
        f = rng.choice([k for k in fields if fields[k].required])
        o = dict(body)
        del o[f]
        rq.obj, rq.body, rq.mutation = o, jbody(o), "missing:" + f
        return rq.refuse(f, {400})
    if kind == "extra":
        k = rng.choice(["bogus", "Name", "OS", "vmid", "id", "state", "node", "x" * 300,
                        "\u00e9", "name ", "__proto__", ""])
        if k in (body or {}):
            k += "_"
        o = dict(body or {})
        o[k] = rng.choice([1, "x", None, [], {}])
        rq.obj, rq.body, rq.mutation = o, jbody(o), "extra:" + k[:20]
        return rq.refuse(k, {400}, "unknown_field")
    if kind == "dup":
        f = rng.choice(list(body))
        text = jbody(body)
        rq.body = text[:-1] + b", " + json.dumps(f).encode() + b": " + json.dumps(body[f]).encode() \
            + b"}"
        rq.mutation = "dup:" + f
        return rq.refuse(None, {400}, "invalid_json")
    if kind == "nest":
        f = rng.choice(list(fields))
        d = rng.choice([2, 64, 1000, 3000, 20000])
        o = dict(body or {})
        o[f] = 0
        rq.body = jbody(o).replace(json.dumps(f).encode() + b": 0",
                                   json.dumps(f).encode() + b": " + b"[" * d + b"\"x\"" +
                                   b"]" * d)
        rq.mutation = "nest%d:%s" % (d, f)
        if d > 2048:  # past jansson's depth limit: not JSON proxd reads
            return rq.refuse(None, {400}, "invalid_json")
        return rq.refuse(fname(f).rstrip("."), {400})
    if kind == "nonobj":
        rq.body = rng.choice([b"[]", b"null", b"1", b"\"x\"", b"true", b"[{}]", b"-0", b"1e400",
                              b"[" + jbody(body or {}) + b"]"])
        rq.mutation = "nonobj:" + rq.body[:20].decode()
        return rq.refuse(None, {400}, "invalid_json")
    if kind == "badjson":
        t = jbody(body or {"a": 1})
        rq.body = rng.choice([t[:-1], t + b"x", t + b"}", t.replace(b"\"", b"'"), b"{", b"}",
                              b"\xef\xbb\xbf" + t, b"{\"a\": NaN}", b"{\"a\": Infinity}",
                              b"{\"a\": \"\xff\xfe\"}", b"{\"a\": \"\\ud800\"}", b"{,}",
                              b"{\"a\" 1}", b"\x00" + t, t + b"\x00", b"{\"a\": 01}",
                              b"{\"a\": .5}", b"{\"a\": 1.}", b"{\"a\": \"\x01\"}", b" " * 10])
        rq.mutation = "badjson"
        return rq.refuse(None, {400})
    if kind == "ctype":
        rq.body = jbody(body or {})
        ct = rng.choice(["text/plain", None, "application/jsonx", "application/xml",
                         "application", "json", "application/json\u00ff", "application/json;",
                         "Application/JSON", "application/json; charset=utf-8"])
        rq.ctype, rq.mutation = ct, "ctype:%s" % ct
        if ct and ct.lower().startswith("application/json") and ct[16:17] in ("", ";"):
            # the type, its parameters aside, in any case: a valid request
            if not allow_valid:
                rq.ctype = "text/plain"
                return rq.refuse(None, {415})
            return rq.any(on_accept)
        return rq.refuse(None, {415})
    if kind == "empty_body":
        rq.body = b""
        return rq.refuse(None, {400})
    if kind == "huge":
        # past the 64 KiB body limit: refused before it is read
        rq.body = jbody(dict(body or {}, pad="p" * rng.choice([65536, 70000, 200000])))
        return rq.refuse(None, {413}, "too_large")
    if kind == "query":
        rq.body = None if body is None else jbody(body)
        return query_mutation(rq, query)
    raise AssertionError(kind)


def ctrl_taken(kind, c):
    """Does a field whose ctrl_ok is `kind` take the text c?"""
    if not kind or "\u0000" in c:
        return False
    if kind == "line":
        return "\n" not in c and "\r" not in c
    if kind == "printable":
        return all(ord(x) >= 0x20 and ord(x) != 0x7f for x in c)
    return True


def applicable(kind, fields, body):
    strs = [k for k, f in fields.items() if f.type == "str"]
    if kind in ("type", "nest", "maybe"):
        return bool(fields)
    if kind in ("int_edge", "past_64"):
        return any(f.type == "int" and k in (body or {}) for k, f in fields.items()) and \
            all(f.type != "int" or k in body for k, f in fields.items())
    if kind == "empty":
        return any(not fields[k].empty_ok for k in strs)
    if kind in ("long", "ctrl"):
        return bool(strs) and all(k in body for k in strs)
    if kind == "bad":
        return any(f.bad for f in fields.values())
    if kind == "missing":
        return any(f.required for f in fields.values())
    if kind == "dup":
        return bool(body)
    if kind == "empty_body":
        return any(f.required for f in fields.values())
    return True


def query_mutation(rq, query):
    """An unknown, repeated or badly encoded query argument on a write."""
    k = rng.choice(["bogus", "dry_run", "x" * 200, "%zz", "%", "%f", "a%00b", "limit", "%ff",
                    "dry_run2", "many"])
    base = [query] if query else []
    if k == "many":
        rq.query = "&".join(base + ["a%d=1" % i for i in range(70)])
        rq.mutation = "query:many"
        return rq.refuse("query", {400})
    if k == "dry_run":
        if rq.endpoint != "create":
            rq.query = "&".join(base + ["dry_run=1"])
            return rq.refuse("dry_run", {400}, "unknown_parameter")
        rq.query = rng.choice(["dry_run=maybe", "dry_run=1&dry_run=0", "dry_run=TRUE",
                               "dry_run=yes", "dry_run=%ff", "dry_run=2", "dry_run=%00"])
        rq.mutation = "query:" + rq.query
        return rq.refuse("query" if "%00" in rq.query else "dry_run", {400})
    if k == "a%00b":
        rq.query = "&".join(base + ["a%00b=1"])
        rq.mutation = "query:nul"
        return rq.refuse("query", {400})
    if k == "%ff":
        rq.query = "&".join(base + ["%ff=1"])
        rq.mutation = "query:%ff"
        return rq.refuse(None, {400})
    rq.query = "&".join(base + [k + "=1"])
    rq.mutation = "query:" + k[:20]
    return rq.refuse(k, {400}, "unknown_parameter")


def path_mutation():
    """A write route with a bad path parameter."""
    bad_vmid = rng.choice(["0", "-1", "99", "99999999999", "abc", "1e3", "100.0", "%20100",
                           "0x64", "9" * 63, "%00", "%2e%2e", "1000000000", "-0", "+99999",
                           "%0999999", "99999%20", "%%09%d" % VM_ADMIN, "%%0A%d" % VM_ALICE,
                           "%%0D%d" % VM_ADMIN, "%%0B%d" % VM_ALICE, "%d%%20" % VM_ADMIN,
                           "%E0%A5%A7%E0%A5%A6%E0%A5%A6", "99999", "+%d" % VM_ADMIN,
                           "%%2B%d" % VM_ALICE, "0%d" % VM_ADMIN])
    route = rng.choice([("DELETE", "/v1/vms/%s"), ("PATCH", "/v1/vms/%s"),
                        ("POST", "/v1/vms/%s/start"), ("POST", "/v1/vms/%s/shutdown"),
                        ("POST", "/v1/vms/%s/resize"), ("POST", "/v1/vms/%s/reinstall"),
                        ("POST", "/v1/vms/%s/snapshots"), ("DELETE", "/v1/vms/%s/snapshots/ab"),
                        ("POST", "/v1/vms/%s/snapshots/ab/rollback"), ("GET", "/v1/vms/%s"),
                        ("GET", "/v1/vms/%s/snapshots")])
    body = {"PATCH": {"cores": 1}, "POST": {}}.get(route[0])
    if route[1].endswith("resize"):
        body = {"disk_gb": 20}
    elif route[1].endswith("reinstall"):
        body = {"os": "debian"}
    elif route[1].endswith("/snapshots") and route[0] == "POST":
        body = {"name": "abc"}
    tok = rng.choice([ADMIN, ALICE])
    rq = Req("path", "vmid:" + bad_vmid, route[0], route[1] % bad_vmid, tok,
             body=None if body is None else jbody(body))
    # "%00" in a path is refused as a path (400); every other is no VM (404)
    if bad_vmid == "%00":
        return rq.refuse("path", {400})
    return rq.refuse(None, {404})


def other_path_mutation():
    kind = rng.choice(["job", "node", "pool", "address", "range", "snap", "webhook"])
    if kind == "webhook":
        # forget: the configured one ("fz", also spelled "%66z") is refused
        # naming it, another is none to forget, a user may not
        bad = rng.choice(["fz", "%66z", "nope", "FZ", "fz%20", "x" * 63, "%2e%2e", "fz%00"])
        tok = rng.choice([ADMIN, ADMIN, ALICE])
        rq = Req("path", "webhook:" + bad, "DELETE", "/v1/webhooks/" + bad, tok)
        if "%00" in bad:
            return rq.refuse("path", {400})
        if tok == ALICE:
            return rq.refuse(None, {403}, "forbidden")
        if bad in ("fz", "%66z"):
            return rq.refuse("name", {409}, "conflict")
        return rq.refuse("name", {404}, "not_found")
    if kind == "job":
        bad = rng.choice(["x", "0", "-1", "zzzz", "a" * 63, "%20", "..", "'", FIX_JOB + "0",
                          FIX_JOB.upper().replace("-", "")])
        rq = Req("path", "job:" + bad, "POST", "/v1/jobs/%s/cancel" % bad, ADMIN)
        return rq.refuse(None, {404})
    if kind == "node":
        bad = rng.choice(["sv9", "SV1", "sv1%20", "%20", "x" * 63, "..", "sv1%00", "%73v1x"])
        act = rng.choice(["cordon", "uncordon", "drain"])
        rq = Req("path", "node:" + bad, "POST", "/v1/nodes/%s/%s" % (bad, act), ADMIN)
        return rq.refuse("path" if "%00" in bad else None, {400} if "%00" in bad else {404})
    if kind == "pool":
        bad = rng.choice(["nope", "LAN", "lan ", "x" * 63])
        m, p, b = rng.choice([("POST", "/v1/ippools/%s/addresses", {"address": "10.20.0.9"}),
                              ("POST", "/v1/ippools/%s/ranges",
                               {"first": "10.20.0.1", "last": "10.20.0.2"}),
                              ("DELETE", "/v1/ippools/%s/ranges/1", None),
                              ("DELETE", "/v1/ippools/%s/addresses/10.20.0.9", None),
                              ("GET", "/v1/ippools/%s/addresses", None)])
        rq = Req("path", "pool:" + bad, m, p % pct(bad), ADMIN,
                 body=None if b is None else jbody(b))
        return rq.refuse("name", {404}, "not_found")
    if kind == "address":
        bad = rng.choice(["x", "10.21.0.9", "10.20.0.256", "::1", "10.20.0.9%20", "1" * 60,
                          "%31%30.20.0.9x", "10.20.0.9%00"])
        rq = Req("path", "address:" + bad, "DELETE", "/v1/ippools/lan/addresses/" + bad, ADMIN)
        if "%00" in bad:
            return rq.refuse("path", {400})
        return rq.refuse("address", {400})
    if kind == "range":
        bad = rng.choice(["0", "-1", "abc", "9223372036854775808", "1.5", "1e3", "%20"])
        rq = Req("path", "range:" + bad, "DELETE", "/v1/ippools/lan/ranges/" + bad, ADMIN)
        return rq.refuse("id", {400})
    bad = rng.choice(["a", "1ab", "x" * 41, "current", "a%20b", "%2e%2e", "ab.c", "x" * 63])
    rb = rng.random() < 0.5
    rq = Req("path", "snap:" + bad, "POST" if rb else "DELETE",
             "/v1/vms/%d/snapshots/%s%s" % (VM_ADMIN, bad, "/rollback" if rb else ""), ADMIN)
    return rq.refuse(None, {404})


def list_mutation():
    path = rng.choice(list(LISTS))
    params = LISTS[path]
    admin_only = path.startswith(("/v1/ippools", "/v1/webhooks")) or "snapshots" in path
    tok = ADMIN if admin_only or rng.random() < 0.5 else ALICE
    kind = rng.choice(["valid", "bad", "bad", "unknown", "encoding", "repeat", "empty"]
                      if params else ["valid", "unknown"])
    args = []
    # a user may name only itself as a job list's owner (else 400 naming owner)
    names = [k for k in params if not (path == "/v1/jobs" and k == "owner" and tok == ALICE)]
    for k in rng.sample(names, rng.randint(0, min(2, len(names)))):
        args.append((k, pct(rng.choice(params[k][0]))))
    rq = Req("list", kind, "GET", path, tok)
    if kind == "valid" or (kind == "bad" and not any(b for _, b in params.values())):
        rq.query = q(args)
        return rq.any()
    if kind == "bad":
        k = rng.choice([k for k in params if params[k][1]])
        args = [(a, v) for a, v in args if a != k] + [(k, pct(rng.choice(params[k][1])))]
        rng.shuffle(args)
        rq.query, rq.mutation = q(args), "bad:" + k
        if path == "/v1/jobs" and k == "owner":
            return rq.any()
        return rq.refuse(k, {400})
    if kind == "unknown":
        k = rng.choice(["bogus", "Limit", "dry_run", "limit ", "x" * 100])
        rq.query, rq.mutation = q(args + [(pct(k), "1")]), "unknown:" + k[:20]
        return rq.refuse(k, {400}, "unknown_parameter")
    if kind == "encoding":
        k = rng.choice([k for k in params])
        v = rng.choice(["%zz", "%", "%f", "%%", "%g0", "%ff", "%c3%28", "%00"])
        args = [(a, x) for a, x in args if a != k] + [(k, v)]
        rq.query, rq.mutation = q(args), "encoding:%s=%s" % (k, v)
        if v == "%00":
            return rq.refuse("query", {400})
        if v in ("%ff", "%c3%28"):
            return rq.refuse(None, {400})
        # kept as it is: a value that is no filter's; as an owner, node or os
        # filter it matches nothing
        if k in ("owner", "node", "os"):
            return rq.any()
        if k == "job":  # a snapshot list job that is not: 404 naming job
            return rq.refuse(k, {404})
        return rq.refuse(k, {400})
    if kind == "repeat":
        k = rng.choice(list(params))
        rq.query = q(args + [(k, pct(params[k][0][0])), (k, pct(params[k][0][-1]))])
        rq.mutation = "repeat:" + k
        return rq.refuse(k, {400}, "invalid")
    rq.query = q([(k, "") for k in params]) if rng.random() < 0.5 else q([(k, None)
                                                                         for k in params])
    rq.mutation = "empty-values"
    return rq.any()


def other_mutation():
    """Whatever is wrong outside the body: the token, the method, the
    route, an event stream's query."""
    kind = rng.choice(["auth", "method", "route", "stream", "headers"])
    if kind == "headers":
        name, a, b = rng.choice([("Content-Type", "application/json", "text/plain"),
                                 ("Content-Type", "application/json", "application/json;x=1"),
                                 ("Idempotency-Key", "fz-h1", "fz-h2"),
                                 ("Idempotency-Key", "fz-h1", ""),
                                 ("Authorization", "Bearer " + ADMIN, "Bearer " + ALICE),
                                 ("Last-Event-ID", "1", "2"),
                                 ("Idempotency-Key", "fz-h1", "fz-h1")])
        rq = Req("headers", "twice:" + name, "POST", "/v1/vms", ADMIN if name != "Authorization"
                 else None, body=jbody(dict(creation(), name=label())), query="dry_run")
        rq.ctype = None if name == "Content-Type" else "application/json"
        rq.headers = [(name, a), (name, b)]
        if a == b:
            return rq.any()
        return rq.refuse(name, {400}, "invalid")
    if kind == "auth":
        h = rng.choice(["", "Bearer", "Bearer ", "Bearer x", "Basic b3BzOng=", "bearer " + ADMIN,
                        "Bearer " + ADMIN + "x", "Bearer " + ADMIN[:-1], "Bearer " + "a" * 4000,
                        "Bearer pxd_%00_x", "Bearer " + ADMIN + " " + ADMIN,
                        "Bearer \u00e9\u00e9"])
        rq = Req("auth", "auth:%r" % h[:20], rng.choice(["GET", "POST"]), "/v1/vms", None,
                 body=jbody({"os": "ubuntu", "name": "fz-auth", "cores": 1, "memory_mb": 512,
                             "disk_gb": 10}), headers=[("Authorization", h)])
        if rq.method == "GET":
            rq.body = None
        # the scheme's name is case-insensitive (RFC 9110)
        if h == "bearer " + ADMIN:
            rq.query = "dry_run"
            return rq.any()
        return rq.refuse(None, {401}, "unauthorized")
    if kind == "method":
        m, path = rng.choice([("PUT", "/v1/vms"), ("DELETE", "/v1/vms"),
                              ("POST", "/v1/vms/%d" % VM_ADMIN), ("GET", "/v1/vms/1/start"),
                              ("PATCH", "/v1/jobs"), ("PUT", "/v1/nodes/sv1/cordon"),
                              ("POST", "/v1/ippools/lan")])
        rq = Req("method", "method:" + m, m, path, ADMIN, body=b"{}")
        return rq.refuse(None, {405}, "method_not_allowed")
    if kind == "route":
        path = rng.choice(["/v1/vms/", "//v1/vms", "/v1//vms", "/v1/vms/%d/" % VM_ADMIN,
                           "/v1/vms/%d/Start" % VM_ADMIN, "/v2/vms", "/v1/vm", "/v1/vms/%d/x/y/z"
                           % VM_ADMIN, "/V1/vms", "/v1/vms%%2F%d" % VM_ADMIN,
                           "/v1/nodes/sv1/cordon/", "/" + "a/" * 1000])
        rq = Req("route", "route", rng.choice(["GET", "POST", "DELETE"]), path, ADMIN)
        # %2F is a slash once decoded: /v1/vms/ID, a route
        if "%2F" in path:
            rq.method = "GET"
            return rq.any()
        return rq.refuse(None, {404})
    k, v = rng.choice([("after", "-1"), ("after", "x"), ("type", "Vm"), ("limit", "5"),
                       ("bogus", "1"), ("after", "%0A1"), ("type", "vm.*&type=job.*")])
    rq = Req("stream", "stream:%s=%s" % (k, v), "GET", "/v1/events/stream", ADMIN,
             query="%s=%s" % (k, v))
    if k in ("limit", "bogus"):  # the stream takes after and type only
        return rq.refuse(k, {400}, "unknown_parameter")
    return rq.refuse(k, {400}, "invalid")


def generate():
    r = rng.random()
    if r < 0.04:
        return other_mutation()
    if r < 0.1:
        return path_mutation()
    if r < 0.17:
        return other_path_mutation()
    if r < 0.3:
        return list_mutation()
    ep = rng.choice(ENDPOINTS)
    return body_mutation(*ep(rng.random() < 0.6))


def headers_mutation(rq):
    """Now and then a creation's Idempotency-Key is made bad instead."""
    if rq.endpoint != "create" or rq.kind != "any" or rng.random() > 0.3:
        return rq
    # (blanks around a header's value are not part of it: " k" is "k")
    k = rng.choice(["", " ", "a b", "x" * 129, "\u00e9", "k\u00ff", "k\tk", "\u007f"])
    rq.headers = [(a, b) for a, b in rq.headers if a != "Idempotency-Key"] + [("Idempotency-Key",
                                                                               k)]
    rq.mutation += "+idem:%r" % k[:10]
    # an empty header value, or one of blanks only, is a header given empty
    return rq.refuse("Idempotency-Key", {400})


# ---- examples: what runs of this test found, one case each ------------------------------------


def refused(a, status, code, field):
    assert a is not None, "no answer"
    assert a.status == status, (a.status, a.body)
    e = a.json()["error"]
    assert e["code"] == code and e["details"].get("field") == field, e
    return e


def creation(**kw):
    body = {"os": "ubuntu", "name": "fz-example", "cores": 1, "memory_mb": 512, "disk_gb": 10}
    body.update(kw)
    return body


@case
def a_nul_in_a_string_is_refused_naming_its_field():
    """\\u0000 in a string: jansson refused the whole body unless told
    (JSON_ALLOW_NUL), so the answer was invalid_json naming nothing; the
    field's own check (no NUL) never ran."""
    for path, body, field in [
            ("/v1/vms?dry_run", creation(name="fz\u0000x"), "name"),
            ("/v1/vms?dry_run", creation(os="ubuntu\u0000"), "os"),
            ("/v1/vms?dry_run", creation(ssh_keys=[KEY + "\u0000\nrm -rf /"]), "ssh_keys"),
            ("/v1/vms?dry_run", creation(ippools=["lan\u0000x"]), "ippools"),
            ("/v1/vms?dry_run", creation(ippools=["lan"], addresses={"lan": "10.20.0.7\u0000x"}),
             "addresses"),
            ("/v1/vms/%d/snapshots" % VM_ADMIN, {"name": "ab\u0000c"}, "name"),
            ("/v1/vms/%d/snapshots" % VM_ADMIN, {"name": "abc", "description": "a\u0000b"},
             "description"),
            ("/v1/vms/%d/reinstall" % VM_ADMIN, {"os": "debian", "password": "abcdefgh\u0000ij"},
             "password"),
            ("/v1/ippools/lan/addresses", {"address": "10.20.0.7\u0000"}, "address"),
            ("/v1/ippools/lan/ranges", {"first": "10.20.0.150", "last": "10.20.0.151\u0000"},
             "last")]:
        refused(api("POST", path, ADMIN, body), 400, "invalid", field)
    # a NUL in a key is still no JSON proxd reads
    refused(api("POST", "/v1/vms?dry_run", ADMIN, dict(creation(), **{"a\u0000b": 1})), 400,
            "invalid_json", None)
    assert not db("SELECT id FROM jobs WHERE kind = 'snap-create'")


@case
def deleting_a_hold_or_a_range_refuses_a_body():
    """DELETE /v1/ippools/{name}/addresses/{a} and .../ranges/{id} never
    read their body: one that was no JSON, or had unknown fields, was
    taken, and the hold or the range was gone. They refuse it as every
    other route without a body does (DELETE /v1/vms/{vmid})."""
    api("POST", "/v1/ippools/lan/addresses", ADMIN, {"address": "10.20.0.250"}, want=201)
    rid = api("POST", "/v1/ippools/lan/ranges", ADMIN,
              {"first": "10.20.0.190", "last": "10.20.0.191", "kind": "reserved"},
              want=201).json()["id"]
    for path in ("/v1/ippools/lan/addresses/10.20.0.250", "/v1/ippools/lan/ranges/%d" % rid):
        refused(send("DELETE", path, ADMIN, b'{"force": true}'), 400, "unknown_field", "force")
        refused(send("DELETE", path, ADMIN, b'{"a": 01}'), 400, "invalid_json", None)
        refused(send("DELETE", path, ADMIN, b"[]"), 400, "invalid_json", None)
        refused(send("DELETE", path, ADMIN, b"{}", ctype="text/plain"), 415,
                "unsupported_media_type", None)
    held = api("GET", "/v1/ippools/lan/addresses?state=held", ADMIN, want=200).json()
    assert [x["address"] for x in held["addresses"]] == ["10.20.0.250"], held
    assert db("SELECT id FROM addr_range") == [(rid,)]
    # without a body, or with {}, they are taken
    assert send("DELETE", "/v1/ippools/lan/addresses/10.20.0.250", ADMIN).status == 204
    assert send("DELETE", "/v1/ippools/lan/ranges/%d" % rid, ADMIN, b"{}").status == 204
    assert not db("SELECT addr FROM addr_alloc WHERE state = 'held'")
    assert not db("SELECT id FROM addr_range")


@case
def a_query_argument_given_twice_is_refused_naming_it():
    """A list's filter given twice took the first and dropped the other
    silently (?state=enabled&state=bogus listed the enabled VMs), as
    though the caller's second value were fine; only the flags (dry_run,
    refresh) refused a repeat."""
    for target, name in [("/v1/vms?state=enabled&state=bogus", "state"),
                         ("/v1/vms?limit=5&owner=ops&limit=abc", "limit"),
                         ("/v1/jobs?kind=create&kind=create", "kind"),
                         ("/v1/events?after=0&after=%zz", "after"),
                         ("/v1/ippools/lan/addresses?after=10.20.0.5&after=x", "after"),
                         ("/v1/quota?owner=ops&owner=alice", "owner"),
                         ("/v1/vms/%d/snapshots?job=1&job=2" % VM_ADMIN, "job"),
                         ("/v1/vms?dry_run&dry_run", "dry_run")]:
        method = "POST" if "dry_run" in target else "GET"
        a = send(method, target, ADMIN, jbody(creation()) if method == "POST" else None)
        e = refused(a, 400, "invalid", name)
        assert "more than once" in e["message"], e
    # once each is fine
    assert api("GET", "/v1/vms?state=enabled&limit=5", ADMIN).status == 200


@case
def a_blank_ssh_key_is_refused():
    """ssh_keys [""] was taken as no key at all (the keys are joined by
    line breaks and blank lines skipped): a key file that was empty became
    a VM nobody can log in to, without a word."""
    for keys, n in [([""], 0), ([KEY, "  "], 1), (["\t", KEY], 0)]:
        e = refused(api("POST", "/v1/vms?dry_run", ADMIN, creation(ssh_keys=keys)), 400,
                    "invalid", "ssh_keys")
        assert "ssh_keys[%d]" % n in e["message"], e
    e = refused(api("POST", "/v1/vms/%d/reinstall" % VM_ADMIN, ADMIN,
                    {"os": "debian", "ssh_keys": [KEY, ""]}), 400, "invalid", "ssh_keys")
    assert not db("SELECT id FROM jobs WHERE kind = 'reinstall'")
    # no keys at all is still fine
    assert api("POST", "/v1/vms?dry_run", ADMIN, creation(ssh_keys=[])).status == 200


@case
def a_dry_run_answers_what_its_submission_would_with_a_used_key():
    """docs/openapi.yaml: a dry run answers "the error the submission would
    give". With an Idempotency-Key used before for another request the
    submission answers 409 idempotency_key_reused before it checks the
    request; the dry run checked the request first (400 memory_mb) and
    the key only after."""
    key = [("Idempotency-Key", "fixture-ops")]  # the fixture's fz-ops creation
    jobs = db("SELECT count(*) FROM jobs")
    for body in (creation(memory_mb=1), creation(name="-x-"), creation(os="plan9"),
                 creation(ippools=["nope"]), creation(name="fz-ops", disk_gb=11)):
        real = send("POST", "/v1/vms", ADMIN, jbody(body), headers=key)
        dry = send("POST", "/v1/vms?dry_run", ADMIN, jbody(body), headers=key)
        e = refused(real, 409, "idempotency_key_reused", "Idempotency-Key")
        assert (dry.status, dry.json()["error"]) == (real.status, e), (body, dry.body)
    assert db("SELECT count(*) FROM jobs") == jobs
    # the very request again: replayed, and its dry run valid
    body = {"os": "ubuntu", "name": "fz-ops", "cores": 1, "memory_mb": 512, "disk_gb": 10}
    assert send("POST", "/v1/vms?dry_run", ADMIN, jbody(body), headers=key).json() == {
        "dry_run": True, "valid": True}
    again = send("POST", "/v1/vms", ADMIN, jbody(body), headers=key)
    assert again.status == 202 and again.json()["replayed"] is True, again.body
    assert again.json()["vmid"] == VM_ADMIN


@case
def an_integer_with_a_leading_blank_is_refused():
    """parse_i64 refused a leading space but strtoll skips every blank, so
    a tab, line feed, vertical tab, form feed or carriage return (%09,
    %0A, %0B, %0C, %0D) before a path id or a query number was taken:
    GET /v1/vms/%091001 was VM 1001, ?limit=%0A5 a page of 5."""
    for blank in ("%09", "%0A", "%0B", "%0C", "%0D", "%20"):
        refused(send("GET", "/v1/vms/%s%d" % (blank, VM_ADMIN), ADMIN), 404, "not_found", None)
        refused(send("GET", "/v1/vms?limit=%s5" % blank, ADMIN), 400, "invalid", "limit")
        refused(send("GET", "/v1/jobs?vmid=%s%d" % (blank, VM_ADMIN), ADMIN), 400, "invalid",
                "vmid")
        refused(send("DELETE", "/v1/ippools/lan/ranges/%s1" % blank, ADMIN), 400, "invalid", "id")
    # a sign is still fine ("+" in a query is a blank: %2B)
    assert send("GET", "/v1/vms?limit=%2B5", ADMIN).status == 200


@case
def a_path_vmid_is_written_one_way():
    """A path's VM ID with a sign or a leading zero (+1000, %2B1000, 01000)
    was VM 1000: DELETE /v1/vms/+1000 deleted it. Now no VM; and a user's
    node maintenance is refused (403) before its body or query is read."""
    for spelled in ("+%d" % VM_ADMIN, "%%2B%d" % VM_ADMIN, "0%d" % VM_ADMIN, "00%d" % VM_ADMIN):
        refused(send("GET", "/v1/vms/%s" % spelled, ADMIN), 404, "not_found", None)
        refused(send("GET", "/v1/vms/%s/snapshots" % spelled, ADMIN), 404, "not_found", None)
        refused(send("DELETE", "/v1/vms/%s" % spelled, ADMIN), 404, "not_found", None)
    assert send("GET", "/v1/vms/%d" % VM_ADMIN, ADMIN).status == 200
    refused(send("GET", "/v1/quota?owner=%s" % ("x" * 300), ADMIN), 400, "invalid", "owner")
    refused(send("GET", "/v1/quota?owner=a%20b", ADMIN), 400, "invalid", "owner")
    for method, body in (("POST", b"{"), ("POST", jbody({"x": 1}))):
        a = send(method, "/v1/nodes/sv1/cordon", ALICE, body=body)
        assert a.status == 403 and a.json()["error"]["code"] == "forbidden", (a.status, a.body)


@case
def an_integer_past_64_bits_is_refused_naming_its_field():
    """jansson refuses a whole document with an integer it cannot hold
    ("too big integer"): 2^63 in cores, disk_gb or timeout answered
    invalid_json naming nothing."""
    for path, text, field in [
            ("/v1/vms?dry_run", jbody(creation()).replace(b'"cores": 1',
                                                         b'"cores": 9223372036854775808'),
             "cores"),
            ("/v1/vms?dry_run", jbody(creation()).replace(b'"disk_gb": 10',
                                                         b'"disk_gb": -99999999999999999999'),
             "disk_gb"),
            ("/v1/vms/%d/resize" % VM_ADMIN, b'{"disk_gb": 18446744073709551616}', "disk_gb"),
            ("/v1/vms/%d/shutdown" % VM_ADMIN, b'{"force": true, "timeout": 1' + b"0" * 40 + b"}",
             "timeout"),
            ("/v1/vms/%d/snapshots" % VM_ADMIN,
             b'{"name": "abc", "vmstate": 99999999999999999999}', "vmstate"),
            ("/v1/vms?dry_run", jbody(creation(ssh_keys=[])).replace(
                b"[]", b"[1, 99999999999999999999]"), "ssh_keys")]:
        e = refused(send("POST", path, ADMIN, text), 400, "invalid", field)
        assert "64 bits" in e["message"], e
    # a number JSON Schema counts as an integer, written as a real, is not
    # taken (docs/openapi.yaml says so)
    for text in (b"1.0", b"1e1", b"10.0"):
        refused(send("POST", "/v1/vms?dry_run", ADMIN,
                     jbody(creation()).replace(b'"cores": 1', b'"cores": ' + text)), 400,
                "invalid", "cores")
    # in a field that does not exist it is that field's error
    refused(send("POST", "/v1/vms/%d/start" % VM_ADMIN, ADMIN, b'{"x": 99999999999999999999}'),
            400, "unknown_field", "x")
    # a real number past a double is no number JSON can carry: still invalid_json
    refused(send("POST", "/v1/vms/%d/resize" % VM_ADMIN, ADMIN, b'{"disk_gb": 1e400}'), 400,
            "invalid_json", None)
    assert not db("SELECT id FROM jobs WHERE kind IN ('resize', 'shutdown', 'start')")


@case
def a_header_given_twice_with_two_values_is_refused_naming_it():
    """Authorization, Content-Type and Idempotency-Key given twice with
    different values were read by the first: text/plain then
    application/json was 415 and the reverse order a creation; two keys
    one of them invalid, a key nobody could tell; two tokens, the first's
    owner (a proxy in front may have read the other). Refused as two
    differing Content-Lengths are."""
    body = jbody(creation())
    for headers, field in [
            ([("Content-Type", "text/plain")], "Content-Type"),
            ([("Idempotency-Key", "a"), ("Idempotency-Key", "b b")], "Idempotency-Key"),
            ([("Idempotency-Key", "a"), ("Idempotency-Key", "b")], "Idempotency-Key"),
            ([("Authorization", "Bearer x")], "Authorization")]:
        a = send("POST", "/v1/vms?dry_run", ADMIN, body, headers=headers)
        e = refused(a, 400, "invalid", field)
        assert "twice" in e["message"], e
    # the same value twice is one value
    a = send("POST", "/v1/vms?dry_run", ADMIN, body,
             headers=[("Content-Type", "application/json"), ("Idempotency-Key", "same"),
                      ("Idempotency-Key", "same")])
    assert a.status == 200, a.body


# ---- the run ----------------------------------------------------------------------------------

def reused_key(rq):
    """A creation reusing a key accepted before with another request is
    refused: a valid one 409 naming the key (a dry run may be refused for
    what the submission would refuse first); any other is refused somehow."""
    owner = OWNERS.get(rq.token)
    for k, v in rq.headers:
        if k != "Idempotency-Key" or (owner, v) not in L.idem_bodies:
            continue
        first = L.idem_bodies[(owner, v)][0]
        try:
            same = norm(json.loads(rq.body), owner) == norm(first, owner)
        except (ValueError, TypeError, AttributeError, RecursionError):
            same = False
        if same:
            continue
        if rq.kind != "any":
            # refused either way: for what is wrong with it, or (once it
            # reads as a request) for the key
            rq.alt_key = True
            continue
        if rq.mutation == "valid":
            rq.refuse("Idempotency-Key", {409}, "idempotency_key_reused")
        else:
            rq.refuse(None, {400, 403, 409})
    return rq


def norm(body, owner):
    """A creation as its key's fingerprint sees it: the owner resolved."""
    return dict(body, owner=body.get("owner") or owner)


@case
def random_requests_are_answered_and_refused_naming_the_field():
    t0 = time.monotonic()
    for i in range(N):
        rq = reused_key(headers_mutation(generate()))
        COUNTS[rq.endpoint] = COUNTS.get(rq.endpoint, 0) + 1
        a = send(rq.method, rq.target(), rq.token, rq.body, rq.ctype, rq.headers)
        check(i, rq, a)
        if a is None or (a.status >= 500 and a.status != 503):
            if not px.alive():
                PROBLEMS.append("proxd died at #%d:\n%s" % (i, px.tail(60)))
                break
        if i % 200 == 0 and not px.alive():
            PROBLEMS.append("proxd died by #%d:\n%s" % (i, px.tail(60)))
            break
    took = time.monotonic() - t0
    print("  seed %d: %d requests in %.1f s; by endpoint %s" % (
        SEED, N, took, sorted(COUNTS.items())))
    print("  accepted: %d jobs, %d creations, %d deletes, %d holds, %d ranges, %d snapshots" % (
        len(L.jobs), len(L.creations), len(L.deleted), len(L.holds), len(L.ranges),
        len(L.snaps)))
    assert px.alive(), "proxd died:\n" + px.tail(60)
    log = px.log_text()
    assert "runtime error" not in log and "AddressSanitizer" not in log, log[-6000:]
    with open(os.path.join(px.dir, "fuzz-problems.txt"), "w") as f:
        f.write("\n".join(PROBLEMS))
    assert not PROBLEMS, "%d problems (seed %d), by kind:\n  %s\nthe first ones (all in %s):\n%s" % (
        len(PROBLEMS), SEED, "\n  ".join("%4d %s" % (n, k) for k, n in sorted(KINDS.items())),
        os.path.join(px.dir, "fuzz-problems.txt"), "\n".join(PROBLEMS[:25]))


@case
def every_accepted_job_ends_and_creations_made_what_they_asked():
    ends = {}
    for job in sorted(L.jobs):
        j = wait_job(job, deadline=180)
        ends[(j["kind"], j["state"])] = ends.get((j["kind"], j["state"]), 0) + 1
    print("  accepted jobs by kind and end: %s" % sorted(ends.items()))
    for body, owner, vmid, job in L.creations:
        j = api("GET", "/v1/jobs/" + job, ADMIN, want=200).json()
        assert j["state"] == "done", (body, j)
        if job in L.deleted:  # (its VMID may be a later creation's now)
            rows = db("SELECT state FROM vms WHERE vmid = ?", (vmid,))
            assert ("deleted",) in rows, (vmid, rows)
            continue
        v = api("GET", "/v1/vms/%d" % vmid, ADMIN, want=200).json()
        for k in ("os", "name", "cores", "memory_mb", "disk_gb"):
            assert v[k] == body[k], (k, body, v)
        assert v["owner"] == owner and v["state"] == "enabled", (owner, v)
        got = {x["pool"]: x["address"] for x in (v["network"] or {}).get("addresses", [])}
        pools = body.get("ippools") or []
        assert sorted(got) == sorted(pools), (body, v["network"])
        for pool, addr in (body.get("addresses") or {}).items():
            assert got.get(pool) == addr, (body, v["network"])
    for vmid, (cores, memory) in L.patched.items():
        # the last PATCH's values, live or pending until the next boot
        v = api("GET", "/v1/vms/%d" % vmid, ADMIN, want=200).json()
        for k, want in (("cores", cores), ("memory_mb", memory)):
            if want is not None:
                assert v[k] == want or (v["pending"] or {}).get(k) == want, (k, want, v)
    for vmid, disk in L.resized.items():
        v = api("GET", "/v1/vms/%d" % vmid, ADMIN, want=200).json()
        assert v["disk_gb"] == disk, (disk, v)
    for vmid, name in L.snaps:
        a = api("GET", "/v1/vms/%d/snapshots?refresh=1" % vmid, ADMIN)
        if a.status == 202:
            loc = a.headers["location"]
            wait_job(a.json()["job"])
            a = api("GET", loc, ADMIN, want=200)
        assert name in [s["name"] for s in a.json()["snapshots"]], (name, a.json())


@case
def a_refused_request_recorded_nothing():
    for vmid, (ident, net) in FIX_IDENTITY.items():
        now, now_net = identity(vmid)
        assert now == ident, (ident, now)
        assert (now_net or {}).get("addresses") == (net or {}).get("addresses"), (net, now_net)
        assert (now_net or {}).get("mac") == (net or {}).get("mac"), (net, now_net)
    known = FIX_JOBS | L.jobs
    stray = db("SELECT id, kind, vmid, request FROM jobs")
    stray = [r for r in stray if r[0] not in known and r[1] not in ("snap-sync", "snap-list")]
    assert not stray, "jobs no accepted request made: %s" % stray[:10]
    vms = db("SELECT vmid, name, state FROM vms")
    extra = [r for r in vms if r[0] not in FIX_VMIDS | L.vmids]
    assert not extra, "VM records no accepted creation made: %s" % extra
    vmids = db("SELECT vmid, state FROM vmid_alloc")
    assert all(s != "reserved" for _, s in vmids), vmids
    assert {v for v, s in vmids if s == "used"} == {v for v, _, s in vms if s == "enabled"}, (
        vmids, vms)
    assert {v for v, _ in vmids} <= FIX_VMIDS | L.vmids, vmids
    # (snapshot list answers are kept there too, "snapshots:JOB")
    keys = {r for r in db("SELECT owner, key FROM idem") if not r[1].startswith("snapshots:")}
    assert keys <= L.idem_keys | FIX_KEYS, (keys, L.idem_keys)
    held = db("SELECT addr, pool FROM addr_alloc WHERE state = 'held'")
    held = {str((ipaddress.IPv6Address if a[0] == "6" else ipaddress.IPv4Address)(int(a[1:], 16)))
            for a, _ in held}
    assert held == L.holds, (held, L.holds)
    assert not db("SELECT addr FROM addr_alloc WHERE state = 'reserved'")
    used = db("SELECT a.addr, a.vm_id, v.state FROM addr_alloc a LEFT JOIN vms v ON v.id = a.vm_id"
              " WHERE a.state = 'used'")
    assert all(s == "enabled" for _, _, s in used), used
    assert len({a for a, _, _ in used}) == len(used)
    ranges = {r[0]: (r[1], r[2], r[3]) for r in db("SELECT id, kind, first, last FROM addr_range")}
    assert sorted(ranges) == sorted(L.ranges), (ranges, L.ranges)
    nodes = {n["name"]: n for n in api("GET", "/v1/nodes", ADMIN, want=200).json()["nodes"]}
    for node, on in L.cordoned.items():
        assert nodes[node]["cordoned"] == on, (node, on, nodes[node])
    for node, n in nodes.items():
        if node not in L.cordoned:
            assert not n["cordoned"], n
    events = db("SELECT type, job FROM events WHERE job <> ''")
    bad = [e for e in events if e[1] not in known and not e[0].startswith("snapshot")]
    snapjobs = {r[0] for r in db("SELECT id FROM jobs WHERE kind IN ('snap-sync', 'snap-list')")}
    bad = [e for e in bad if e[1] not in snapjobs]
    assert not bad, bad[:10]


shutdown(px, sim)
finish()
