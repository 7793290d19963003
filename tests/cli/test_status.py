"""proxctl status on a fleet with every kind of problem it reports besides a
node down and a failed job (tests/cli/test_proxctl.py has those): a VMID
range 90% allocated (nine VMs in debian's ten IDs), an
address pool without a free address, a VM deleted behind proxd's back
(lost), and proxd not ready once every node is down. Each is one attention
line, in the text and the --json report; the exit code is 1 with any."""
import json
import os
import subprocess

from lib.cases import case, finish
from lib.env import PROXCTL
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

POOLS = "[ippool tiny]\ncidr = 10.9.3.0/24\nranges = 10.9.3.50-10.9.3.51\nbridge = vmbr1\n"
NODES = ["sv%d" % i for i in range(1, 6)]

sim = Sim(time_scale=0.01)
# a reconcile pass every 2 s: the VM deleted behind proxd's back is marked lost soon
px = Proxd(sim, sections=POOLS, proxd_extra="reconcile_interval = 2\n")
ADMIN = px.token("ops", "admin")
px.start()


def ctl(*args):
    e = dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=ADMIN)
    e.pop("PROXCTL_CONFIG", None)
    return subprocess.run([PROXCTL] + list(args), capture_output=True, text=True, timeout=60,
                          env=e)


def report():
    r = ctl("--json", "status")
    assert r.returncode in (0, 1), (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


@case
def full_ranges_empty_pools_and_lost_vms_need_attention():
    assert ctl("status").returncode == 0, ctl("status").stdout
    # nine VMs in debian's ten IDs (4000-4009)
    lines = "".join(json.dumps({"os": "debian", "name": "d%d" % i, "cores": 1, "memory_mb": 512,
                                "disk_gb": 10}) + "\n" for i in range(9))
    r = subprocess.run([PROXCTL, "--json", "vm", "create", "--from", "-"], input=lines,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PROXD_URL=px.base, PROXD_TOKEN=ADMIN))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    jobs = [json.loads(x)["job"] for x in r.stdout.splitlines() if x.strip()]
    assert len(jobs) == 9, r.stdout
    for j in jobs:
        assert px.wait_job(j, ADMIN)["state"] == "done", j
    # the pool's two addresses held
    for a in ("10.9.3.50", "10.9.3.51"):
        r = ctl("ippool", "hold", "tiny", a, "--note", "test")
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    # a VM of proxd's deleted behind its back
    r = ctl("--json", "vm", "create", "--os", "ubuntu", "--name", "gone", "--cores", "1",
            "--memory", "1G", "--disk", "10G")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    vm = json.loads(r.stdout)
    vmid, node = vm["vmid"], vm["node"]
    upid = sim.data("POST", "/nodes/%s/qemu/%d/status/stop" % (node, vmid))
    assert sim.wait_task(node, upid)["exitstatus"] == "OK"
    upid = sim.data("DELETE", "/nodes/%s/qemu/%d" % (node, vmid))
    assert sim.wait_task(node, upid)["exitstatus"] == "OK"

    def all_three():
        st = report()
        return st if len(st["attention"]) == 3 else None
    st = wait_for(all_three, deadline=30, interval=0.2, what="three attention lines")
    att = st["attention"]
    assert att[0].startswith("VMID range of debian (4000-4009) is 90% allocated"), att
    assert att[1] == "address pool tiny has 0 free of 2", att
    assert att[2].startswith("1 VM lost: "), att
    assert [r["os"] for r in st["ranges_full"]] == ["debian"], st
    assert st["pools_low"] == [{"pool": "tiny", "free": 0, "size": 2}], st
    assert st["lost"] == 1 and st["ready"] is True, st
    r = ctl("status")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "attention: 3" in r.stdout.splitlines(), r.stdout
    # back to nothing: the pool's holds let go (the range and the lost VM stay)
    for a in ("10.9.3.50", "10.9.3.51"):
        assert ctl("ippool", "unhold", "tiny", a).returncode == 0
    assert len(report()["attention"]) == 2


@case
def every_node_down_is_not_ready():
    for n in NODES:
        sim.ctl("POST", "/nodes/" + n, {"state": "offline"})
    try:
        st = wait_for(lambda: (lambda s: s if not s["ready"] else None)(report()), deadline=30,
                      interval=0.2, what="proxd not ready")
        assert "proxd is not ready: 0 of 5 nodes up" in st["attention"], st["attention"]
        assert sum(a.startswith("node sv") and " is down: " in a for a in st["attention"]) == 5, \
            st["attention"]
        r = ctl("status")
        assert r.returncode == 1 and r.stdout.startswith("proxd at %s: NOT READY\n" % px.base), \
            (r.returncode, r.stdout)
    finally:
        for n in NODES:
            sim.ctl("POST", "/nodes/" + n, {"state": "online"})
    wait_for(lambda: report()["ready"], deadline=30, interval=0.2, what="ready again")


@case
def proxd_not_answering_is_a_server_error():
    px.stop()
    r = ctl("status")
    assert r.returncode == 5, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", r.stdout


shutdown(px, sim)
finish()
