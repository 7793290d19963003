"""Lock and power-state rules of pvesim (pve-api.md §6 power actions, §8 locks):
config locks (clone, others), file locks and their timeouts, shared source locks
of clones, power-state refusals, pending changes, resource exhaustion, HA."""
import time

from lib.cases import case, finish
from lib.sim import expect500, Sim, task_ok as ok
from lib.wait import wait_for


def post(s, path, node="sv1", **data):
    return s.data("POST", "/nodes/%s%s" % (node, path), data=data or None)


def run(s, path, node="sv1", **data):
    return s.wait_task(node, post(s, path, node, **data))


def clone(s, newid, src=8000, node="sv1", **kw):
    return ok(run(s, "/qemu/%d/clone" % src, node, newid=str(newid), **kw))


def running_vm(s, vmid, node="sv1"):
    clone(s, vmid, node=node)
    ok(run(s, "/qemu/%d/status/start" % vmid, node))
    return vmid


def power(s, vmid):
    return s.vm(vmid)["power"]


def config(s, vmid, node="sv1", **params):
    return s.data("GET", "/nodes/%s/qemu/%d/config" % (node, vmid), params=params or None)


def lockfile_timeout(vmid):
    return "can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout" % vmid


@case
def clone_lock_on_new_vm():
    with Sim(time_scale=0.01) as s:
        # 1 MB/s until the lock is seen (the copy cannot end before, however
        # slow the polls), then fast
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1})
        upid = post(s, "/qemu/8000/clone", newid="100", full="1")

        def locked():
            r = s.api("GET", "/nodes/sv1/qemu/100/config")
            return r.status_code == 200 and r.json()["data"].get("lock") == "clone"
        wait_for(locked, 10, what="lock: clone")
        assert "lock" not in config(s, 8000)  # the source's config is not locked
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 100000})
        ok(s.wait_task("sv1", upid, deadline=10))
        c = config(s, 100)
        assert "lock" not in c and c["name"] == "Copy-of-VM-tpl-ubuntu-sv1", c
        # the source config was never locked
        assert "lock" not in config(s, 8000)
        assert s.vm(100)["flock_exclusive"] == 0 and s.vm(8000)["flock_shared"] == 0


@case
def clone_config_appears_after_the_fork():
    # The new VM's config is written by the worker once it holds the source's
    # lock: until then it does not exist and nextid still offers newid (no
    # reservation). The window is held open in PVE time, not by luck: the
    # source is locked by a shutdown that times out after 1 PVE s (2 s here),
    # just before the clone's 1 s wait for that lock would give up, so the
    # clone then goes on (a loaded machine only makes the checks later, never
    # outside the window: everything they race with is in PVE time).
    with Sim(time_scale=2) as s:
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1000000})  # the copy: no time
        running_vm(s, 100)
        s.ctl("POST", "/vms/100", {"acpi": False})
        holder = post(s, "/qemu/100/status/shutdown", timeout="1")
        wait_for(lambda: s.vm(100)["flock_exclusive"] == 1, 10, what="the shutdown's flock")
        upid = post(s, "/qemu/100/clone", newid="101", full="1")
        assert s.data("GET", "/cluster/nextid") == "101"
        r = s.api("GET", "/nodes/sv1/qemu/101/config")
        assert r.status_code == 500, r.text
        assert r.reason == "Configuration file 'nodes/sv1/qemu-server/101.conf' does not exist"
        st = s.wait_task("sv1", holder, deadline=30)
        assert st["exitstatus"] == "VM quit/powerdown failed - got timeout", st
        ok(s.wait_task("sv1", upid, deadline=30))
        assert config(s, 101)["name"] == "Copy-of-VM-Copy-of-VM-tpl-ubuntu-sv1"
        assert s.data("GET", "/cluster/nextid") == "102"


