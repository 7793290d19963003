"""Disk reassignment in pvesim as qemu-server makes it (move_disk with
target-vmid, API2/Qemu.pm's disk_reassignfn): the qmmove task and its UPID id
"<vmid>-<disk>><target>-<disk>", the volume renamed vm-<target>-disk-N and
taken out of the source's boot order, qemu-server's refusals (running
source, target slot taken, same VMID, storage and target together, a disk of
a snapshot, a locked VM, a template, VMs on two nodes), a detached disk kept
as unusedN and a re-attached one leaving it (with its size), a volume that
does not exist refused ("volume ... does not exist", create_disks), a
drive whose size= was dropped behind PVE's back still listed at its size
by its storage, the volume origins (which template OS a disk came from)
following the volume, and the qmmove task on the node's task list under
its type, not under the source VM's ID."""
from lib.cases import case, finish
from lib.sim import expect400, expect500, Sim, task_ok as ok

sim = Sim(time_scale=0.01)


def run(method, path, node="sv1", **kw):
    return sim.wait_task(node, sim.data(method, "/nodes/%s%s" % (node, path), **kw))


def clone(newid, src=8000, node="sv1"):
    return ok(run("POST", "/qemu/%d/clone" % src, node, data={"newid": str(newid), "full": "1"}))


def conf(vmid, node="sv1"):
    return sim.data("GET", "/nodes/%s/qemu/%d/config" % (node, vmid))


def move(vmid, **data):
    return sim.api("POST", "/nodes/sv1/qemu/%d/move_disk" % vmid, data=data)


def lvm_used(node="sv1"):
    return [x["used"] for n in sim.state()["nodes"] if n["name"] == node
            for x in n["storages"] if x["id"] == "local-lvm"][0]


def origin(vmid):
    return sim.vm(vmid).get("origin") or {}


