"""pvesim's /_sim/state and /cluster/resources at fleet scale (issue 16),
with 20,000 VMs on 5 nodes (simfleet.py).

- /_sim/state is written aside record by record and sent with its length:
  the answer parses, holds every VM once, and serving it raises pvesim's
  peak memory by far less than its size (the old code built it whole in
  memory: +9 MB for a 5 MB state).
- /cluster/resources is kept whole and sent again while nothing in it can
  differ: two answers in a row are the same bytes, a change through the API
  shows in the next one, and uptimes are as of pvestatd's last report (they
  move in steps of 10 s of PVE time, never ahead of the VM's own status).

Environment: SCALE_VMS (20000)."""
import http.client
import json
import os
import ssl
import tempfile
import time

from lib import fleet as simfleet
from lib.cases import case, finish
from lib.env import TOKEN_ID, TOKEN_SECRET
from lib.sim import Sim
from lib.wait import wait_for

N = int(os.environ.get("SCALE_VMS", "20000"))
NODES = 5
FIRST = 10000
RRD_STEP = 10  # PVE seconds between two pvestatd reports
TIME_SCALE = 0.05  # 10 PVE s = 0.5 s
# under ASan, freed memory waits in a quarantine before reuse: every
# short-lived allocation would count in the peak measured below
os.environ["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + \
    ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
TMP = tempfile.TemporaryDirectory()
FLEET, STATE_DIR, NODE_NAMES = simfleet.write(TMP.name, N, NODES, first_vmid=FIRST)
SIM = Sim(nodes=",".join(NODE_NAMES), state_dir=STATE_DIR, extra=["--fleet", FLEET],
          time_scale=TIME_SCALE)


def conn():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection("127.0.0.1", SIM.entry, context=ctx, timeout=120)


def get(c, path):
    c.request("GET", path, headers={"Authorization": "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)})
    r = c.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


def proc_status(field):
    with open("/proc/%d/status" % SIM.proc.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no " + field)


@case
def state_is_sent_with_its_length_and_parses():
    c = conn()
    get(c, "/api2/json/version")  # the connection's own buffers exist before the peak is reset
    with open("/proc/%d/clear_refs" % SIM.proc.pid, "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = proc_status("VmHWM")
    status, hdr, body = get(c, "/_sim/state")
    peak = proc_status("VmHWM") - before
    c.close()
    assert status == 200, (status, body[:300])
    assert "transfer-encoding" not in hdr and int(hdr["content-length"]) == len(body), hdr
    st = json.loads(body)
    ids = [v["vmid"] for v in st["vms"]]
    assert len(ids) == N and set(ids) == set(range(FIRST, FIRST + N)), (len(ids), len(set(ids)))
    assert [n["name"] for n in st["nodes"]] == NODE_NAMES
    v = next(v for v in st["vms"] if v["vmid"] == FIRST + 3)
    assert v["node"] == "sv4" and v["power"] == "running" and v["conf"]["name"] == "vm-%d" % (FIRST + 3), v
    print("     /_sim/state %d bytes, peak memory +%.1f MiB" % (len(body), peak / 2 ** 20))
    assert peak < len(body) / 2, (peak, len(body))


@case
def resources_are_kept_until_something_changes():
    c = conn()
    path = "/api2/json/cluster/resources?type=vm"

    def entry(body, vmid):
        return next(e for e in json.loads(body)["data"] if e["vmid"] == vmid)
    # two answers within one RRD step are the same bytes
    a = b = None
    for _ in range(20):
        a, b = get(c, path)[2], get(c, path)[2]
        if a == b:
            break
    assert a == b, "two answers in a row always differed"
    # a change shows in the very next answer
    r = SIM.api("PUT", "/nodes/sv2/qemu/%d/config" % (FIRST + 1), data={"name": "renamed"})
    assert r.status_code == 200, r.text
    assert entry(get(c, path)[2], FIRST + 1)["name"] == "renamed"
    # uptimes are as of pvestatd's last report: steps of RRD_STEP, never
    # ahead of the VM's live status, at most one step behind it
    vmid = FIRST + 3  # running on sv4
    t0 = time.monotonic()
    first = entry(get(c, path)[2], vmid)["uptime"]
    live = SIM.data("GET", "/nodes/sv4/qemu/%d/status/current" % vmid)["uptime"]
    between = (time.monotonic() - t0) / TIME_SCALE  # PVE seconds the two calls took
    assert first <= live <= first + RRD_STEP + between + 1, (first, live, between)

    def next_report():
        u = entry(get(c, path)[2], vmid)["uptime"]
        return u if u != first else None
    later = wait_for(next_report, deadline=30, what="the next report")
    assert later > first and (later - first) % RRD_STEP == 0, (first, later)
    c.close()


@case
def results_match_the_schema():
    assert SIM.ctl("GET", "/violations") == []


@case
def a_state_file_that_misleads_the_parallel_parse_loads_whole():
    # start-up parses the "vms" array on two threads, the second from a
    # '{"vmid":' after a ',' near the middle; here every VM ends with such a
    # text inside it: the second thread's work must be thrown away, and
    # every VM still load once with its own fields
    n = 5000  # > 2 MiB of text: the parse is split
    with tempfile.TemporaryDirectory() as tmp:
        fleet, state_dir, nodes = simfleet.write(tmp, n, 2, first_vmid=FIRST)
        entries = list(simfleet.vm_entries(n, nodes, FIRST))
        with open(os.path.join(state_dir, "state.json"), "w") as f:
            f.write('{"nodes":%s,"vms":[' % json.dumps([{"name": x, "state": "online"} for x in nodes]))
            f.write(",".join(json.dumps(e, separators=(",", ":"))[:-1] + ',"x":[1,{"vmid":1}]}'
                             for e in entries))
            f.write('],"tasks":[]}')
        assert os.path.getsize(os.path.join(state_dir, "state.json")) > 2 << 20
        with Sim(nodes=",".join(nodes), state_dir=state_dir, extra=["--fleet", fleet]) as sim:
            vms = sim.state()["vms"]
            assert sorted(v["vmid"] for v in vms) == list(range(FIRST, FIRST + n)), len(vms)
            want = {e["vmid"]: e for e in entries}
            for v in vms[::97]:
                w = want[v["vmid"]]
                assert (v["node"], v["power"], v["conf"]) == (w["node"], w["power"], w["conf"]), (v, w)


SIM.stop()
TMP.cleanup()
finish()
