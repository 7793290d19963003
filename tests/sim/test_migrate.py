"""Migration inside a pvesim cluster as qemu-server does it: GET .../migrate
preconditions, offline and online (qmigrate) migration with local disks copied
over the link in a time that follows their size, target storages
(targetstorage), the VM's node changing at the end, the hamigrate path of
HA-managed VMs, and PVE's refusals (running without online, attached local
disks without with-local-disks, linked clones, snapshots, local devices,
missing storages, target offline, standalone hosts, bad input)."""
import re
import time

from lib.cases import case, finish
from lib.sim import expect400, expect500, Sim, task_ok as ok
from lib.wait import wait_for

GiB = 1024 ** 3


def run(s, method, path, node="sv1", deadline=30, **kw):
    return s.wait_task(node, s.data(method, "/nodes/%s%s" % (node, path), **kw), deadline=deadline)


def log(s, st, node="sv1"):
    return [l["t"] for l in s.data("GET", "/nodes/%s/tasks/%s/log" % (node, st["upid"]))]


def has_line(lines, text):
    """Migration log lines carry a local timestamp: 'YYYY-MM-DD HH:MM:SS <text>'."""
    return any(l[20:] == text for l in lines)


def clone(s, newid, src=8000, node="sv1", full=True):
    return ok(run(s, "POST", "/qemu/%d/clone" % src, node,
                  data={"newid": str(newid), "full": "1" if full else "0"}))


def migrate(s, vmid, node="sv1", **data):
    return s.api("POST", "/nodes/%s/qemu/%d/migrate" % (node, vmid), data=data)


def used(s, node, storage="local-lvm"):
    n = [n for n in s.state()["nodes"] if n["name"] == node][0]
    return [st for st in n["storages"] if st["id"] == storage][0]["used"]


def aborted(s, st, reason):
    assert st["exitstatus"] == "migration aborted", st
    lines = log(s, st)
    assert any(" ERROR: migration aborted (duration " in l and l.endswith("): " + reason)
               for l in lines), (reason, lines)
    return lines


@case
def offline_migration_moves_the_vm_and_its_disks():
    with Sim(time_scale=0.01) as s:
        for n in ("sv1", "sv2"):  # 10 GiB + 4 MiB at 100 MiB/s: ~103 PVE s (1 s)
            s.ctl("POST", "/nodes/" + n, {"bandwidth_mb": 100})
        clone(s, 100)
        pre = s.data("GET", "/nodes/sv1/qemu/100/migrate")
        assert pre["running"] == 0 and pre["allowed_nodes"] == ["sv2", "sv3", "sv4", "sv5"], pre
        assert pre["not_allowed_nodes"] == {} and pre["local_resources"] == [], pre
        vols = {d["volid"]: d for d in pre["local_disks"]}
        assert vols["local-lvm:vm-100-disk-0"]["size"] == 10 * GiB, vols
        assert vols["local-lvm:vm-100-cloudinit"]["cdrom"] == 1, vols
        u1, u2 = used(s, "sv1"), used(s, "sv2")
        t0 = time.monotonic()
        upid = s.data("POST", "/nodes/sv1/qemu/100/migrate", data={"target": "sv2"})
        assert ":qmigrate:100:root@pam!ci:" in upid, upid
        wait_for(lambda: s.data("GET", "/nodes/sv1/qemu/100/config").get("lock") == "migrate",
                 10, what="lock: migrate")
        st = ok(s.wait_task("sv1", upid))
        elapsed = time.monotonic() - t0
        assert elapsed >= (10 * GiB / (100 * 1024 * 1024)) * 0.01, elapsed  # never faster than the link
        lines = log(s, st)
        for text in ("starting migration of VM 100 to node 'sv2' (10.10.10.2)",
                     "found local disk 'local-lvm:vm-100-disk-0' (attached)",
                     "found generated disk 'local-lvm:vm-100-cloudinit' (in current VM config)",
                     "copying local disk images"):
            assert has_line(lines, text), (text, lines)
        m = re.search(r" migration finished successfully \(duration (\d\d):(\d\d):(\d\d)\)$", lines[-2])
        assert m, lines
        took = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
        # 10 GiB over 100 MiB/s, plus the set-up; the end is stamped when
        # pvesim's engine runs: up to 2 real seconds late on a loaded machine
        assert 102 <= took <= 300, (took, lines)
        assert lines[-1] == "TASK OK", lines
        assert s.vm(100)["node"] == "sv2" and s.vm(100)["power"] == "stopped"
        expect500(s.api("GET", "/nodes/sv1/qemu/100/config"),
                  "Configuration file 'nodes/sv1/qemu-server/100.conf' does not exist")
        c = s.data("GET", "/nodes/sv2/qemu/100/config")
        assert "lock" not in c and c["scsi0"].startswith("local-lvm:vm-100-disk-0,"), c
        moved = 10 * GiB + 4 * 1024 * 1024
        assert used(s, "sv1") == u1 - moved and used(s, "sv2") == u2 + moved
        res = [r for r in s.data("GET", "/cluster/resources", params={"type": "vm"})
               if r["vmid"] == 100]
        assert res[0]["node"] == "sv2", res
        # time follows the size: the 40 GiB Windows template takes about four times as long
        clone(s, 101, src=8003)
        t0 = time.monotonic()
        ok(run(s, "POST", "/qemu/101/migrate", data={"target": "sv2"}, deadline=60))
        assert time.monotonic() - t0 >= (40 * GiB / (100 * 1024 * 1024)) * 0.01
        assert s.ctl("GET", "/rejections") == []