@case
def reassign_into_an_empty_slot():
    clone(100)
    clone(101, src=8001)  # pvesim's second template: debian
    assert origin(100) == {"vm-100-disk-0": "ubuntu"} and origin(101) == {"vm-101-disk-0": "debian"}
    # detach: the volume stays as unused0 (taking its room), and leaves the boot order
    used = lvm_used()
    assert sim.data("PUT", "/nodes/sv1/qemu/100/config", data={"delete": "scsi0"}) is None
    c = conf(100)
    assert "scsi0" not in c and c["unused0"] == "local-lvm:vm-100-disk-0", c
    assert lvm_used() == used, (lvm_used(), used)
    assert "scsi0" not in c.get("boot", ""), c
    r = move(101, disk="scsi0", **{"target-vmid": "100", "target-disk": "scsi0"})
    assert r.status_code == 200, r.text
    upid = r.json()["data"]
    assert ":qmmove:101-scsi0>100-scsi0:" in upid, upid
    st = ok(sim.wait_task("sv1", upid))
    log = [l["t"] for l in sim.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
    assert "reassign disk 'scsi0' from VM '101' as 'scsi0' to VM '100'" in log, log
    assert "removing disk 'scsi0' from VM '101' config" in log, log
    # the node's task list: PVE's vmid filter compares the whole ID (Tasks.pm
    # node_tasks), so the qmmove is listed by its type, not as VM 101's
    mine = sim.data("GET", "/nodes/sv1/tasks", params={"typefilter": "qmmove"})
    assert [t["id"] for t in mine if t["upid"] == upid] == ["101-scsi0>100-scsi0"], mine
    vm101 = sim.data("GET", "/nodes/sv1/tasks", params={"vmid": "101"})
    assert upid not in [t["upid"] for t in vm101], vm101
    c = conf(100)
    assert c["scsi0"].startswith("local-lvm:vm-100-disk-1,"), c  # disk-0 is unused0's
    assert "scsi0" not in conf(101)
    assert origin(100) == {"vm-100-disk-0": "ubuntu", "vm-100-disk-1": "debian"}, origin(100)
    assert origin(101) == {}
    # re-attaching the old volume drops its unusedN; deleting an unusedN frees it
    assert sim.data("PUT", "/nodes/sv1/qemu/100/config", data={"delete": "scsi0"}) is None
    assert conf(100)["unused1"].startswith("local-lvm:vm-100-disk-1"), conf(100)
    assert sim.data("PUT", "/nodes/sv1/qemu/100/config",
                    data={"scsi0": "local-lvm:vm-100-disk-0"}) is None
    c = conf(100)
    assert "unused0" not in c, c
    # with its size, as the storage has it (create_disks: volume_size_info)
    assert c["scsi0"] == "local-lvm:vm-100-disk-0,size=10G", c
    assert sim.data("PUT", "/nodes/sv1/qemu/100/config", data={"delete": "unused1"}) is None
    assert origin(100) == {"vm-100-disk-0": "ubuntu"}, origin(100)


@case
def qemu_servers_refusals():
    clone(102)
    expect400(move(102, disk="scsi0", **{"target-vmid": "102"}),
              {"target-vmid": "must be different than source VMID to reassign disk"})
    both = "either set 'storage' or 'target-vmid', but not both"
    expect400(move(102, disk="scsi0", storage="local-lvm", **{"target-vmid": "100"}),
              {"target-vmid": both, "storage": both})
    none = "both 'storage' and 'target-vmid' missing, either needs to be set"
    expect400(move(102, disk="scsi0"), {"target-vmid": none, "storage": none})
    expect500(move(102, disk="scsi0", **{"target-vmid": "100"}),
              "Target disk key 'scsi0' is already in use for VM '100'")
    expect500(move(102, disk="scsi5", **{"target-vmid": "100", "target-disk": "scsi1"}),
              "Disk 'scsi5' for VM '102' does not exist")
    expect500(move(102, disk="scsi0", **{"target-vmid": "999"}), "could not find target VM 999")
    expect500(move(102, disk="ide2", **{"target-vmid": "100", "target-disk": "ide3"}),
              "CD drive contents can't be moved to another VM")
    expect500(move(102, disk="scsi0", **{"target-vmid": "8000", "target-disk": "scsi1"}),
              "Can't move disks from or to template VMs")
    ok(run("POST", "/qemu/102/status/start"))
    expect500(move(102, disk="scsi0", **{"target-vmid": "100", "target-disk": "scsi1"}),
              "Cannot move disk to another VM while the source VM is running - detach first")
    ok(run("POST", "/qemu/102/status/stop"))
    ok(run("POST", "/qemu/102/snapshot", data={"snapname": "s1"}))
    expect500(move(102, disk="scsi0", **{"target-vmid": "100", "target-disk": "scsi1"}),
              "Can't move disk used by a snapshot to another VM")
    clone(200, src=8010, node="sv2")
    expect500(move(100, disk="scsi0", **{"target-vmid": "200", "target-disk": "scsi1"}),
              "Both VMs need to be on the same node (sv1 != sv2)")


@case
def a_task_fault_changes_nothing():
    clone(103)
    sim.ctl("POST", "/faults", {"method": "POST", "path": "/move_disk$", "kind": "task_error",
                                "message": "injected", "count": 1})
    before = (conf(103)["scsi0"], conf(100).get("scsi1"))
    r = move(103, disk="scsi0", **{"target-vmid": "100", "target-disk": "scsi1"})
    assert r.status_code == 200, r.text
    st = sim.wait_task("sv1", r.json()["data"])
    assert st["exitstatus"] == "injected", st
    assert (conf(103)["scsi0"], conf(100).get("scsi1")) == before
    sim.ctl("DELETE", "/faults")


@case
def attaching_a_volume_that_does_not_exist_is_refused():
    clone(104)
    c = conf(104)
    # PUT (synchronous): 500 with create_disks' text, nothing of the call written
    expect500(sim.api("PUT", "/nodes/sv1/qemu/104/config",
                      data={"scsi1": "local-lvm:vm-104-disk-7,discard=on", "cores": "3"}),
              "volume local-lvm:vm-104-disk-7 does not exist")
    assert conf(104) == c, conf(104)
    # POST (a qmconfig task): the task fails with it
    upid = sim.data("POST", "/nodes/sv1/qemu/104/config",
                    data={"scsi1": "local-lvm:vm-104-disk-7"})
    st = sim.wait_task("sv1", upid)
    assert st["exitstatus"] == "volume local-lvm:vm-104-disk-7 does not exist", st
    assert conf(104) == c, conf(104)
    # another node's local volume is not there either (sv2's VM 200 has one)
    expect500(sim.api("PUT", "/nodes/sv1/qemu/104/config",
                      data={"scsi1": "local-lvm:vm-200-disk-0"}),
              "volume local-lvm:vm-200-disk-0 does not exist")
    # a detached volume is, with the drive's options and its size
    assert sim.data("PUT", "/nodes/sv1/qemu/104/config", data={"delete": "scsi0"}) is None
    assert sim.data("PUT", "/nodes/sv1/qemu/104/config",
                    data={"scsi0": "local-lvm:vm-104-disk-0,discard=on,iothread=1,ssd=1"}) is None
    assert conf(104)["scsi0"] == "local-lvm:vm-104-disk-0,discard=on,iothread=1,ssd=1,size=10G", \
        conf(104)
    # a new volume ("<storage>:<GiB>") and a new cloud-init drive need none
    assert sim.data("PUT", "/nodes/sv1/qemu/104/config", data={"scsi2": "local-lvm:1"}) is None
    assert conf(104)["scsi2"].startswith("local-lvm:vm-104-disk-1,size=1G"), conf(104)


@case
def a_drive_without_size_keeps_its_volumes_size():
    clone(105)
    used = lvm_used()
    drive = conf(105)["scsi0"]
    assert drive.endswith(",size=10G"), drive
    bare = drive.split(",")[0]
    # the config file edited without size=: the volume on the storage stays 10 GiB
    sim.ctl("POST", "/vms/105", {"conf": {"scsi0": bare + ",discard=on"}})
    assert conf(105)["scsi0"] == bare + ",discard=on"
    listed = {e["volid"]: e["size"] for e in
              sim.data("GET", "/nodes/sv1/storage/local-lvm/content", params={"vmid": "105"})}
    assert listed[bare] == 10 * 1024 ** 3, listed
    assert lvm_used() == used, (lvm_used(), used)
    # a resize reads the volume's size, not the drive's (none)
    ok(run("PUT", "/qemu/105/resize", data={"disk": "scsi0", "size": "+2G"}))
    assert conf(105)["scsi0"] == bare + ",discard=on,size=12G", conf(105)


try:
    finish()
finally:
    sim.stop()
