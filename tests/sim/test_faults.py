"""Injected faults (POST /_sim/faults): every kind, the count/rate/node/method
filters, listing and deleting rules, and the validation of rule specs."""
import time

import requests

from lib.cases import case, finish
from lib.sim import Sim
from lib.wait import wait_for


def fault(s, **spec):
    r = s.raw("POST", "/_sim/faults", json=spec)
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


def bad_spec(s, spec, field):
    r = s.raw("POST", "/_sim/faults", json=spec)
    assert r.status_code == 400, (spec, r.status_code, r.text)
    err = r.json()["error"]
    assert err.startswith(field + ":") or err.startswith(field + " "), (spec, err)
    return err


def expect(r, status, message):
    assert r.status_code == status and r.reason == message.split("\n")[0], (r.status_code, r.reason)
    assert r.headers.get("Connection", "").lower() == "close"
    assert r.json() == {"data": None, "message": message + "\n"}, r.text


def lockfile_timeout(vmid):
    return "can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout" % vmid


@case
def lock_timeout():
    with Sim(time_scale=0.01) as s:
        fault(s, path=r"/qemu/\d+/config$", method="PUT", kind="lock_timeout")
        expect(s.api("PUT", "/nodes/sv1/qemu/8001/config", data={"cores": "3"}), 500, lockfile_timeout(8001))
        assert s.data("GET", "/nodes/sv1/qemu/8001/config")["cores"] == 2  # nothing changed
        fault(s, path=r"/clone$", kind="lock_timeout")
        expect(s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "123"}), 500, lockfile_timeout(123))
        assert s.vm(123) is None


@case
def error_kind():
    with Sim(time_scale=0.01) as s:
        fault(s, path="^/nodes/sv1/qemu/8000/status/current$", kind="error", status=503,
              message="service unavailable")
        fault(s, path="^/cluster/nextid$", kind="error")
        expect(s.api("GET", "/nodes/sv1/qemu/8000/status/current"), 503, "service unavailable")
        expect(s.api("GET", "/cluster/nextid"), 500, "injected error")
        # other paths are untouched
        assert s.api("GET", "/nodes/sv1/qemu/8001/status/current").status_code == 200


@case
def proxy_statuses():
    with Sim(time_scale=0.01) as s:
        fault(s, path="^/nodes/sv2/", kind="595", message="Connection refused")
        fault(s, path="^/nodes/sv3/", kind="596")
        for node, status, reason in (("sv2", 595, "Connection refused"), ("sv3", 596, "Connection timed out")):
            r = s.api("GET", "/nodes/%s/qemu" % node)
            assert (r.status_code, r.reason) == (status, reason), (r.status_code, r.reason)
            assert r.content == b"" and r.headers.get("Connection", "").lower() == "close", (r.headers, r.content)
        assert s.api("GET", "/nodes/sv1/qemu").status_code == 200
        # 595 with a delay: it takes that long
        fault(s, path="^/nodes/sv4/", kind="595", delay_ms=300)
        t0 = time.monotonic()
        assert s.api("GET", "/nodes/sv4/qemu").status_code == 595
        assert time.monotonic() - t0 >= 0.3


@case
def delay_kind():
    with Sim(time_scale=0.01) as s:
        f = fault(s, path="^/version$", kind="delay", delay_ms=400)
        fid = f.get("id") or f.get("data", {}).get("id")

        def hits():
            rules = s.ctl("GET", "/faults")
            rules = rules if isinstance(rules, list) else rules.get("data", rules)
            return [x["hits"] for x in rules if x["id"] == fid][0]
        t0 = time.monotonic()
        r = s.api("GET", "/version")
        el = time.monotonic() - t0
        assert r.status_code == 200 and r.json()["data"]["version"], r.text
        assert el >= 0.4, el
        assert hits() == 1
        # another path is not delayed: the rule did not match it (counted
        # by its hits, not timed: a loaded machine may take 0.4 s anyway)
        assert s.api("GET", "/nodes").status_code == 200
        assert hits() == 1