@case
def config_refused_while_cloning():
    with Sim(time_scale=0.01) as s:
        # 1 MB/s: 40 GiB take ~400 s, far longer than the checks below on a loaded box
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1})
        upid = post(s, "/qemu/8003/clone", newid="100", full="1")
        wait_for(lambda: s.api("GET", "/nodes/sv1/qemu/100/config").status_code == 200
                 and config(s, 100).get("lock") == "clone", 5, what="lock: clone")
        expect500(s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "4"}), "VM is locked (clone)")
        expect500(s.api("POST", "/nodes/sv1/qemu/100/config", data={"cores": "4"}), "VM is locked (clone)")
        # a second clone onto the same id
        expect500(s.api("POST", "/nodes/sv1/qemu/8000/clone", data={"newid": "100"}),
                  "unable to create VM 100: config file already exists")
        # cloning a VM that is being cloned into: its config is locked
        expect500(s.api("POST", "/nodes/sv1/qemu/100/clone", data={"newid": "101"}), "VM is locked (clone)")
        assert s.api("DELETE", "/nodes/sv1/tasks/" + upid).status_code == 200


@case
def other_config_locks_and_skiplock():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        s.ctl("POST", "/vms/100", {"conf": {"lock": "backup"}})
        cfg = "/nodes/sv1/qemu/100/config"
        expect500(s.api("PUT", cfg, data={"cores": "4"}), "VM is locked (backup)")
        # start and destroy are refused inside the task
        st = run(s, "/qemu/100/status/start")
        assert st["exitstatus"] == "VM is locked (backup)", st
        st = s.wait_task("sv1", s.data("DELETE", "/nodes/sv1/qemu/100"))
        assert st["exitstatus"] == "VM is locked (backup)", st
        assert s.vm(100) is not None
        # root may skip the lock, and remove it with delete=lock&skiplock=1
        t = s.login()
        assert s.api("PUT", cfg, data={"cores": "4", "skiplock": "1"}, auth=t).status_code == 200
        assert config(s, 100)["lock"] == "backup" and config(s, 100)["cores"] == 4
        assert s.api("PUT", cfg, data={"delete": "lock", "skiplock": "1"}, auth=t).status_code == 200
        assert "lock" not in config(s, 100)
        assert s.api("PUT", cfg, data={"cores": "3"}).status_code == 200


@case
def file_lock_timeout():
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        s.ctl("POST", "/vms/100", {"acpi": False})
        # the guest ignores ACPI: the shutdown holds the flock for its timeout
        # (300 PVE s: 3 s, far longer than the steps below take on a loaded box)
        upid = post(s, "/qemu/100/status/shutdown", timeout="300")
        wait_for(lambda: s.vm(100)["flock_exclusive"] == 1, 5, what="the shutdown's flock")
        t0 = time.monotonic()
        r = s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "4"})
        el = time.monotonic() - t0
        expect500(r, lockfile_timeout(100))
        assert el >= 0.1 * 0.9, el  # 10 PVE s at 0.01
        # a task waiting for the lock fails the same way and logs its wait
        st = run(s, "/qemu/100/status/start")
        assert st["exitstatus"] == lockfile_timeout(100), st
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert "trying to acquire lock..." in log, log
        st = s.wait_task("sv1", upid)
        assert st["exitstatus"] == "VM quit/powerdown failed - got timeout", st
        assert power(s, 100) == "running"
        # the lock is free again
        assert s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "4"}).status_code == 200


@case
def a_stopped_task_gives_its_flock_back():
    """DELETE /nodes/{node}/tasks/{upid} of a task holding the VM's flock:
    the worker dies on the signal, "received interrupt", and the flock goes
    with it (it ended "unexpected status" and kept the flock: every later
    config change waited 10 s and failed "got timeout")."""
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        s.ctl("POST", "/vms/100", {"acpi": False})
        upid = post(s, "/qemu/100/status/shutdown", timeout="300")
        wait_for(lambda: s.vm(100)["flock_exclusive"] == 1, 5, what="the shutdown's flock")
        assert s.api("DELETE", "/nodes/sv1/tasks/" + upid).status_code == 200
        st = s.data("GET", "/nodes/sv1/tasks/%s/status" % upid)
        assert st["status"] == "stopped" and st["exitstatus"] == "received interrupt", st
        log = [ln["t"] for ln in s.data("GET", "/nodes/sv1/tasks/%s/log" % upid)]
        assert log[-2:] == ["received interrupt", "TASK ERROR: received interrupt"], log
        assert s.vm(100)["flock_exclusive"] == 0
        # a flock still held would fail it "got timeout" (10 PVE s)
        assert s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "4"}).status_code == 200
        assert power(s, 100) == "running" and config(s, 100)["cores"] == 4


