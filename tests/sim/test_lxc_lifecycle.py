"""Container lifecycle through a real client, proxmoxer: create from the
node's template (vzcreate, the create lock while it runs, in the config and
in /cluster/resources), start, shutdown, stop, reboot, config changes (hot
and pending, the digest check), destroy; and PVE's words for what it
refuses (pve-container API2/LXC.pm, API2/LXC/Status.pm, API2/LXC/Config.pm)."""
import json
import os
import tempfile

from lib.cases import case, finish
from lib.pxm import client, expect_error, task_ok, wait_task
from lib.sim import Sim, expect400
from lib.wait import wait_for

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKLvUisgGmPEnolX7BDaNtI/eDjLlJHK3zFxaGxyZU/q "
           "me@host")


def resource(px, vmid):
    for r in px.cluster.resources.get(type="vm"):
        if r["vmid"] == vmid:
            return r
    return None


@case
def full_life_cycle():
    with Sim() as s:
        px = client(s)
        node = px.nodes("sv1")
        upid = node.lxc.post(vmid=200, ostemplate=TEMPLATE, hostname="web1", memory=1024,
                             swap=256, cores=2, rootfs="local-lvm:8",
                             net0="name=eth0,bridge=vmbr0,ip=dhcp", password="secret123",
                             **{"ssh-public-keys": ED25519})
        assert ":vzcreate:200:root@pam:" in upid, upid
        # the create lock while the worker runs, in the config and the resources
        conf = node.lxc(200).config.get()
        assert conf.get("lock") == "create", conf
        assert resource(px, 200)["lock"] == "create"
        assert resource(px, 200)["type"] == "lxc"
        task_ok(px, upid)
        conf = node.lxc(200).config.get()
        assert "lock" not in conf, conf
        assert conf["hostname"] == "web1" and conf["memory"] == 1024 and conf["swap"] == 256
        assert conf["cores"] == 2 and conf["unprivileged"] == 1 and conf["arch"] == "amd64"
        assert conf["rootfs"] == "local-lvm:vm-200-disk-0,size=8G", conf["rootfs"]
        assert conf["net0"].startswith("name=eth0,bridge=vmbr0,hwaddr="), conf["net0"]
        assert conf["net0"].endswith(",ip=dhcp,type=veth"), conf["net0"]
        assert "password" not in conf and "ssh-public-keys" not in conf
        log = [ln["t"] for ln in node.tasks(upid).log.get()]
        assert '  Logical volume "vm-200-disk-0" created.' in log, log
        st = node.lxc(200).status.current.get()
        assert st["status"] == "stopped" and st["name"] == "web1" and st["uptime"] == 0, st
        # the rootfs counts on its storage
        vols = [v["volid"] for v in node.storage("local-lvm").content.get()]
        assert "local-lvm:vm-200-disk-0" in vols, vols

        mem_before = node.status.get()["memory"]["used"]
        upid = node.lxc(200).status.start.post()
        assert ":vzstart:200:" in upid
        task_ok(px, upid)
        st = node.lxc(200).status.current.get()
        assert st["status"] == "running" and st["mem"] > 0, st
        assert node.status.get()["memory"]["used"] > mem_before
        assert resource(px, 200)["status"] == "running"
        expect_error(lambda: node.lxc(200).status.start.post(), 500, "CT 200 already running")
        expect_error(lambda: node.lxc.delete(200), 500,
                     "unable to destroy CT 200 - container is running")

        # config while running: hostname and memory at once, ostype pending
        digest = node.lxc(200).config.get()["digest"]
        assert node.lxc(200).config.put(hostname="web2", memory=2048, ostype="ubuntu",
                                        description="front", digest=digest) is None
        cur = node.lxc(200).config.get(current=1)
        assert cur["hostname"] == "web2" and cur["memory"] == 2048, cur
        assert cur["ostype"] == "debian" and cur["description"] == "front", cur
        assert node.lxc(200).config.get()["ostype"] == "ubuntu"
        expect_error(lambda: node.lxc(200).config.put(cores=4, digest=digest), 500,
                     "detected modified configuration - file changed by other user? Try again.")
        expect_error(lambda: node.lxc(200).config.put(delete="memory"), 500,
                     "unable to delete required option 'memory'")
        expect_error(lambda: node.lxc(200).config.put(unprivileged=0), 500,
                     "unable to modify read-only option: 'unprivileged'")
        expect400(s.api("PUT", "/nodes/sv1/lxc/200/config",
                        data={"delete": "ostype", "revert": "ostype"}),
                  {"delete": "you can't use '-delete ostype' and '-revert ostype' at the same time"})
        assert node.lxc(200).config.put(revert="ostype") is None
        assert node.lxc(200).config.get()["ostype"] == "debian"
        assert node.lxc(200).config.put(ostype="ubuntu") is None

        # reboot applies the pending change
        upid = node.lxc(200).status.reboot.post()
        assert ":vzreboot:200:" in upid
        task_ok(px, upid)
        assert node.lxc(200).config.get(current=1)["ostype"] == "ubuntu"
        assert node.lxc(200).status.current.get()["status"] == "running"

        upid = node.lxc(200).status.shutdown.post(timeout=30)
        assert ":vzshutdown:200:" in upid
        task_ok(px, upid)
        assert node.lxc(200).status.current.get()["status"] == "stopped"
        expect_error(lambda: node.lxc(200).status.stop.post(), 500, "CT 200 not running")
        expect_error(lambda: node.lxc(200).status.shutdown.post(), 500, "CT 200 not running")
        expect_error(lambda: node.lxc(200).status.reboot.post(), 500, "VM 200 not running")

        task_ok(px, node.lxc(200).status.start.post())
        upid = node.lxc(200).status.stop.post()
        assert ":vzstop:200:" in upid
        task_ok(px, upid)
        assert node.lxc(200).status.current.get()["status"] == "stopped"

        upid = node.lxc.delete(200, purge=1, **{"destroy-unreferenced-disks": 1})
        assert ":vzdestroy:200:" in upid
        task_ok(px, upid)
        expect_error(lambda: node.lxc(200).config.get(), 500,
                     "Configuration file 'nodes/sv1/lxc/200.conf' does not exist")
        assert resource(px, 200) is None
        vols = [v["volid"] for v in node.storage("local-lvm").content.get()]
        assert "local-lvm:vm-200-disk-0" not in vols, vols