@case
def task_error_kind():
    with Sim(time_scale=0.01) as s:
        fault(s, path=r"/clone$", kind="task_error", message="clone failed: injected disk failure")
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"})
        st = s.wait_task("sv1", upid)
        assert st["exitstatus"] == "clone failed: injected disk failure", st
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % upid)]
        assert log[-1] == "TASK ERROR: clone failed: injected disk failure", log
        assert s.vm(100) is None
        assert s.api("GET", "/nodes/sv1/qemu/100/config").status_code == 500
        assert s.data("GET", "/cluster/nextid") == "100"
        # a start that fails in the task leaves the VM stopped
        s.ctl("DELETE", "/faults")
        assert s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/8000/clone",
                                         data={"newid": "100"}))["exitstatus"] == "OK"
        fault(s, path=r"/status/start$", kind="task_error", message="start failed: boom")
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/100/status/start"))
        assert st["exitstatus"] == "start failed: boom", st
        assert s.vm(100)["power"] == "stopped"
        # a synchronous call is not affected by task_error
        fault(s, path=r"/config$", kind="task_error", message="nope")
        assert s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "3"}).status_code == 200


@case
def hang_kind():
    with Sim(time_scale=0.01) as s:
        fault(s, path="^/nodes/sv1/qemu$", kind="hang")
        t0 = time.monotonic()
        try:
            s.api("GET", "/nodes/sv1/qemu", timeout=0.5)
            raise AssertionError("a hung request was answered")
        except requests.exceptions.ReadTimeout:
            pass
        assert time.monotonic() - t0 >= 0.5
        # the server keeps serving other requests (and the same path once cleared)
        assert s.api("GET", "/version").status_code == 200
        assert s.api("GET", "/nodes/sv2/qemu").status_code == 200
        s.ctl("DELETE", "/faults")
        assert s.api("GET", "/nodes/sv1/qemu").status_code == 200


@case
def drop_kind():
    """The call is served, its answer lost: the connection closes without a
    byte; what the call did stays done (here, a clone runs)."""
    with Sim(time_scale=0.01) as s:
        fault(s, path=r"/clone$", kind="drop", count=1)
        try:
            s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"}, timeout=5)
            raise AssertionError("a dropped answer came")
        except requests.exceptions.ConnectionError:
            pass
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "qmclone"})
        assert [t["id"] for t in tasks] == ["8000"], tasks
        assert s.wait_task("sv1", tasks[0]["upid"])["exitstatus"] == "OK"
        assert s.vm(100) is not None
        assert s.ctl("GET", "/faults")[0]["hits"] == 1
        # a read: served and lost the same way; the next one answers
        fault(s, path="^/nodes/sv1/qemu$", kind="drop", count=1)
        try:
            s.api("GET", "/nodes/sv1/qemu", timeout=5)
            raise AssertionError("a dropped answer came")
        except requests.exceptions.ConnectionError:
            pass
        assert s.api("GET", "/nodes/sv1/qemu").status_code == 200


@case
def served_596_kind():
    """The call is served, and the relay's 596 comes back instead of its
    answer (empty body, the connection closed): the clone runs, a config
    write is applied; the rule's message is the reason."""
    with Sim(time_scale=0.01) as s:
        fault(s, path=r"/clone$", kind="served_596", count=1)
        r = s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"})
        assert r.status_code == 596 and r.reason == "Connection timed out", (r.status_code, r.reason)
        assert r.content == b"" and r.headers.get("Connection") == "close", (r.content, r.headers)
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "qmclone"})
        assert [t["id"] for t in tasks] == ["8000"], tasks
        assert s.wait_task("sv1", tasks[0]["upid"])["exitstatus"] == "OK"
        fault(s, path=r"/config$", kind="served_596", message="proxy timeout", count=1)
        r = s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "3"})
        assert (r.status_code, r.reason) == (596, "proxy timeout"), (r.status_code, r.reason)
        assert s.vm(100)["conf"]["cores"] in (3, "3"), s.vm(100)["conf"]
        assert [f["hits"] for f in s.ctl("GET", "/faults")] == [1, 1]


def closed(s, method, path, **kw):
    """The call gets no answer: its connection closes without a byte."""
    try:
        s.api(method, path, timeout=5, **kw)
        raise AssertionError("%s %s was answered" % (method, path))
    except requests.exceptions.ConnectionError:
        pass


def late_pending(s):
    return s.ctl("GET", "/calls")["late_pending"]


