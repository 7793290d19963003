"""Snapshots of a VM in pvesim as qemu-server and pve-guest-common make them:
qmsnapshot/qmdelsnapshot/qmrollback tasks, the snapshot lock, the parent chain
and the `current` entry, RAM state of running VMs and the storage it takes,
PVE's errors (reserved and duplicate names, missing snapshots, locked VMs),
snapshot configs, bad input refused by the schema, and snapshots kept across a
restart with --state-dir. Also the conversion to a template (qmtemplate)."""
import json
import tempfile

from lib.cases import case, finish
from lib.sim import expect400, expect500, Sim, task_ok as ok
from lib.wait import wait_for

MiB = 1024 * 1024


def run(s, method, path, node="sv1", **kw):
    return s.wait_task(node, s.data(method, "/nodes/%s%s" % (node, path), **kw))


def failed(st, message):
    assert st["exitstatus"] == message, (st, message)
    return st


def clone(s, newid, src=8000, node="sv1", full=True):
    return ok(run(s, "POST", "/qemu/%d/clone" % src, node,
                  data={"newid": str(newid), "full": "1" if full else "0"}))


def snap(s, vmid, name, node="sv1", **extra):
    return run(s, "POST", "/qemu/%d/snapshot" % vmid, node, data=dict(snapname=name, **extra))


def snaps(s, vmid, node="sv1"):
    return {e["name"]: e for e in s.data("GET", "/nodes/%s/qemu/%d/snapshot" % (node, vmid))}


def config(s, vmid, node="sv1", **params):
    return s.data("GET", "/nodes/%s/qemu/%d/config" % (node, vmid), params=params or None)


def clean(s):
    assert s.ctl("GET", "/rejections") == [], s.ctl("GET", "/rejections")


@case
def create_list_parent_chain_and_delete():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        d0 = config(s, 100)["digest"]
        st = ok(snap(s, 100, "first", description="before the upgrade"))
        assert st["type"] == "qmsnapshot" and st["id"] == "100", st
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert "snapshotting 'drive-scsi0' (local-lvm:vm-100-disk-0)" in log, log
        assert '  Logical volume "snap_vm-100-disk-0_first" created.' in log, log
        c = config(s, 100)
        assert c["parent"] == "first" and "lock" not in c and c["digest"] != d0, c
        assert s.data("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "4"}) is None
        ok(snap(s, 100, "second"))
        l = snaps(s, 100)
        assert set(l) == {"first", "second", "current"}, l
        assert l["first"]["description"] == "before the upgrade" and "parent" not in l["first"], l
        assert l["second"]["parent"] == "first" and l["second"]["description"] == "", l
        assert l["second"]["vmstate"] == 0 and l["second"]["snaptime"] > 1700000000, l
        cur = l["current"]
        assert cur["parent"] == "second" and cur["running"] == 0, cur
        assert cur["description"] == "You are here!" and cur["digest"] == config(s, 100)["digest"]
        # snapshot configs keep what the VM had then
        sc = s.data("GET", "/nodes/sv1/qemu/100/snapshot/first/config")
        assert sc["cores"] == 2 and sc["description"] == "before the upgrade", sc
        assert config(s, 100, snapshot="second")["cores"] == 4
        assert s.data("GET", "/nodes/sv1/qemu/100/snapshot/first") == [{"cmd": "rollback"},
                                                                          {"cmd": "config"}]
        # deleting the middle snapshot links the chain around it
        st = ok(run(s, "DELETE", "/qemu/100/snapshot/first"))
        assert st["type"] == "qmdelsnapshot", st
        l = snaps(s, 100)
        assert set(l) == {"second", "current"} and "parent" not in l["second"], l
        ok(run(s, "DELETE", "/qemu/100/snapshot/second"))
        l = snaps(s, 100)
        assert list(l) == ["current"] and "parent" not in l["current"], l
        assert "parent" not in config(s, 100)
        clean(s)


@case
def snapshot_lock_while_the_task_runs():
    with Sim(time_scale=0.05) as s:
        clone(s, 100, full=False)
        ok(run(s, "POST", "/qemu/100/status/start"))
        # saving 1 GiB of RAM at 10 MiB/s: ~100 PVE s (5 s) under the snapshot lock
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 10})
        upid = s.data("POST", "/nodes/sv1/qemu/100/snapshot",
                      data={"snapname": "s1", "vmstate": "1"})
        wait_for(lambda: config(s, 100).get("lock") == "snapshot", 10, what="lock: snapshot")
        # while it is locked: PVE's refusals
        expect500(s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "3"}),
                  "VM is locked (snapshot)")
        expect500(s.api("POST", "/nodes/sv1/qemu/100/template"), "VM is locked (snapshot)")
        assert snaps(s, 100)["s1"]["snapstate"] == "prepare"
        other = s.data("POST", "/nodes/sv1/qemu/100/snapshot", data={"snapname": "s2"})
        failed(s.wait_task("sv1", other), "VM is locked (snapshot)")
        assert config(s, 100).get("lock") == "snapshot"  # the first one still works
        ok(s.wait_task("sv1", upid, deadline=60))
        assert "lock" not in config(s, 100) and "snapstate" not in snaps(s, 100)["s1"]
        clean(s)


