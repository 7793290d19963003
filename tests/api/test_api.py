"""proxd's REST API, black-box: a real proxd in front of a five-node pvesim.

Covers every route with good and bad input, both roles, quotas, the 404
that hides other owners' VMs, idempotent creation under concurrency, the
job event stream, and the limits (401, 413, 415, unknown fields).
"""
import concurrent.futures
import http.client
import socket
import json
import re
import time

import requests

from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

sim = Sim()  # on a fresh port block when another program took one of its ports
px = Proxd(sim)
ADMIN = px.token("ops", "admin")
ALICE = px.token("alice")
BOB = px.token("bob")
CAROL = px.token("carol")
DAVE = px.token("dave")
ERIN = px.token("erin")
px.start()


call = px.call


def err(r, status, code, field=None):
    assert r.status_code == status, "want %d, got %d: %s" % (status, r.status_code, r.text)
    e = r.json()["error"]
    assert code is None or e["code"] == code, e
    assert e["message"], e
    if field is not None:
        assert e["details"].get("field") == field, e
    return e


def spec(name="web", **kw):
    b = {"os": "ubuntu", "name": name, "cores": 1, "memory_mb": 1024, "disk_gb": 10}
    b.update(kw)
    return b


def wait_job(job, token=ADMIN, deadline=60):
    return px.wait_job(job, ADMIN, deadline)


def create(token, name, **kw):
    r = call("POST", "/v1/vms", token, spec(name, **kw))
    assert r.status_code == 202, r.text
    return r.json()


VMS = {}  # name -> vmid of VMs made along the way


@case
def probes():
    assert call("GET", "/healthz").json() == {"status": "ok"}
    r = call("GET", "/readyz")
    assert r.status_code == 200 and r.json()["nodes_up"] == 5, r.text