@case
def create_refusals():
    fleet = {"nodes": [{"name": "sv1", "cpus": 16, "memory_gb": 64}],
             "templates": [{"os": "ubuntu", "disk_gb": 10}],
             "pools": [{"poolid": "web"}],
             "containers": [{"vmid": 300, "node": "sv1", "hostname": "old"}]}
    with Sim(nodes=None, fleet=fleet) as s:
        px = client(s)
        node = px.nodes("sv1")
        tpl = px.cluster.resources.get(type="vm")
        vm = [r["vmid"] for r in tpl if r["type"] == "qemu"][0]
        base = dict(ostemplate=TEMPLATE, rootfs="local-lvm:4")
        expect_error(lambda: node.lxc.post(vmid=300, **base), 500,
                     "CT 300 already exists on node 'sv1'")
        expect_error(lambda: node.lxc.post(vmid=vm, **base), 500,
                     "VM %d already exists on node 'sv1'" % vm)
        # a VM may not take a container's VMID either
        expect_error(lambda: node.qemu.post(vmid=300), 500,
                     "unable to create VM 300 - CT 300 already exists on node 'sv1'")
        expect_error(lambda: node.lxc.post(vmid=201, ostemplate=TEMPLATE, rootfs="nope:4"), 500,
                     "storage 'nope' does not exist")
        # no rootfs: a volume on the default storage, `local`, which holds no containers
        # (proxmoxer 1.2.0 drops the errors: read the answer itself)
        expect400(s.api("POST", "/nodes/sv1/lxc", data={"vmid": 201, "ostemplate": TEMPLATE}),
                  {"storage": "storage 'local' does not support container directories"})
        expect_error(lambda: node.lxc.post(vmid=201, ostemplate="local-lvm:vm-300-disk-0",
                                           rootfs="local-lvm:4"), 500,
                     "unable to use volume local-lvm:vm-300-disk-0 - content type needs to be "
                     "'vztmpl'")
        expect_error(lambda: node.lxc.post(vmid=201, ostemplate=TEMPLATE,
                                           mp0="local-lvm:4,mp=/srv"), 500,
                     "mount points configured, but 'rootfs' not set - aborting")
        expect_error(lambda: node.lxc.post(vmid=201, pool="nope", **base), 403,
                     "Permission check failed (pool 'nope' does not exist)")
        expect_error(lambda: node.lxc.post(vmid=201, **base, **{"ssh-public-keys": "junk"}), 500,
                     "SSH public key validation error")
        # a template the storage does not hold: the worker fails and leaves nothing
        upid = node.lxc.post(vmid=201, ostemplate="local:vztmpl/nope.tar.zst",
                             rootfs="local-lvm:4")
        st = wait_task(px, upid)
        assert st["exitstatus"] == ("unable to create CT 201 - can't find file "
                                    "'local:vztmpl/nope.tar.zst'"), st
        assert all(c["vmid"] != 201 for c in node.lxc.get())
        # storage's default size, a pool, started after creation
        upid = node.lxc.post(vmid=202, ostemplate=TEMPLATE, storage="local-lvm", rootfs="2",
                             mp0="local-lvm:1,mp=/srv", pool="web", start=1)
        task_ok(px, upid)
        conf = node.lxc(202).config.get()
        assert conf["rootfs"] == "local-lvm:vm-202-disk-0,size=2G", conf
        assert conf["mp0"] == "local-lvm:vm-202-disk-1,mp=/srv,size=1G", conf
        assert conf["hostname"] == "CT202" and conf["memory"] == 512 and conf["swap"] == 512
        assert resource(px, 202)["pool"] == "web"
        starts = wait_for(lambda: [t for t in node.tasks.get(vmid=202, source="all")
                                   if t["type"] == "vzstart" and t.get("endtime")], 10,
                          what="vzstart after create")
        assert starts[0]["status"] == "OK", starts
        assert node.lxc(202).status.current.get()["status"] == "running"
        # a bare size is the whole value (/^\d+(\.\d+)?$/): "4,size=8G" names
        # a volume "4", which is no volume ID; "volume=" is the default key
        expect_error(lambda: node.lxc.post(vmid=203, ostemplate=TEMPLATE, storage="local-lvm",
                                           rootfs="4,size=8G"), 500,
                     "unable to parse volume ID '4'")
        task_ok(px, node.lxc.post(vmid=203, ostemplate=TEMPLATE, rootfs="volume=local-lvm:3"))
        conf = node.lxc(203).config.get()
        assert conf["rootfs"] == "local-lvm:vm-203-disk-0,size=3G", conf


