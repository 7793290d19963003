"""`make demo` (scripts/demo.sh) run as a newcomer runs it, on the binaries
under test (DEMO_BIN) and ports of its own: it creates three VMs past the
offline sv1, walks web-1 through its lifecycle and ends 0, leaving no
process listening and no temporary directory behind. With pvesim's or
proxd's port taken it stops at once with a message naming the port and the
variable to set, never sending anything to whatever holds the port, and
leaves nothing running."""
import glob
import os
import re
import socket
import subprocess

from lib.cases import case, finish
from lib.env import BIN_DIR, ROOT
from lib.ports import free_port, free_port_block
from lib.wait import wait_for

SCRIPT = os.path.join(ROOT, "scripts", "demo.sh")
SIM_PORTS = 6  # the cluster's entry, then one a node (sv1..sv5)


def demo(sim_port, api_port, timeout=240):
    env = dict(os.environ, DEMO_BIN=BIN_DIR, DEMO_SIM_PORT=str(sim_port),
               DEMO_API_PORT=str(api_port))
    env.pop("DEMO_DATABASE", None)
    return subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=timeout)


def raced(r, which):
    """Another test took one of the free ports this test picked before the
    demo bound it (lib/ports.py: whoever binds must be ready to try again)."""
    return r.returncode != 0 and "%s did not start" % which in r.stderr and \
        "Address already in use" in r.stderr


def listening(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def nothing_left(sim_port, api_port):
    ports = list(range(sim_port, sim_port + SIM_PORTS)) + [api_port]
    wait_for(lambda: not any(listening(p) for p in ports), deadline=5,
             what="the demo's ports to be closed")


def work_dirs():
    return set(glob.glob("/tmp/proxd-demo.*"))


def holder(port):
    """A listening socket on port that accepts nothing by itself."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(16)
    s.setblocking(False)
    return s


def table(out, header):
    """The rows of the table whose header line starts with `header`, after
    each such header (a list of row lists, one per table)."""
    tables, cur = [], None
    for line in out.splitlines():
        if line.startswith(header):
            cur = []
            tables.append(cur)
        elif cur is not None and re.match(r"^\d+\s", line):
            cur.append(line.split())
        elif cur is not None and cur and not line.startswith(" "):
            cur = None
    return tables


@case
def demo_runs_the_whole_walkthrough():
    before = work_dirs()
    for _ in range(3):
        sim, api = free_port_block(SIM_PORTS), free_port()
        r = demo(sim, api)
        if not (raced(r, "pvesim") or raced(r, "proxd")):
            break
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert "== everything stopped" in r.stdout
    lists = table(r.stdout, "VMID ")
    assert len(lists) == 2, lists
    made = {row[1]: row[4] for row in lists[0]}  # name -> node
    assert set(made) == {"web-1", "db-1", "app-1"}, made
    assert "sv1" not in made.values(), made  # sv1 is offline: passed over
    assert {row[1] for row in lists[1]} == {"db-1", "app-1"}, lists[1]
    for line in ("100% done: VM 1000 is stopped", "100% done: VM 1000 deleted",
                 "  - node sv1 is down: "):
        assert line in r.stdout, line
    nothing_left(sim, api)
    assert work_dirs() - before == set(), work_dirs() - before


@case
def a_taken_simulator_port_stops_the_demo_at_once():
    sim, api = free_port_block(SIM_PORTS), free_port()
    h = holder(sim)
    try:
        r = demo(sim, api, timeout=60)
        assert r.returncode != 0, r.stdout
        assert "pvesim did not start on 127.0.0.1:%d" % sim in r.stderr, r.stderr
        assert "Address already in use" in r.stderr, r.stderr  # pvesim's own words
        assert "DEMO_SIM_PORT" in r.stderr, r.stderr
        assert "proxd:" not in r.stdout, r.stdout  # it went no further
        try:  # nothing was sent to whoever holds the port
            h.accept()[0].close()
            raise AssertionError("the demo connected to the port's holder")
        except BlockingIOError:
            pass
    finally:
        h.close()
    nothing_left(sim, api)


@case
def a_taken_api_port_stops_the_demo_with_proxds_words():
    for _ in range(3):
        sim, api = free_port_block(SIM_PORTS), free_port()
        h = holder(api)
        r = demo(sim, api, timeout=90)
        if not raced(r, "pvesim"):
            break
        h.close()
    try:
        assert r.returncode != 0, r.stdout
        assert "proxd did not start on 127.0.0.1:%d" % api in r.stderr, r.stderr
        assert "Address already in use" in r.stderr, r.stderr
        assert "DEMO_API_PORT" in r.stderr, r.stderr
        assert "create three VMs" not in r.stdout, r.stdout
    finally:
        h.close()
    nothing_left(sim, api)


finish()