@case
def parallel_clones_share_the_source_lock():
    with Sim(time_scale=0.01) as s:
        # 1 MB/s: the copies cannot end while the holders are counted (10 GiB:
        # ~100 s however slow the machine), then they go fast
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 1})
        u1 = post(s, "/qemu/8000/clone", newid="100", full="1")
        u2 = post(s, "/qemu/8000/clone", newid="101", full="1")
        wait_for(lambda: s.vm(8000)["flock_shared"] == 2, 5, what="two shared holders")
        # an exclusive holder has to wait for the clones: 10 s timeout
        expect500(s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"description": "x"}), lockfile_timeout(8000))
        s.ctl("POST", "/nodes/sv1", {"bandwidth_mb": 100000})
        ok(s.wait_task("sv1", u1))
        ok(s.wait_task("sv1", u2))
        assert s.vm(8000)["flock_shared"] == 0
        assert config(s, 100)["scsi0"].startswith("local-lvm:vm-100-disk-0")
        assert config(s, 101)["scsi0"].startswith("local-lvm:vm-101-disk-0")
        assert s.api("PUT", "/nodes/sv1/qemu/8000/config", data={"description": "x"}).status_code == 200


@case
def power_state_rules():
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        st = run(s, "/qemu/100/status/start")
        assert st["type"] == "qmstart" and st["exitstatus"] == "VM 100 already running", st
        ok(run(s, "/qemu/100/status/resume"))  # resume of running: no-op
        assert power(s, 100) == "running"
        ok(run(s, "/qemu/100/status/suspend"))
        assert power(s, 100) == "paused"
        assert s.data("GET", "/nodes/sv1/qemu/100/status/current")["qmpstatus"] == "paused"
        expect500(s.api("POST", "/nodes/sv1/qemu/100/status/shutdown"), "VM is paused - cannot shutdown")
        expect500(s.api("POST", "/nodes/sv1/qemu/100/status/reboot"), "VM is paused - cannot shutdown")
        ok(run(s, "/qemu/100/status/shutdown", forceStop="1"))
        assert power(s, 100) == "stopped"
        # stopped
        ok(run(s, "/qemu/100/status/stop"))
        ok(run(s, "/qemu/100/status/shutdown"))
        for a in ("reboot", "reset", "suspend", "resume"):
            expect500(s.api("POST", "/nodes/sv1/qemu/100/status/" + a), "VM 100 not running")
        assert power(s, 100) == "stopped"
        # templates cannot be started
        st = run(s, "/qemu/8000/status/start")
        assert st["exitstatus"] == "you can't start a vm if it's a template", st


@case
def power_actions_on_a_locked_vm():
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        s.ctl("POST", "/vms/100", {"conf": {"lock": "backup"}})
        for a in ("stop", "shutdown", "reset", "suspend"):
            st = run(s, "/qemu/100/status/" + a)
            assert st["exitstatus"] == "VM is locked (backup)", (a, st)
        assert power(s, 100) == "running"
        t = s.login()
        for a, after in (("reset", "running"), ("shutdown", "stopped")):
            st = s.wait_task("sv1", s.data("POST", "/nodes/sv1/qemu/100/status/" + a,
                                           data={"skiplock": "1"}, auth=t))
            assert st["exitstatus"] == "OK" and power(s, 100) == after, (a, st)
        ok(run(s, "/qemu/100/status/stop"))  # stopped: the lock is not even looked at


