"""Smoke test: pvesim starts, authenticates, serves the basic endpoints and stops cleanly
(also when stopped as soon as it has printed its ports); the test library starts it again on
new ports when its ports were taken, and raises any other failure to start at once."""
import os
import socket
import subprocess
import tempfile

from lib import sim as simlib
from lib.cases import case, finish
from lib.env import PVESIM
from lib.sim import Sim


@case
def version_needs_credentials():
    with Sim() as s:
        r = s.api("GET", "/version", auth=None)
        assert r.status_code == 401 and r.reason == "No ticket", (r.status_code, r.reason)
        assert r.text == "" and "Content-Type" not in r.headers
        v = s.data("GET", "/version")
        assert v["version"] == "9.1.3" and v["release"] == "9.1"


@case
def nodes_and_templates():
    with Sim(nodes="a1,a2") as s:
        nodes = s.data("GET", "/nodes")
        assert sorted(n["node"] for n in nodes) == ["a1", "a2"]
        vms = s.data("GET", "/nodes/a2/qemu")
        assert sorted(v["vmid"] for v in vms) == [8010, 8011, 8012, 8013]
        assert all(v.get("template") == 1 for v in vms)


@case
def a_taken_port_block_is_replaced():
    """Another program takes a port of the block between the check and the
    bind: the Sim starts on a new block, with a state directory too."""
    real, held = simlib.free_port_block, []

    def first_taken(n):
        b = real(n)
        if not held:
            sk = socket.socket()
            sk.bind(("127.0.0.1", b))
            sk.listen(1)
            held.append(sk)
        return b
    simlib.free_port_block = first_taken
    try:
        with tempfile.TemporaryDirectory() as d:
            with Sim(nodes="a1,a2", state_dir=d) as s:
                assert held and s.base != held[0].getsockname()[1], (s.base, held)
                assert sorted(n["node"] for n in s.data("GET", "/nodes")) == ["a1", "a2"]
    finally:
        simlib.free_port_block = real
        for sk in held:
            sk.close()


@case
def another_failure_to_start_is_raised_at_once():
    tries = []
    real = simlib.free_port_block
    simlib.free_port_block = lambda n: tries.append(n) or real(n)
    try:
        try:
            Sim(nodes="a1", time_scale="nonsense")
        except RuntimeError as e:
            assert "--time-scale" in str(e), str(e)
        else:
            raise AssertionError("pvesim started with --time-scale nonsense")
        assert len(tries) == 1, tries  # the first block only: no retry
    finally:
        simlib.free_port_block = real


@case
def bad_option_values_are_refused():
    """Numbers are read whole and finite: strtod's "nan" passed every range
    check, atoi took "8.4" for 8 and "10x" for 10. pvesim does not start,
    and the error names the option."""
    for opt, val in (("--time-scale", "nan"), ("--time-scale", "inf"), ("--time-scale", "0"),
                     ("--auth-delay", "nan"), ("--auth-delay", "-nan"), ("--auth-delay", ""),
                     ("--auth-delay", "61"), ("--pve-version", "8.4"), ("--pve-version", "9x"),
                     ("--pve-version", ""), ("--ticket-lifetime", "10x"),
                     ("--ticket-lifetime", "7.5"), ("--ticket-lifetime", "0"),
                     ("--ticket-lifetime", "4294967297")):
        r = subprocess.run([PVESIM, "--listen", "127.0.0.1:0", opt, val],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and r.stderr.startswith("pvesim: %s must be" % opt), \
            (opt, val, r.returncode, r.stderr)
        assert r.stdout == "", (opt, val, r.stdout)  # no port map: it never listened


@case
def a_stop_right_after_the_port_map_is_clean():
    """SIGTERM as soon as the port map is read (a script that only wanted
    the ports, a test that failed at once): pvesim stops cleanly and keeps
    its state, it does not die of the signal."""
    for i in range(10):  # the old pvesim died of it in about half
        with tempfile.TemporaryDirectory() as d:
            s = Sim(nodes="a1", state_dir=d)
            s.stop()  # raises on a non-zero exit (it was -15)
            assert os.path.exists(os.path.join(d, "state.json")), i


finish()