FLEET = {"nodes": [{"name": "sv1", "storages": [
    {"id": "local", "type": "dir", "content": "iso,vztmpl,backup", "total_gb": 100},
    {"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "total_gb": 1024},
    {"id": "thick", "type": "lvm", "content": "images,rootdir", "total_gb": 512}]}]}


@case
def task_errors():
    with Sim(nodes="sv1", time_scale=0.01, fleet=FLEET) as s:
        clone(s, 100)
        ok(snap(s, 100, "s1"))
        failed(snap(s, 100, "s1"), "snapshot name 's1' already used")
        failed(run(s, "DELETE", "/qemu/100/snapshot/nope"), "snapshot 'nope' does not exist")
        failed(run(s, "POST", "/qemu/100/snapshot/nope/rollback"), "snapshot 'nope' does not exist")
        failed(run(s, "DELETE", "/qemu/999/snapshot/s1"),
               "Configuration file 'nodes/sv1/qemu-server/999.conf' does not exist")
        s.ctl("POST", "/vms/100", {"conf": {"lock": "backup"}})
        failed(snap(s, 100, "s2"), "VM is locked (backup)")
        failed(run(s, "DELETE", "/qemu/100/snapshot/s1"), "VM is locked (backup)")
        failed(run(s, "POST", "/qemu/100/snapshot/s1/rollback"), "VM is locked (backup)")
        expect500(s.api("PUT", "/nodes/sv1/qemu/100/snapshot/s1/config",
                        data={"description": "x"}), "VM is locked (backup)")
        s.ctl("POST", "/vms/100", {"conf": {"lock": None}})
        # templates take no snapshots
        failed(snap(s, 8000, "tsnap"), "you can't take a snapshot if it's a template")
        # a storage without snapshots (LVM, thick)
        s.ctl("POST", "/vms/100", {"conf": {"scsi1": "thick:vm-100-disk-1,size=4G"}})
        failed(snap(s, 100, "s3"), "snapshot feature is not available")
        assert "lock" not in config(s, 100) and set(snaps(s, 100)) == {"s1", "current"}
        clean(s)


@case
def synchronous_errors_and_bad_input():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        sp = "/nodes/sv1/qemu/100/snapshot"
        expect500(s.api("POST", sp, data={"snapname": "current"}),
                  "unable to use snapshot name 'current' (reserved name)")
        expect500(s.api("POST", sp, data={"snapname": "Pending"}),
                  "unable to use snapshot name 'pending' (reserved name)")
        expect500(s.api("POST", "/nodes/sv1/qemu/999/snapshot", data={"snapname": "a1"}),
                  "Configuration file 'nodes/sv1/qemu-server/999.conf' does not exist")
        expect500(s.api("GET", "/nodes/sv1/qemu/999/snapshot"),
                  "Configuration file 'nodes/sv1/qemu-server/999.conf' does not exist")
        expect500(s.api("GET", sp + "/nope/config"), "snapshot 'nope' does not exist")
        expect500(s.api("PUT", sp + "/nope/config", data={"description": "x"}),
                  "snapshot 'nope' does not exist")
        expect500(s.api("GET", "/nodes/sv1/qemu/100/config", params={"snapshot": "nope"}),
                  "snapshot 'nope' does not exist")
        s.ctl("POST", "/vms/100", {"conf": {"amd-sev": "type=std"}})
        expect500(s.api("POST", sp, data={"snapname": "ram", "vmstate": "1"}),
                  "Cannot live-migrate, snapshot (with RAM), or hibernate a VM with: amd-sev")
        s.ctl("POST", "/vms/100", {"conf": {"amd-sev": None}})
        # the schema refuses these before any handler
        expect400(s.api("POST", sp, data={"snapname": "1abc"}),
                  {"snapname": "invalid format - invalid configuration ID '1abc'\n"})
        expect400(s.api("POST", sp, data={"snapname": "a" * 41}),
                  {"snapname": "value may only be 40 characters long"})
        expect400(s.api("POST", sp, data={"snapname": "ok", "vmstate": "maybe"}),
                  {"vmstate": "type check ('boolean') failed - got 'maybe'"})
        expect400(s.api("POST", sp, data={}), {"snapname": "property is missing and it is not optional"})
        expect400(s.api("POST", sp + "/xx/rollback", data={"start": "2"}),
                  {"start": "type check ('boolean') failed - got '2'"})
        expect400(s.api("DELETE", sp + "/xx", params={"force": "yes"}),
                  {"force": "type check ('boolean') failed - got 'yes'"})
        expect400(s.api("POST", "/nodes/sv1/qemu/100/template", data={"disk": "scsi99"}),
                  {"disk": "value 'scsi99' does not have a value in the enumeration 'ide0, ide1, "
                           "ide2, ide3, scsi0, scsi1, scsi2, scsi3, scsi4, scsi5, scsi6, scsi7, "
                           "scsi8, scsi9, scsi10, scsi11, scsi12, scsi13, scsi14, scsi15, scsi16, "
                           "scsi17, scsi18, scsi19, scsi20, scsi21, scsi22, scsi23, scsi24, "
                           "scsi25, scsi26, scsi27, scsi28, scsi29, scsi30, virtio0, virtio1, "
                           "virtio2, virtio3, virtio4, virtio5, virtio6, virtio7, virtio8, "
                           "virtio9, virtio10, virtio11, virtio12, virtio13, virtio14, virtio15, "
                           "sata0, sata1, sata2, sata3, sata4, sata5, efidisk0, tpmstate0'"})
        expect400(s.api("GET", sp + "/1bad"),
                  {"snapname": "invalid format - invalid configuration ID '1bad'\n"})
        expect400(s.api("PUT", sp + "/xx/config", data={"descr": "x"}),
                  {"descr": "property is not defined in schema and the schema does not allow "
                            "additional properties"})
        expect400(s.api("GET", sp + "/xx/config", params={"full": "1"}),
                  {"full": "property is not defined in schema and the schema does not allow "
                           "additional properties"})
        expect400(s.api("GET", "/nodes/sv1/qemu/100/snapshot", params={"vmstate": "1"}),
                  {"vmstate": "property is not defined in schema and the schema does not allow "
                              "additional properties"})
        rej = s.ctl("GET", "/rejections")
        assert len(rej) == 11, rej
        # PUT without description does nothing, even for a missing snapshot
        assert s.data("PUT", sp + "/nope/config") is None


@case
def ram_state_storage_and_rollback():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        ok(run(s, "POST", "/qemu/100/status/start"))

        def used():
            n = [n for n in s.state()["nodes"] if n["name"] == "sv1"][0]
            return [st for st in n["storages"] if st["id"] == "local-lvm"][0]["used"]
        before = used()
        st = ok(snap(s, 100, "live", vmstate="1"))
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert "saving VM state and RAM using storage 'local-lvm'" in log, log
        assert used() - before == (2 * 2048 + 500) * MiB, (used(), before)
        sc = s.data("GET", "/nodes/sv1/qemu/100/snapshot/live/config")
        assert sc["vmstate"] == "local-lvm:vm-100-state-live" and "runningmachine" in sc, sc
        assert snaps(s, 100)["live"]["vmstate"] == 1
        ok(snap(s, 100, "disk-only"))
        assert snaps(s, 100)["disk-only"]["vmstate"] == 0
        # change the VM, then roll back
        assert s.data("PUT", "/nodes/sv1/qemu/100/config", data={"description": "kept", "onboot": "1"}) is None
        st = ok(run(s, "POST", "/qemu/100/snapshot/disk-only/rollback"))
        assert st["type"] == "qmrollback", st
        c = config(s, 100)
        assert "onboot" not in c and c["description"] == "kept" and c["parent"] == "disk-only", c
        assert s.vm(100)["power"] == "stopped"  # stopped for the rollback, no RAM to resume
        ok(run(s, "POST", "/qemu/100/snapshot/live/rollback"))
        assert s.vm(100)["power"] == "running" and config(s, 100)["parent"] == "live"
        assert "runningmachine" not in config(s, 100)
        ok(run(s, "POST", "/qemu/100/snapshot/disk-only/rollback", data={"start": "1"}))
        assert s.vm(100)["power"] == "running"
        ok(run(s, "DELETE", "/qemu/100/snapshot/live"))
        assert used() == before, (used(), before)
        clean(s)


@case
def template_conversion():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        ok(run(s, "POST", "/qemu/100/status/start"))
        expect500(s.api("POST", "/nodes/sv1/qemu/100/template"),
                  "you can't convert a VM to template if VM is running")
        ok(run(s, "POST", "/qemu/100/status/stop"))
        ok(snap(s, 100, "s1"))
        expect500(s.api("POST", "/nodes/sv1/qemu/100/template"),
                  "unable to create template, because VM contains snapshots")
        ok(run(s, "DELETE", "/qemu/100/snapshot/s1"))
        expect500(s.api("POST", "/nodes/sv1/qemu/8000/template"),
                  "you can't convert a template to a template")
        expect500(s.api("POST", "/nodes/sv1/qemu/999/template"),
                  "Configuration file 'nodes/sv1/qemu-server/999.conf' does not exist")
        st = ok(run(s, "POST", "/qemu/100/template"))
        assert st["type"] == "qmtemplate", st
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert '  Renamed "vm-100-disk-0" to "base-100-disk-0" in volume group "pve"' in log, log
        c = config(s, 100)
        assert c["template"] == 1 and c["scsi0"].startswith("local-lvm:base-100-disk-0,"), c
        assert c["ide2"].startswith("local-lvm:vm-100-cloudinit,"), c  # CD-ROMs stay
        entry = [v for v in s.data("GET", "/nodes/sv1/qemu") if v["vmid"] == 100][0]
        assert entry["template"] == 1, entry
        failed(run(s, "POST", "/qemu/100/status/start"), "you can't start a vm if it's a template")
        # the new template gives linked clones
        ok(run(s, "POST", "/qemu/100/clone", data={"newid": "101"}))
        assert config(s, 101)["scsi0"].startswith("local-lvm:base-100-disk-0/vm-101-disk-0,")
        # a linked clone turned template loses its base on lvmthin
        clone(s, 102, src=8000, full=False)
        ok(run(s, "POST", "/qemu/102/template"))
        assert config(s, 102)["scsi0"].startswith("local-lvm:base-102-disk-0,"), config(s, 102)
        clean(s)


@case
def injected_task_failures_leave_no_half_snapshot():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        rule = {"method": "POST", "path": "^/nodes/sv1/qemu/100/snapshot$", "kind": "task_error",
                "message": "lvcreate 'pve/snap_vm-100-disk-0_s1' error: out of space", "count": 1}
        s.ctl("POST", "/faults", rule)
        st = failed(snap(s, 100, "s1"), rule["message"])
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert "snapshot create failed: starting cleanup" in log, log
        assert list(snaps(s, 100)) == ["current"] and "lock" not in config(s, 100)
        ok(snap(s, 100, "s1"))
        rule.update(path="^/nodes/sv1/qemu/100/snapshot/s1$", method="DELETE", message="boom")
        s.ctl("POST", "/faults", rule)
        failed(run(s, "DELETE", "/qemu/100/snapshot/s1"), "boom")
        assert "snapstate" not in snaps(s, 100)["s1"] and "lock" not in config(s, 100)
        rule.update(path="^/nodes/sv1/qemu/100/template$", method="POST", message="rename failed")
        s.ctl("POST", "/faults", rule)
        ok(run(s, "DELETE", "/qemu/100/snapshot/s1"))
        failed(run(s, "POST", "/qemu/100/template"), "rename failed")
        c = config(s, 100)
        assert "template" not in c and c["scsi0"].startswith("local-lvm:vm-100-disk-0,"), c
        clean(s)


@case
def clones_of_a_snapshot():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        assert s.data("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "3"}) is None
        ok(snap(s, 100, "gold", description="golden image"))
        assert s.data("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "8"}) is None
        cl = "/nodes/sv1/qemu/100/clone"
        expect500(s.api("POST", cl, data={"newid": "101", "snapname": "nope"}),
                  "snapshot 'nope' does not exist")
        expect500(s.api("POST", cl, data={"newid": "101", "full": "0"}),
                  "Linked clone feature is not supported for 'local-lvm:vm-100-disk-0' (scsi0)")
        # a full clone of the snapshot has the snapshot's config, no snapshot keys
        ok(run(s, "POST", "/qemu/100/clone", data={"newid": "101", "snapname": "gold"}))
        c = config(s, 101)
        assert c["cores"] == 3 and c["scsi0"].startswith("local-lvm:vm-101-disk-0,"), c
        assert "parent" not in c and "snaptime" not in c, c
        # thin snapshots give linked clones too
        ok(run(s, "POST", "/qemu/100/clone", data={"newid": "102", "snapname": "gold", "full": "0"}))
        c = config(s, 102)
        assert c["cores"] == 3 and c["scsi0"].startswith("local-lvm:vm-102-disk-0,"), c
        assert list(snaps(s, 101)) == ["current"]
        clean(s)


@case
def snapshots_survive_a_restart():
    d = tempfile.mkdtemp()
    with Sim(time_scale=0.01, state_dir=d) as s:
        clone(s, 100)
        ok(snap(s, 100, "aa", description="one"))
        ok(snap(s, 100, "bb"))
        before = snaps(s, 100)
        digest = config(s, 100)["digest"]

        def saved():  # the engine writes the state at most every 0.5 s
            try:
                with open(d + "/state.json") as f:
                    vms = json.load(f)["vms"]
            except (OSError, ValueError):
                return False
            v = [v for v in vms if v["vmid"] == 100]
            return v and set(v[0].get("snapshots", {})) == {"aa", "bb"} and \
                "lock" not in v[0]["conf"] and v[0]["conf"].get("parent") == "bb"
        wait_for(saved, 10, what="the state with both snapshots saved")
    with Sim(time_scale=0.01, state_dir=d) as s:
        after = snaps(s, 100)
        assert after == before, (after, before)
        assert config(s, 100)["digest"] == digest
        ok(run(s, "POST", "/qemu/100/snapshot/aa/rollback"))
        assert config(s, 100)["parent"] == "aa"


finish()