def clone_100(s):
    upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"})
    assert s.wait_task("sv1", upid)["exitstatus"] == "OK"


@case
def late_kind():
    """The connection closes at once without an answer; the call is served
    delay_ms later, with the effects it has then: a config write applies
    then, a resize's task starts then and grows the disk."""
    with Sim(time_scale=0.01) as s:
        clone_100(s)
        cfg = "/nodes/sv1/qemu/100/config"
        f = fault(s, method="PUT", path="^/nodes/sv1/qemu/100/config$", kind="late", delay_ms=1500,
                  count=1)
        assert f["delay_ms"] == 1500, f
        t0 = time.monotonic()
        closed(s, "PUT", cfg, data={"cores": "3"})
        # the config read while the call still waits (it is pending after
        # the read): it does not hold the value yet
        cores = s.data("GET", cfg)["cores"]
        assert late_pending(s) == 1, "served already (or a machine stalled 1.5 s)"
        assert cores == 2
        wait_for(lambda: s.data("GET", cfg)["cores"] == 3, deadline=15, what="the late config write")
        assert time.monotonic() - t0 >= 1.5
        assert late_pending(s) == 0
        # counted once, when it came in
        assert s.ctl("GET", "/calls")["calls"]["PUT /nodes/{node}/qemu/{vmid}/config"] == 1
        # a resize: no task and the same disk until it is served
        s.ctl("DELETE", "/faults")
        fault(s, method="PUT", path="/resize$", kind="late", delay_ms=1500, count=1)
        size = s.data("GET", cfg)["scsi0"]
        assert "size=10G" in size, size
        t0 = time.monotonic()
        closed(s, "PUT", "/nodes/sv1/qemu/100/resize", data={"disk": "scsi0", "size": "+1G"})
        seen = s.data("GET", cfg)["scsi0"]
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "resize"})
        assert late_pending(s) == 1, "served already (or a machine stalled 1.5 s)"
        assert seen == size and tasks == [], (seen, tasks)
        wait_for(lambda: "size=11G" in s.data("GET", cfg)["scsi0"], deadline=15,
                 what="the late resize")
        assert time.monotonic() - t0 >= 1.5
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "resize"})
        assert [t["status"] for t in tasks] == ["OK"], tasks


def timed_out(s, method, path, timeout, **kw):
    """The call gets no answer within `timeout` s: the connection stays open."""
    try:
        s.api(method, path, timeout=timeout, **kw)
        raise AssertionError("%s %s was answered" % (method, path))
    except requests.exceptions.ReadTimeout:
        pass


@case
def late_hang_kind():
    """The connection stays open without an answer (the client gives up
    after its timeout) and the call is served delay_ms later, answered to
    no one: a clone started after its client timed out, or still within
    the client's wait; beyond 64 waiting, served now and never answered."""
    with Sim(time_scale=0.01) as s:
        fault(s, method="POST", path="/clone$", kind="late_hang", delay_ms=1500, count=1)
        assert s.ctl("GET", "/faults")[0]["delay_ms"] == 1500
        t0 = time.monotonic()
        timed_out(s, "POST", "/nodes/sv1/qemu/8000/clone", 0.5, data={"newid": "100"})
        assert late_pending(s) == 1, "served already (or a machine stalled 1.5 s)"
        assert s.vm(100) is None
        wait_for(lambda: s.vm(100) is not None, deadline=15, what="the late clone")
        assert time.monotonic() - t0 >= 1.5
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "qmclone"})
        assert [t["id"] for t in tasks] == ["8000"], tasks
        assert s.wait_task("sv1", tasks[0]["upid"])["exitstatus"] == "OK"
        assert late_pending(s) == 0
        # served while the client still waits: it gets no answer all the same
        cfg = "/nodes/sv1/qemu/100/config"
        fault(s, method="PUT", path="/config$", kind="late_hang", delay_ms=100, count=1)
        timed_out(s, "PUT", cfg, 2, data={"cores": "3"})
        assert s.data("GET", cfg)["cores"] == 3
        # the default delay, and the bound: beyond 64 waiting, served now
        s.ctl("DELETE", "/faults")
        fault(s, path="^/version$", kind="late_hang")
        assert s.ctl("GET", "/faults")[0]["delay_ms"] == 1000
        s.ctl("DELETE", "/faults")
        fault(s, path="^/version$", kind="late", delay_ms=600000)  # the same 64 places
        for _ in range(64):
            closed(s, "GET", "/version")
        assert late_pending(s) == 64
        fault(s, method="PUT", path="/config$", kind="late_hang", delay_ms=600000)
        timed_out(s, "PUT", cfg, 0.5, data={"cores": "4"})
        assert s.data("GET", cfg)["cores"] == 4  # served at once
        assert late_pending(s) == 64
        s.ctl("POST", "/reset")
        assert late_pending(s) == 0