@case
def locks_and_timeouts():
    with Sim() as s:
        px = client(s)
        node = px.nodes("sv1")
        task_ok(px, node.lxc.post(vmid=210, ostemplate=TEMPLATE, rootfs="local-lvm:4"))
        task_ok(px, node.lxc(210).status.start.post())
        # a lock in the config refuses shutdown, config changes and destroy (and
        # stays: PUT config has no skiplock); skiplock passes stop
        assert node.lxc(210).config.put(lock="backup") is None
        st = wait_task(px, node.lxc(210).status.shutdown.post())
        assert st["exitstatus"] == "CT is locked (backup)", st
        assert resource(px, 210)["lock"] == "backup"
        expect_error(lambda: node.lxc(210).config.put(cores=2), 500, "CT is locked (backup)")
        task_ok(px, node.lxc(210).status.stop.post(skiplock=1))
        expect_error(lambda: node.lxc.delete(210), 500, "CT is locked (backup)")
        st = wait_task(px, node.lxc(210).status.start.post())
        assert st["exitstatus"] == "CT is locked (backup)", st
        # protection
        task_ok(px, node.lxc.post(vmid=212, ostemplate=TEMPLATE, rootfs="local-lvm:4"))
        node.lxc(212).config.put(protection=1)
        expect_error(lambda: node.lxc.delete(212), 500,
                     "can't remove CT 212 - protection mode enabled")
        node.lxc(212).config.put(protection=0)
        task_ok(px, node.lxc.delete(212))
        task_ok(px, node.lxc.post(vmid=213, ostemplate=TEMPLATE, rootfs="local-lvm:4"))
        # a shutdown the container does not finish in time, without and with forceStop
        task_ok(px, node.lxc(213).status.start.post())
        st = wait_task(px, node.lxc(213).status.shutdown.post(timeout=1))
        assert st["exitstatus"] == "container did not stop", st
        assert node.lxc(213).status.current.get()["status"] == "running"
        task_ok(px, node.lxc(213).status.shutdown.post(timeout=1, forceStop=1))
        assert node.lxc(213).status.current.get()["status"] == "stopped"
        # force destroys a running container
        task_ok(px, node.lxc(213).status.start.post())
        upid = node.lxc.delete(213, force=1)
        task_ok(px, upid)
        log = [ln["t"] for ln in node.tasks(upid).log.get()]
        assert "forced to stop CT 213 before destroying!" in log, log
        assert all(c["vmid"] != 213 for c in node.lxc.get())
        # a start waits for the create's flock and then runs
        upid = node.lxc.post(vmid=211, ostemplate=TEMPLATE, rootfs="local-lvm:4")
        start = node.lxc(211).status.start.post()
        task_ok(px, upid)
        task_ok(px, start)
        assert node.lxc(211).status.current.get()["status"] == "running"