@case
def online_migration_needs_online_and_local_disks():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        ok(run(s, "POST", "/qemu/100/status/start"))
        assert s.data("GET", "/nodes/sv1/qemu/100/migrate")["running"] == 1
        expect500(migrate(s, 100, target="sv2"), "can't migrate running VM without --online")
        st = run(s, "POST", "/qemu/100/migrate", data={"target": "sv2", "online": "1"})
        lines = aborted(s, st, "Problem found while scanning volumes - can't migrate VM - check log")
        assert has_line(lines, "can't migrate local disk 'local-lvm:vm-100-disk-0': can't live "
                               "migrate attached local disks without with-local-disks option"), lines
        assert has_line(lines, "aborting phase 1 - cleanup resources"), lines
        assert s.vm(100)["node"] == "sv1" and "lock" not in s.vm(100)["conf"]
        st = ok(run(s, "POST", "/qemu/100/migrate",
                    data={"target": "sv3", "online": "1", "with-local-disks": "1"}))
        assert has_line(log(s, st), "starting storage migration"), log(s, st)
        assert has_line(log(s, st), "migration status: completed"), log(s, st)
        v = s.vm(100)
        assert v["node"] == "sv3" and v["power"] == "running", v
        st = s.data("GET", "/nodes/sv3/qemu/100/status/current")
        assert st["status"] == "running", st
        assert s.ctl("GET", "/rejections") == []


FLEET = {"nodes": [
    {"name": "sv1"}, {"name": "sv2", "storages": [
        {"id": "local", "type": "dir", "content": "iso,vztmpl,backup", "total_gb": 100},
        {"id": "fast", "type": "lvmthin", "content": "images,rootdir", "total_gb": 2048}]},
    {"name": "sv3"}]}


@case
def target_storages():
    with Sim(nodes="sv1,sv2,sv3", time_scale=0.01, fleet=FLEET) as s:
        clone(s, 100)
        pre = s.data("GET", "/nodes/sv1/qemu/100/migrate")
        assert pre["allowed_nodes"] == ["sv3"], pre
        assert pre["not_allowed_nodes"] == {"sv2": {"unavailable_storages": ["local-lvm"]}}, pre
        expect500(migrate(s, 100, target="sv2"), "storage 'local-lvm' is not available on node 'sv2'")
        expect500(migrate(s, 100, target="sv2", targetstorage="nope"), "storage 'nope' does not exist")
        expect500(migrate(s, 100, target="sv2", targetstorage="local"),
                  "storage 'local' does not support vm images")
        expect500(migrate(s, 100, target="sv2", targetstorage="local-lvm:local-lvm"),
                  "storage 'local-lvm' is not available on node 'sv2'")
        expect400(migrate(s, 100, target="sv2", targetstorage="fast,1"),
                  {"targetstorage": "failed to parse storage map: identity mapping cannot be "
                                    "combined with other mappings"})
        fast0 = used(s, "sv2", "fast")
        st = ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2", "targetstorage": "fast"}))
        assert has_line(log(s, st), "volume 'local-lvm:vm-100-disk-0' is 'fast:vm-100-disk-0' on "
                                    "the target"), log(s, st)
        c = s.data("GET", "/nodes/sv2/qemu/100/config")
        assert c["scsi0"].startswith("fast:vm-100-disk-0,") and c["ide2"].startswith("fast:vm-100-cloudinit,"), c
        assert used(s, "sv2", "fast") - fast0 == 10 * GiB + 4 * 1024 * 1024
        assert s.ctl("GET", "/rejections") == []


