"""The event log and webhooks (issue 15), black-box against pvesim.

One pvesim and one proxd (with a webhook to a local receiver that starts
down) serve the cases: the events of a VM's life, each exactly once and
with what changed; users see their own VMs' events only; `after` paging and
type filters; the SSE stream with Last-Event-ID; job.failed from a failed
job; the webhook's receiver down, then slow (proxd's posts time out and are
made again), then up: it gets every event, signature valid, in order, and
its duplicates carry the same delivery id and body. A second proxd with
[events] keep = 5 shows the retention prune (ids never reused).

PROXD_TEST_DB=postgresql://... runs it on PostgreSQL (test_events_pg.py): in
`make test` the cases where the database orders or shares the work (the
commit-ordered ids of a VM's life, two instances and one webhook lease), the
rest in the full run (`make test-full`)."""
import calendar
import json
import os
import time

import requests

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.hookrecv import Receiver, verify
from lib.pg import case_full_on_pg
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for
import subprocess
import threading

DB = os.environ.get("PROXD_TEST_DB")
SECRET = "s3cret-for-the-test-hook"

recv = Receiver()  # down until the webhook case brings it up
sim = Sim(time_scale=0.005)
px = Proxd(sim, database=DB,
           proxd_extra="reconcile_interval = 3600\n\n[events]\nkeep = 3600\n\n"
                       "[webhook audit]\nurl = %s\nsecret = %s\nevents = vm.*, job.failed\n"
                       "timeout = 1\nmax_age = 3600\nretry_max = 2\n" % (recv.url, SECRET))
ALICE = px.token("alice")
BOB = px.token("dave")  # quota dave: 3 VMs
ADMIN = px.token("ops", "admin")
px.start()


def call(method, path, token, body=None, **kw):
    return px.call(method, path, token, body, **kw)


def job(token, r, want="done"):
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], token, deadline=90)
    assert want is None or j["state"] == want, j
    return j


def create(token, name, **kw):
    body = {"os": "ubuntu", "name": name, "cores": 1, "memory_mb": 1024, "disk_gb": 10}
    body.update(kw)
    r = call("POST", "/v1/vms", token, body)
    job(token, r)
    return r.json()["vmid"]


def events(token, after=0, type=None, limit=1000):
    """Every event after `after`, page by page."""
    out = []
    while True:
        q = "/v1/events?limit=%d&after=%d" % (limit, after)
        if type:
            q += "&type=" + type
        r = call("GET", q, token)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["events"]
        after = page["next"]
        if not page["more"]:
            return out


def of_vm(evs, vmid):
    return [e for e in evs if e["vmid"] == vmid]


START = events(ADMIN)[-1]["id"] if events(ADMIN) else 0
VM = {}


@case
def a_vms_life_is_told_once_each():
    vmid = VM["a"] = create(ALICE, "ev-a")
    job(ALICE, call("POST", "/v1/vms/%d/stop" % vmid, ALICE))
    job(ALICE, call("POST", "/v1/vms/%d/start" % vmid, ALICE))
    job(ALICE, call("POST", "/v1/vms/%d/pause" % vmid, ALICE))
    job(ALICE, call("POST", "/v1/vms/%d/resume" % vmid, ALICE))
    job(ALICE, call("PATCH", "/v1/vms/%d" % vmid, ALICE, {"cores": 2}))
    job(ALICE, call("POST", "/v1/vms/%d/resize" % vmid, ALICE, {"disk_gb": 20}))
    job(ALICE, call("DELETE", "/v1/vms/%d" % vmid, ALICE))
    # the record's changes (a guest check's events, vm.guest_*, come when
    # the guest answers: api/test_guest)
    evs = [e for e in of_vm(events(ADMIN, START), vmid) if not e["type"].startswith("vm.guest_")]
    types = [e["type"] for e in evs]
    assert types == ["vm.created", "vm.stopped", "vm.started", "vm.paused", "vm.started",
                     "vm.updated", "vm.resized", "vm.deleted"], types
    ids = [e["id"] for e in evs]
    assert ids == sorted(set(ids)), ids
    for e in evs:
        assert e["owner"] == "alice" and e["node"], e
        assert e["data"]["name"] == "ev-a" and e["data"]["observed"] is False, e
        assert e["time"].endswith("Z"), e
    ch = {e["type"]: e["data"]["changes"] for e in evs}
    assert ch["vm.created"]["state"] == {"from": "creating", "to": "enabled"}, ch
    assert ch["vm.stopped"]["power"] == {"from": "running", "to": "stopped"}, ch
    assert ch["vm.updated"]["cores"] == {"from": 1, "to": 2}, ch
    assert ch["vm.resized"]["disk_gb"] == {"from": 10, "to": 20}, ch
    assert ch["vm.deleted"]["state"]["to"] == "deleted", ch
    assert all(e["job"] for e in evs), evs


@case_full_on_pg
def users_see_their_own_vms_events_only():
    VM["b"] = create(BOB, "ev-b")
    mine = events(BOB, START)
    assert mine and all(e["owner"] == "dave" for e in mine), mine
    assert VM["b"] in [e["vmid"] for e in mine]
    alices = events(ALICE, START)
    assert alices and all(e["owner"] == "alice" for e in alices), alices
    bobs_created = [e["id"] for e in mine if e["vmid"] == VM["b"] and e["type"] == "vm.created"]
    assert len(bobs_created) == 1 and bobs_created[0] not in [e["id"] for e in alices]
    everyone = events(ADMIN, START)
    assert {e["owner"] for e in everyone} >= {"alice", "dave"}
    # the stream is scoped the same way (checked in the stream case)