@case
def containers_survive_a_restart():
    """--state-dir keeps the containers as it keeps the VMs: one made through
    the API comes back with its config, pending changes, power and pool, a
    destroyed fleet-file one stays gone; one whose create was under way at
    the stop comes back as the worker left it (`lock: create`, no worker:
    the task is not resumed, as a clone's placeholder VM). POST /_sim/reset
    brings back the fleet file's containers only."""
    fleet = {"nodes": [{"name": "sv1"}, {"name": "sv2"}],
             "pools": [{"poolid": "web"}],
             "containers": [{"vmid": 300, "node": "sv1", "hostname": "keep", "status": "running"},
                            {"vmid": 301, "node": "sv2", "hostname": "doomed"}]}
    with tempfile.TemporaryDirectory() as d:
        with Sim(nodes=None, fleet=fleet, state_dir=d) as s:
            px = client(s)
            node = px.nodes("sv1")
            task_ok(px, node.lxc.post(vmid=200, ostemplate=TEMPLATE, hostname="api",
                                      rootfs="local-lvm:4", pool="web"))
            task_ok(px, node.lxc(200).status.start.post())
            node.lxc(200).config.put(ostype="ubuntu", delete="swap")  # pending while running
            px.pools.post(poolid="extra", comment="made here")
            task_ok(px, px.nodes("sv2").lxc.delete(301))
            before = node.lxc(200).config.get()
            current = node.lxc(200).config.get(current=1)
            assert before["ostype"] == "ubuntu" and current["ostype"] == "debian", current
            cts = {c["vmid"]: c for c in s.state()["containers"]}
            assert sorted(cts) == [200, 300], cts
            assert cts[200]["power"] == "running" and cts[200]["pending"] == {"ostype": "ubuntu"}
        saved = json.load(open(os.path.join(d, "state.json")))
        assert sorted(c["vmid"] for c in saved["containers"]) == [200, 300], saved["containers"]

        # time scale 1: the create below is still extracting when pvesim stops
        with Sim(nodes=None, fleet=fleet, state_dir=d, time_scale=1) as s:
            px = client(s)
            node = px.nodes("sv1")
            assert node.lxc(200).config.get() == before
            assert node.lxc(200).config.get(current=1) == current
            assert node.lxc(200).status.current.get()["status"] == "running"
            assert node.lxc(300).status.current.get()["status"] == "running"
            assert all(c["vmid"] != 301 for c in px.nodes("sv2").lxc.get())
            expect_error(lambda: px.nodes("sv2").lxc(301).config.get(), 500,
                         "Configuration file 'nodes/sv2/lxc/301.conf' does not exist")
            assert resource(px, 200)["pool"] == "web"
            pools = {p["poolid"]: p for p in px.pools.get()}
            assert pools["extra"].get("comment") == "made here", pools
            expect_error(lambda: px.nodes("sv2").lxc.post(vmid=200, ostemplate=TEMPLATE,
                                                          rootfs="local-lvm:4"),
                         500, "CT 200 already exists on node 'sv1'")
            upid = node.lxc.post(vmid=202, ostemplate=TEMPLATE, rootfs="local-lvm:4")
            assert node.lxc(202).config.get()["lock"] == "create"
            wait_for(lambda: any("extracting" in ln["t"] for ln in node.tasks(upid).log.get()),
                     2.5, interval=0.02, what="the create extracting")
        # the create died with pvesim: its container stays locked, as PVE leaves it
        with Sim(nodes=None, fleet=fleet, state_dir=d) as s:
            px = client(s)
            node = px.nodes("sv1")
            conf = node.lxc(202).config.get()
            assert conf["lock"] == "create" and "rootfs" not in conf, conf
            ent = [c for c in node.lxc.get() if c["vmid"] == 202][0]
            assert ent["lock"] == "create", ent
            # nothing but the lock written: vmstatus' fallbacks
            assert (ent["maxmem"], ent["maxdisk"], ent["maxswap"]) == (
                512 << 20, 4 << 30, 0), ent
            expect_error(lambda: node.lxc.delete(202), 500, "CT is locked (create)")
            s.ctl("POST", "/reset")
            assert sorted(c["vmid"] for c in node.lxc.get()) == [300]
            assert [c["vmid"] for c in px.nodes("sv2").lxc.get()] == [301]
            assert sorted(p["poolid"] for p in px.pools.get()) == ["web"]


