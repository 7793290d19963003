"""pvesim at fleet scale (issue 16), at a size that fits CI: 20,000 VMs on 5
nodes, seeded from a state file (lib/fleet.py). The big answers must hold
every VM exactly once with the right fields, follow changes made through the
API and the control API (the per-VM values are cached per world
generation), pass --check-returns (checked by Sim on exit), and serving
them many times must not grow pvesim's memory.

Environment: SCALE_VMS (20000)."""
import http.client
import os
import ssl
import tempfile

from lib import fleet as simfleet
from lib.cases import case, finish
from lib.env import TOKEN_ID, TOKEN_SECRET
from lib.sim import Sim

N = int(os.environ.get("SCALE_VMS", "20000"))
NODES = 5
FIRST = 10000
MiB = 1024 * 1024


def start(tmp):
    fleet, state_dir, nodes = simfleet.write(tmp, N, NODES, first_vmid=FIRST)
    return Sim(nodes=",".join(nodes), state_dir=state_dir, extra=["--fleet", fleet])


# one simulator for every case (starting 20,000 VMs under ASan takes a
# while): the read-only cases first, the one that changes VMs last
TMP = tempfile.TemporaryDirectory()
SIM = start(TMP.name)


def expected(i):
    """What /cluster/resources says about the i-th generated VM."""
    vmid = FIRST + i
    running = i % 3 == 0
    mem = 1024 * (1 + i % 8) * MiB
    e = {"id": "qemu/%d" % vmid, "type": "qemu", "vmid": vmid, "node": "sv%d" % (i % NODES + 1),
         "name": "vm-%d" % vmid, "status": "running" if running else "stopped",
         "maxcpu": 1 + i % 4, "maxmem": mem, "maxdisk": 10 * (1 + i % 4) * 1024 ** 3,
         "mem": mem // 3 if running else 0, "cpu": 0.02 if running else 0, "disk": 0,
         "netin": 123456 if running else 0, "netout": 65432 if running else 0,
         "diskread": 0, "diskwrite": 0, "template": 0, "tags": "proxd",
         "memhost": mem // 3 if running else 0}  # PVE 9 (pvesim's default)
    if i % 97 == 0:
        e["lock"] = "backup"
    if i % 50 == 0:
        e["hastate"] = "started"
    return e


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@case
def resources_hold_every_vm_once_with_its_fields():
    s = SIM
    res = s.data("GET", "/cluster/resources")
    vms = [e for e in res if e["type"] == "qemu"]
    ids = [e["vmid"] for e in vms]
    assert len(ids) == N and len(set(ids)) == N, (len(ids), len(set(ids)))
    assert set(ids) == set(range(FIRST, FIRST + N))
    by = {e["vmid"]: e for e in vms}
    for i in range(N):
        got, want = by[FIRST + i], expected(i)
        uptime = got.pop("uptime")
        assert got == want, (got, want)
        assert (uptime >= 0) if want["status"] == "running" else uptime == 0
    nodes = sorted(e["node"] for e in res if e["type"] == "node")
    assert nodes == ["sv%d" % (k + 1) for k in range(NODES)], nodes
    assert len([e for e in res if e["type"] == "storage"]) == 2 * NODES
    # a node's memory in use: its running VMs' maxmem plus the host's own
    for e in res:
        if e["type"] == "node":
            run = sum(expected(i)["maxmem"] for i in range(N)
                      if i % 3 == 0 and expected(i)["node"] == e["node"])
            assert e["mem"] == run + 2 * 1024 ** 3, (e["node"], e["mem"], run)
    only = s.data("GET", "/cluster/resources", params={"type": "vm"})
    assert sorted(e["vmid"] for e in only) == sorted(ids) and all(e["type"] == "qemu" for e in only)
    sv1 = s.data("GET", "/nodes/sv1/qemu")
    assert sorted(v["vmid"] for v in sv1) == [FIRST + i for i in range(N) if i % NODES == 0]
    for v in sv1:
        i = v["vmid"] - FIRST
        assert v["cpus"] == 1 + i % 4 and v["maxmem"] == expected(i)["maxmem"]
        assert ("pid" in v) == (i % 3 == 0) and v.get("lock") == expected(i).get("lock")


@case
def memory_does_not_grow_with_answers():
    s = SIM
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    auth = {"Authorization": "PVEAPIToken=%s=%s" % (TOKEN_ID, TOKEN_SECRET)}

    def serve(n):
        c = http.client.HTTPSConnection("127.0.0.1", s.entry, context=ctx, timeout=120)
        for k in range(n):
            c.request("GET", "/api2/json/cluster/resources" + ("?type=vm" if k % 2 else ""),
                      headers=auth)
            r = c.getresponse()
            body = r.read()
            assert r.status == 200 and len(body) > 100 * N, (r.status, len(body))
        c.close()
    serve(10)
    after_n = rss(s.proc.pid)
    serve(100)
    after_10n = rss(s.proc.pid)
    # generous: the same memory give or take allocator noise, never a
    # copy of the answer (about 330 bytes a VM) kept per request
    bound = after_n * 1.25 + 64 * MiB
    print("     VmRSS after 10 answers %.0f MiB, after 100 more %.0f MiB"
          % (after_n / MiB, after_10n / MiB))
    assert after_10n <= bound, (after_n, after_10n)


@case
def changes_show_in_the_next_answer():
    s = SIM
    def entry(vmid):
        return next(e for e in s.data("GET", "/cluster/resources", params={"type": "vm"})
                    if e["vmid"] == vmid)
    assert entry(FIRST + 1)["name"] == "vm-%d" % (FIRST + 1)  # caches are warm now
    # through the API: a synchronous config change
    r = s.api("PUT", "/nodes/sv2/qemu/%d/config" % (FIRST + 1),
              data={"name": "renamed", "cores": "3", "memory": "3072"})
    assert r.status_code == 200, r.text
    e = entry(FIRST + 1)
    assert (e["name"], e["maxcpu"], e["maxmem"]) == ("renamed", 3, 3072 * MiB), e
    # behind the clients' back: the control API moves a VM and starts it
    s.ctl("POST", "/vms/%d" % (FIRST + 2), {"node": "sv5", "power": "running",
                                           "conf": {"tags": "moved"}})
    e = entry(FIRST + 2)
    assert (e["node"], e["status"], e["tags"]) == ("sv5", "running", "moved"), e
    assert FIRST + 2 in [v["vmid"] for v in s.data("GET", "/nodes/sv5/qemu")]
    assert FIRST + 2 not in [v["vmid"] for v in s.data("GET", "/nodes/sv3/qemu")]
    # a task: destroy a stopped VM; it leaves the list when the task ends
    upid = s.data("DELETE", "/nodes/sv3/qemu/%d" % (FIRST + 7))
    assert s.wait_task("sv3", upid)["exitstatus"] == "OK"
    assert FIRST + 7 not in [e["vmid"] for e in s.data("GET", "/cluster/resources")
                             if e["type"] == "qemu"]


@case
def results_match_the_schema():
    # --check-returns checked the first big answer of each list on a sample
    # and every small one (/nodes/sv5/qemu...) whole
    assert SIM.ctl("GET", "/violations") == []
    assert SIM.ctl("GET", "/rejections") == []


SIM.stop()
TMP.cleanup()
finish()