@case
def resume_from_disk():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        s.ctl("POST", "/vms/100", {"conf": {"lock": "suspended"}})
        # a VM suspended to disk is stopped with lock: suspended; resume starts it
        for a in ("reset", "suspend"):
            expect500(s.api("POST", "/nodes/sv1/qemu/100/status/" + a), "VM 100 not running")
        expect500(s.api("PUT", "/nodes/sv1/qemu/100/config", data={"cores": "3"}), "VM is locked (suspended)")
        ok(run(s, "/qemu/100/status/resume"))
        assert power(s, 100) == "running" and "lock" not in config(s, 100)


@case
def shutdown_timeout():
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        s.ctl("POST", "/vms/100", {"acpi": False})
        st = run(s, "/qemu/100/status/shutdown", timeout="2")
        assert st["type"] == "qmshutdown" and st["exitstatus"] == "VM quit/powerdown failed - got timeout", st
        assert power(s, 100) == "running"
        ok(run(s, "/qemu/100/status/shutdown", timeout="2", forceStop="1"))
        assert power(s, 100) == "stopped"
        # a guest that answers ACPI goes down without force
        ok(run(s, "/qemu/100/status/start"))
        s.ctl("POST", "/vms/100", {"acpi": True})
        ok(run(s, "/qemu/100/status/shutdown"))
        assert power(s, 100) == "stopped"


@case
def pending_changes():
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        cfg = "/nodes/sv1/qemu/100/config"
        assert s.api("PUT", cfg, data={"cores": "4", "description": "hello"}).status_code == 200
        assert config(s, 100)["cores"] == 4
        cur = config(s, 100, current="1")
        assert cur["cores"] == 2 and cur["description"] == "hello", cur  # hot-pluggable: applied
        pend = {e["key"]: e for e in s.data("GET", "/nodes/sv1/qemu/100/pending")}
        assert pend["cores"]["value"] == 2 and pend["cores"]["pending"] == 4, pend["cores"]
        assert "pending" not in pend["description"], pend["description"]
        assert s.data("GET", "/nodes/sv1/qemu/100/status/current")["cpus"] == 2
        ok(run(s, "/qemu/100/status/reboot"))
        assert power(s, 100) == "running"
        assert config(s, 100, current="1")["cores"] == 4
        pend = {e["key"]: e for e in s.data("GET", "/nodes/sv1/qemu/100/pending")}
        assert "pending" not in pend["cores"], pend["cores"]
        assert s.data("GET", "/nodes/sv1/qemu/100/status/current")["cpus"] == 4
        # a stopped VM takes changes at once
        ok(run(s, "/qemu/100/status/stop"))
        assert s.api("PUT", cfg, data={"cores": "1"}).status_code == 200
        assert config(s, 100, current="1")["cores"] == 1


@case
def out_of_memory_on_start():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        s.ctl("POST", "/nodes/sv1", {"memory_gb": 3})  # host uses 2 GiB, the VM wants 2 GiB
        st = run(s, "/qemu/100/status/start")
        assert st["exitstatus"] == "start failed: QEMU exited with code 1", st
        assert power(s, 100) == "stopped"
        s.ctl("POST", "/nodes/sv1", {"memory_gb": 8})
        ok(run(s, "/qemu/100/status/start"))


@case
def out_of_storage_on_full_clone():
    with Sim(time_scale=0.01) as s:
        used = s.data("GET", "/nodes/sv1/storage/local-lvm/status")["used"]  # the templates' base disks
        s.ctl("POST", "/nodes/sv1", {"storage_gb": {"local-lvm": used / 2**30 + 15}})
        clone(s, 100, full="1")  # 10 GiB fit, another 10 GiB do not
        st = run(s, "/qemu/8000/clone", newid="101", full="1")
        assert st["exitstatus"].startswith("clone failed: "), st
        assert "insufficient free space" in st["exitstatus"], st
        assert s.vm(101) is None
        r = s.api("GET", "/nodes/sv1/qemu/101/config")
        assert r.status_code == 500
        assert s.data("GET", "/cluster/nextid", params={"vmid": "101"}) == "101"
        # linked clones need no space
        clone(s, 102)