@case
def huge_sizes_are_held():
    """PVE's schema sets no maximum on a container's memory or swap, and a
    mount point's size= may name any size: pvesim multiplied and summed them
    in int64 (the node's memory in use, a storage's used bytes) and the
    sanitizer build died of the overflow on the next list. The figures are
    held at 2^62 bytes."""
    with Sim() as s:
        px = client(s)
        node = px.nodes("sv1")
        huge = 99999999999999  # MiB
        task_ok(px, node.lxc.post(vmid=400, ostemplate=TEMPLATE, rootfs="local-lvm:4",
                                  memory=huge, swap=huge))
        task_ok(px, node.lxc(400).status.start.post())
        e = [c for c in node.lxc.get() if c["vmid"] == 400][0]
        assert e["maxmem"] == 2**62 and e["maxswap"] == 2**62 and e["mem"] == 2**60, e
        task_ok(px, node.lxc.post(vmid=401, ostemplate=TEMPLATE, rootfs="local-lvm:4",
                                  memory=huge))
        task_ok(px, node.lxc(401).status.start.post())
        assert 2**60 < node.status.get()["memory"]["used"] <= 2**62
        task_ok(px, node.lxc.post(vmid=402, ostemplate=TEMPLATE, rootfs="local-lvm:4"))
        node.lxc(402).config.put(mp0="local-lvm:vm-402-disk-5,mp=/a,size=8000000T",
                                 mp1="local-lvm:vm-402-disk-6,mp=/b,size=8000000T")
        st = node.storage("local-lvm").status.get()
        assert st["used"] == 2**62, st
        assert any(r["type"] == "lxc" for r in px.cluster.resources.get())


@case
def new_volumes_as_create_disks_writes_them():
    """A new volume's size: STORAGE:GiB as PVE's $NEW_DISK_RE reads it (the
    whole volume part), written by print_ct_mountpoint: a size= given is
    replaced by the allocated one (pvesim wrote both, a config the schema
    refuses), keys sorted; a size beyond what pvesim holds
    fails the create instead of overflowing (it wrote size=-9223372036854775808)."""
    with Sim() as s:
        px = client(s)
        node = px.nodes("sv1")
        task_ok(px, node.lxc.post(vmid=410, ostemplate=TEMPLATE,
                                  rootfs="local-lvm:8,size=1T,ro=1,quota=1,acl=1",
                                  mp0="local-lvm:0.5,mp=/srv,size=3G"))
        conf = node.lxc(410).config.get()
        assert conf["rootfs"] == "local-lvm:vm-410-disk-0,acl=1,quota=1,ro=1,size=8G", conf
        assert conf["mp0"] == "local-lvm:vm-410-disk-1,mp=/srv,size=512M", conf
        st = wait_task(px, node.lxc.post(vmid=411, ostemplate=TEMPLATE,
                                         rootfs="local-lvm:99999999999999999999"))
        assert st["exitstatus"] == ("unable to create CT 411 - rootfs: size "
                                    "99999999999999999999 GiB is too large"), st
        assert all(c["vmid"] != 411 for c in node.lxc.get())