SHARED = {"nodes": [{"name": n, "storages": [
    {"id": "local-lvm", "type": "lvmthin", "content": "images,rootdir", "total_gb": 200},
    {"id": "ceph", "type": "rbd", "content": "images", "total_gb": 500, "shared": True}]}
    for n in ("sv1", "sv2", "sv3")]}


@case
def shared_volumes_stay_local_ones_move():
    """A VM with a disk on a shared pool and one on local storage, as
    QemuMigrate.pm: the shared volume is neither scanned, copied nor
    mapped by targetstorage (it stays, the pool's use unchanged); the local
    one is. A running VM whose disks are all shared migrates online without
    with-local-disks."""
    with Sim(nodes="sv1,sv2,sv3", time_scale=0.01, fleet=SHARED) as s:
        clone(s, 100)  # the template's disks: local-lvm (the first storage for images)
        r = s.api("PUT", "/nodes/sv1/qemu/100/config", data={"scsi1": "ceph:20"})
        assert r.status_code == 200, r.text
        pre = s.data("GET", "/nodes/sv1/qemu/100/migrate")
        assert sorted(d["volid"] for d in pre["local_disks"]) == \
            ["local-lvm:vm-100-cloudinit", "local-lvm:vm-100-disk-0"], pre
        pool0, l2 = used(s, "sv1", "ceph"), used(s, "sv2")
        st = ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2", "targetstorage": "ceph"}))
        lines = log(s, st)
        assert has_line(lines, "found local disk 'local-lvm:vm-100-disk-0' (attached)"), lines
        assert not any("vm-100-disk-1" in l for l in lines), lines  # the shared one: not scanned
        c = s.data("GET", "/nodes/sv2/qemu/100/config")
        assert c["scsi0"].startswith("ceph:vm-100-disk-0,"), c  # mapped onto the pool
        assert c["scsi1"].startswith("ceph:vm-100-disk-1,size=20G"), c  # stayed
        assert used(s, "sv2", "ceph") == pool0 + 10 * GiB + 4 * 1024 * 1024  # only the copied ones
        assert used(s, "sv2") == l2
        # now every disk is on the pool: online without with-local-disks
        ok(run(s, "POST", "/qemu/100/status/start", node="sv2"))
        st = ok(run(s, "POST", "/qemu/100/migrate", node="sv2",
                    data={"target": "sv3", "online": "1"}))
        assert not any("found local disk" in l for l in log(s, st, "sv2")), log(s, st, "sv2")
        v = s.vm(100)
        assert v["node"] == "sv3" and v["power"] == "running", v
        assert used(s, "sv3", "ceph") == pool0 + 10 * GiB + 4 * 1024 * 1024
        assert s.ctl("GET", "/rejections") == []