@case
def ha_managed_start():
    with Sim(time_scale=0.01) as s:
        clone(s, 100)
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "stopped"})
        st = run(s, "/qemu/100/status/start")
        assert st["type"] == "hastart" and st["exitstatus"] == "OK", st
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert "Requesting HA start for VM 100" in log, log
        wait_for(lambda: power(s, 100) == "running", 5, what="the HA start")
        types = [t["type"] for t in s.data("GET", "/nodes/sv1/tasks", params={"vmid": "100"})]
        assert "qmstart" in types, types
        cur = s.data("GET", "/nodes/sv1/qemu/100/status/current")
        assert cur["ha"]["managed"] == 1 and cur["ha"]["state"] == "started", cur
        st = run(s, "/qemu/100/status/shutdown")
        assert st["type"] == "hastop" and st["exitstatus"] == "OK", st
        wait_for(lambda: power(s, 100) == "stopped", 5, what="the HA stop")


def ha_tasks(s, vmid, kind):
    return [t for t in s.data("GET", "/nodes/sv1/tasks", params={"vmid": str(vmid)})
            if t["type"] == kind]


@case
def ha_not_acting():
    """What ha-manager does with a request in the resource states it does not
    act in (pve-ha-manager: Manager.pm, API2/HA/Resources.pm; qemu-server's
    vm_start/vm_stop/vm_shutdown and PVE::HA::Config::vm_is_ha_managed)."""
    with Sim(time_scale=0.01) as s:
        running_vm(s, 100)
        # frozen: the request is taken (the task ends OK) and kept; nothing
        # happens until the freeze is lifted
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "freeze"})
        st = run(s, "/qemu/100/status/stop")
        assert st["type"] == "hastop" and st["exitstatus"] == "OK", st
        time.sleep(0.2)  # 20 PVE seconds
        assert power(s, 100) == "running" and not ha_tasks(s, 100, "qmstop")
        cur = s.data("GET", "/nodes/sv1/qemu/100/status/current")
        assert cur["ha"]["managed"] == 1 and cur["ha"]["state"] == "freeze", cur
        assert s.vm(100)["ha_request"] == "stopped", s.vm(100)
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "started"})
        wait_for(lambda: power(s, 100) == "stopped", 5, what="the kept HA stop")
        assert s.vm(100)["ha_state"] == "stopped" and "ha_request" not in s.vm(100), s.vm(100)
        # error: ha-manager refuses the request, the task fails
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "error"})
        st = run(s, "/qemu/100/status/start")
        assert st["type"] == "hastart", st
        assert st["exitstatus"] == \
            "command 'ha-manager set vm:100 --state started' failed: exit code 255", st
        log = [l["t"] for l in s.data("GET", "/nodes/sv1/tasks/%s/log" % st["upid"])]
        assert "service 'vm:100' in error state, must be disabled and fixed first" in log, log
        assert power(s, 100) == "stopped"
        s.ctl("POST", "/vms/100", {"power": "running"})
        st = run(s, "/qemu/100/status/shutdown", timeout="30")
        assert st["exitstatus"] == \
            "command 'ha-manager crm-command stop vm:100 30' failed: exit code 255", st
        assert power(s, 100) == "running"
        # ignored: not HA-managed for the API; the VM is stopped directly
        s.ctl("POST", "/vms/100", {"ha": True, "ha_state": "ignored"})
        cur = s.data("GET", "/nodes/sv1/qemu/100/status/current")
        assert cur["ha"]["managed"] == 0, cur
        st = ok(run(s, "/qemu/100/status/stop"))
        assert st["type"] == "qmstop", st
        assert power(s, 100) == "stopped"


finish()