@case
def pending():
    """GET .../pending (vm_pending: config_with_pending_array) lists every
    key with its value, its pending value and `delete`, the digest among
    them."""
    with Sim() as s:
        px = client(s)
        node = px.nodes("sv1")
        task_ok(px, node.lxc.post(vmid=420, ostemplate=TEMPLATE, rootfs="local-lvm:4",
                                  cores=4, ostype="debian", searchdomain="example.com"))
        task_ok(px, node.lxc(420).status.start.post())
        node.lxc(420).config.put(ostype="ubuntu", delete="searchdomain", tags="new")
        pend = node.lxc(420).pending.get()
        byk = {e["key"]: e for e in pend}
        assert len(byk) == len(pend), pend
        assert byk["ostype"] == {"key": "ostype", "value": "debian", "pending": "ubuntu"}, byk
        assert byk["tags"] == {"key": "tags", "value": "new"}, byk  # hot: applied at once
        assert byk["searchdomain"] == {"key": "searchdomain", "value": "example.com",
                                       "delete": 1}, byk
        assert byk["cores"] == {"key": "cores", "value": 4}, byk
        assert byk["digest"] == {"key": "digest",
                                 "value": node.lxc(420).config.get()["digest"]}, byk
        # a key only pending
        node.lxc(420).config.put(mp0="local-lvm:vm-420-disk-1,mp=/srv,size=1G")
        assert {e["key"]: e for e in node.lxc(420).pending.get()}["mp0"] == {
            "key": "mp0", "pending": "local-lvm:vm-420-disk-1,mp=/srv,size=1G"}
        expect_error(lambda: node.lxc(999).pending.get(), 500,
                     "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")


@case
def cpu_load():
    """A running container keeps CPUs busy on its node as a running VM its
    vCPUs (the node's `cpu`, 0.01 + 0.05 * busy / cpus): its cores, its
    cpulimit rounded up, or all the host's without either."""
    fleet = {"nodes": [{"name": "sv1", "cpus": 16, "memory_gb": 64}]}
    with Sim(nodes=None, fleet=fleet) as s:
        px = client(s)
        node = px.nodes("sv1")

        def cpu():
            return node.status.get()["cpu"]
        task_ok(px, node.lxc.post(vmid=430, ostemplate=TEMPLATE, rootfs="local-lvm:4", cores=4))
        task_ok(px, node.lxc.post(vmid=431, ostemplate=TEMPLATE, rootfs="local-lvm:4",
                                  cpulimit=1.5))
        idle = cpu()
        task_ok(px, node.lxc(430).status.start.post())
        assert abs(cpu() - (idle + 0.05 * 4 / 16)) < 1e-9, cpu()
        listed = [n for n in px.nodes.get() if n["node"] == "sv1"][0]["cpu"]
        assert abs(listed - (idle + 0.05 * 4 / 16)) < 1e-9, listed
        task_ok(px, node.lxc(431).status.start.post())
        assert abs(cpu() - (idle + 0.05 * 6 / 16)) < 1e-9, cpu()
        task_ok(px, node.lxc(430).status.stop.post())
        task_ok(px, node.lxc(431).status.stop.post())
        assert abs(cpu() - idle) < 1e-9


@case
def suspend_resume():
    """status/suspend and status/resume (Status.pm vm_suspend, vm_resume):
    the running checks before the fork; vzsuspend checks the lock under the
    flock and leaves the container stopped, dumped by lxc-checkpoint;
    vzresume restores it, and fails as run_command does with no dump."""
    with Sim() as s:
        px = client(s)
        node = px.nodes("sv1")
        task_ok(px, node.lxc.post(vmid=440, ostemplate=TEMPLATE, rootfs="local-lvm:4"))
        ct = node.lxc(440)
        expect_error(lambda: ct.status.suspend.post(), 500, "CT 440 not running")
        st = wait_task(px, ct.status.resume.post())
        assert st["exitstatus"] == ("command 'lxc-checkpoint -n 440 -r --foreground -D "
                                    "/var/lib/vz/dump' failed: exit code 1"), st
        task_ok(px, ct.status.start.post())
        expect_error(lambda: ct.status.resume.post(), 500, "CT 440 already running")
        upid = ct.status.suspend.post()
        assert ":vzsuspend:440:root@pam:" in upid, upid
        task_ok(px, upid)
        assert ct.status.current.get()["status"] == "stopped"
        assert [c for c in s.state()["containers"] if c["vmid"] == 440][0]["checkpointed"]
        upid = ct.status.resume.post()
        assert ":vzresume:440:" in upid, upid
        task_ok(px, upid)
        assert ct.status.current.get()["status"] == "running"
        ct.config.put(lock="backup")
        st = wait_task(px, ct.status.suspend.post())
        assert st["exitstatus"] == "CT is locked (backup)", st
        assert ct.status.current.get()["status"] == "running"