@case
def refusals():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        expect400(migrate(s, 100, target="sv1"), {"target": "target is local node."})
        expect500(migrate(s, 100, target="sv9"), "no such cluster node 'sv9'")
        expect500(migrate(s, 999, target="sv2"),
                  "Configuration file 'nodes/sv1/qemu-server/999.conf' does not exist")
        expect400(migrate(s, 100, target="sv2", force="1"), {"force": "Only root may use this option."})
        expect400(migrate(s, 100, target="sv2", migration_type="insecure"),
                  {"migration_type": "Only root may use this option."})
        s.ctl("POST", "/vms/100", {"conf": {"lock": "backup"}})
        expect500(migrate(s, 100, target="sv2"), "VM is locked (backup)")
        expect500(s.api("GET", "/nodes/sv1/qemu/100/migrate"), "VM is locked (backup)")
        s.ctl("POST", "/vms/100", {"conf": {"lock": None, "usb0": "host=1234:5678"}})
        assert s.data("GET", "/nodes/sv1/qemu/100/migrate")["local_resources"] == ["usb0"]
        aborted(s, run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"}),
                "can't migrate VM which uses local devices: usb0")
        s.ctl("POST", "/vms/100", {"conf": {"usb0": None}})
        # snapshots on lvmthin cannot move
        ok(run(s, "POST", "/qemu/100/snapshot", data={"snapname": "s1"}))
        lines = aborted(s, run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"}),
                        "Problem found while scanning volumes - can't migrate VM - check log")
        assert has_line(lines, "can't migrate local disk 'local-lvm:vm-100-disk-0': non-migratable "
                               "snapshot exists"), lines
        # a linked clone on local storage cannot leave its base
        clone(s, 101, full=False)
        aborted(s, run(s, "POST", "/qemu/101/migrate", data={"target": "sv2"}),
                "Problem found while scanning volumes - can't migrate "
                "'local-lvm:base-8000-disk-0/vm-101-disk-0' as it's a clone of 'base-8000-disk-0' "
                "at /usr/share/perl5/PVE/QemuMigrate.pm line 586.")
        # ... nor a template with linked clones
        lines = aborted(s, run(s, "POST", "/qemu/8000/migrate", data={"target": "sv2"}),
                        "Problem found while scanning volumes - can't migrate VM - check log")
        assert has_line(lines, "can't migrate local disk 'local-lvm:base-8000-disk-0': referenced "
                               "by linked clone(s)"), lines
        # the target is down: ssh cannot reach it
        s.ctl("POST", "/nodes/sv3", {"state": "offline"})
        s.ctl("POST", "/vms/100", {"conf": {"parent": None}})
        clone(s, 102)
        st = run(s, "POST", "/qemu/102/migrate", data={"target": "sv3"})
        aborted(s, st, "Can't connect to destination address using public key")
        assert s.vm(102)["node"] == "sv1" and "lock" not in s.vm(102)["conf"]
        # bad input
        expect400(migrate(s, 100, target="sv2", online="yes"),
                  {"online": "type check ('boolean') failed - got 'yes'"})
        expect400(migrate(s, 100, target="sv2", migration_type="fast"),
                  {"migration_type": "value 'fast' does not have a value in the enumeration "
                                     "'secure, insecure'"})
        expect400(migrate(s, 100, target="sv2", bwlimit="-1"),
                  {"bwlimit": "value must have a minimum value of 0"})
        expect400(migrate(s, 100), {"target": "property is missing and it is not optional"})
        r = s.api("GET", "/nodes/sv1/qemu/100/migrate", params={"target": "bad node"})
        assert r.status_code == 400 and list(r.json()["errors"]) == ["target"], r.text
        assert len(s.ctl("GET", "/rejections")) == 5


@case
def a_json_number_for_the_target():
    """{"target": 123} in a JSON body: the schema takes a number for a
    string, as Perl does, and so does the handler and the task it starts
    (the old pvesim read the target as NULL and crashed)."""
    with Sim(nodes="sv1,123", time_scale=0.01) as s:
        clone(s, 100)
        d = s.login()
        expect500(s.api("POST", "/nodes/sv1/qemu/100/migrate", json_body={"target": 124}, auth=d),
                  "no such cluster node '124'")
        upid = s.data("POST", "/nodes/sv1/qemu/100/migrate", json_body={"target": 123}, auth=d)
        st = ok(s.wait_task("sv1", upid))
        assert has_line(log(s, st), "starting migration of VM 100 to node '123' (10.10.10.2)"), log(s, st)
        assert s.vm(100)["node"] == "123", s.vm(100)
        assert s.ctl("GET", "/rejections") == []


@case
def injected_failure_keeps_the_vm_on_its_node():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        s.ctl("POST", "/faults", {"method": "POST", "path": "^/nodes/sv1/qemu/100/migrate$",
                                  "kind": "task_error", "count": 1,
                                  "message": "migration aborted"})
        st = run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"})
        assert st["exitstatus"] == "migration aborted", st
        assert has_line(log(s, st), "aborting phase 1 - cleanup resources"), log(s, st)
        v = s.vm(100)
        assert v["node"] == "sv1" and "lock" not in v["conf"] and v["flock_exclusive"] == 0, v
        ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"}))
        assert s.vm(100)["node"] == "sv2"


