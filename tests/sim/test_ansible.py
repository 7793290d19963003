"""Debian's Ansible (community.general) drives pvesim unmodified: the
`community.general.proxmox` inventory plugin (password and API token) and the
`community.general.proxmox_storage_info` module, through a whole flow, with
/_sim/rejections and /_sim/violations empty afterwards (every call it made is
one pvesim serves as the schema says). Ansible runs from /usr/bin (its own
python3 with python3-proxmoxer); HOME is a scratch folder."""
import json
import os
import subprocess
import tempfile

from lib.cases import case, finish
from lib.env import PASSWORD, TOKEN_SECRET
from lib.sim import Sim

FLEET = {
    "nodes": [{"name": "sv1"}, {"name": "sv2"},
              {"name": "sv3", "storages": [{"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir",
                                             "total_gb": 500},
                                            {"id": "nfs1", "type": "nfs", "content": "images,backup",
                                             "total_gb": 2000, "shared": True}]}],
    "pools": [{"poolid": "web", "comment": "web servers"}, {"poolid": "db"}],
    "containers": [{"vmid": 200, "node": "sv1", "hostname": "proxy1", "status": "running", "pool": "web"},
                   {"vmid": 201, "node": "sv2", "hostname": "cache1"}],
}


def ansible_env(home):
    # a clean environment: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override
    # the plugin's session.verify = False (requests merges them in)
    env = {"LANG": "C.UTF-8"}
    env.update(HOME=home, PATH="/usr/bin:/bin", ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
               ANSIBLE_INVENTORY_ENABLED="community.general.proxmox", ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_CACHE_PLUGIN="memory",
               ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1")
    return env


def run(cmd, home, timeout=240, **env):
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(ansible_env(home), **env),
                       timeout=timeout, cwd=home)
    assert p.returncode == 0, (cmd, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


def inventory(s, home, auth, facts=False):
    path = os.path.join(home, "sim.proxmox.yml")
    with open(path, "w") as f:
        f.write("plugin: community.general.proxmox\nurl: https://127.0.0.1:%d\nuser: root@pam\n"
                "validate_certs: false\nwant_facts: %s\nwant_proxmox_nodes_ansible_host: true\n"
                % (s.entry, "true" if facts else "false") + auth)
    return json.loads(run(["/usr/bin/ansible-inventory", "-i", path, "--list"], home))


def fleet_sim():
    return Sim(nodes="sv1,sv2,sv3", time_scale=0.01, fleet=FLEET)


def clone(s, node, src, newid, **extra):
    st = s.wait_task(node, s.data("POST", "/nodes/%s/qemu/%d/clone" % (node, src),
                                  data=dict({"newid": str(newid)}, **extra)))
    assert st["exitstatus"] == "OK", st


def hosts(inv, group):
    return sorted(inv.get(group, {}).get("hosts", []))


@case
def inventory_plugin_and_storage_info():
    with fleet_sim() as s, tempfile.TemporaryDirectory() as home:
        clone(s, "sv1", 8000, 100, name="web1", pool="web")
        clone(s, "sv2", 8010, 101, name="db1", pool="db")
        clone(s, "sv2", 8011, 102, name="batch1")
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/100/status/start"))
        assert st["exitstatus"] == "OK", st
        s.ctl("DELETE", "/calls")

        # the inventory, logged in with the password, then with the API token
        for auth in ("password: %s\n" % PASSWORD,
                     "token_id: ci\ntoken_secret: %s\n" % TOKEN_SECRET):
            inv = inventory(s, home, auth)
            assert hosts(inv, "proxmox_nodes") == ["sv1", "sv2", "sv3"], inv.get("proxmox_nodes")
            assert hosts(inv, "proxmox_all_qemu") == ["batch1", "db1", "web1"], inv  # templates skipped
            assert hosts(inv, "proxmox_all_lxc") == ["cache1", "proxy1"], inv
            assert hosts(inv, "proxmox_all_running") == ["proxy1", "web1"], inv
            assert hosts(inv, "proxmox_all_stopped") == ["batch1", "cache1", "db1"], inv
            assert hosts(inv, "proxmox_sv2_qemu") == ["batch1", "db1"], inv
            assert hosts(inv, "proxmox_sv1_lxc") == ["proxy1"], inv
            assert hosts(inv, "proxmox_pool_web") == ["proxy1", "web1"], inv
            assert hosts(inv, "proxmox_pool_db") == ["db1"], inv
            hv = inv["_meta"]["hostvars"]
            assert hv["sv2"]["ansible_host"] == "10.0.0.12", hv["sv2"]  # from /nodes/sv2/network
        calls = s.ctl("GET", "/calls")
        for path in ("GET /nodes/{node}/lxc", "GET /nodes/{node}/qemu", "GET /pools", "GET /pools/{poolid}",
                     "GET /nodes/{node}/network", "POST /access/ticket"):
            assert calls.get("calls", calls).get(path), (path, calls)

        # proxmox_storage_info: every storage, by type, one by name, a missing one
        play = os.path.join(home, "storage.yml")
        common = {"api_host": "127.0.0.1:%d" % s.entry, "api_user": "root@pam",
                  "api_password": PASSWORD, "validate_certs": False}
        tasks = [{"name": "all", "community.general.proxmox_storage_info": dict(common), "register": "all"},
                 {"name": "lvmthin", "community.general.proxmox_storage_info": dict(common, type="lvmthin")},
                 {"name": "nfs1", "community.general.proxmox_storage_info":
                  dict(common, storage="nfs1", api_password=None, api_token_id="ci",
                       api_token_secret=TOKEN_SECRET)},
                 {"name": "missing", "community.general.proxmox_storage_info": dict(common, storage="nosuch"),
                  "ignore_errors": True}]
        with open(play, "w") as f:
            json.dump([{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": tasks}], f)
        out = json.loads(run(["/usr/bin/ansible-playbook", "-i", "localhost,", play], home,
                              ANSIBLE_INVENTORY_ENABLED="host_list"))
        res = {t["task"]["name"]: t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]}
        every = {x["storage"]: x for x in res["all"]["proxmox_storages"]}
        assert sorted(every) == ["local", "local-lvm", "nfs1"], every
        assert every["local"]["content"] == ["iso", "vztmpl", "backup"] and every["local"]["nodes"] == ["sv1", "sv2"]
        assert every["local"]["prune-backups"] == {"keep-all": "1"}, every["local"]
        assert [x["storage"] for x in res["lvmthin"]["proxmox_storages"]] == ["local-lvm"], res["lvmthin"]
        nfs = res["nfs1"]["proxmox_storages"]
        assert len(nfs) == 1 and nfs[0]["type"] == "nfs" and nfs[0]["nodes"] == ["sv3"], nfs
        assert res["missing"].get("failed") and res["missing"]["msg"] == "Storage 'nosuch' does not exist", \
            res["missing"]

        assert s.ctl("GET", "/rejections") == [], s.ctl("GET", "/rejections")


@case
def inventory_with_facts():
    """want_facts: status, config and snapshots of every guest, and the guest
    agent's interfaces of agent-enabled VMs."""
    with fleet_sim() as s, tempfile.TemporaryDirectory() as home:
        clone(s, "sv1", 8000, 100, name="web1", pool="web")
        served = [s.api("GET", p).status_code != 501 for p in
                  ("/nodes/sv1/qemu/100/snapshot", "/nodes/sv1/qemu/100/agent/network-get-interfaces")]
        assert all(served), served
        s.ctl("DELETE", "/rejections")
        inv = inventory(s, home, "password: %s\n" % PASSWORD, facts=True)
        hv = inv["_meta"]["hostvars"]
        assert hv["web1"]["proxmox_vmtype"] == "qemu" and hv["web1"]["proxmox_status"] == "stopped", hv["web1"]
        assert hv["web1"]["proxmox_qmpstatus"] == "stopped" and hv["web1"]["proxmox_snapshots"] == []
        assert hv["proxy1"]["proxmox_vmtype"] == "lxc" and hv["proxy1"]["proxmox_hostname"] == "proxy1", hv["proxy1"]
        assert s.ctl("GET", "/rejections") == [], s.ctl("GET", "/rejections")


finish()
