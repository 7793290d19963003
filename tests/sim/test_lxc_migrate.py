"""Container migration through proxmoxer, as pve-container's migrate_vm
(API2/LXC.pm) checks it and PVE::LXC::Migrate does it under AbstractMigrate:
offline, and restart mode for a running container (no live migration of
containers in PVE), local volumes copied and renamed by `target-storage`,
and PVE's words for what stops it."""
from lib.cases import case, finish
from lib.pxm import client, expect_error, wait_task
from lib.sim import Sim, expect400

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def log(px, upid):
    # AbstractMigrate's lines carry the local time first; the worker's end
    # line (TASK OK, TASK ERROR: ...) left out
    lines = [ln["t"] for ln in px.nodes(upid.split(":")[1]).tasks(upid).log.get()]
    return [ln[20:] if ln[:2] == "20" else ln for ln in lines if not ln.startswith("TASK ")]


def make_ct(px, vmid, **kw):
    args = dict(vmid=vmid, ostemplate=TEMPLATE, rootfs="local-lvm:4", hostname="ct%d" % vmid)
    args.update(kw)
    st = wait_task(px, px.nodes("sv1").lxc.post(**args))
    assert st["exitstatus"] == "OK", st
    return px.nodes("sv1").lxc(vmid)


def on(px, node, vmid):
    return any(c["vmid"] == vmid for c in px.nodes(node).lxc.get())


@case
def offline_and_restart():
    with Sim() as s:
        px = client(s)
        ct = make_ct(px, 250, mp0="local-lvm:1,mp=/srv")
        upid = ct.migrate.post(target="sv2")
        assert ":vzmigrate:250:root@pam:" in upid, upid
        st = wait_task(px, upid)
        lines = log(px, upid)
        assert st["exitstatus"] == "OK", (st, lines)
        assert "starting migration of CT 250 to node 'sv2' (10.10.10.2)" in lines, lines
        assert "found local volume 'local-lvm:vm-250-disk-0' (in current VM config)" in lines
        assert ("volume 'local-lvm:vm-250-disk-1' is 'local-lvm:vm-250-disk-1' on the target"
                in lines), lines
        assert lines[-1].startswith("migration finished successfully (duration 00:00:"), lines
        assert not on(px, "sv1", 250) and on(px, "sv2", 250)
        conf = px.nodes("sv2").lxc(250).config.get()
        assert "lock" not in conf and conf["mp0"] == "local-lvm:vm-250-disk-1,mp=/srv,size=1G"

        # running: restart mode only
        ct = make_ct(px, 251)
        assert wait_task(px, ct.status.start.post())["exitstatus"] == "OK"
        expect_error(lambda: ct.migrate.post(target="sv2"), 500,
                     "can't migrate running container without --online or --restart")
        upid = ct.migrate.post(target="sv2", online=1)
        st = wait_task(px, upid)
        assert st["exitstatus"] == "migration aborted", st
        assert log(px, upid)[-1].endswith(": lxc live migration is currently not implemented")
        upid = ct.migrate.post(target="sv2", restart=1, timeout=30)
        st = wait_task(px, upid)
        lines = log(px, upid)
        assert st["exitstatus"] == "OK", (st, lines)
        assert "shutdown CT 251" in lines and "start container on target node" in lines, lines
        assert px.nodes("sv2").lxc(251).status.current.get()["status"] == "running"

        # the storage map renames the volumes; its storages are checked first
        ct = make_ct(px, 252)
        expect_error(lambda: ct.migrate.post(target="sv2", **{"target-storage": "other"}), 500,
                     "storage 'other' does not exist")
        expect_error(lambda: ct.migrate.post(target="sv2", **{"target-storage": "local"}), 500,
                     "storage 'local' does not support CT rootdirs")
        expect400(s.api("POST", "/nodes/sv1/lxc/252/migrate",
                        data={"target": "sv1"}), {"target": "target is local node."})
        expect_error(lambda: ct.migrate.post(target="nope"), 500, "no such cluster node 'nope'")
        expect_error(lambda: px.nodes("sv1").lxc(999).migrate.post(target="sv2"), 500,
                     "Configuration file 'nodes/sv1/lxc/999.conf' does not exist")


@case
def what_stops_it():
    fleet = {"nodes": [{"name": "sv1"}, {"name": "sv2"}, {"name": "sv3"}]}
    with Sim(nodes=None, fleet=fleet) as s:
        px = client(s)
        # a bind mount stays on its host
        bind = make_ct(px, 260)
        r = s.api("PUT", "/nodes/sv1/lxc/260/config", data={"mp0": "/srv/data,mp=/data"},
                  auth=s.login())
        assert r.status_code == 200, r.text
        upid = bind.migrate.post(target="sv2")
        assert wait_task(px, upid)["exitstatus"] == "migration aborted"
        assert log(px, upid)[-1].endswith(": cannot migrate local bind mount point 'mp0'"), \
            log(px, upid)
        # a snapshot on lvmthin cannot go along: phase 1 stops, the lock comes off
        snap = make_ct(px, 261)
        assert wait_task(px, snap.snapshot.post(snapname="s1"))["exitstatus"] == "OK"
        upid = snap.migrate.post(target="sv2")
        assert wait_task(px, upid)["exitstatus"] == "migration aborted"
        lines = log(px, upid)
        assert ("WARN: can't migrate local volume 'local-lvm:vm-261-disk-0': non-migratable "
                "snapshot exists") in lines, lines
        assert "ERROR: can't migrate CT - check log" in lines, lines
        assert "aborting phase 1 - cleanup resources" in lines, lines
        assert "lock" not in snap.config.get() and on(px, "sv1", 261)
        # a lock, and a target that is down
        snap.config.put(lock="backup")
        upid = snap.migrate.post(target="sv2")
        assert wait_task(px, upid)["exitstatus"] == "migration aborted"
        assert log(px, upid)[-1].endswith(": CT is locked (backup)"), log(px, upid)
        s.ctl("POST", "/nodes/sv3", {"state": "offline"})
        ct = make_ct(px, 262)
        upid = ct.migrate.post(target="sv3")
        assert wait_task(px, upid)["exitstatus"] == "migration aborted"
        assert log(px, upid)[-1].endswith(
            ": Can't connect to destination address using public key"), log(px, upid)
        assert "lock" not in ct.config.get() and on(px, "sv1", 262)


finish()