@case
def late_calls_released_are_served_now():
    """POST /_sim/late serves the late calls still waiting at once, not
    when their delay runs out; one served already is not counted."""
    with Sim(time_scale=0.01) as s:
        clone_100(s)
        cfg = "/nodes/sv1/qemu/100/config"
        fault(s, method="PUT", path="^/nodes/sv1/qemu/100/config$", kind="late", delay_ms=600000,
              count=1)
        fault(s, method="POST", path="/clone$", kind="late_hang", delay_ms=600000, count=1)
        closed(s, "PUT", cfg, data={"cores": "3"})
        timed_out(s, "POST", "/nodes/sv1/qemu/8000/clone", 0.5, data={"newid": "101"})
        assert late_pending(s) == 2
        assert s.data("GET", cfg)["cores"] == 2 and s.vm(101) is None
        t0 = time.monotonic()
        assert s.ctl("POST", "/late") == {"released": 2}
        wait_for(lambda: late_pending(s) == 0, deadline=15, what="the released calls served")
        assert time.monotonic() - t0 < 60
        assert s.data("GET", cfg)["cores"] == 3
        assert s.vm(101) is not None
        assert s.ctl("POST", "/late") == {"released": 0}


@case
def delayed_answers_released_go_now():
    """A `delay` serves the call at once and holds its answer back; POST
    /_sim/late sends the answers held back then at once, not when their
    delay runs out (a test that has seen what had to happen meanwhile)."""
    import threading
    with Sim(time_scale=0.01) as s:
        clone_100(s)
        cfg = "/nodes/sv1/qemu/100/config"
        fault(s, method="PUT", path="^/nodes/sv1/qemu/100/config$", kind="delay",
              delay_ms=600000, count=1)
        got = {}

        def put():
            got["r"] = s.api("PUT", cfg, data={"cores": "3"}, timeout=120)
        t = threading.Thread(target=put, daemon=True)
        t.start()
        # served at once: the change is there while its answer waits
        wait_for(lambda: s.data("GET", cfg)["cores"] == 3, deadline=15, what="the write served")
        assert t.is_alive() and "r" not in got
        t0 = time.monotonic()
        s.ctl("POST", "/late")
        t.join(30)
        assert not t.is_alive() and got["r"].status_code == 200, got
        assert time.monotonic() - t0 < 30
        # a delay that starts after the release is held back as usual
        fault(s, path="^/version$", kind="delay", delay_ms=400, count=1)
        t0 = time.monotonic()
        assert s.api("GET", "/version").status_code == 200
        assert time.monotonic() - t0 >= 0.4


@case
def late_digest_is_checked_when_served():
    """A late config write with a digest is checked against the config it
    finds when served: another write in between, it is refused."""
    with Sim(time_scale=0.01) as s:
        clone_100(s)
        cfg = "/nodes/sv1/qemu/100/config"
        digest = s.data("GET", cfg)["digest"]
        fault(s, method="PUT", path="/qemu/100/config$", kind="late", delay_ms=1000, count=1)
        closed(s, "PUT", cfg, data={"name": "late", "digest": digest})
        assert s.api("PUT", cfg, data={"cores": "4"}).status_code == 200
        wait_for(lambda: late_pending(s) == 0, deadline=15, what="the late call served")
        conf = s.data("GET", cfg)
        assert conf["cores"] == 4 and conf["name"] != "late", conf
        # the same digest, nothing in between: it applies
        digest = conf["digest"]
        fault(s, method="PUT", path="/qemu/100/config$", kind="late", delay_ms=100, count=1)
        closed(s, "PUT", cfg, data={"name": "late", "digest": digest})
        wait_for(lambda: s.data("GET", cfg)["name"] == "late", deadline=15,
                 what="the late config write")


