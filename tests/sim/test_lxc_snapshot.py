"""Container snapshots and templates through proxmoxer, as pve-container's
API2/LXC/Snapshot.pm and API2/LXC.pm answer and pve-guest-common's
AbstractConfig works: vzsnapshot, vzdelsnapshot, vzrollback (with `start`,
a vzstart task of its own), the snapshot and rollback locks, `parent`, the
snapshot's config, the reserved names, "snapshot feature is not available"
where a volume's storage cannot snapshot; vztemplate (base- volumes, the
answer null)."""
import time

from lib.cases import case, finish
from lib.pxm import client, expect_error, task_ok, wait_task
from lib.sim import Sim, expect400
from lib.wait import wait_for

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
# a node with the default storages and the kinds that cannot snapshot a
# container's volume: a directory (raw files) and thick LVM
FLEET = {"nodes": [{"name": "sv1", "storages": [
    {"id": "local", "type": "dir", "content": "iso,vztmpl,backup,rootdir", "total_gb": 100},
    {"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "total_gb": 1024},
    {"id": "thick", "type": "lvm", "content": "images,rootdir", "total_gb": 500}]}]}


def task_fails(px, upid, why):
    st = wait_task(px, upid)
    assert st["exitstatus"] == why, (st, why)


def log(px, upid):
    return [ln["t"] for ln in px.nodes(upid.split(":")[1]).tasks(upid).log.get()]


def make_ct(px, vmid, **kw):
    args = dict(vmid=vmid, ostemplate=TEMPLATE, rootfs="local-lvm:4", hostname="ct%d" % vmid)
    args.update(kw)
    task_ok(px, px.nodes("sv1").lxc.post(**args))
    return px.nodes("sv1").lxc(vmid)


@case
def snapshot_rollback_delete():
    with Sim(nodes=None, fleet=FLEET) as s:
        px = client(s)
        ct = make_ct(px, 220, mp0="local-lvm:1,mp=/srv")
        task_ok(px, ct.status.start.post())
        upid = ct.snapshot.post(snapname="first", description="before the upgrade")
        assert ":vzsnapshot:220:root@pam:" in upid, upid
        task_ok(px, upid)
        lines = log(px, upid)
        assert '  Logical volume "snap_vm-220-disk-0_first" created.' in lines, lines
        assert '  Logical volume "snap_vm-220-disk-1_first" created.' in lines, lines
        assert not any(ln.startswith("snapshotting") for ln in lines), lines  # qemu-server's
        conf = ct.config.get()
        assert conf["parent"] == "first" and "lock" not in conf, conf
        snaps = {e["name"]: e for e in ct.snapshot.get()}
        assert sorted(snaps) == ["current", "first"], snaps
        first = snaps["first"]
        assert first["description"] == "before the upgrade" and first["snaptime"] > 0, first
        assert "vmstate" not in first and "parent" not in first, first
        cur = snaps["current"]
        assert cur == {"name": "current", "description": "You are here!", "running": 1,
                       "parent": "first", "digest": conf["digest"]}, cur
        # the snapshot's config: the config as it was, without lock and digest
        sc = ct.snapshot("first").config.get()
        assert sc["hostname"] == "ct220" and sc["rootfs"] == conf["rootfs"], sc
        assert sc["description"] == "before the upgrade" and "digest" not in sc, sc
        assert sc["snaptime"] == first["snaptime"] and "parent" not in sc, sc
        assert ct.snapshot("first").get() == [{"cmd": "rollback"}, {"cmd": "config"}]
        # GET config ?snapshot: the section, with the file's digest
        byq = ct.config.get(snapshot="first")
        assert byq["hostname"] == "ct220" and byq["digest"] == conf["digest"], byq
        expect_error(lambda: ct.config.get(snapshot="nope"), 500, "snapshot 'nope' does not exist")
        expect400(s.api("GET", "/nodes/sv1/lxc/220/config",
                        params={"snapshot": "first", "current": 1}),
                  {"snapshot": "cannot use 'snapshot' parameter with 'current'",
                   "current": "cannot use 'snapshot' parameter with 'current'"})
        assert ct.snapshot("first").config.put(description="edited") is None
        assert ct.snapshot("first").config.get()["description"] == "edited"
        expect_error(lambda: ct.snapshot("nope").config.get(), 500,
                     "snapshot 'nope' does not exist")
        # names PVE refuses before the worker; one used already fails the worker
        for name in ("current", "vzdump"):
            expect_error(lambda: ct.snapshot.post(snapname=name), 500,
                         "unable to use snapshot name '%s' (reserved name)" % name)
        task_fails(px, ct.snapshot.post(snapname="first"), "snapshot name 'first' already used")

        # a change, a second snapshot, a mount point only the current config has
        task_ok(px, ct.status.stop.post())
        ct.config.put(hostname="changed", memory=1024)
        task_ok(px, ct.snapshot.post(snapname="second"))
        assert ct.snapshot("second").config.get()["parent"] == "first"
        ct.config.put(mp1="local-lvm:vm-220-disk-2,mp=/extra,size=1G")
        task_ok(px, ct.status.start.post())

        # rollback: the container is killed, the snapshot's config comes back,
        # the volume the snapshot does not know becomes unused; `start` runs
        # the start API, a vzstart task of its own
        before = {t["upid"] for t in px.nodes("sv1").tasks.get(vmid=220, source="all")}
        upid = ct.snapshot("first").rollback.post(start=1)
        assert ":vzrollback:220:" in upid, upid
        task_ok(px, upid)
        conf = ct.config.get()
        assert conf["hostname"] == "ct220" and conf["memory"] == 512, conf
        assert conf["parent"] == "first" and "mp1" not in conf, conf
        assert conf["unused0"] == "local-lvm:vm-220-disk-2", conf
        starts = wait_for(lambda: [t for t in px.nodes("sv1").tasks.get(vmid=220, source="all")
                                   if t["type"] == "vzstart" and t.get("endtime")
                                   and t["upid"] not in before], 10,
                          what="vzstart after the rollback")
        assert starts[0]["status"] == "OK", starts
        assert ct.status.current.get()["status"] == "running"

        # delete: the snapshot's children and the config take its parent
        upid = ct.snapshot("first").delete()
        assert ":vzdelsnapshot:220:" in upid, upid
        task_ok(px, upid)
        assert '  Logical volume "snap_vm-220-disk-0_first" successfully removed.' in log(px, upid)
        snaps = {e["name"]: e for e in ct.snapshot.get()}
        assert sorted(snaps) == ["current", "second"], snaps
        assert "parent" not in snaps["second"] and "parent" not in snaps["current"], snaps
        assert "parent" not in ct.config.get()
        task_fails(px, ct.snapshot("first").delete(), "snapshot 'first' does not exist")
        task_fails(px, ct.snapshot("first").rollback.post(), "snapshot 'first' does not exist")
        # the snapshots are part of the saved state
        st = [c for c in s.state()["containers"] if c["vmid"] == 220][0]
        assert sorted(st["snapshots"]) == ["second"], st


@case
def snapshot_refusals():
    with Sim(nodes=None, fleet=FLEET) as s:
        px = client(s)
        node = px.nodes("sv1")
        # no container: the worker fails (the API forks without loading the config)
        task_fails(px, node.lxc(999).snapshot.post(snapname="s1"),
                   "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")
        expect_error(lambda: node.lxc(999).snapshot.get(), 500,
                     "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")
        # storages that cannot snapshot the volume, and a bind mount
        on_dir = make_ct(px, 230, rootfs="local:4")
        assert on_dir.config.get()["rootfs"] == "local:230/vm-230-disk-0.raw,size=4G"
        task_fails(px, on_dir.snapshot.post(snapname="s1"), "snapshot feature is not available")
        thick = make_ct(px, 231, rootfs="thick:4")
        task_fails(px, thick.snapshot.post(snapname="s1"), "snapshot feature is not available")
        bind = make_ct(px, 232)
        bind.config.put(mp0="/srv/data,mp=/data")
        task_fails(px, bind.snapshot.post(snapname="s1"), "snapshot feature is not available")
        assert [e["name"] for e in bind.snapshot.get()] == ["current"]
        assert "lock" not in bind.config.get()
        # a lock in the config
        ct = make_ct(px, 233)
        ct.config.put(lock="backup")
        task_fails(px, ct.snapshot.post(snapname="s1"), "CT is locked (backup)")
        expect_error(lambda: ct.snapshot("s1").config.put(description="x"), 500,
                     "CT is locked (backup)")


@case
def the_snapshot_lock_while_it_works():
    """At a real node's pace the config holds `lock: snapshot` while the
    volumes are snapshotted, and `lock: rollback` while they roll back."""
    with Sim(nodes=None, fleet=FLEET, time_scale=0.5) as s:
        px = client(s)
        ct = make_ct(px, 240)
        upid = ct.snapshot.post(snapname="s1")
        wait_for(lambda: ct.config.get().get("lock") == "snapshot", 5, interval=0.01,
                 what="lock: snapshot")
        # the snapshot is in the list meanwhile, in state prepare
        a = [e for e in ct.snapshot.get() if e["name"] == "s1"][0]
        assert a["snapstate"] == "prepare", a
        expect_error(lambda: ct.config.put(cores=2), 500, "CT is locked (snapshot)")
        task_ok(px, upid)
        assert "lock" not in ct.config.get()
        upid = ct.snapshot("s1").rollback.post()
        wait_for(lambda: ct.config.get().get("lock") == "rollback", 5, interval=0.01,
                 what="lock: rollback")
        task_ok(px, upid)
        assert "lock" not in ct.config.get()


@case
def template():
    with Sim(nodes=None, fleet=FLEET) as s:
        px = client(s)
        node = px.nodes("sv1")
        ct = make_ct(px, 250, mp0="local-lvm:1,mp=/srv")
        task_ok(px, ct.status.start.post())
        expect_error(lambda: ct.template.post(), 500,
                     "you can't convert a CT to template if the CT is running")
        task_ok(px, ct.status.stop.post())
        task_ok(px, ct.snapshot.post(snapname="s1"))
        expect_error(lambda: ct.template.post(), 500,
                     "unable to create template, because CT contains snapshots")
        task_ok(px, ct.snapshot("s1").delete())
        # the API answers null; the worker is a vztemplate task
        assert ct.template.post() is None
        tasks = wait_for(lambda: [t for t in node.tasks.get(vmid=250, source="all")
                                  if t["type"] == "vztemplate" and t.get("endtime")], 10,
                         what="the vztemplate task")
        assert tasks[0]["status"] == "OK", tasks
        conf = ct.config.get()
        assert conf["template"] == 1, conf
        assert conf["rootfs"] == "local-lvm:base-250-disk-0,size=4G", conf
        assert conf["mp0"] == "local-lvm:base-250-disk-1,mp=/srv,size=1G", conf
        assert [c for c in node.lxc.get() if c["vmid"] == 250][0]["template"] == 1
        expect_error(lambda: ct.template.post(), 500, "you can't convert a template to a template")
        task_fails(px, ct.status.start.post(), "you can't start a CT if it's a template")
        task_fails(px, ct.snapshot.post(snapname="s2"),
                   "you can't take a snapshot if it's a template")
        # a directory's raw file becomes base-; thick LVM has no template feature
        on_dir = make_ct(px, 251, rootfs="local:4")
        assert on_dir.template.post() is None
        wait_for(lambda: on_dir.config.get().get("template") == 1, 10, what="template 251")
        assert on_dir.config.get()["rootfs"] == "local:251/base-251-disk-0.raw,size=4G"
        thick = make_ct(px, 252, rootfs="thick:4")
        assert thick.template.post() is None
        tasks = wait_for(lambda: [t for t in node.tasks.get(vmid=252, source="all")
                                  if t["type"] == "vztemplate" and t.get("endtime")], 10,
                         what="the vztemplate task of 252")
        assert tasks[0]["status"] == "Template feature is not available for 'thick:vm-252-disk-0'", \
            tasks
        assert "template" not in thick.config.get()
        expect_error(lambda: node.lxc(999).template.post(), 500,
                     "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")


@case
def resize():
    """PUT .../resize: grow only, +N or absolute, checked before the fork
    and again by the `resize` worker under the flock (API2/LXC.pm resize_vm)."""
    with Sim(nodes=None, fleet=FLEET) as s:
        px = client(s)
        ct = make_ct(px, 260, mp0="local-lvm:1,mp=/srv,backup=1")
        lvm = px.nodes("sv1").storage("local-lvm")
        used = lvm.status.get()["used"]
        upid = ct.resize.put(disk="rootfs", size="+2G")
        assert ":resize:260:root@pam:" in upid, upid
        task_ok(px, upid)
        assert ct.config.get()["rootfs"] == "local-lvm:vm-260-disk-0,size=6G"
        lines = log(px, upid)
        assert ("  Size of logical volume pve/vm-260-disk-0 changed from 4.00 GiB (1024 extents)"
                " to 6.00 GiB (1536 extents).") in lines, lines
        # absolute, on a mount point: its other options stay, sorted
        task_ok(px, ct.resize.put(disk="mp0", size="1536M"))
        assert ct.config.get()["mp0"] == "local-lvm:vm-260-disk-1,backup=1,mp=/srv,size=1536M"
        expect_error(lambda: ct.resize.put(disk="rootfs", size="5G"), 500,
                     "unable to shrink disk size")
        expect_error(lambda: ct.resize.put(disk="rootfs", size="6G"), 500,
                     "disk is already at specified size")
        expect_error(lambda: ct.resize.put(disk="rootfs", size="+1G", digest="0" * 40), 500,
                     "detected modified configuration - file changed by other user? Try again.")
        r = s.api("PUT", "/nodes/sv1/lxc/260/resize", data={"disk": "mp3", "size": "+1G"})
        assert r.status_code == 500 and r.json()["message"] == "format error\n", r.text
        assert r.json()["errors"] == {"volume": "property is missing and it is not optional",
                                      "mp": "property is missing and it is not optional"}, r.text
        ct.config.put(mp1="/srv/host,mp=/host")
        expect_error(lambda: ct.resize.put(disk="mp1", size="+1G"), 500,
                     "unable to parse volume ID '/srv/host'")
        expect400(s.api("PUT", "/nodes/sv1/lxc/260/resize", data={"disk": "rootfs", "size": "-1G"}),
                  {"size": "value does not match the regex pattern"})
        # the storage counts the new sizes
        assert lvm.status.get()["used"] - used == (2 << 30) + (512 << 20)
        ct.config.put(lock="backup")
        expect_error(lambda: ct.resize.put(disk="rootfs", size="+1G"), 500,
                     "CT is locked (backup)")
        expect_error(lambda: px.nodes("sv1").lxc(999).resize.put(disk="rootfs", size="1G"), 500,
                     "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")


@case
def clone():
    """POST .../clone (API2/LXC.pm clone_vm): linked from a template by
    default, full otherwise; the source's `disk` lock and the new
    container's `create` lock while the vzclone worker runs; PVE's
    refusals before the fork leave neither lock nor new config behind."""
    fleet = {"nodes": [dict(FLEET["nodes"][0]), {"name": "sv2"}]}
    with Sim(nodes=None, fleet=fleet) as s:
        px = client(s)
        node = px.nodes("sv1")
        px.pools.post(poolid="web")
        tpl = make_ct(px, 270, mp0="local-lvm:1,mp=/srv", net0="name=eth0,bridge=vmbr0,ip=dhcp")
        assert tpl.template.post() is None
        wait_for(lambda: tpl.config.get().get("template") == 1, 10, what="template 270")
        # linked, the default from a template
        upid = tpl.clone.post(newid=271, hostname="web1", pool="web", description="a clone")
        assert ":vzclone:270:root@pam:" in upid, upid
        task_ok(px, upid)
        lines = log(px, upid)
        assert lines[0] == "creating a clone of container 270 with ID 271", lines
        assert "create linked clone of mount point rootfs (local-lvm:base-270-disk-0)" in lines
        src, new = tpl.config.get(), node.lxc(271).config.get()
        assert new["rootfs"] == "local-lvm:vm-271-disk-0,size=4G", new
        assert new["mp0"] == "local-lvm:vm-271-disk-1,mp=/srv,size=1G", new
        assert new["hostname"] == "web1" and new["description"] == "a clone", new
        assert "template" not in new and "lock" not in new and "lock" not in src, (src, new)
        assert new["net0"] != src["net0"] and new["net0"].split("hwaddr=")[0] == \
            src["net0"].split("hwaddr=")[0], (src["net0"], new["net0"])
        assert [p for p in px.pools.get() if p["poolid"] == "web"]
        assert any(m["vmid"] == 271 for m in px.pools("web").get()["members"])
        # full, to another storage; a full clone of a container that is no template
        task_ok(px, tpl.clone.post(newid=272, full=1, storage="local"))
        assert node.lxc(272).config.get()["rootfs"] == "local:272/vm-272-disk-0.raw,size=4G"
        ct = node.lxc(271)
        upid = ct.clone.post(newid=273)
        task_ok(px, upid)
        assert "create full clone of mountpoint rootfs (local-lvm:vm-271-disk-0)" in log(px, upid)
        assert node.lxc(273).config.get()["hostname"] == "web1"

        def refused(src, why, newid=279, **kw):
            expect_error(lambda: src.clone.post(newid=newid, **kw), 500, why)
            assert "lock" not in src.config.get(), src.config.get()
            assert all(c["vmid"] != newid for c in node.lxc.get())
        # the keys in sorted order: mp0's volume first
        refused(ct, "Linked clone feature for 'local-lvm:vm-271-disk-1' is not available", full=0)
        refused(tpl, "parameter 'storage' not allowed for linked clones", storage="local-lvm")
        refused(tpl, "snapshot 'nope' does not exist", snapname="nope")
        expect_error(lambda: tpl.clone.post(newid=271), 500, "CT 271 already exists on node 'sv1'")
        assert "lock" not in tpl.config.get() and "lock" not in node.lxc(271).config.get()
        refused(tpl, "can't clone CT to node 'sv2' (CT uses local storage)", target="sv2")
        refused(tpl, "no such cluster node 'nope'", target="nope")
        refused(tpl, "can't clone to non-shared storage 'local-lvm'", target="sv2",
                storage="local-lvm", full=1)
        expect_error(lambda: tpl.clone.post(newid=279, pool="nope"), 403,
                     "Permission check failed (pool 'nope' does not exist)")
        task_ok(px, ct.status.start.post())
        refused(ct, "Full clone of a running container is only possible from a snapshot")
        task_ok(px, ct.snapshot.post(snapname="snap1"))
        task_ok(px, ct.clone.post(newid=274, snapname="snap1"))
        new = node.lxc(274).config.get()
        assert new["rootfs"] == "local-lvm:vm-274-disk-0,size=4G" and "parent" not in new, new
        bind = make_ct(px, 275)
        bind.config.put(mp0="/srv/data,mp=/data")
        refused(bind, "unable to clone mountpoint 'mp0' (type bind)")
        bind.config.put(lock="backup")
        expect_error(lambda: bind.clone.post(newid=279), 500, "CT is locked (backup)")
        expect_error(lambda: node.lxc(999).clone.post(newid=279), 500,
                     "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")


@case
def clone_locks_and_interrupt():
    """While a full clone copies, the source holds `lock: disk` and the new
    container `lock: create`, for as long as the copy takes at `bwlimit`;
    stopping the task removes the new container and the source's lock
    ("clone failed: interrupted by signal")."""
    with Sim(nodes=None, fleet=FLEET, time_scale=0.2) as s:
        px = client(s)
        node = px.nodes("sv1")
        src = make_ct(px, 280, rootfs="local-lvm:8")
        # 8 GiB at bwlimit 100 MiB/s: 82 s; at the node's 500 MiB/s it would be 17
        upid = src.clone.post(newid=281, bwlimit=102400)
        assert src.config.get()["lock"] == "disk"
        assert node.lxc(281).config.get()["lock"] == "create"
        expect_error(lambda: node.lxc.delete(280), 500, "CT is locked (disk)")
        wait_for(lambda: any("create full clone" in ln for ln in log(px, upid)), 5,
                 what="the copy")
        time.sleep(4.0)  # 20 simulated seconds
        assert node.tasks(upid).status.get()["status"] == "running"
        node.tasks(upid).delete()
        st = wait_task(px, upid)
        assert st["exitstatus"] == "clone failed: interrupted by signal", st
        assert "lock" not in src.config.get()
        assert all(c["vmid"] != 281 for c in node.lxc.get())


finish()