@case
def ha_managed_vms_go_through_the_ha_manager():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        ok(run(s, "POST", "/qemu/100/status/start"))
        s.ctl("POST", "/vms/100", {"ha": True})
        st = ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2", "online": "1"}))
        assert st["type"] == "hamigrate", st
        assert has_line(log(s, st), "Requesting HA migration for VM 100 to node sv2") or \
            any(l.endswith("Requesting HA migration for VM 100 to node sv2") for l in log(s, st))

        def lrm_task():
            return [t for t in s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "qmigrate"})
                    if t["id"] == "100"]
        t = wait_for(lrm_task, 10, what="the LRM's qmigrate")[0]
        assert t["user"] == "root@pam", t
        st = s.wait_task("sv1", t["upid"])
        # the LRM migrates online without with-local-disks: local disks stop it
        assert st["exitstatus"] == "migration aborted", st
        # a stopped HA VM moves offline; a request to an offline node is ignored
        s.ctl("POST", "/vms/100", {"power": "stopped", "ha_state": "stopped", "ha": True})
        s.ctl("POST", "/nodes/sv3", {"state": "offline"})
        ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv3"}))
        assert len(lrm_task()) == 1  # no new qmigrate
        ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"}))
        t = wait_for(lambda: len(lrm_task()) == 2 and lrm_task()[0], 10, what="second qmigrate")
        ok(s.wait_task("sv1", t["upid"]))
        assert s.vm(100)["node"] == "sv2"


@case
def ha_migration_of_a_frozen_or_failed_resource():
    """`ha-manager migrate` of a resource in HA state error is refused (the
    hamigrate task fails); one frozen is queued: the task ends OK, no
    qmigrate runs until the freeze is lifted, then the CRM carries it out."""
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "error"})
        st = run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"})
        assert st["type"] == "hamigrate", st
        assert st["exitstatus"] == "command 'ha-manager migrate vm:100 sv2' failed: exit code 255", st
        assert any(l.endswith("service 'vm:100' in error state, must be disabled and fixed first")
                   for l in log(s, st)), log(s, st)

        def lrm_task():
            return [t for t in s.data("GET", "/nodes/sv1/tasks", params={"typefilter": "qmigrate"})
                    if t["id"] == "100"]
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "freeze"})
        ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2"}))
        assert s.vm(100)["ha_request"] == "migrate sv2", s.vm(100)
        # 50 PVE seconds: the LRM's qmigrate follows a hamigrate within 1.3
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            assert lrm_task() == [] and s.vm(100)["node"] == "sv1"
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "started"})
        t = wait_for(lrm_task, 10, what="the kept migration's qmigrate")[0]
        assert t["user"] == "root@pam", t
        ok(s.wait_task("sv1", t["upid"]))
        assert s.vm(100)["node"] == "sv2" and "ha_request" not in s.vm(100), s.vm(100)


@case
def pve8_shapes():
    # PVE 8.4's schema: no has-dbus-vmstate; snapshots and migration otherwise alike
    with Sim(time_scale=0.01, pve_version=8) as s:
        clone(s, 100)
        pre = s.data("GET", "/nodes/sv1/qemu/100/migrate")
        assert "has-dbus-vmstate" not in pre and pre["running"] == 0, pre
        ok(run(s, "POST", "/qemu/100/snapshot", data={"snapname": "s1", "vmstate": "1"}))
        names = [x["name"] for x in s.data("GET", "/nodes/sv1/qemu/100/snapshot")]
        assert names == ["s1", "current"], names
        ok(run(s, "DELETE", "/qemu/100/snapshot/s1"))
        # bwlimit (KiB/s) caps the link: 10 GiB at 100 MiB/s instead of 500
        st = ok(run(s, "POST", "/qemu/100/migrate", data={"target": "sv2", "bwlimit": "102400"}))
        m = re.search(r"\(duration (\d\d):(\d\d):(\d\d)\)$", log(s, st)[-2])
        assert m and int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) >= 102, log(s, st)
        assert s.vm(100)["node"] == "sv2"


@case
def standalone_hosts_have_no_other_node():
    with Sim(standalone=True, time_scale=0.01) as s:
        p1 = s.ports["sv1"]
        st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/8000/clone", port=p1,
                                       data={"newid": "100"}), port=p1)
        ok(st)
        pre = s.data("GET", "/nodes/sv1/qemu/100/migrate", port=p1)
        assert pre["allowed_nodes"] == [] and pre["not_allowed_nodes"] == {}, pre
        expect500(s.api("POST", "/nodes/sv1/qemu/100/migrate", port=p1, data={"target": "sv2"}),
                  "no such cluster node 'sv2'")


finish()
