"""Debian's ansible drives pvesim's snapshots: the unmodified
community.general.proxmox_snap module (through proxmoxer) creates, lists,
rolls back and removes a snapshot of a VM found by name, with a password and
with an API token, and pvesim refuses nothing and serves nothing off-schema."""
import os
import shutil
import subprocess
import tempfile

from lib.cases import case, finish
from lib.env import PASSWORD, TOKEN_SECRET
from lib.sim import Sim

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    pve_pw: &pw
      api_host: "127.0.0.1:{port}"
      api_user: root@pam
      api_password: "{password}"
      validate_certs: false
    pve_tok: &tok
      api_host: "127.0.0.1:{port}"
      api_user: root@pam
      api_token_id: ci
      api_token_secret: "{secret}"
      validate_certs: false
  tasks:
    - name: snapshot the VM found by its name
      community.general.proxmox_snap:
        <<: *pw
        hostname: web-1
        snapname: pre_upgrade
        description: before the upgrade
        state: present
      register: created
    - assert:
        that: [created is changed]
    - name: the same snapshot again changes nothing
      community.general.proxmox_snap:
        <<: *tok
        vmid: "100"
        snapname: pre_upgrade
        state: present
      register: again
    - assert:
        that: [again is not changed]
    - name: change the VM behind the snapshot
      uri:
        url: "https://127.0.0.1:{port}/api2/json/nodes/sv1/qemu/100/config"
        method: PUT
        validate_certs: false
        headers:
          Authorization: "PVEAPIToken=root@pam!ci={secret}"
        body_format: form-urlencoded
        body: {{cores: "6"}}
    - name: roll back
      community.general.proxmox_snap:
        <<: *tok
        vmid: "100"
        snapname: pre_upgrade
        state: rollback
        timeout: 60
      register: rolled
    - assert:
        that: [rolled is changed]
    - name: remove it
      community.general.proxmox_snap:
        <<: *tok
        vmid: "100"
        snapname: pre_upgrade
        state: absent
      register: removed
    - assert:
        that: [removed is changed]
    - name: removing it again changes nothing
      community.general.proxmox_snap:
        <<: *pw
        hostname: web-1
        snapname: pre_upgrade
        state: absent
      register: gone
    - assert:
        that: [gone is not changed]
"""


@case
def proxmox_snap_create_rollback_remove():
    assert shutil.which("ansible-playbook"), "ansible-playbook missing (scripts/deps.sh installs ansible)"
    with Sim(time_scale=0.01) as s:
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/8000/clone",
                                       data={"newid": "100", "name": "web-1", "full": "1"}))
        assert st["exitstatus"] == "OK", st
        home = tempfile.mkdtemp()
        book = os.path.join(home, "snap.yml")
        with open(book, "w") as f:
            f.write(PLAYBOOK.format(port=s.entry, password=PASSWORD, secret=TOKEN_SECRET))
        env = dict(os.environ, HOME=home, ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
                   ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
                   no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")
        r = subprocess.run(["ansible-playbook", "-i", "localhost,", book], env=env,
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        assert "failed=0" in r.stdout, r.stdout[-3000:]
        # what the module did, seen from pvesim
        tasks = s.data("GET", "/nodes/sv1/tasks", params={"vmid": "100", "limit": "50"})
        kinds = sorted(t["type"] for t in tasks if t["type"] != "qmclone")
        assert kinds == ["qmdelsnapshot", "qmrollback", "qmsnapshot"], kinds
        assert all(t["status"] == "OK" for t in tasks), tasks
        c = s.data("GET", "/nodes/sv1/qemu/100/config")
        assert c["cores"] == 2 and "parent" not in c, c  # rolled back, then the snapshot went
        snaps = s.data("GET", "/nodes/sv1/qemu/100/snapshot")
        assert [x["name"] for x in snaps] == ["current"], snaps
        assert s.ctl("GET", "/rejections") == []


finish()