@case
def late_calls_are_bounded():
    """At most 64 late calls wait; beyond, the rule acts as drop (served
    now, its answer lost). A reset drops those that wait, and so does a stop
    (pvesim exits at once and clean)."""
    with Sim(time_scale=0.01) as s:
        clone_100(s)
        cfg = "/nodes/sv1/qemu/100/config"
        fault(s, path="^/version$", kind="late", delay_ms=600000)
        for _ in range(64):
            closed(s, "GET", "/version")
        assert late_pending(s) == 64
        fault(s, method="PUT", path="/config$", kind="late", delay_ms=600000)
        closed(s, "PUT", cfg, data={"cores": "3"})
        assert s.data("GET", cfg)["cores"] == 3  # served at once
        assert late_pending(s) == 64
        s.ctl("POST", "/reset")
        assert late_pending(s) == 0
        fault(s, path="^/version$", kind="late")  # default delay_ms: 1000
        assert s.ctl("GET", "/faults")[0]["delay_ms"] == 1000
        fault(s, path="^/nodes$", kind="late", delay_ms=600000)
        for _ in range(3):
            closed(s, "GET", "/nodes")
        assert late_pending(s) == 3
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 10  # the waiting calls did not hold the stop


@case
def count_and_rate():
    with Sim(time_scale=0.01) as s:
        f = fault(s, path="^/version$", kind="error", message="flaky", count=2)
        assert f["count"] == 2 and f["hits"] == 0, f
        codes = [s.api("GET", "/version").status_code for _ in range(4)]
        assert codes == [500, 500, 200, 200], codes
        lst = s.ctl("GET", "/faults")
        assert lst[0]["hits"] == 2 and lst[0]["count"] == 0, lst
        s.ctl("DELETE", "/faults")
        fault(s, path="^/nodes$", kind="error", rate=0)
        assert all(s.api("GET", "/nodes").status_code == 200 for _ in range(10))
        fault(s, path="^/cluster/nextid$", kind="error", rate=1)
        assert all(s.api("GET", "/cluster/nextid").status_code == 500 for _ in range(10))
        lst = s.ctl("GET", "/faults")
        assert [f["hits"] for f in lst] == [0, 10], lst
        # rate 0.5 hits some and spares some (probability of failing this: 2 * 0.5^60)
        s.ctl("DELETE", "/faults")
        fault(s, path="^/version$", kind="error", rate=0.5)
        codes = {s.api("GET", "/version").status_code for _ in range(60)}
        assert codes == {200, 500}, codes


@case
def node_and_method_filters():
    with Sim(time_scale=0.01) as s:
        fault(s, node="sv2", kind="error", message="sv2 is sick")
        assert s.api("GET", "/nodes/sv1/qemu").status_code == 200
        expect(s.api("GET", "/nodes/sv2/qemu"), 500, "sv2 is sick")
        # the node's own listener too
        expect(s.api("GET", "/nodes/sv2/qemu", port=s.ports["sv2"]), 500, "sv2 is sick")
        s.ctl("DELETE", "/faults")
        fault(s, method="PUT", path=r"/config$", kind="error", message="read only")
        assert s.api("GET", "/nodes/sv1/qemu/8000/config").status_code == 200
        expect(s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"cores": "3"}), 500, "read only")
        upid = s.data("POST", "/nodes/sv1/qemu/8000/config", data={"cores": "3"})
        assert s.wait_task("sv1", upid)["exitstatus"] == "OK"


