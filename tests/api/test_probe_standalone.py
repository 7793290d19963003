"""The active probe keeps standalone hosts' connections open (issue 17: CPU
at real speed; a new connection is a TLS handshake, some fifteen calls'
worth of CPU on each side).

Five standalone hosts, each its own PVE on its own port, so each its own
connection, probed every 6 s: pvesim (as pveproxy) closes a connection
idle for 5 s, so a probe every interval opened a new connection each time
(the old prober: 10 in 14 s). Now a host whose connection has been idle
3 s is probed then, early: no new connection while idle, each host still
probed at least once an interval and at most three times.
"""
import time

from lib.cases import case, finish
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

EVERY = 6
WINDOW = 14
NODES = ["sv%d" % (i + 1) for i in range(5)]
sim = Sim(standalone=True)
px = Proxd(sim, proxmox_extra="probe_interval = %d\n" % EVERY)
ADMIN = px.token("ops", "admin")
own = [0]  # each of this test's /_sim calls is a TLS connection of its own


def ctl(method, path, body=None):
    own[0] += 1
    return sim.ctl(method, path, body)


def counters():
    """a fault rule that does nothing (a delay of 0) per host's version
    read: pvesim counts its hits"""
    ids = {}
    for n in NODES:
        r = ctl("POST", "/faults", {"method": "GET", "path": "^/nodes/%s/version$" % n,
                                    "kind": "delay", "delay_ms": 0})
        ids[n] = (r.get("data") or r)["id"]
    return ids


def hits(ids):
    rules = ctl("GET", "/faults")
    rules = rules.get("data", rules) if isinstance(rules, dict) else rules
    by_id = {r["id"]: r["hits"] for r in rules}
    return {n: by_id[i] for n, i in ids.items()}


px.start()


@case
def idle_hosts_keep_their_connections():
    wait_for(lambda: px.call("GET", "/readyz", ADMIN).status_code == 200, deadline=30,
             interval=0.05, what="ready")
    ids = counters()
    time.sleep(EVERY)  # the first probes (and the inventory's reads) settle
    h0 = hits(ids)
    shakes0 = ctl("GET", "/calls")["tls_handshakes"]
    own0 = own[0]
    time.sleep(WINDOW)
    c = ctl("GET", "/calls")  # its own connection is counted in
    made = c["tls_handshakes"] - shakes0 - (own[0] - own0)
    h1 = hits(ids)
    probes = {n: h1[n] - h0[n] for n in NODES}
    print("[ figures ] %d s idle at a %d s interval, five standalone hosts: %d new "
          "connections by proxd; probes per host %s" % (WINDOW, EVERY, made, probes))
    # one each per interval before (10 here); a stall of the prober past 2 s
    # may cost one
    assert 0 <= made <= 1, "%d new connections in %d idle s" % (made, WINDOW)
    for n in NODES:
        assert WINDOW // EVERY <= probes[n] <= 3 * (WINDOW // EVERY + 1), (n, probes)


shutdown(px, sim)
finish()