@case
def auth_required_on_every_v1_route():
    for method, path in [("GET", "/v1/vms"), ("POST", "/v1/vms"), ("GET", "/v1/vms/1000"),
                         ("PATCH", "/v1/vms/1000"), ("DELETE", "/v1/vms/1000"),
                         ("POST", "/v1/vms/1000/start"), ("POST", "/v1/vms/1000/resize"),
                         ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/events"), ("GET", "/v1/nodes"),
                         ("GET", "/v1/os"), ("GET", "/v1/quota")]:
        r = call(method, path)
        err(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        for bad in ["nonsense", "pxd_0000000000000000_" + "0" * 64, ALICE[:-1] + ("1" if ALICE[-1] == "0" else "0"),
                    ALICE + "x"]:
            err(call(method, path, bad), 401, "unauthorized")
        err(call(method, path, headers={"Authorization": "Basic YTpi"}), 401, "unauthorized")


@case
def revoked_token_refused():
    t = px.token("dave")
    assert call("GET", "/v1/vms", t).status_code == 200
    tid = t.split("_")[1]
    listed = json.loads(px.cli("token", "list", "--config", px.conf).stdout)
    assert any(x["id"] == tid and x["owner"] == "dave" for x in listed)
    assert t.split("_")[2] not in json.dumps(listed)
    px.cli("token", "revoke", "--config", px.conf, tid)
    err(call("GET", "/v1/vms", t), 401, "unauthorized")
    assert px.cli("token", "revoke", "--config", px.conf, "ffff", check=False).returncode != 0
    bad = px.cli("token", "create", "--config", px.conf, "--owner", "x", "--role", "god",
                 check=False)
    assert bad.returncode != 0 and "role" in bad.stderr


@case
def create_and_follow_events_in_order():
    r = call("POST", "/v1/vms", ALICE, spec("alice-1", ssh_keys=[
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHYoxIQ5i3JkV9B3J4Md4k0iSxqkVnF1Ecb8y2yq6ZJ7 a@b"]))
    assert r.status_code == 202, r.text
    b = r.json()
    assert b["state"] == "queued" and b["kind"] == "create" and 1000 <= b["vmid"] <= 1999
    assert r.headers["Location"] == "/v1/jobs/" + b["job"]
    t0 = time.monotonic()
    s = call("GET", "/v1/jobs/%s/events" % b["job"], ALICE, stream=True)
    assert s.status_code == 200 and s.headers["Content-Type"] == "text/event-stream"
    events, cur = [], {}
    for line in s.iter_lines(decode_unicode=True):
        if line == "":
            if cur:
                events.append(cur)
            cur = {}
        elif line.startswith(":"):
            continue
        else:
            k, _, v = line.partition(": ")
            cur[k] = v
    assert time.monotonic() - t0 < 60
    steps = [e for e in events if e["event"] == "step"]
    assert events[-1]["event"] == "end", events
    end = json.loads(events[-1]["data"])
    assert end["state"] == "done", end
    seqs = [int(e["id"]) for e in steps]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    names = [json.loads(e["data"])["step"] for e in steps]
    assert names[0] == "queued" and len(names) >= 4, names
    # Every event the store has, exactly once, in order.
    j = wait_job(b["job"])
    assert j["state"] == "done" and j["progress"] == 100, j
    # Resuming with Last-Event-ID sends only what came after.
    s2 = call("GET", "/v1/jobs/%s/events" % b["job"], ALICE, stream=True,
              headers={"Last-Event-ID": str(seqs[-2])})
    body = s2.text
    assert body.count("event: step") == 1 and "event: end" in body, body
    VMS["alice-1"] = b["vmid"]
    v = call("GET", "/v1/vms/%d" % b["vmid"], ALICE).json()
    for k in ("vmid", "name", "os", "owner", "node", "state", "power", "cores", "memory_mb",
              "disk_gb", "pending", "created_at", "updated_at"):
        assert k in v, k
    assert v["owner"] == "alice" and v["state"] == "enabled" and v["node"], v


@case
def job_view():
    vmid = VMS["alice-1"]
    v = call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    j = call("GET", "/v1/jobs/" + v["job"], ALICE).json()
    for k in ("kind", "state", "step", "progress", "attempts", "created_at", "finished_at"):
        assert k in j, k
    assert j["kind"] == "create" and isinstance(j["attempts"], list)
    err(call("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000", ADMIN), 404, "not_found")
    err(call("GET", "/v1/jobs/..%2f..", ADMIN), 404, "not_found")
    err(call("GET", "/v1/jobs/" + v["job"] + "?x=1", ALICE), 400, "unknown_parameter", "x")


@case
def create_refusals_name_the_field():
    cases = [
        (spec(colour="red"), 400, "unknown_field", "colour"),
        (spec(**{"": 1}), 400, "unknown_field", ""),
        (spec(cores="2"), 400, "invalid", "cores"),
        (spec(memory_mb=1.5), 400, "invalid", "memory_mb"),
        (spec(name=7), 400, "invalid", "name"),
        (spec(ssh_keys="ssh-ed25519 AAAA"), 400, "invalid", "ssh_keys"),
        (spec(ssh_keys=["a\nb"]), 400, "invalid", "ssh_keys"),
        (spec(ssh_keys=["not a key"]), 400, "invalid", "ssh_keys"),
        ({"os": "ubuntu", "name": "x", "cores": 1, "memory_mb": 1024}, 400, "invalid", "disk_gb"),
        (spec(os="plan9"), 400, "invalid", "os"),
        (spec(name="-bad-"), 400, "invalid", "name"),
        (spec(name="x" * 200), 400, "invalid", "name"),
        (spec(cores=0), 400, "invalid", "cores"),
        (spec(cores=100000), 400, "invalid", "cores"),
        (spec(memory_mb=1), 400, "invalid", "memory_mb"),
        (spec(disk_gb=1), 400, "invalid", "disk_gb"),
        (spec(disk_gb=10 ** 15), 400, "invalid", "disk_gb"),
        (spec(owner="bob"), 403, "forbidden", "owner"),
    ]
    for body, status, code, field in cases:
        err(call("POST", "/v1/vms", ALICE, body), status, code, field)
    err(call("POST", "/v1/vms", ALICE, raw="{not json", headers={"Content-Type":
                                                                  "application/json"}),
        400, "invalid_json")
    err(call("POST", "/v1/vms", ALICE, raw="[1]", headers={"Content-Type": "application/json"}),
        400, "invalid_json")
    err(call("POST", "/v1/vms", ALICE, raw='{"os":"a","os":"b"}',
             headers={"Content-Type": "application/json"}), 400, "invalid_json")
    err(call("POST", "/v1/vms", ALICE, raw=json.dumps(spec()),
             headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    err(call("POST", "/v1/vms", ALICE), 400, "invalid")
    big = json.dumps(spec(ssh_keys=["ssh-ed25519 " + "A" * 70000]))
    err(call("POST", "/v1/vms", ALICE, raw=big, headers={"Content-Type": "application/json"}),
        413, "too_large")

    # no Content-Length (a chunked body): refused before any of it is read
    c = http.client.HTTPConnection("127.0.0.1", px.port, timeout=30)
    c.putrequest("POST", "/v1/vms")
    c.putheader("Authorization", "Bearer " + ALICE)
    c.putheader("Content-Type", "application/json")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    r = c.getresponse()
    e = json.loads(r.read())["error"]
    assert r.status == 411 and e["code"] == "length_required", (r.status, e)
    assert e["details"].get("field") == "Transfer-Encoding", e
    c.close()


@case
def admin_creates_for_others_and_sees_all():
    r = call("POST", "/v1/vms", ADMIN, spec("carol-1", owner="carol"))
    assert r.status_code == 202, r.text
    VMS["carol-1"] = r.json()["vmid"]
    r = call("POST", "/v1/vms", ADMIN, spec("ops-1", os="debian"))
    assert r.status_code == 202, r.text
    VMS["ops-1"] = r.json()["vmid"]
    assert 4000 <= VMS["ops-1"] <= 4009
    wait_job(r.json()["job"])
    assert call("GET", "/v1/vms/%d" % VMS["carol-1"], ADMIN).json()["owner"] == "carol"
    assert call("GET", "/v1/vms/%d" % VMS["ops-1"], ADMIN).json()["owner"] == "ops"
    assert call("GET", "/v1/vms/%d" % VMS["carol-1"], CAROL).status_code == 200


@case
def other_owners_vm_is_404_on_every_route():
    vmid = VMS["alice-1"]
    missing = 1999
    job = call("GET", "/v1/vms/%d" % vmid, ALICE).json()["job"]
    routes = [("GET", "/v1/vms/%d", None), ("PATCH", "/v1/vms/%d", {"cores": 2}),
              ("DELETE", "/v1/vms/%d", None), ("POST", "/v1/vms/%d/resize", {"disk_gb": 30})]
    routes += [("POST", "/v1/vms/%d/" + a, None)
               for a in ("start", "shutdown", "stop", "pause", "resume", "reboot")]
    for method, path, body in routes:
        theirs = call(method, path % vmid, BOB, body)
        none = call(method, path % missing, BOB, body)
        err(theirs, 404, "not_found")
        err(none, 404, "not_found")
        # indistinguishable: same message shape with only the number changed
        assert theirs.json()["error"]["message"].replace(str(vmid), "N") == \
            none.json()["error"]["message"].replace(str(missing), "N")
    err(call("GET", "/v1/jobs/" + job, BOB), 404, "not_found")
    err(call("GET", "/v1/jobs/%s/events" % job, BOB), 404, "not_found")
    err(call("GET", "/v1/vms/abc", BOB), 404, "not_found")
    # the VM is untouched
    v = call("GET", "/v1/vms/%d" % vmid, ADMIN).json()
    assert v["state"] == "enabled" and v["cores"] == 1, v


@case
def list_filters_and_pagination():
    mine = call("GET", "/v1/vms", ALICE).json()
    assert mine["vms"] and all(v["owner"] == "alice" for v in mine["vms"])
    assert call("GET", "/v1/vms?owner=carol", ALICE).json()["vms"] == []
    allv = call("GET", "/v1/vms?limit=1000", ADMIN).json()["vms"]
    assert {v["owner"] for v in allv} >= {"alice", "carol", "ops"}
    assert all(v["os"] == "debian" for v in call("GET", "/v1/vms?os=debian", ADMIN).json()["vms"])
    assert all(v["owner"] == "carol"
               for v in call("GET", "/v1/vms?owner=carol", ADMIN).json()["vms"])
    en = call("GET", "/v1/vms?state=enabled", ADMIN).json()["vms"]
    assert en and all(v["state"] == "enabled" for v in en)
    node = en[0]["node"]
    assert all(v["node"] == node for v in call("GET", "/v1/vms?node=" + node, ADMIN).json()["vms"])
    seen, after = [], None
    while True:
        q = "/v1/vms?limit=1" + ("&after=" + after if after else "")
        page = call("GET", q, ADMIN).json()
        seen += [v["vmid"] for v in page["vms"]]
        after = page["next"]
        if not after:
            break
    assert seen == [v["vmid"] for v in allv], (seen, allv)
    for q, field in [("limit=0", "limit"), ("limit=x", "limit"), ("after=-1", "after"),
                     ("state=happy", "state"), ("colour=red", "colour")]:
        err(call("GET", "/v1/vms?" + q, ADMIN), 400, None, field)


@case
def idempotent_creation_under_concurrency():
    key = "retry-" + str(time.time())
    body = spec("idem-1")

    def send(_):
        return call("POST", "/v1/vms", ALICE, body, headers={"Idempotency-Key": key})
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        answers = list(ex.map(send, range(20)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert len({(a.json()["vmid"], a.json()["job"]) for a in answers}) == 1
    assert len({a.headers["Location"] for a in answers}) == 1
    named = [v for v in call("GET", "/v1/vms?limit=1000", ADMIN).json()["vms"]
             if v["name"] == "idem-1"]
    assert len(named) == 1, named
    # one answer is the creation's, the others its first answer replayed
    assert sum(1 for a in answers if not a.json().get("replayed")) == 1, [a.text for a in answers]
    again = send(0)
    assert again.json() == dict(answers[0].json(), replayed=True)
    err(call("POST", "/v1/vms", ALICE, spec("idem-2"), headers={"Idempotency-Key": key}),
        409, "idempotency_key_reused")
    # keys are per caller: the same key from another user is a new request
    r = call("POST", "/v1/vms", CAROL, body, headers={"Idempotency-Key": key})
    assert r.status_code == 202 and r.json()["vmid"] != answers[0].json()["vmid"]
    err(call("POST", "/v1/vms", ALICE, body, headers={"Idempotency-Key": "x" * 200}),
        400, "invalid", "Idempotency-Key")
    wait_job(answers[0].json()["job"])
    wait_job(r.json()["job"])


@case
def dry_run_checks_without_submitting():
    jobs = lambda: len(call("GET", "/v1/jobs?limit=1000", ADMIN).json()["jobs"])  # noqa: E731
    before = jobs()
    r = call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry-1"))
    assert r.status_code == 200 and r.json() == {"dry_run": True, "valid": True}, r.text
    err(call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry 1")), 400, "invalid", "name")
    err(call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry-1", os="plan9")), 400, "invalid",
        "os")
    err(call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry-1", owner="bob")), 403,
        "forbidden", "owner")
    err(call("POST", "/v1/vms?dry_run=yes", ALICE, spec("dry-1")), 400, "invalid", "dry_run")
    # a bare flag, or one with an empty value, asks for the check: it made a
    # real VM when an empty value was read as no flag
    for q in ("dry_run", "dry_run=", "dry_run=1"):
        r = call("POST", "/v1/vms?" + q, ALICE, spec("dry-bare"))
        assert r.status_code == 200 and r.json() == {"dry_run": True, "valid": True}, (q, r.text)
    err(call("POST", "/v1/vms?dry_run=false&dry_run=true", ALICE, spec("dry-bare")), 400,
        "invalid", "dry_run")
    assert not [v for v in call("GET", "/v1/vms?limit=1000", ADMIN).json()["vms"]
                if v["name"] == "dry-bare"]
    err(call("POST", "/v1/vms?dryrun=true", ALICE, spec("dry-1")), 400, "unknown_parameter")
    # a key: fine when new or used for this same request, 409 when used for another
    key = "dry-" + str(time.time())
    h = {"Idempotency-Key": key}
    assert call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry-2"), headers=h).status_code == 200
    assert jobs() == before  # nothing was recorded, not even the key
    first = call("POST", "/v1/vms", ALICE, spec("dry-2"), headers=h)
    assert first.status_code == 202, first.text
    assert call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry-2"), headers=h).status_code == 200
    err(call("POST", "/v1/vms?dry_run=true", ALICE, spec("dry-2", cores=2), headers=h), 409,
        "idempotency_key_reused", "Idempotency-Key")
    assert jobs() == before + 1
    wait_job(first.json()["job"])


@case
def idempotency_and_quotas_across_instances():
    """Two proxd instances on one database: the same key sent 20 times at once,
    half to each, makes one VM, every answer the first one; an owner's quota
    holds against concurrent requests to both."""
    px2 = Proxd(sim, share=px)
    px2.secrets += px.secrets
    px2.start()
    try:
        key = "two-" + str(time.time())
        body = spec("idem-two")

        def send(i):
            base = (px, px2)[i % 2].base
            return requests.post(base + "/v1/vms", data=json.dumps(body), timeout=30,
                                 headers={"Authorization": "Bearer " + ALICE,
                                          "Content-Type": "application/json",
                                          "Idempotency-Key": key})
        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            answers = list(ex.map(send, range(20)))
        assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
        assert len({(a.json()["vmid"], a.json()["job"]) for a in answers}) == 1, \
            [a.text for a in answers]
        named = [v for v in call("GET", "/v1/vms?limit=1000", ADMIN).json()["vms"]
                 if v["name"] == "idem-two"]
        assert len(named) == 1, named
        assert wait_job(answers[0].json()["job"])["state"] == "done"

        # dave may hold 3 VMs: 12 requests at once, to both instances, make 3
        def make(i):
            base = (px, px2)[i % 2].base
            return requests.post(base + "/v1/vms", data=json.dumps(spec("dave-%d" % i)),
                                 timeout=30, headers={"Authorization": "Bearer " + DAVE,
                                                      "Content-Type": "application/json"})
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            made = list(ex.map(make, range(12)))
        ok = [a for a in made if a.status_code == 202]
        assert len(ok) == 3, [a.text for a in made]
        for a in made:
            if a.status_code != 202:
                e = err(a, 403, "quota_exceeded")
                assert "0 left" in e["message"] or "3 of 3" in e["message"], e
        mine = call("GET", "/v1/vms?owner=dave&limit=1000", ADMIN).json()["vms"]
        assert len(mine) == 3, mine
        for a in ok:
            wait_job(a.json()["job"])

        # erin may use 6 cores and holds 2 + 2: growing both to 4 at once, one
        # request to each instance, passes the quota for one of them only
        vms = [create(ERIN, "erin-%d" % i, cores=2) for i in range(2)]
        for v in vms:
            assert wait_job(v["job"])["state"] == "done"

        def grow(i):
            base = (px, px2)[i].base
            return requests.patch(base + "/v1/vms/%d" % vms[i]["vmid"], timeout=30,
                                  data=json.dumps({"cores": 4}),
                                  headers={"Authorization": "Bearer " + ERIN,
                                           "Content-Type": "application/json"})
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            grown = list(ex.map(grow, range(2)))
        assert sorted(g.status_code for g in grown) == [202, 403], [g.text for g in grown]
        for g in grown:
            if g.status_code == 202:
                assert wait_job(g.json()["job"])["state"] == "done"
        cores = sorted(call("GET", "/v1/vms/%d" % v["vmid"], ERIN).json()["cores"] for v in vms)
        assert cores == [2, 4], cores
    finally:
        px2.stop()


@case
def quotas():
    r = call("POST", "/v1/vms", BOB, spec("bob-1", cores=4))
    e = err(r, 403, "quota_exceeded")
    assert "left" in e["message"], e
    r = call("POST", "/v1/vms", BOB, spec("bob-1", cores=2, memory_mb=2048))
    assert r.status_code == 202, r.text
    VMS["bob-1"] = r.json()["vmid"]
    e = err(call("POST", "/v1/vms", BOB, spec("bob-2")), 403, "quota_exceeded")
    assert "left" in e["message"], e
    wait_job(r.json()["job"])
    e = err(call("PATCH", "/v1/vms/%d" % VMS["bob-1"], BOB, {"memory_mb": 8192}), 403,
            "quota_exceeded")
    e = err(call("POST", "/v1/vms/%d/resize" % VMS["bob-1"], BOB, {"disk_gb": 100}), 403,
            "quota_exceeded")
    q = call("GET", "/v1/quota", BOB).json()
    assert q["used"]["vms"] == 1 and q["limits"]["vms"] == 1, q
    err(call("GET", "/v1/quota?owner=alice", BOB), 403, "forbidden", "owner")
    assert call("GET", "/v1/quota?owner=bob", ADMIN).json()["owner"] == "bob"


@case
def power_actions():
    vmid = VMS["alice-1"]

    def do(action, body=None, token=ALICE):
        r = call("POST", "/v1/vms/%d/%s" % (vmid, action), token, body)
        assert r.status_code == 202, "%s: %s" % (action, r.text)
        assert r.headers["Location"] == "/v1/jobs/" + r.json()["job"]
        j = wait_job(r.json()["job"])
        assert j["state"] == "done", j
        assert j["kind"] == action, j
        return j
    do("stop")
    err(call("POST", "/v1/vms/%d/reboot" % vmid, ALICE), 409, "conflict")
    do("start")
    do("pause")
    do("resume")
    do("reboot")
    err(call("POST", "/v1/vms/%d/shutdown" % vmid, ALICE, {"timeout": 0}), 400, "invalid",
        "timeout")
    err(call("POST", "/v1/vms/%d/shutdown" % vmid, ALICE, {"timeout": "x"}), 400, "invalid",
        "timeout")
    err(call("POST", "/v1/vms/%d/start" % vmid, ALICE, {"force": True}), 400, "unknown_field",
        "force")
    do("shutdown", {"timeout": 30, "force": True})
    assert call("GET", "/v1/vms/%d" % vmid, ALICE).json()["power"] == "stopped"
    do("start", token=ADMIN)


@case
def job_list_filters_pages_and_isolation():
    vmid = VMS["alice-1"]

    def jobs(token, q=""):
        r = call("GET", "/v1/jobs" + q, token)
        assert r.status_code == 200, r.text
        return r.json()
    mine = jobs(ALICE, "?vmid=%d&limit=1000" % vmid)["jobs"]
    # newest first: the power actions above, in reverse, then the creation
    kinds = [j["kind"] for j in mine]
    assert kinds[:7] == ["start", "shutdown", "reboot", "resume", "pause", "start", "stop"], kinds
    assert kinds[-1] == "create", kinds
    assert all(j["vmid"] == vmid for j in mine), mine
    # the list's job is the job (GET /v1/jobs/{id} adds a done start's guest)
    one = call("GET", "/v1/jobs/" + mine[0]["id"], ALICE).json()
    assert one.pop("guest")["state"] in ("waiting", "ready"), one
    assert mine[0] == one
    # pages of 2 give the same list, none twice
    paged, q = [], "?vmid=%d&limit=2" % vmid
    while True:
        page = jobs(ALICE, q)
        paged += page["jobs"]
        if page["next"] is None:
            break
        q = "?vmid=%d&limit=2&before=%d" % (vmid, page["next"])
    assert [j["id"] for j in paged] == [j["id"] for j in mine]
    done = jobs(ALICE, "?state=done&kind=start")["jobs"]
    assert len(done) >= 2 and all(j["state"] == "done" and j["kind"] == "start" for j in done)
    # isolation: bob sees none of alice's; an admin sees them, and filters by owner
    assert all(j["owner"] == "bob" for j in jobs(BOB, "?limit=1000")["jobs"])
    assert jobs(BOB, "?vmid=%d" % vmid)["jobs"] == []
    err(call("GET", "/v1/jobs?owner=alice", BOB), 400, "invalid", "owner")
    assert jobs(BOB, "?owner=bob")["jobs"] == jobs(BOB)["jobs"]
    by_admin = jobs(ADMIN, "?owner=alice&vmid=%d&limit=1000" % vmid)["jobs"]
    assert [j["id"] for j in by_admin] == [j["id"] for j in mine]
    for q, field in (("state=finished", "state"), ("vmid=0", "vmid"), ("limit=1001", "limit"),
                     ("kind=Stop", "kind"), ("before=-1", "before")):
        err(call("GET", "/v1/jobs?" + q, ALICE), 400, "invalid", field)
    err(call("GET", "/v1/jobs?after=1", ALICE), 400, "unknown_parameter", "after")


@case
def update_resize_delete():
    vmid = VMS["alice-1"]
    err(call("PATCH", "/v1/vms/%d" % vmid, ALICE, {}), 400, "invalid")
    err(call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"disk_gb": 20}), 400, "unknown_field",
        "disk_gb")
    err(call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"cores": -1}), 400, "invalid", "cores")
    err(call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"cores": 1000}), 400, "invalid", "cores")
    r = call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"cores": 2, "memory_mb": 2048})
    assert r.status_code == 202, r.text
    assert wait_job(r.json()["job"])["state"] == "done"
    v = call("GET", "/v1/vms/%d" % vmid, ALICE).json()
    assert v["cores"] == 2 and v["memory_mb"] == 2048, v
    err(call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {}), 400, "invalid", "disk_gb")
    err(call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {"disk_gb": 5}), 400, "invalid",
        "disk_gb")
    r = call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {"disk_gb": 30})
    assert r.status_code == 202, r.text
    assert wait_job(r.json()["job"])["state"] == "done"
    assert call("GET", "/v1/vms/%d" % vmid, ALICE).json()["disk_gb"] == 30
    r = call("DELETE", "/v1/vms/%d" % vmid, ALICE)
    assert r.status_code == 202 and r.json()["kind"] == "delete", r.text
    assert wait_job(r.json()["job"])["state"] == "done"
    err(call("GET", "/v1/vms/%d" % vmid, ALICE), 404, "not_found")
    err(call("DELETE", "/v1/vms/%d" % vmid, ALICE), 404, "not_found")
    gone = call("GET", "/v1/vms?state=deleted", ALICE).json()["vms"]
    assert any(v["vmid"] == vmid for v in gone), gone


