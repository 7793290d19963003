"""Debian's Ansible drives a container's life through pvesim with the
`community.general.proxmox` module, unmodified: state present (create from
the node's template), started, restarted, stopped and absent, each run again
to be idempotent, and a create that PVE refuses; /_sim/rejections and
/_sim/violations stay empty (every call it made is one pvesim serves as the
schema says). Ansible runs from /usr/bin; HOME is a scratch folder."""
import json
import os
import subprocess
import tempfile

from lib.cases import case, finish
from lib.env import PASSWORD
from lib.pg import full_run
from lib.sim import Sim
from lib.wait import wait_for

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def run(cmd, home, timeout=240, **env):
    # a clean environment, as tests/sim/test_ansible.py runs it
    e = {"LANG": "C.UTF-8", "HOME": home, "PATH": "/usr/bin:/bin",
         "ANSIBLE_LOCAL_TEMP": os.path.join(home, "tmp"), "ANSIBLE_NOCOLOR": "1",
         "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3", "ANSIBLE_STDOUT_CALLBACK": "json",
         "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    e.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout, cwd=home)
    assert p.returncode == 0, (cmd, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


def play(s, home, tasks):
    """Run the tasks on localhost; {task name: its result}."""
    path = os.path.join(home, "play.json")
    with open(path, "w") as f:
        json.dump([{"hosts": "localhost", "gather_facts": False, "connection": "local",
                    "tasks": tasks}], f)
    out = json.loads(run(["/usr/bin/ansible-playbook", "-i", "localhost,", path], home,
                         ANSIBLE_INVENTORY_ENABLED="host_list"))
    return {t["task"]["name"]: t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]}


@case
def container_life_cycle():
    with Sim(time_scale=0.01) as s, tempfile.TemporaryDirectory() as home:
        common = {"api_host": "127.0.0.1:%d" % s.entry, "api_user": "root@pam",
                  "api_password": PASSWORD, "validate_certs": False, "node": "sv1",
                  "vmid": 230, "timeout": 20}
        create = dict(common, hostname="app1", ostemplate=TEMPLATE, storage="local-lvm",
                      disk="4", cores=2, memory=1024, swap=256, password="secret123",
                      netif={"net0": "name=eth0,ip=dhcp,bridge=vmbr0"}, unprivileged=True,
                      state="present")
        mod = "community.general.proxmox"
        steps = [("create", create), ("create again", create),
                 ("start", dict(common, state="started")),
                 ("start again", dict(common, state="started")),
                 ("restart", dict(common, state="restarted")),
                 ("stop", dict(common, state="stopped")),
                 ("stop again", dict(common, state="stopped")),
                 ("taken", dict(create, vmid=None, hostname="app2", storage="nope")),
                 ("remove", dict(common, state="absent")),
                 ("remove again", dict(common, state="absent"))]
        tasks = [{"name": n, mod: {k: v for k, v in a.items() if v is not None},
                  "ignore_errors": n == "taken", "register": n.replace(" ", "_")}
                 for n, a in steps]
        res = play(s, home, tasks)
        changed = {n: res[n].get("changed") for n, _ in steps}
        assert changed == {"create": True, "create again": False, "start": True,
                           "start again": False, "restart": True, "stop": True,
                           "stop again": False, "taken": False, "remove": True,
                           "remove again": False}, (changed, res)
        assert "Deployed VM 230" in res["create"]["msg"], res["create"]
        assert res["taken"].get("failed"), res["taken"]
        assert "storage 'nope' does not exist" in res["taken"]["msg"], res["taken"]
        assert all(c["vmid"] != 230 for c in s.data("GET", "/nodes/sv1/lxc"))
        types = [t["type"] for t in s.data("GET", "/nodes/sv1/tasks", params={"vmid": 230})]
        # this module restarts with a shutdown and a start
        for ty in ("vzcreate", "vzstart", "vzshutdown", "vzdestroy"):
            assert ty in types, types
        assert s.ctl("GET", "/rejections") == [], s.ctl("GET", "/rejections")
        assert s.ctl("GET", "/violations") == [], s.ctl("GET", "/violations")


def clones_and_snapshots():
    """The `proxmox` module's container clone (linked from a template, full
    to a storage) and `proxmox_snap` on a container: with `unbind`, the
    module takes a bind mount (which cannot be snapshotted) out of the
    config around the snapshot and puts it back; rollback and removal."""
    with Sim(time_scale=0.01) as s, tempfile.TemporaryDirectory() as home:
        api = {"api_host": "127.0.0.1:%d" % s.entry, "api_user": "root@pam",
               "api_password": PASSWORD, "validate_certs": False, "timeout": 20}
        for vmid in (240, 243):
            st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/lxc", data=dict(
                vmid=vmid, ostemplate=TEMPLATE, rootfs="local-lvm:4", hostname="ct%d" % vmid)))
            assert st["exitstatus"] == "OK", st
        # a bind mount: root@pam only (a token is not root)
        r = s.api("PUT", "/nodes/sv1/lxc/243/config", data={"mp0": "/srv/data,mp=/data"},
                  auth=s.login())
        assert r.status_code == 200, r.text
        assert s.data("POST", "/nodes/sv1/lxc/240/template") is None
        wait_for(lambda: s.data("GET", "/nodes/sv1/lxc/240/config").get("template") == 1, 10,
                 what="template 240")
        mod, snap = "community.general.proxmox", "community.general.proxmox_snap"
        steps = [
            ("linked", mod, dict(api, node="sv1", vmid=241, clone=240, clone_type="linked",
                                 hostname="linked1")),
            ("full", mod, dict(api, node="sv1", vmid=242, clone=240, clone_type="full",
                               storage="local-lvm", hostname="full1")),
            ("snapshot", snap, dict(api, vmid=243, snapname="pre_upgrade", unbind=True,
                                    description="before", state="present")),
            ("snapshot again", snap, dict(api, vmid=243, snapname="pre_upgrade",
                                          state="present")),
            ("rollback", snap, dict(api, vmid=243, snapname="pre_upgrade", state="rollback")),
            ("remove", snap, dict(api, vmid=243, snapname="pre_upgrade", state="absent")),
        ]
        res = play(s, home, [{"name": n, m: a} for n, m, a in steps])
        changed = {n: res[n].get("changed") for n, _, _ in steps}
        assert changed == {"linked": True, "full": True, "snapshot": True,
                           "snapshot again": False, "rollback": True, "remove": True}, (changed, res)
        linked = s.data("GET", "/nodes/sv1/lxc/241/config")
        assert linked["rootfs"] == "local-lvm:vm-241-disk-0,size=4G", linked
        assert linked["hostname"] == "linked1" and "template" not in linked, linked
        assert s.data("GET", "/nodes/sv1/lxc/242/config")["hostname"] == "full1"
        conf = s.data("GET", "/nodes/sv1/lxc/243/config")
        # the snapshot was taken with the bind mount unbound: the rollback to
        # it leaves it out, as on PVE
        assert "mp0" not in conf and "parent" not in conf, conf
        types = sorted(t["type"] for t in s.data("GET", "/nodes/sv1/tasks", params={"vmid": 243})
                       if t["type"] != "vzcreate")
        assert types == ["vzdelsnapshot", "vzrollback", "vzsnapshot"], types
        clones = [t for t in s.data("GET", "/nodes/sv1/tasks", params={"vmid": 240})
                  if t["type"] == "vzclone"]
        assert len(clones) == 2 and all(t["status"] == "OK" for t in clones), clones
        assert s.ctl("GET", "/rejections") == [], s.ctl("GET", "/rejections")
        assert s.ctl("GET", "/violations") == [], s.ctl("GET", "/violations")


if full_run():  # make test-full: some 20 s of Ansible, the suite's time
    case(clones_and_snapshots)
finish()
