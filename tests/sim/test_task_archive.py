"""pvesim's task archive and its UPID index (issue 16).

A node's finished tasks live in its archive as PVE's do: "UPID ENDTIME
STATUS" lines in /var/log/pve/tasks/index, renamed index.1 once past 50,000
bytes; the list reads both files. Older tasks drop out, and their logs go
too (pveupdate's daily cleanup_tasks removes the logs of tasks older than
index.1's first one): GET .../status then answers 400 with errors.upid =
"no such task", and GET .../log 200 with "unable to open file - No such file
or directory" (pve-api.md, section 7).

Here one node (sv2) runs enough tasks to rotate its archive at least twice (more
than 1,024 tasks, so the UPID index grows past its first size too), then:
the list holds only the newest tasks and at most two files' worth; every
task it lists, and only those, is found by UPID with the list's status; the
dropped ones answer as above; a UPID asked of another node is not found."""
import tempfile

import requests
from lib import fleet as simfleet
from lib.cases import case, finish
from lib.env import TOKEN_ID, TOKEN_SECRET
from lib.sim import Sim
from lib.wait import wait_for

INDEX_MAX = 50000  # bytes per archive file (SIM_TASK_INDEX_MAX, PVE's)
TMP = tempfile.TemporaryDirectory()
# 10003 runs on sv2, is not HA managed and has no lock: starting it again is
# one task that fails at once ("already running")
FLEET, STATE_DIR, NODES = simfleet.write(TMP.name, 6, 2)
SIM = Sim(nodes=",".join(NODES), state_dir=STATE_DIR, extra=["--fleet", FLEET], time_scale=0.001)
CREATED = []  # UPIDs in creation order
NODE, VMID = "sv2", 10003


def line_bytes(upid, status):
    return len(upid) + 10 + len(status) + 1  # "UPID ENDTIME STATUS\n"


# calls go over keep-alive connections: a new TLS connection per request
# would make this test take minutes
SES = requests.Session()
SES.headers["Authorization"] = "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)


def call(method, path, **kw):
    return SES.request(method, SIM.url("/api2/json" + path), timeout=30, verify=False, **kw)


def start_tasks(n):
    """n start tasks: their UPIDs."""
    out = []
    for _ in range(n):
        r = call("POST", "/nodes/%s/qemu/%d/status/start" % (NODE, VMID))
        assert r.status_code == 200, r.text
        out.append(r.json()["data"])
    return out


def status_of(upid, node=NODE):
    return call("GET", "/nodes/%s/tasks/%s/status" % (node, upid))


def listed():
    r = call("GET", "/nodes/%s/tasks" % NODE, params={"limit": 100000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["data"]), (body["total"], len(body["data"]))
    return body["data"]


@case
def many_tasks_rotate_the_archive():
    # start the running VM again and again: each is a qmstart task that
    # ends at once; enough of them for three files' worth of lines
    probe = start_tasks(1)[0]
    status = SIM.wait_task(NODE, probe)["exitstatus"]
    assert status != "OK", status  # it failed: the VM runs
    CREATED.append(probe)
    n = max(1100, (3 * INDEX_MAX + 5000) // line_bytes(probe, status) + 1)
    CREATED.extend(start_tasks(n))
    wait_for(lambda: call("GET", "/nodes/%s/tasks" % NODE, params={"source": "active"}).json()["total"] == 0,
             deadline=60, what="every task to end")
    tasks = listed()
    upids = [t["upid"] for t in tasks]
    assert len(set(upids)) == len(upids), "a task listed twice"
    assert set(upids) <= set(CREATED), "a listed task nobody started"
    sizes = [line_bytes(t["upid"], t["status"]) for t in tasks]
    # two files of at most INDEX_MAX bytes plus the line that passed the mark
    assert sum(sizes) <= 2 * (INDEX_MAX + max(sizes)), (len(tasks), sum(sizes))
    assert sum(sizes) >= INDEX_MAX, (len(tasks), sum(sizes))  # index.1 at least is full
    assert len(tasks) < len(CREATED) / 2, (len(tasks), len(CREATED))
    # the newest are kept: what is listed is the tail of what was started
    keep = set(upids)
    first_kept = min(CREATED.index(u) for u in upids)
    assert all(u in keep for u in CREATED[first_kept + 50:]), "a newer task dropped before an older one"
    assert CREATED[-1] in keep and CREATED[0] not in keep


@case
def dropped_tasks_are_gone_kept_ones_are_found():
    tasks = {t["upid"]: t for t in listed()}
    dropped = [u for u in CREATED if u not in tasks]
    newest_dropped = dropped[-1]
    # dropped tasks are forgotten on the engine's next pass over the archive
    wait_for(lambda: status_of(newest_dropped).status_code == 400, deadline=30,
             what="the dropped tasks to be forgotten")
    for upid in dropped[::25] + [dropped[0], newest_dropped]:
        r = status_of(upid)
        assert r.status_code == 400, (upid, r.status_code, r.text)
        assert r.json()["errors"] == {"upid": "no such task"}, r.text
        r = call("GET", "/nodes/%s/tasks/%s/log" % (NODE, upid))
        assert r.status_code == 200, r.text
        assert r.json()["data"] == [{"n": 1, "t": "unable to open file - No such file or directory"}], r.text
    # every kept task is found by its UPID (the index has grown past its
    # first 1,024 buckets), with what the list says
    sample = list(tasks)[::20] + [next(iter(tasks)), list(tasks)[-1]]
    for upid in sample:
        st = status_of(upid).json()["data"]
        assert st["upid"] == upid and st["status"] == "stopped", st
        assert st["exitstatus"] == tasks[upid]["status"], (st, tasks[upid])
        log = call("GET", "/nodes/%s/tasks/%s/log" % (NODE, upid)).json()["data"]
        assert log[-1]["t"].startswith("TASK "), log
    # a task is found on its own node only
    r = status_of(sample[0], node="sv1")
    assert r.status_code == 400 and r.json()["errors"] == {"upid": "no such task"}, r.text


@case
def later_tasks_are_found_after_the_drops():
    # the index keeps working after entries left it: new tasks are found
    new = start_tasks(5)
    for upid in new:
        st = SIM.wait_task(NODE, upid)
        assert st["upid"] == upid, st
    assert [t["upid"] for t in listed()][:5] == new[::-1]


SES.close()
SIM.stop()
TMP.cleanup()
finish()
