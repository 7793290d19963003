"""The event log against the store it tells (issue 15): every committed
change has its event exactly once. Read from proxd's database behind its
back (lib.db), after the run:

  - ids are unique and increasing with time;
  - each VM record that left `creating` for enabled (or later deleting,
    deleted, lost) has one vm.created, a creation that failed one
    vm.creation_failed and no vm.created; a deleted record one vm.deleted,
    a lost one vm.lost, and no other record has either;
  - each failed job has one job.failed naming it, a done job none;
  - a guest check's event (vm.guest_ready, vm.guest_silent) names a done
    creation, start, reboot or reinstall of its VMID, one at most per job;
  - per VM, each event carries the record after it ("vm") and what it
    changed ("changes": from, to): for each field (power, node, cores,
    memory_mb, disk_gb) the value before an event (its "from", or its "vm"
    value when it did not change it) is what the event before it left, and
    the last event leaves what the record holds now (deleted ones too). A
    lost event breaks that chain, and so does a doubled one.

VMIDs must not be reused during the run (quarantine > the run's length)."""
import json

from .db import query

FIELDS = ("power", "node", "cores", "memory_mb", "disk_gb")


def load(db):
    evs = [dict(zip(("id", "ts", "type", "owner", "vmid", "node", "job", "data"), r))
           for r in query(db, "SELECT id, ts, type, owner, vmid, node, job, data FROM events "
                              "ORDER BY id")]
    for e in evs:
        e["data"] = json.loads(e["data"])
    return evs


def problems(db, reuse_ok=False):
    """A list of what is wrong (empty: the log tells the store exactly).
    reuse_ok: a VMID with several records (reused: a run with no
    quarantine) is passed over, not reported."""
    evs = load(db)
    bad = []
    ids = [e["id"] for e in evs]
    if len(set(ids)) != len(ids):
        bad.append("duplicate event ids")
    for a, b in zip(evs, evs[1:]):
        if b["ts"] + 1000 < a["ts"]:  # clocks: ids are commit order, ts taken just before
            bad.append("event %d at %d before event %d at %d" % (b["id"], b["ts"], a["id"],
                                                                 a["ts"]))
    recs = [dict(zip(("id", "vmid", "state", "power", "node", "cores", "memory_mb", "disk_gb"),
                     r))
            for r in query(db, "SELECT id, vmid, state, power, node, cores, memory_mb, disk_gb "
                               "FROM vms ORDER BY id")]
    by_vmid = {}
    for e in evs:
        by_vmid.setdefault(e["vmid"], []).append(e)
    vmids = {}
    for r in recs:
        vmids.setdefault(r["vmid"], []).append(r)
    for vmid, rs in vmids.items():
        if len(rs) > 1:
            if not reuse_ok:
                bad.append("VMID %d has %d records: reused during the run" % (vmid, len(rs)))
            continue
        r = rs[0]
        mine = by_vmid.get(vmid, [])

        def count(t):
            return sum(1 for e in mine if e["type"] == t)
        failed_creation = r["state"] == "failed"
        want = {"vm.created": 0 if failed_creation or r["state"] == "creating" else 1,
                "vm.creation_failed": 1 if failed_creation else 0,
                "vm.deleted": 1 if r["state"] == "deleted" else 0,
                "vm.lost": 1 if r["state"] == "lost" else 0}
        if failed_creation and count("vm.created"):
            want["vm.created"] = count("vm.created")  # failed later (not in these tests)
        for t, n in want.items():
            if count(t) != n:
                bad.append("VM %d (%s): %d %s events, want %d" % (vmid, r["state"], count(t), t,
                                                                   n))
        prev = None  # the record after the previous event ("vm")
        last = None  # the previous event
        for e in mine:
            vm, ch = e["data"].get("vm"), e["data"].get("changes", {})
            if vm is None:
                continue
            # one write the store tells under two types (a reconciler's
            # write of power and cores: vm.started and vm.drift), each with
            # the write's changes: one link of the chain. The same event
            # twice (same type) is not: that is a doubled event.
            same_write = (last is not None and last["type"] != e["type"]
                          and last["data"].get("changes") == ch and last["data"].get("vm") == vm)
            last = e
            if same_write:
                continue
            for f in FIELDS:
                if f in ch and ch[f]["to"] != vm[f]:
                    bad.append("VM %d event %d: %s to %r, record after %r" % (
                        vmid, e["id"], f, ch[f]["to"], vm[f]))
                if prev is None:
                    continue
                was = ch[f]["from"] if f in ch else vm[f]
                if was != prev[f]:
                    bad.append("VM %d event %d (%s): %s was %r, the event before left %r" % (
                        vmid, e["id"], e["type"], f, was, prev[f]))
            prev = vm
        if prev is not None:
            for f in FIELDS:
                if prev[f] != r[f]:
                    bad.append("VM %d %s: last event left %r, the record holds %r" % (
                        vmid, f, prev[f], r[f]))
    jobs = {r[0]: r[1] for r in query(db, "SELECT id, state FROM jobs")}
    bad += guest_problems(db, evs)
    told = {}
    for e in evs:
        if e["type"] == "job.failed":
            told[e["job"]] = told.get(e["job"], 0) + 1
    for jid, state in jobs.items():
        n = told.get(jid, 0)
        if n != (1 if state == "failed" else 0):
            bad.append("job %s (%s): %d job.failed events" % (jid, state, n))
    return bad


GUEST_KINDS = ("create", "start", "reboot", "reinstall")


def guest_problems(db, evs):
    """The guest checks' events against the jobs they name."""
    bad = []
    jobs = {r[0]: r[1:] for r in query(db, "SELECT id, state, kind, vmid FROM jobs")}
    seen = {}
    for e in evs:
        if e["type"] not in ("vm.guest_ready", "vm.guest_silent"):
            continue
        seen[e["job"]] = seen.get(e["job"], 0) + 1
        j = jobs.get(e["job"])
        if j is None or j[0] != "done" or j[1] not in GUEST_KINDS or j[2] != e["vmid"]:
            bad.append("event %d (%s) names job %s (%s), not a done start of VM %d" % (
                e["id"], e["type"], e["job"], j, e["vmid"]))
    bad += ["job %s: %d guest events" % (jid, n) for jid, n in seen.items() if n > 1]
    return bad


def summary(db):
    """Counts per type, for the test's output."""
    out = {}
    for e in load(db):
        out[e["type"]] = out.get(e["type"], 0) + 1
    return ", ".join("%s %d" % kv for kv in sorted(out.items()))