@case
def fleet_and_catalogue():
    nodes = call("GET", "/v1/nodes", ALICE).json()["nodes"]
    assert [n["name"] for n in nodes] == ["sv1", "sv2", "sv3", "sv4", "sv5"]
    for n in nodes:
        assert n["health"] == "up" and n["memory_mb"]["total"] > 0 and n["disk_gb"]["total"] > 0
        assert "reserved" in n["memory_mb"] and "vms" in n
    os_ = {o["name"]: o for o in call("GET", "/v1/os", ALICE).json()["os"]}
    assert os_["debian"]["range"]["size"] == 10 and os_["debian"]["range"]["allocated"] >= 1
    assert len(os_["ubuntu"]["nodes"]) == 5
    err(call("GET", "/v1/nodes?x=1", ALICE), 400, "unknown_parameter", "x")


@case
def metrics():
    r = call("GET", "/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    t = r.text
    for want in ['proxd_jobs{kind="create",state="done"}', 'proxd_node_up{node="sv1"} 1',
                 'proxd_vmid_range_allocated{os="ubuntu"}',
                 'proxd_vmid_range_quarantined{os="ubuntu"}', "proxd_job_duration_seconds_bucket",
                 'le="+Inf"', "proxd_pve_requests_total", 'proxd_http_responses_total{class="4xx"}',
                 'proxd_pve_retries_total{world="pvesim"}',
                 'proxd_pve_host_failovers_total{world="pvesim"}',
                 'proxd_creation_failovers_total{node="sv1"}',
                 'proxd_pve_calls_total{world="pvesim",node="sv1",method="POST",'
                 'endpoint="/nodes/{node}/qemu/{vmid}/clone"}',
                 'proxd_pve_call_errors_total{world="pvesim",node="",method="GET",'
                 'endpoint="/cluster/resources"} 0',
                 'proxd_pve_call_duration_seconds_bucket{world="pvesim",node="sv1",method="POST",'
                 'endpoint="/nodes/{node}/qemu/{vmid}/status/start",le="0.005"}',
                 'proxd_pve_call_duration_seconds_count{world="pvesim",node="",method="GET",'
                 'endpoint="/cluster/resources"}']:
        assert want in t, want
    # the text format: each family's samples together, after its TYPE line,
    # histogram buckets cumulative and ending in +Inf = _count
    families, current = set(), None
    buckets = {}
    for line in t.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
            assert current not in families, "family %s appears twice" % current
            families.add(current)
            continue
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ")[0]
        assert current and (name == current or name in (current + "_bucket", current + "_sum",
                                                         current + "_count")), \
            "%s outside its family (in %s)" % (name, current)
        if name.endswith("_bucket"):
            key = line.rsplit(",le=", 1)[0]  # the series: name and labels but le
            v = float(line.rsplit(" ", 1)[1])
            assert v >= buckets.get(key, 0), line
            buckets[key] = v
        elif name.endswith("_count") and name[:-6] + "_bucket" in t:
            series = name[:-6] + "_bucket" + line.split(" ")[0][len(name):].rstrip("}")
            assert buckets.get(series) == float(line.rsplit(" ", 1)[1]), (line, series)


@case
def hostile_clients_do_not_starve_others():
    """Clients that stall mid-request, idle keep-alives and oversized headers:
    the others are still served, and the stalled ones are cut off after
    idle_timeout (2 s here)."""
    px3 = Proxd(sim, share=px, proxd_extra="idle_timeout = 2\n")
    px3.secrets += px.secrets
    px3.start()
    socks = []
    try:
        for i in range(150):
            s = socket.create_connection(("127.0.0.1", px3.port), timeout=10)
            if i % 3:  # a request that never ends
                s.sendall(b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bea")
            socks.append(s)
        t0 = time.monotonic()
        r = requests.get(px3.base + "/healthz", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 1.0, "healthz took %.2fs" % (time.monotonic() - t0)
        r = requests.get(px3.base + "/v1/vms/1", timeout=5,
                         headers={"Authorization": "Bearer " + ADMIN})
        assert r.status_code in (200, 404), r.text

        def closed(s):
            s.settimeout(0.05)
            try:
                return s.recv(4096) == b""  # data (an error answer): EOF follows
            except socket.timeout:
                return False
            except OSError:
                return True
        wait_for(lambda: all(closed(s) for s in socks), deadline=20, interval=0.2,
                 what="stalled connections closed")

        # a header larger than a connection may hold is refused, not buffered
        s = socket.create_connection(("127.0.0.1", px3.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
        assert not got.startswith(b"HTTP/1.1 200"), got[:200]
        assert got == b"" or got.split(b" ")[1] in (b"413", b"431"), got[:200]
        assert requests.get(px3.base + "/healthz", timeout=5).status_code == 200
    finally:
        for s in socks:
            s.close()
        px3.stop()


@case
def unknown_routes_and_methods():
    err(call("GET", "/v1/nothing", ADMIN), 404, "not_found")
    r = call("PUT", "/v1/vms", ADMIN)
    err(r, 405, "method_not_allowed")
    assert "GET" in r.headers["Allow"] and "POST" in r.headers["Allow"]


@case
def many_parked_streams_do_not_block():
    r = call("POST", "/v1/vms", ADMIN, spec("slow-1"))
    job = r.json()["job"]
    streams = [call("GET", "/v1/jobs/%s/events" % job, ADMIN, stream=True) for _ in range(40)]
    t0 = time.monotonic()
    assert call("GET", "/healthz").status_code == 200
    assert time.monotonic() - t0 < 1.0
    for s in streams:
        assert "event: end" in s.text
    assert wait_job(job)["state"] == "done"


@case
def shutdown_ends_parked_streams():
    """SIGTERM with streams parked: each gets its end, and proxd exits cleanly
    (the server writes the ends out before it closes the connections)."""
    r = call("POST", "/v1/vms", ADMIN, spec("last-1"))
    job = r.json()["job"]
    streams = [call("GET", "/v1/jobs/%s/events" % job, ADMIN, stream=True) for _ in range(5)]
    px.proc.terminate()  # the streams are parked: their answers' heads came
    for s in streams:
        # the end the shutdown wrote, not the job's own
        assert re.search(r'event: end\ndata: \{"reason": ?"shutdown"', s.text), s.text
    px.stop()


shutdown(px, sim)
finish()
