"""Debian's packer drives pvesim through a whole proxmox-clone build: log in,
find the template by name, clone it, configure and start the clone, shut it
down and convert it to a template (POST .../template, task qmtemplate). The
communicator is "none": the guest is simulated, nothing could answer SSH.
pvesim must refuse nothing and serve nothing off-schema."""
import json
import os
import shutil
import subprocess
import tempfile

from lib.cases import case, finish
from lib.env import PASSWORD
from lib.sim import Sim

# one template in the cluster (an explicit VMID exists on the first node only),
# so that packer's look-up by name finds it on the node it builds on
FLEET = {"nodes": [{"name": "sv1"}, {"name": "sv2"}],
         "templates": [{"os": "ubuntu", "vmid": 9000, "disk_gb": 10}]}


def build(s, home, extra=None):
    tpl = {"builders": [dict({
        "type": "proxmox-clone",
        "proxmox_url": "https://127.0.0.1:%d/api2/json" % s.entry,
        "insecure_skip_tls_verify": True,
        "username": "root@pam", "password": PASSWORD,
        "node": "sv1", "clone_vm": "tpl-ubuntu", "vm_id": 500,
        "template_name": "pk-ubuntu", "template_description": "built by packer",
        "cores": 4, "memory": 4096, "qemu_agent": True,
        "communicator": "none"}, **(extra or {}))]}
    path = os.path.join(home, "clone.json")
    with open(path, "w") as f:
        json.dump(tpl, f)
    env = dict(os.environ, HOME=home, CHECKPOINT_DISABLE="1", PACKER_NO_COLOR="1",
               PACKER_CACHE_DIR=os.path.join(home, "cache"), TMPDIR=home,
               no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")
    return subprocess.run(["packer", "build", "-color=false", path], env=env, cwd=home,
                          capture_output=True, text=True, timeout=240)


@case
def proxmox_clone_build_ends_in_a_template():
    assert shutil.which("packer"), "packer missing (scripts/deps.sh installs it)"
    home = tempfile.mkdtemp()
    with Sim(nodes="sv1,sv2", time_scale=0.01, fleet=FLEET) as s:
        r = build(s, home)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        assert "Converting VM to template" in r.stdout, r.stdout[-3000:]
        c = s.data("GET", "/nodes/sv1/qemu/500/config")
        assert c["template"] == 1 and c["name"] == "pk-ubuntu", c
        assert c["cores"] == 4 and c["memory"] == "4096", c
        assert c["scsi0"].startswith("local-lvm:base-500-disk-0,"), c
        assert c["description"] == "built by packer", c
        v = s.vm(500)
        assert v["power"] == "stopped" and "lock" not in v["conf"], v
        calls = s.ctl("GET", "/calls")["calls"]
        for k in ("POST /nodes/{node}/qemu/{vmid}/clone", "POST /nodes/{node}/qemu/{vmid}/status/start",
                  "POST /nodes/{node}/qemu/{vmid}/template"):
            assert calls.get(k) == 1, (k, calls)
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"vmid": "500", "limit": "50"})
        conv = [t for t in tasks if t["type"] == "qmtemplate"]
        assert len(conv) == 1 and conv[0]["status"] == "OK", tasks
        assert all(t["status"] == "OK" for t in tasks), tasks
        # the new template is what the next build clones from: linked, by name
        r = build(s, home, {"clone_vm": "pk-ubuntu", "vm_id": 501, "template_name": "pk-2",
                            "full_clone": False})
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        c = s.data("GET", "/nodes/sv1/qemu/501/config")
        assert c["template"] == 1 and c["scsi0"].startswith("local-lvm:base-501-disk-0,"), c
        assert s.ctl("GET", "/rejections") == []


finish()