GiB = 1 << 30
# a node whose local-lvm holds nothing but the containers below
UNUSED_FLEET = {"nodes": [{"name": "sv1", "cpus": 16, "memory_gb": 64}],
                "containers": [
                    {"vmid": 500, "node": "sv1", "hostname": "stopped",
                     "mps": [{"disk_gb": 4}, {"disk_gb": 2}, {"disk_gb": 3}]},
                    {"vmid": 501, "node": "sv1", "hostname": "running", "status": "running",
                     "mps": [{"disk_gb": 4}, {"disk_gb": 2}]}]}


def lvm_volumes(node, vmid):
    """{volid: size} of the container's volumes on local-lvm, as its content lists them."""
    return {v["volid"]: v["size"] for v in node.storage("local-lvm").content.get(vmid=vmid)}


def lvm_used(node):
    return node.storage("local-lvm").status.get()["used"]


def unused(conf):
    return {k: v for k, v in conf.items() if k.startswith("unused")}


@case
def mount_point_detached_to_unused():
    """A volume mount point deleted from a stopped container, or set to
    another volume, leaves its volume as unusedN (pve-container
    LXC/Config.pm vmconfig_apply_pending, apply_pending_mountpoint:
    add_unused_volume, the lowest free N, no duplicate; write_pct_config
    drops an unusedN another mount point still uses): the storage still
    holds it, its content lists it with its size. pvesim deleted the key,
    and the volume vanished from the storage."""
    with Sim(nodes=None, fleet=UNUSED_FLEET) as s:
        px = client(s)
        node = px.nodes("sv1")
        ct = node.lxc(500)
        disk = "local-lvm:vm-500-disk-%d".__mod__
        used = lvm_used(node)
        assert ct.config.put(delete="mp0") is None
        conf = ct.config.get()
        assert "mp0" not in conf and unused(conf) == {"unused0": disk(1)}, conf
        assert lvm_volumes(node, 500)[disk(1)] == 4 * GiB, lvm_volumes(node, 500)
        assert lvm_used(node) == used
        # another volume for mp1: its old one takes the lowest free index
        ct.config.put(mp1="local-lvm:vm-500-disk-7,mp=/mnt/new,size=1G")
        conf = ct.config.get()
        assert conf["mp1"] == "local-lvm:vm-500-disk-7,mp=/mnt/new,size=1G", conf
        assert unused(conf) == {"unused0": disk(1), "unused1": disk(2)}, conf
        assert lvm_volumes(node, 500)[disk(2)] == 2 * GiB
        assert lvm_used(node) == used + 1 * GiB
        # unused0 freed: the next detached volume takes index 0 again
        ct.config.put(delete="unused0")
        conf = ct.config.get()
        assert unused(conf) == {"unused1": disk(2)}, conf
        assert disk(1) not in lvm_volumes(node, 500)
        assert lvm_used(node) == used + 1 * GiB - 4 * GiB
        task_ok(px, node.qemu.post(vmid=600))  # a VM finds no such volume to attach
        expect_error(lambda: node.qemu(600).config.put(scsi1=disk(1)), 500,
                     "volume %s does not exist" % disk(1))
        ct.config.put(delete="mp2")
        assert unused(ct.config.get()) == {"unused0": disk(3), "unused1": disk(2)}
        assert lvm_used(node) == used + 1 * GiB - 4 * GiB
        # a volume two mount points name: not unused while one still has it, once
        # when both go in one call (no duplicate)
        ct.config.put(mp3="local-lvm:vm-500-disk-8,mp=/a,size=1G",
                      mp4="local-lvm:vm-500-disk-8,mp=/b,size=1G")
        ct.config.put(delete="mp3")
        assert unused(ct.config.get()) == {"unused0": disk(3), "unused1": disk(2)}
        ct.config.put(mp3="local-lvm:vm-500-disk-8,mp=/a,size=1G")
        ct.config.put(delete="mp3,mp4")
        conf = ct.config.get()
        assert unused(conf) == {"unused0": disk(3), "unused1": disk(2),
                                "unused2": disk(8)}, conf
        # a bind mount has no volume to keep
        ct.config.put(mp5="/srv/data,mp=/data")
        ct.config.put(delete="mp5")
        assert len(unused(ct.config.get())) == 3
        # deletions in sorted order: mp1 first, its volume to the free unused3,
        # then unused0..2; then every volume is gone but the rootfs
        ct.config.put(delete="unused0,unused1,unused2,mp1")
        assert unused(ct.config.get()) == {"unused3": disk(7)}
        ct.config.put(delete="unused3")
        conf = ct.config.get()
        assert unused(conf) == {} and not any(k.startswith("mp") for k in conf), conf
        assert list(lvm_volumes(node, 500)) == [disk(0)], lvm_volumes(node, 500)
        assert lvm_used(node) == used - 9 * GiB


