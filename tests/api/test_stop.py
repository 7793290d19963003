"""SIGTERM while a job's step waits on a Proxmox call that does not answer.

A stop lets running steps reach their checkpoint, but a step in a call to
a node that hangs would hold the stop for the call's timeout (30 s here,
proxd's default) and its retries: a restart at the worst moment held for
minutes, or killed by the service manager. proxd exits 10 s after SIGTERM
whatever is still out (exit status 0, a warning saying so), giving up the
leases of the jobs it leaves, and the next start resumes them as after a
crash: the creation ends done with one VM. A second SIGTERM or SIGINT
(Ctrl-C twice) exits at once the same way. Giving the leases up is a write
that the store may not answer either (here another process holds SQLite's
write lock): proxd exits 5 s after starting it all the same.
"""
import signal
import sqlite3
import time

from lib.cases import case, finish
from lib.db import query
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

sim = Sim()
px = Proxd(sim, proxd_extra="placement = ordered\n", proxmox_extra="timeout = 30\n")
ADMIN = px.token("ops", "admin")
px.start()

RESIZE = r"/qemu/\d+/resize$"


def resize_hits():
    return sum(f.get("hits", 0) for f in sim.ctl("GET", "/faults") if f.get("path") == RESIZE)


@case
def a_stop_does_not_wait_out_a_call_that_hangs():
    # the creation's resize is answered only after two minutes
    sim.add_faults([{"kind": "delay", "method": "PUT", "path": RESIZE, "delay_ms": 120000,
                     "count": 1}])
    r = px.call("POST", "/v1/vms", ADMIN, {"os": "ubuntu", "name": "stopme", "cores": 1,
                                           "memory_mb": 512, "disk_gb": 40})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    wait_for(lambda: resize_hits() >= 1, deadline=60, interval=0.05, what="the resize sent")
    t0 = time.monotonic()
    px.proc.terminate()
    # the grace is 10 s; the call alone would hold the stop 30 s
    rc = px.proc.wait(20)
    took = time.monotonic() - t0
    assert rc == 0, (rc, px.tail())
    assert px.logs_contain("still stopping after 10 s"), px.tail()
    state, lease = query(px.db, "SELECT state, lease_until FROM jobs WHERE id = '%s'" % job)[0]
    assert state == "running", state
    assert lease <= time.time() * 1000, "the lease was not given up: %s" % lease
    sim.clear_faults()
    px.start()
    j = px.wait_job(job, ADMIN, deadline=90)
    assert j["state"] == "done", j
    made = [v for v in sim.state()["vms"] if not v["conf"].get("template")]
    assert [v["vmid"] for v in made] == [j["vmid"]], [v["vmid"] for v in made]
    assert ",size=40G" in made[0]["conf"]["scsi0"], made[0]["conf"]
    print("[ figures ] stopped %.1f s after SIGTERM with a step in a hung call" % took)


def stopping_with_a_hung_resize(name):
    """A creation whose resize pvesim holds two minutes, sent; then SIGTERM,
    taken (this run's log says the stop began: two signals pending at once
    would be one). Its job."""
    sim.add_faults([{"kind": "delay", "method": "PUT", "path": RESIZE, "delay_ms": 120000,
                     "count": 1}])
    hits = resize_hits()
    r = px.call("POST", "/v1/vms", ADMIN, {"os": "ubuntu", "name": name, "cores": 1,
                                           "memory_mb": 512, "disk_gb": 40})
    assert r.status_code == 202, r.text
    wait_for(lambda: resize_hits() > hits, deadline=60, interval=0.05, what="the resize sent")
    px.proc.terminate()
    wait_for(lambda: "stopping: no new jobs" in px.log_text(), deadline=10, interval=0.02,
             what="the stop begun")
    return r.json()["job"]


@case
def a_second_signal_exits_at_once():
    job = stopping_with_a_hung_resize("again")
    t0 = time.monotonic()
    px.proc.send_signal(signal.SIGINT)
    rc = px.proc.wait(5)
    took = time.monotonic() - t0
    assert rc == 0, (rc, px.tail())
    assert px.logs_contain("second signal while stopping"), px.tail()
    sim.clear_faults()
    px.start()
    j = px.wait_job(job, ADMIN, deadline=90)
    assert j["state"] == "done", j
    print("[ figures ] exited %.2f s after the second signal" % took)


@case
def a_store_that_does_not_answer_does_not_hold_the_exit():
    job = stopping_with_a_hung_resize("nostore")
    lock = sqlite3.connect(px.db, timeout=10, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # every other writer now waits, up to its busy timeout
        t0 = time.monotonic()
        px.proc.send_signal(signal.SIGINT)
        # without the bound: 8 tries of SQLite's 5 s busy timeout, over 40 s
        rc = px.proc.wait(20)
        took = time.monotonic() - t0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    log = px.log_text()  # this run's
    assert rc == 0, (rc, px.tail())
    assert "second signal while stopping" in log, px.tail()
    assert "the store did not take the leases back in 5 s" in log, px.tail()
    assert 4.5 <= took < 10, took
    state, lease = query(px.db, "SELECT state, lease_until FROM jobs WHERE id = '%s'" % job)[0]
    assert state == "running", state
    assert lease > time.time() * 1000, "the lease was given up after all: %s" % lease
    sim.clear_faults()
    px.start()  # on this host: takes the leases of the gone process over at once
    j = px.wait_job(job, ADMIN, deadline=90)
    assert j["state"] == "done", j
    made = [v for v in sim.state()["vms"] if v["conf"].get("name") == "nostore"]
    assert [v["vmid"] for v in made] == [j["vmid"]], [v["vmid"] for v in made]
    print("[ figures ] exited %.1f s after the second signal, the store not answering" % took)


shutdown(px, sim)
finish()
