"""A hung cluster node that nobody calls (issue 10, item 10's last piece).

pvesim's blackhole: sv1's listener takes connections and answers nothing,
the cluster's proxy to it times out, and /cluster/resources still reports it
online. No job touches it, so only proxd's active probe (a status read of
each up node every probe_interval, with a short timeout, on threads of its
own) can find it: /v1/nodes must show it down within the interval plus the
probe's timeout, placement must avoid it, and it must come back.
"""
import time

from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

sim = Sim()
px = Proxd(sim, proxd_extra="placement = ordered\n",
           proxmox_extra="connect_timeout = 1\ntimeout = 3\nprobe_interval = 1\n")
ADMIN = px.token("ops", "admin")
px.start()


def call(method, path, body=None):
    return px.call(method, path, ADMIN, body)


def nodes():
    return {n["name"]: n for n in call("GET", "/v1/nodes").json()["nodes"]}


def wait_job(job):
    return px.wait_job(job, ADMIN)


@case
def a_hung_node_nobody_calls_shows_down_and_is_avoided():
    wait_for(lambda: nodes()["sv1"]["health"] == "up", deadline=30, interval=0.1,
             what="sv1 up at first")
    sim.ctl("POST", "/nodes/sv1", {"state": "blackhole"})
    t0 = time.monotonic()
    # interval 1 s + probe timeout 2 s (twice connect_timeout), with room
    wait_for(lambda: nodes()["sv1"]["health"] == "down", deadline=8, interval=0.05,
             what="sv1 down")
    took = time.monotonic() - t0
    n = nodes()["sv1"]
    assert "status probe" in (n.get("last_error") or ""), n
    # placement is ordered (sv1 first): the creation goes elsewhere with no
    # call on sv1 (it appears only as skipped, "down: ...")
    r = call("POST", "/v1/vms", {"os": "ubuntu", "name": "avoid", "cores": 1,
                                 "memory_mb": 512, "disk_gb": 10})
    assert r.status_code == 202, r.text
    j = wait_job(r.json()["job"])
    assert j["state"] == "done" and j["node"] != "sv1", j
    for a in j.get("attempts") or []:
        assert a["node"] != "sv1" or a["error"].startswith("down: "), j
    sim.ctl("POST", "/nodes/sv1", {"state": "online"})
    wait_for(lambda: nodes()["sv1"]["health"] == "up", deadline=90, interval=0.2,
             what="sv1 up again")
    print("[ figures ] hung sv1 shown down after %.2f s" % took)


shutdown(px, sim)
finish()