@case_full_on_pg
def after_pages_and_type_filters():
    full = events(ADMIN, START)
    paged = events(ADMIN, START, limit=2)
    assert [e["id"] for e in paged] == [e["id"] for e in full]
    created = events(ADMIN, START, type="vm.created")
    assert created and all(e["type"] == "vm.created" for e in created)
    assert len(created) == len([e for e in full if e["type"] == "vm.created"])
    vm = events(ADMIN, START, type="vm.*")
    assert len(vm) == len([e for e in full if e["type"].startswith("vm.")])
    r = call("GET", "/v1/events?type=VM;drop", ADMIN)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "type", r.text
    r = call("GET", "/v1/events?after=-1", ADMIN)
    assert r.status_code == 400, r.text
    r = call("GET", "/v1/events?limit=1001", ADMIN)
    assert r.status_code == 400, r.text
    last = full[-1]["id"]
    page = call("GET", "/v1/events?after=%d" % last, ADMIN).json()
    assert page == {"events": [], "next": last, "more": False}, page
    # proxctl events prints the same log
    out = subprocess.run([PROXCTL, "--server", px.base, "--token", ADMIN, "--json", "events",
                          "--after", str(START)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [json.loads(l)["id"] for l in out.stdout.splitlines()] == [e["id"] for e in full]


def sse_read(resp, want, deadline=30):
    """(id, type, data) of SSE events from resp until want() is satisfied."""
    got = []
    ev = {}
    end = time.monotonic() + deadline
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("id: "):
            ev["id"] = int(line[4:])
        elif line.startswith("event: "):
            ev["type"] = line[7:]
        elif line.startswith("data: "):
            ev["data"] = json.loads(line[6:])
        elif line == "" and ev:
            got.append(ev)
            ev = {}
            if want(got):
                return got
        assert time.monotonic() < end, got
    return got


@case_full_on_pg
def stream_follows_the_log_and_resumes():
    base = events(ADMIN)[-1]["id"]
    h = {"Authorization": "Bearer " + BOB, "Accept": "text/event-stream"}
    r = requests.get(px.base + "/v1/events?after=%d" % base, headers=h, stream=True, timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream", r.text
    job(BOB, call("POST", "/v1/vms/%d/stop" % VM["b"], BOB))
    job(ADMIN, call("POST", "/v1/vms/%d/stop" % VM.setdefault("c", create(ALICE, "ev-c")),
                    ADMIN))
    got = sse_read(r, lambda g: any(e["type"] == "vm.stopped" for e in g))
    r.close()
    assert all(e["data"]["owner"] == "dave" for e in got), got  # not alice's
    stopped = [e for e in got if e["type"] == "vm.stopped"][0]
    assert stopped["data"]["vmid"] == VM["b"] and stopped["id"] == stopped["data"]["id"]
    # resume with Last-Event-ID: the next events only
    job(BOB, call("POST", "/v1/vms/%d/start" % VM["b"], BOB))
    h["Last-Event-ID"] = str(stopped["id"])
    r = requests.get(px.base + "/v1/events/stream", headers=h, stream=True, timeout=60)
    got = sse_read(r, lambda g: any(e["type"] == "vm.started" for e in g))
    r.close()
    assert all(e["id"] > stopped["id"] for e in got), got
    assert [e["type"] for e in got if e["data"]["vmid"] == VM["b"]][-1] == "vm.started"


def streams_open():
    text = requests.get(px.base + "/metrics", timeout=10).text
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith("proxd_event_streams{"))


@case_full_on_pg
def proxctl_follow_streams_and_goes_on_across_a_restart():
    base = events(ADMIN)[-1]["id"]
    wait_for(lambda: streams_open() == 0, deadline=30, what="earlier cases' streams closed")
    got, lock = [], threading.Lock()
    p = subprocess.Popen([PROXCTL, "--server", px.base, "--token", ADMIN, "--json", "events",
                          "--follow", "--after", str(base)], stdout=subprocess.PIPE, text=True)

    def read():
        for line in p.stdout:
            with lock:
                got.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def seen(vmid, type):
        with lock:
            return any(e["vmid"] == vmid and e["type"] == type for e in got)

    try:
        vmid = VM["b"]
        job(BOB, call("POST", "/v1/vms/%d/stop" % vmid, BOB))
        wait_for(lambda: seen(vmid, "vm.stopped"), deadline=30, what="vm.stopped followed")
        # caught up, it reads the event stream (it does not poll the log)
        wait_for(lambda: streams_open() >= 1, deadline=30, what="proxctl's event stream open")
        px.stop()  # its stream ends; it asks again until proxd is back
        px.start()
        job(BOB, call("POST", "/v1/vms/%d/start" % vmid, BOB))
        wait_for(lambda: seen(vmid, "vm.started"), deadline=30, what="vm.started followed")
    finally:
        p.kill()
        p.wait()
        reader.join(10)
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids)), ids  # in order, none twice
    logged = [e["id"] for e in events(ADMIN, base)]
    assert ids == logged[:len(ids)], (ids, logged)  # none missed