@case
def mount_point_detached_at_start():
    """On a running container a mount point's deletion or new volume waits
    for the next start (no hotplug of either); vm_start's
    vmconfig_apply_pending then leaves the old volumes as unusedN. An
    unusedN's deletion is hotplugged: its volume goes at once
    (delete_mountpoint_volume), unless a snapshot still holds it."""
    with Sim(nodes=None, fleet=UNUSED_FLEET) as s:
        px = client(s)
        node = px.nodes("sv1")
        ct = node.lxc(501)
        disk = "local-lvm:vm-501-disk-%d".__mod__
        used = lvm_used(node)
        ct.config.put(delete="mp0")
        ct.config.put(mp1="local-lvm:vm-501-disk-5,mp=/mnt/new,size=1G")
        pend = {e["key"]: e for e in ct.pending.get()}
        assert pend["mp0"].get("delete") == 1, pend
        assert pend["mp1"]["pending"] == "local-lvm:vm-501-disk-5,mp=/mnt/new,size=1G", pend
        assert unused(ct.config.get(current=1)) == {}
        task_ok(px, ct.status.stop.post())
        task_ok(px, ct.status.start.post())
        conf = ct.config.get()
        assert "mp0" not in conf and conf["mp1"].startswith(disk(5) + ","), conf
        assert unused(conf) == {"unused0": disk(1), "unused1": disk(2)}, conf
        assert ct.pending.get() and not any("pending" in e or "delete" in e
                                            for e in ct.pending.get())
        vols = lvm_volumes(node, 501)
        assert vols[disk(1)] == 4 * GiB and vols[disk(2)] == 2 * GiB, vols
        assert lvm_used(node) == used + 1 * GiB
        # an unusedN goes at once, running or not, and takes its volume along
        ct.config.put(delete="unused1")
        assert unused(ct.config.get(current=1)) == {"unused0": disk(1)}
        assert disk(2) not in lvm_volumes(node, 501)
        assert lvm_used(node) == used + 1 * GiB - 2 * GiB
        # ... but a volume a snapshot holds stays on the storage
        task_ok(px, ct.snapshot.post(snapname="keep"))
        ct.config.put(delete="mp1")
        task_ok(px, ct.status.stop.post())
        task_ok(px, ct.status.start.post())
        assert unused(ct.config.get()) == {"unused0": disk(1), "unused1": disk(5)}
        ct.config.put(delete="unused1")
        assert unused(ct.config.get()) == {"unused0": disk(1)}
        assert lvm_used(node) == used + 1 * GiB - 2 * GiB
        # the destroy frees unusedN volumes too: none left for a VM to attach
        task_ok(px, ct.status.stop.post())
        task_ok(px, node.lxc.delete(501))
        task_ok(px, node.qemu.post(vmid=600))
        expect_error(lambda: node.qemu(600).config.put(scsi1=disk(1)), 500,
                     "volume %s does not exist" % disk(1))


finish()