@case
def list_and_delete():
    with Sim(time_scale=0.01) as s:
        assert s.ctl("GET", "/faults") == []
        a = fault(s, path="^/version$", kind="error", status=502, message="a")
        b = fault(s, path="^/nodes$", kind="delay", delay_ms=10, method="GET", node="sv1")
        lst = s.ctl("GET", "/faults")
        assert [f["id"] for f in lst] == [a["id"], b["id"]], lst
        assert lst[0]["kind"] == "error" and lst[0]["status"] == 502 and lst[0]["message"] == "a"
        assert lst[0]["count"] == -1 and lst[0]["rate"] == 1
        assert lst[1]["method"] == "GET" and lst[1]["node"] == "sv1" and lst[1]["delay_ms"] == 10
        assert lst[1]["path"] == "^/nodes$"
        s.ctl("DELETE", "/faults/%d" % a["id"])
        assert [f["id"] for f in s.ctl("GET", "/faults")] == [b["id"]]
        assert s.api("GET", "/version").status_code == 200
        s.ctl("DELETE", "/faults")
        assert s.ctl("GET", "/faults") == []
        r = s.raw("DELETE", "/_sim/faults/x")
        assert r.status_code == 400 and r.json()["error"].startswith("fault id:"), r.text
        # rules are tried in the order they were added
        fault(s, path="^/version$", kind="error", message="first")
        fault(s, path="^/version$", kind="error", message="second")
        expect(s.api("GET", "/version"), 500, "first")


@case
def bad_specs():
    with Sim(time_scale=0.01) as s:
        bad_spec(s, {}, "kind")
        bad_spec(s, {"kind": "explode"}, "kind")
        bad_spec(s, {"kind": "error", "method": "PATCHES"}, "method")
        bad_spec(s, {"kind": "error", "method": "get"}, "method")
        bad_spec(s, {"kind": "error", "method": 1}, "method")
        bad_spec(s, {"kind": "error", "node": "x" * 100}, "node")
        bad_spec(s, {"kind": "error", "node": 7}, "node")
        bad_spec(s, {"kind": "error", "rate": 2}, "rate")
        bad_spec(s, {"kind": "error", "rate": "1"}, "rate")
        bad_spec(s, {"kind": "error", "count": -2}, "count")
        bad_spec(s, {"kind": "error", "count": 1.5}, "count")
        bad_spec(s, {"kind": "error", "path": "(unclosed"}, "path")
        bad_spec(s, {"kind": "error", "path": 42}, "path")
        bad_spec(s, {"kind": "error", "status": 99}, "status")
        bad_spec(s, {"kind": "error", "status": "500"}, "status")
        bad_spec(s, {"kind": "error", "message": 5}, "message")
        bad_spec(s, {"kind": "delay", "delay_ms": -1}, "delay_ms")
        bad_spec(s, {"kind": "task_error", "cleanup_fails": "yes"}, "cleanup_fails")
        bad_spec(s, {"kind": "error", "cleanup_fails": True}, "cleanup_fails")
        r = s.raw("POST", "/_sim/faults", data="not json")
        assert r.status_code == 400 and r.json()["error"].startswith("body must be a JSON object"), r.text
        assert s.ctl("GET", "/faults") == []
        assert s.api("GET", "/version").status_code == 200


@case
def running_tasks_answer_when_one_starts():
    """GET /_sim/tasks counts the tasks running now; with wait_ms it answers
    the moment one starts (a test aims a kill at it), or when the time is
    out; a bad wait_ms is refused naming it."""
    import threading
    with Sim(time_scale=0.05) as s:
        idle = s.running_tasks()
        assert idle["running"] == 0 and idle["types"] == [], idle
        t0 = time.monotonic()
        assert s.running_tasks(wait_ms=300)["running"] == 0
        assert time.monotonic() - t0 >= 0.29, "answered before its wait_ms with no task"
        got = {}

        def waiter():
            got["r"] = s.running_tasks(wait_ms=20000)
        w = threading.Thread(target=waiter)
        w.start()
        time.sleep(0.3)  # the waiter is waiting (it cannot answer before a task starts)
        assert "r" not in got, got
        started = time.monotonic()
        upid = s.data("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"})
        w.join(10)
        assert "r" in got, "no answer after the clone started"
        assert got["r"]["running"] >= 1 and "qmclone" in got["r"]["types"], got
        assert got["r"]["started"] == idle["started"] + 1, got
        assert time.monotonic() - started < 5, "answered late: %.1fs" % (time.monotonic() - started)
        assert s.wait_task("sv1", upid)["exitstatus"] == "OK"
        assert s.running_tasks()["running"] == 0
        for bad in ("wait_ms=-1", "wait_ms=60001", "wait_ms=abc", "x=1"):
            r = s.raw("GET", "/_sim/tasks?" + bad)
            assert r.status_code == 400 and r.json()["error"].startswith("wait_ms:"), (bad, r.text)


finish()