@case_full_on_pg
def a_failed_job_is_told():
    vmid = VM.setdefault("c", create(ALICE, "ev-c"))
    power = call("GET", "/v1/vms/%d" % vmid, ALICE).json()["power"]
    action = "stop" if power == "running" else "start"
    sim.ctl("POST", "/faults", {"kind": "task_error", "method": "POST",
                                "path": r"^/nodes/[^/]+/qemu/%d/status/%s" % (vmid, action),
                                "message": "injected task failure", "rate": 1.0})
    try:
        r = call("POST", "/v1/vms/%d/%s" % (vmid, action), ALICE)
        j = job(ALICE, r, want="failed")
    finally:
        sim.ctl("DELETE", "/faults")
    failed = [e for e in events(ALICE, START, type="job.failed") if e["job"] == j["id"]]
    assert len(failed) == 1, failed
    d = failed[0]["data"]
    assert d["kind"] == action and "injected" in d["error"], d
    assert failed[0]["vmid"] == vmid and failed[0]["owner"] == "alice"


def metric(name):
    text = requests.get(px.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{webhook=\"audit\"}"):
            return float(line.split()[-1])
    return None


def ctl(*args):
    return subprocess.run([PROXCTL, "--server", px.base, "--token", ADMIN] + list(args),
                          capture_output=True, text=True, timeout=30)


def webhook_row():
    r = call("GET", "/v1/webhooks", ADMIN)
    assert r.status_code == 200, r.text
    rows = r.json()["webhooks"]
    assert [w["name"] for w in rows] == ["audit"], rows
    return rows[0]


def told_late(age):
    """The webhook's row, once proxctl status --webhook-age AGE tells it."""
    def line():
        r = ctl("--json", "status", "--webhook-age", str(age))
        got = [a for a in json.loads(r.stdout)["attention"] if a.startswith("webhook audit:")]
        return got and r.returncode == 1 and got[0]
    text = wait_for(line, deadline=30, interval=0.2, what="proxctl status tells the webhook")
    row = webhook_row()
    assert "events waiting" in text or "event waiting" in text, text
    assert "held by " + row["holder"] in text and row["last_error"][:40] in text, text
    return row


@case_full_on_pg
def webhook_gets_everything_through_down_slow_up():
    # down since start: proxd retries with backoff
    wait_for(lambda: (metric("proxd_webhook_retried_total") or 0) >= 2, deadline=30,
             what="retries while the receiver is down")
    assert metric("proxd_webhook_delivered_total") == 0
    assert metric("proxd_webhook_queue_age_seconds") > 0
    # any instance tells it from the store, and proxctl status says so
    down = told_late(age=0)
    assert down["behind"] >= 1 and down["oldest_waiting_s"] > 0, down
    assert down["held"] and down["holder"], down
    assert down["last_error"] and down["last_error_at"], down
    assert down["url"] == recv.url and down["events"] == "vm.*, job.failed", down
    assert down["delivered"] == 0, down
    assert call("GET", "/v1/webhooks", BOB).status_code == 403
    assert call("GET", "/v1/webhooks?x=1", ADMIN).status_code == 400
    lst = ctl("webhook", "list")
    assert lst.returncode == 0 and "audit" in lst.stdout and "last failure" in lst.stdout, lst
    late = ctl("status", "--webhook-age", "3600")  # not that old: not told
    assert "webhook audit" not in late.stdout, late.stdout
    assert ctl("status", "--webhook-age", "x").returncode == 2
    # slow: the first answers come after proxd's 1 s timeout
    recv.delay, recv.slow_count = 1.5, 3
    recv.up()
    more = create(BOB, "ev-hook")  # events made while it is slow
    job(BOB, call("POST", "/v1/vms/%d/stop" % more, BOB))
    want = [e for e in events(ADMIN, START)
            if e["type"].startswith("vm.") or e["type"] == "job.failed"]

    def all_in():
        got = {json.loads(p["body"])["id"] for p in recv.snapshot() if p["answered"]}
        return got >= {e["id"] for e in want}
    wait_for(all_in, deadline=90, interval=0.2, what="every event delivered")
    posts = recv.snapshot()
    # (posts in flight at once are not counted here: a post proxd gave up
    # after its timeout is still being answered when the next one comes)
    assert sum(1 for p in posts if not p["answered"]) == 3
    by_delivery = {}
    for p in posts:
        assert verify(SECRET, p["signature"], p["body"], tolerance=300), p
        assert not verify("another-secret-xxxxxxx", p["signature"], p["body"])
        e = json.loads(p["body"])
        assert p["event"] == e["type"] and p["delivery"] == "audit-%d" % e["id"], p
        assert by_delivery.setdefault(p["delivery"], p["body"]) == p["body"], p
        assert e["type"].startswith("vm.") or e["type"] == "job.failed", e  # the list
    # in order: each post is of the same event as the one before (a retry)
    # or a later one; so per VM too
    ids = [json.loads(p["body"])["id"] for p in posts]
    assert all(b >= a for a, b in zip(ids, ids[1:])), ids
    dups = len(posts) - len(set(ids))
    assert dups >= 3, dups  # the timed-out posts were made again, same id
    full = {e["id"]: e for e in want}
    for p in posts:
        e = json.loads(p["body"])
        if e["id"] in full:
            assert e == full[e["id"]], (e, full[e["id"]])
    # counted once proxd read the 200, a moment after the receiver took the
    # last post
    wait_for(lambda: metric("proxd_webhook_delivered_total") >= len(want), deadline=10,
             interval=0.1, what="every delivery counted")
    assert metric("proxd_webhook_retried_total") >= 5
    wait_for(lambda: webhook_row()["behind"] == 0, deadline=10, interval=0.1,
             what="nothing waiting behind the webhook's cursor")
    up = webhook_row()
    assert up["delivered"] >= len(want) and up["oldest_waiting_at"] is None, up
    r = ctl("status", "--webhook-age", "0")
    assert "webhook audit" not in r.stdout, r.stdout



def ts(text):
    """proxd's time ("2026-12-07T14:16:25.766Z") in unix seconds."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) + float(text[19:-1] or 0)


def taken(ids):
    got = {json.loads(p["body"])["id"] for p in recv.snapshot() if p["answered"]}
    return got >= set(ids)


@case_full_on_pg
def a_refused_event_is_passed_over_and_events_posted_again():
    """A receiver that refuses one event for ever holds up every later one
    (until max_age); an admin moves the cursor past it, and later back to
    have events posted again (their delivery ids and bodies the same)."""
    poison = create(ALICE, "ev-poison")
    recv.refuse = lambda e: e["vmid"] == poison and e["type"] == "vm.stopped"
    try:
        job(ALICE, call("POST", "/v1/vms/%d/stop" % poison, ALICE))
        after_it = create(ALICE, "ev-after-poison")
        bad = [e["id"] for e in events(ADMIN, START) if e["vmid"] == poison
               and e["type"] == "vm.stopped"][-1]
        told_late(age=0)
        wait_for(lambda: "HTTP 400" in webhook_row()["last_error"], deadline=10, interval=0.1,
                 what="the refusal recorded")
        held = webhook_row()["after"]
        assert held < bad, (held, bad)
        later = [e["id"] for e in events(ADMIN, bad)
                 if e["type"].startswith("vm.") or e["type"] == "job.failed"]
        assert later and not taken(later), later  # held up behind the refused one
        # refusals: the webhook unknown, after past the log, missing, a user
        top = events(ADMIN)[-1]["id"]
        r = call("POST", "/v1/webhooks/nope/seek", ADMIN, {"after": 1})
        assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "name", r.text
        r = call("POST", "/v1/webhooks/audit/seek", ADMIN, {"after": top + 1000})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "after", r.text
        r = call("POST", "/v1/webhooks/audit/seek", ADMIN, {})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "after", r.text
        assert call("POST", "/v1/webhooks/audit/seek", BOB, {"after": bad}).status_code == 403
        assert ctl("webhook", "seek", "audit", "--after", "x").returncode == 2
        assert webhook_row()["after"] == held  # none of them moved it
        # past it: the later events go
        t0 = time.monotonic()
        r = ctl("webhook", "seek", "audit", "--after", str(bad))
        assert r.returncode == 0 and "from %d to %d" % (held, bad) in r.stdout, r
        # the holder's next refused post cannot be told: it reads the
        # cursor anew (not posting the refused event again until its lease
        # is renewed)
        wait_for(lambda: taken(later), deadline=8, interval=0.1,
                 what="the events after the refused one delivered")
        print("    passed over in %.1f s" % (time.monotonic() - t0))
        wait_for(lambda: webhook_row()["behind"] == 0, deadline=10, interval=0.1,
                 what="nothing waiting")
        # back: posted again, the same ids and bodies
        first = {p["delivery"]: p["body"] for p in recv.snapshot()
                 if p["answered"] and json.loads(p["body"])["id"] in later}
        before = len(recv.snapshot())
        r = call("POST", "/v1/webhooks/audit/seek", ADMIN, {"after": bad})
        assert r.status_code == 200 and r.json()["was"] >= later[-1], r.text

        def again():
            return {json.loads(p["body"])["id"] for p in recv.snapshot()[before:]
                    if p["answered"]} >= set(later)
        t0 = time.monotonic()
        # an idle holder reads its row each second (its lease, renewed
        # only when half is gone, would tell it 15 s later at most)
        wait_for(again, deadline=8, interval=0.1, what="the events posted again")
        print("    posted again %.1f s after the seek back" % (time.monotonic() - t0))
        for p in recv.snapshot()[before:]:
            if p["delivery"] in first:
                assert p["body"] == first[p["delivery"]], p
        assert after_it in {json.loads(p["body"])["vmid"] for p in recv.snapshot()[before:]}
    finally:
        recv.refuse = None



def holder(inst, name):
    text = requests.get(inst.base + "/metrics", timeout=10).text
    return ("proxd_webhook_holder{webhook=\"%s\"} 1" % name) in text


def hook_instance(name, recv, timeout, retry_max, extra=""):
    """A proxd of its own (database PROXD_TEST_DB3) with [webhook NAME] to
    recv (and `extra` lines), started and holding the webhook: (proxd, an
    admin's token)."""
    hook = ("reconcile_interval = 3600\n\n[webhook %s]\nurl = %s\nsecret = %s\n"
            "timeout = %d\nretry_max = %d\n%s" % (name, recv.url, SECRET, timeout, retry_max,
                                                  extra))
    inst = Proxd(sim, database=os.environ.get("PROXD_TEST_DB3"), proxd_extra=hook)
    admin = inst.token("ops", "admin")
    inst.start()
    try:
        wait_for(lambda: holder(inst, name), deadline=30, what="a holder")
    except AssertionError:
        inst.stop()
        raise
    return inst, admin


def hook_row(inst, admin, name):
    """GET /v1/webhooks' row of webhook `name` (cases of one database leave
    their cursors to the next)."""
    r = inst.call("GET", "/v1/webhooks", admin)
    assert r.status_code == 200, r.text
    return [w for w in r.json()["webhooks"] if w["name"] == name][0]


def tell(inst, admin, node, what):
    """Cordon or uncordon node; the id of the event that tells it."""
    r = inst.call("POST", "/v1/nodes/%s/%s" % (node, what), admin)
    assert r.status_code == 200, r.text
    evs = inst.call("GET", "/v1/events?limit=1000", admin).json()["events"]
    return max(e["id"] for e in evs if e["type"] == "node." + what + "ed")


@case
def two_instances_deliver_each_event_once_between_them():
    """Two proxd on one database, one webhook: one delivers at a time; the
    holder killed (its lease run out at once, as the clock would do), the
    other goes on from the stored cursor; every event arrives, in order,
    never two posts at once, duplicates only of what the dead one had in
    hand, with the same id and body."""
    r2 = Receiver().up()
    hook = ("reconcile_interval = 3600\n\n[webhook two]\nurl = %s\nsecret = %s\n"
            "timeout = 2\nretry_max = 1\n" % (r2.url, SECRET))
    a = Proxd(sim, database=os.environ.get("PROXD_TEST_DB3"), proxd_extra=hook)
    b = Proxd(sim, share=a, proxd_extra=hook)
    admin = a.token("ops", "admin")
    a.start()
    b.start()
    try:
        wait_for(lambda: holder(a, "two") or holder(b, "two"), deadline=30, what="a holder")
        assert not (holder(a, "two") and holder(b, "two"))
        first, second = (a, b) if holder(a, "two") else (b, a)

        def work(inst, name):
            r = inst.call("POST", "/v1/vms", admin, {"os": "ubuntu", "name": name, "cores": 1,
                                                    "memory_mb": 1024, "disk_gb": 10,
                                                    "owner": "erin"})
            assert r.status_code == 202, r.text
            j = inst.wait_job(r.json()["job"], admin, deadline=90)
            assert j["state"] == "done", j
            vmid = r.json()["vmid"]
            for act in ("stop", "start"):
                r = inst.call("POST", "/v1/vms/%d/%s" % (vmid, act), admin)
                inst.wait_job(r.json()["job"], admin, deadline=90)
        work(first, "two-a")
        work(second, "two-b")
        wait_for(lambda: len(r2.snapshot()) >= 3, deadline=30, what="deliveries")
        first.kill()
        killed_at = time.monotonic()
        if "://" in first.db:
            import subprocess as sp
            sp.run(["psql", "-X", "-q", first.db, "-c",
                    "UPDATE webhook_cursor SET lease_until = 0"], check=True)
        else:
            import sqlite3
            c = sqlite3.connect(first.db, timeout=30)
            with c:
                c.execute("UPDATE webhook_cursor SET lease_until = 0")
            c.close()
        work(second, "two-c")
        log = [e for e in (second.call("GET", "/v1/events?limit=1000", admin).json()["events"])]
        want = {e["id"] for e in log}

        def all_in():
            return {json.loads(p["body"])["id"] for p in r2.snapshot() if p["answered"]} >= want
        wait_for(all_in, deadline=60, interval=0.2, what="every event delivered")
        wait_for(lambda: holder(second, "two"), deadline=10, what="the survivor holds it")
        posts = r2.snapshot()
        # never two posts at once, but for the post the killed holder had in
        # flight (read before the kill) and the survivor's first after it, and
        # a post its sender had given up on (the 2 s timeout: a starved
        # receiver) still being answered when the next comes
        both = [(a, b) for a, b in r2.overlaps(gave_up=2.0)
                if not (a["t"] < killed_at <= b["t"])]
        assert not both, [(a["delivery"], b["delivery"], round(b["t"] - a["t"], 3))
                          for a, b in both]
        ids = [json.loads(p["body"])["id"] for p in posts]
        assert all(y >= x for x, y in zip(ids, ids[1:])), ids
        bodies = {}
        for p in posts:
            assert verify(SECRET, p["signature"], p["body"]), p
            assert bodies.setdefault(p["delivery"], p["body"]) == p["body"], p
        dups = len(ids) - len(set(ids))
        # at most the post the killed holder had in hand, and a post again
        # after its sender provably gave up on it (2 s after it was read)
        first_t, retried = {}, 0
        for p in posts:
            d = p["delivery"]
            if d in first_t and p["t"] - first_t[d] >= 2.0:
                retried += 1
            first_t.setdefault(d, p["t"])
        assert dups <= 1 + retried, (dups, retried, ids)
        print("    two instances: %d events, %d posts, %d duplicate" % (len(want), len(posts),
                                                                         dups), flush=True)
    finally:
        for inst in (a, b):
            if inst.alive():
                inst.stop()
        r2.down()


@case
def a_holder_killed_is_taken_over_by_its_restart_at_once():
    """The delivering proxd killed (no stop: its lease stays in the store)
    and started again, a new process of the same host: it takes the
    webhook over at once, not when the dead one's lease runs out (30 s
    here; over two minutes with the defaults), and goes on from the
    stored cursor."""
    r4 = Receiver().up()
    a, admin = hook_instance("back", r4, timeout=2, retry_max=1)
    try:
        def told(node, what):
            return tell(a, admin, node, what)

        def delivered(eid):
            return any(json.loads(p["body"])["id"] == eid and p["answered"]
                       for p in r4.snapshot())
        eid = told("sv4", "cordon")
        wait_for(lambda: delivered(eid), deadline=30, what="the first event delivered")
        a.kill()
        a.start()
        t0 = time.monotonic()
        eid = told("sv4", "uncordon")
        wait_for(lambda: delivered(eid), deadline=10, interval=0.1,
                 what="the event after the restart delivered before the 30 s lease ran out")
        took = time.monotonic() - t0
        assert holder(a, "back")
        assert a.logs_contain("which is gone"), a.tail()
        print("    delivered %.1f s after the restart" % took, flush=True)
    finally:
        if a.alive():
            a.stop()
        r4.down()


def posts_of(recv, eid):
    """recv's posts of event eid"""
    return [p for p in recv.snapshot() if json.loads(p["body"])["id"] == eid]


def into_the_pause(inst, admin, name, recv, bad):
    """Until the refused event bad was posted to recv 5 times and its 5th
    failure written: the holder is then in the 8 s pause that follows
    (timeout and retry_max 10)."""
    wait_for(lambda: len(posts_of(recv, bad)) >= 5, deadline=30, interval=0.05,
             what="the refused event posted 5 times")
    seen5 = time.time()

    def told_5th():  # its failure written (the 4th's was 4 s before)
        r = hook_row(inst, admin, name)
        return r["last_error_at"] and ts(r["last_error_at"]) > seen5 - 1.0
    wait_for(told_5th, deadline=5, interval=0.02, what="the 5th refusal told")
    assert len(posts_of(recv, bad)) == 5  # in the 8 s pause


@case_full_on_pg
def a_seek_back_while_a_holder_waits_to_post_again_is_not_passed_over():
    """The holder waits between posts of a refused event (8-10 s pauses:
    timeout and retry_max 10) when an admin moves the cursor back and the
    receiver takes the event again. The holder, reading its row each
    second of the pause, learns of the seek within a second or two and
    starts over from the new cursor, posting every event after it again, in
    order; it does not post the event it was on and move the cursor there,
    passing over those between (nor does its lease's renewal, before its
    next post, when it finds the cursor moved)."""
    r5 = Receiver().up()
    b, admin = hook_instance("back2", r5, timeout=10, retry_max=10)
    try:
        base = tell(b, admin, "sv1", "cordon")
        mid = [tell(b, admin, "sv2", "cordon"), tell(b, admin, "sv1", "uncordon")]
        wait_for(lambda: all(p["answered"] for i in [base] + mid for p in posts_of(r5, i)[-1:])
                 and all(posts_of(r5, i) for i in [base] + mid), deadline=30, interval=0.1,
                 what="the first events delivered")
        r5.refuse = lambda e: e["type"] == "node.uncordoned" and e["node"] == "sv2"
        bad = tell(b, admin, "sv2", "uncordon")
        # (its 8 s pause after the 5th post ends with the holder renewing
        # its lease: more than 5 s since it did, the lease is 30 s, a post
        # and a pause need 25)
        into_the_pause(b, admin, "back2", r5, bad)
        r5.refuse = None
        before = len(r5.snapshot())
        log = b.call("GET", "/v1/events?limit=1000", admin).json()["events"]
        between = [e["id"] for e in log if base < e["id"] <= bad]
        assert between[-1] == bad and set(mid) <= set(between), (between, mid)
        r = b.call("POST", "/v1/webhooks/back2/seek", admin, {"after": base})
        assert r.status_code == 200 and r.json()["was"] == between[-2], r.text
        t0 = time.monotonic()
        wait_for(lambda: any(p["answered"] for p in posts_of(r5, bad)), deadline=5, interval=0.05,
                 what="the refused event taken before the 8 s pause ran out")
        print("    posted again %.1f s into an 8 s pause" % (time.monotonic() - t0))
        again = [json.loads(p["body"])["id"] for p in r5.snapshot()[before:]]
        assert again[:len(between)] == between, (again, between)
    finally:
        b.stop()
        r5.down()


@case_full_on_pg
def a_seek_to_its_own_cursor_posts_again_now():
    """'Try again now' (proxctl webhook seek NAME --after CURSOR, the cursor
    it has): the holder, in an 8 s pause between posts of a refused event,
    posts it again within a second or two of the seek, once the receiver
    takes it, rather than at the pause's end; the cursor stays (the answer's
    `was` and `after` the same), and nothing before the event is posted
    again."""
    r6 = Receiver().up()
    b, admin = hook_instance("now", r6, timeout=10, retry_max=10)
    try:
        first = tell(b, admin, "sv3", "cordon")
        wait_for(lambda: any(p["answered"] for p in posts_of(r6, first)), deadline=30,
                 interval=0.1, what="the first event delivered")
        r6.refuse = lambda e: e["type"] == "node.uncordoned" and e["node"] == "sv3"
        bad = tell(b, admin, "sv3", "uncordon")
        into_the_pause(b, admin, "now", r6, bad)
        r6.refuse = None
        before = len(r6.snapshot())
        cursor = hook_row(b, admin, "now")["after"]
        assert first <= cursor < bad, (first, cursor, bad)
        r = b.call("POST", "/v1/webhooks/now/seek", admin, {"after": cursor})
        assert r.status_code == 200 and r.json()["was"] == cursor == r.json()["after"], r.text
        t0 = time.monotonic()
        wait_for(lambda: any(p["answered"] for p in posts_of(r6, bad)), deadline=5, interval=0.05,
                 what="the refused event taken before the 8 s pause ran out")
        print("    posted again %.1f s into an 8 s pause" % (time.monotonic() - t0))
        again = [json.loads(p["body"])["id"] for p in r6.snapshot()[before:]]
        assert again and again[0] == bad and all(i >= bad for i in again), (again, bad)
    finally:
        b.stop()
        r6.down()


@case_full_on_pg
def a_dropped_event_is_told_by_proxctl_status():
    """An event its receiver refuses until max_age (2 s) is dropped, the
    next one delivered; the drop is counted in the store with its time, and
    proxctl status makes it an attention line for --hours. A seek back
    then has it posted (its max_age counted from the seek)."""
    r6 = Receiver().up()
    c, admin = hook_instance("drops", r6, timeout=1, retry_max=1, extra="max_age = 2\n")
    try:
        r6.refuse = lambda e: e["type"] == "node.cordoned" and e["node"] == "sv3"
        bad = tell(c, admin, "sv3", "cordon")

        def row():
            return hook_row(c, admin, "drops")
        wait_for(lambda: row()["dropped"] == 1, deadline=30, interval=0.1,
                 what="the refused event dropped after max_age")
        nxt = tell(c, admin, "sv3", "uncordon")  # (logged together, it would go too)
        wait_for(lambda: any(json.loads(p["body"])["id"] == nxt and p["answered"]
                             for p in r6.snapshot()), deadline=30, interval=0.1,
                 what="the event after the dropped one delivered")
        got = wait_for(lambda: (lambda w: w["after"] == nxt and w)(row()), deadline=10,
                       interval=0.05, what="the cursor after the event delivered")
        assert got["dropped"] == 1 and got["last_dropped_at"], got
        assert not any(json.loads(p["body"])["id"] == bad and p["answered"]
                       for p in r6.snapshot())
        r = subprocess.run([PROXCTL, "--server", c.base, "--token", admin, "--json", "status"],
                           capture_output=True, text=True, timeout=30)
        lines = [a for a in json.loads(r.stdout)["attention"] if a.startswith("webhook drops")]
        assert r.returncode == 1 and len(lines) == 1 and "dropped events" in lines[0] \
            and "1 in all" in lines[0], r.stdout
        assert c.logs_contain("dropped: undelivered after max_age"), c.tail()
        # the receiver takes it now: a seek back has it posted again, though
        # it is older than max_age (its age counts from the seek)
        r6.refuse = None
        r = c.call("POST", "/v1/webhooks/drops/seek", admin, {"after": bad - 1})
        assert r.status_code == 200, r.text
        # on record: who moved the cursor, from where to where
        moved = [e for e in c.call("GET", "/v1/events?type=webhook.cursor_moved&limit=1000",
                                   admin).json()["events"] if e["data"]["webhook"] == "drops"]
        assert [m["data"] for m in moved] == [
            {"webhook": "drops", "from": r.json()["was"], "to": bad - 1, "by": "ops"}], moved
        assert moved[0]["owner"] is None or moved[0]["owner"] == "", moved
        wait_for(lambda: any(json.loads(p["body"])["id"] == bad and p["answered"]
                             for p in r6.snapshot()), deadline=30, interval=0.1,
                 what="the dropped event posted again after the seek")
        # (the seek's own event, logged after it, is posted too)
        got = wait_for(lambda: (lambda w: w["after"] == moved[0]["id"] and w)(row()),
                       deadline=10, interval=0.05, what="the cursor back at the end")
        assert got["dropped"] == 1, got  # not dropped again
    finally:
        c.stop()
        r6.down()


@case_full_on_pg
def a_webhook_of_some_types_counts_the_events_it_wants():
    """What waits behind a webhook's cursor (GET /v1/webhooks' behind and
    oldest_waiting_at, proxctl status's line) is what it wants: the events
    of other types are passed over, not waited for. It counted every type:
    a webhook of node.cordoned held up by its receiver showed the log's
    count."""
    r6 = Receiver().up()
    c, admin = hook_instance("few", r6, timeout=1, retry_max=1,
                             extra="events = node.cordoned\n")
    try:
        r6.refuse = lambda e: True
        bad = tell(c, admin, "sv3", "cordon")
        for node, what in (("sv3", "uncordon"), ("sv4", "cordon"), ("sv4", "uncordon")):
            last = tell(c, admin, node, what)
        evs = c.call("GET", "/v1/events?after=%d&limit=1000" % (bad - 1), admin).json()["events"]
        wanted = [e for e in evs if e["type"] == "node.cordoned"]
        assert len(wanted) == 2 and len(evs) >= 4 and evs[-1]["id"] >= last, evs
        row = wait_for(lambda: (lambda w: w["after"] < bad and w["behind"] == 2 and w)(
            hook_row(c, admin, "few")), deadline=10, interval=0.1,
            what="two events waiting behind the webhook")
        assert row["oldest_waiting_at"] == wanted[0]["time"], (row, wanted)
        r = subprocess.run([PROXCTL, "--server", c.base, "--token", admin, "--json", "status",
                            "--webhook-age", "0"], capture_output=True, text=True, timeout=30)
        lines = [a for a in json.loads(r.stdout)["attention"] if a.startswith("webhook few")]
        assert len(lines) == 1 and "2 events waiting" in lines[0], r.stdout
    finally:
        c.stop()
        r6.down()


@case_full_on_pg
def a_webhook_no_instance_has_is_forgotten():
    """A webhook's cursor stays after it left the configuration (listed,
    configured false); forgetting it is refused while an instance holds it
    or has it configured, and done once none does."""
    r7 = Receiver().up()
    a, admin = hook_instance("gone", r7, timeout=1, retry_max=1)
    b = Proxd(sim, share=a, proxd_extra="reconcile_interval = 3600\n")
    b.start()
    try:
        def names(inst):
            r = inst.call("GET", "/v1/webhooks", admin)
            assert r.status_code == 200, r.text
            return {w["name"]: w["configured"] for w in r.json()["webhooks"]}
        assert names(b)["gone"] is False and names(a)["gone"] is True
        for inst, why in ((a, "configuration"), (b, "delivered by instance")):
            r = inst.call("DELETE", "/v1/webhooks/gone", admin)
            assert r.status_code == 409 and why in r.text, r.text
            assert r.json()["error"]["details"]["field"] == "name", r.text
        a.stop()  # (releases its lease)
        forget = [PROXCTL, "--server", b.base, "--token", admin, "webhook", "forget", "gone"]
        r = subprocess.run(forget, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "forgotten" in r.stdout, r
        assert "gone" not in names(b)
        r = subprocess.run(forget, capture_output=True, text=True, timeout=30)
        assert r.returncode == 3, r  # not found
        assert b.call("DELETE", "/v1/webhooks/gone", admin).status_code == 404
        # on record, once (the refused forgets told nothing)
        told = [e for e in b.call("GET", "/v1/events?type=webhook.forgotten&limit=1000",
                                  admin).json()["events"] if e["data"]["webhook"] == "gone"]
        assert len(told) == 1 and told[0]["data"]["by"] == "ops", told
    finally:
        if a.alive():
            a.stop()
        b.stop()
        r7.down()


@case_full_on_pg
def a_post_in_flight_does_not_hold_up_a_stop():
    """A receiver that reads a post and does not answer (a hung endpoint)
    while proxd stops: the post is given up at once, not waited for until
    the stop's 10 s grace ran out and the process exited without finishing
    its stop (a warning, the other threads cut off wherever they were); the
    event stays undelivered and is posted again after the restart."""
    r3 = Receiver().up()
    r3.delay, r3.slow_count = 120.0, 1
    hook = ("reconcile_interval = 3600\n\n[webhook hung]\nurl = %s\nsecret = %s\n"
            "timeout = 60\nretry_max = 1\n" % (r3.url, SECRET))
    inst = Proxd(sim, proxd_extra=hook)  # the transport's, not the store's: SQLite
    admin = inst.token("ops", "admin")
    inst.start()
    try:
        r = inst.call("POST", "/v1/vms", admin, {"os": "ubuntu", "name": "hung-a", "cores": 1,
                                                 "memory_mb": 1024, "disk_gb": 10,
                                                 "owner": "erin"})
        assert r.status_code == 202, r.text
        wait_for(lambda: r3.inflight >= 1, deadline=60, what="a post in flight")
        first = r3.snapshot()[0]
        t0 = time.monotonic()
        inst.stop()
        took = time.monotonic() - t0
        print("    stopped in %.2f s with a post in flight (its timeout 60 s)" % took, flush=True)
        assert took < 5, took
        assert "still stopping" not in inst.log_text()
        inst.start()
        wait_for(lambda: any(p["delivery"] == first["delivery"] and p["answered"]
                             for p in r3.snapshot()), deadline=60, what="the event posted again")
    finally:
        if inst.alive():
            inst.stop()
        r3.down()


@case_full_on_pg
def retention_prunes_old_events_and_ids_go_on():
    other = Proxd(sim, database=os.environ.get("PROXD_TEST_DB2"),
                  proxd_extra="reconcile_interval = 3600\n\n[events]\nkeep = 5\n\n"
                              "[jobs]\nkeep = 6\n")
    admin = other.token("ops", "admin")
    other.start()
    try:
        def evs():
            r = other.call("GET", "/v1/events", admin)
            assert r.status_code == 200, r.text
            return r.json()["events"]
        body = {"os": "ubuntu", "name": "ret", "cores": 1, "memory_mb": 1024, "disk_gb": 10,
                "owner": "erin"}
        key = {"Idempotency-Key": "ret-1"}
        r = other.call("POST", "/v1/vms", admin, body, headers=key)
        assert r.status_code == 202, r.text
        created = r.json()
        other.wait_job(created["job"], admin, deadline=90)
        # (read at once: kept 5 s, and the key's answer 6; a loaded machine
        # may stall a second or two between calls)
        first = evs()
        again = other.call("POST", "/v1/vms", admin, body, headers=key)
        assert again.json()["job"] == created["job"], again.text  # the key's answer
        assert any(e["type"] == "vm.created" for e in first), first
        top = max(e["id"] for e in first)
        wait_for(lambda: not [e for e in evs() if e["id"] <= top], deadline=30, interval=0.2,
                 what="old events pruned")
        r = other.call("POST", "/v1/vms/%d/stop" % r.json()["vmid"], admin)
        other.wait_job(r.json()["job"], admin, deadline=90)
        later = evs()
        assert later and all(e["id"] > top for e in later), (top, later)
        # [jobs] keep: the finished creation and its key's answer go, the VM stays
        wait_for(lambda: other.call("GET", "/v1/jobs/" + created["job"], admin).status_code
                 == 404, deadline=30, interval=0.2, what="the finished job pruned")
        assert other.call("GET", "/v1/vms/%d" % created["vmid"], admin).status_code == 200
        again = other.call("POST", "/v1/vms", admin, dict(body, name="ret2"), headers=key)
        assert again.status_code == 202 and again.json()["job"] != created["job"], again.text
        other.wait_job(again.json()["job"], admin, deadline=90)
    finally:
        other.stop()


try:
    finish_rc = None
finally:
    shutdown(px, sim)
    recv.down()
finish()
