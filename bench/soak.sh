#!/usr/bin/env bash
# Fault soak (not part of `make test`): the randomized fault test
# (tests/core/test_faults_random.py) run longer, against the release build:
# SOAK_SEEDS seeds, SOAK_VMS VMs each with SOAK_OPS jobs per VM, about
# SOAK_RATE of the Proxmox calls failing (every kind of fault); the seeds of
# SOAK_STANDALONE_SEEDS (default the first two) on five standalone hosts and
# of SOAK_SHARED_SEEDS (default the last three) on a fleet whose VM storage is
# one shared pool (FAULT_SHARED_SEEDS). Two parts:
#  1. control jobs under faults (the VMs are created before the faults);
#  2. creations under faults too (FAULT_CREATE=1), and on the seeds of
#     SOAK_KILL_SEEDS (default the 4th to 6th: none when SOAK_SEEDS has fewer
#     than four) proxd killed with SIGKILL every 1 to 4 s meanwhile
#     (FAULT_KILL_SEEDS); the seeds of SOAK_PASSWORD_SEEDS (default the 3rd
#     and 7th) log in with a password, short tickets and faults on
#     /access/ticket (FAULT_PASSWORD_SEEDS), in both parts; the seeds of
#     SOAK_NODE_SEEDS (default the 5th and 8th) have a node go off the
#     network for 0.3 to 3 s every 2 to 6 s (FAULT_NODE_SEEDS), in both parts,
#     and those of SOAK_HOSTS_SEEDS (default the 8th) reach their cluster
#     through each member's own port instead of its entry (FAULT_HOSTS_SEEDS:
#     a node down takes one of proxd's hosts with it); the seeds of
#     SOAK_LAG_SEEDS (default the 4th and 9th) serve the inventory's figures
#     as of a pvestatd report a second, proxd's stats_lag 2 (FAULT_LAG_SEEDS),
#     and those of SOAK_RECONCILE_SEEDS (default the 4th, 6th and 9th)
#     reconcile every 2 s beside the jobs (FAULT_RECONCILE_SEEDS), in both;
#     those of SOAK_CLOCK_SEEDS (default the 1st, 5th and 10th) have their
#     nodes' clocks off by up to 10 minutes (FAULT_CLOCK_SEEDS), and of the
#     standalone ones, those of SOAK_MIXED_SEEDS (default the 2nd) declare
#     two hosts one-node clusters, a mixed fleet (FAULT_MIXED_SEEDS); during
#     those of SOAK_HOLD_SEEDS (default the 3rd and 6th) an admin holds and
#     drops addresses of the creations' pool (FAULT_HOLD_SEEDS), and during
#     those of SOAK_SEEK_SEEDS (default the 4th and 7th) an admin moves the
#     webhook's cursor back now and then (FAULT_SEEK_SEEDS); those of
#     SOAK_ROLE_SEEDS (default the 2nd and 6th) call with a privilege-separated
#     token holding only the operator guide's role (FAULT_ROLE_SEEDS, unless a
#     password seed); every seed
#     has the webhook to a flaky receiver (FAULT_HOOKS) and a client of the
#     event stream (FAULT_STREAMS);
#  3. (below) the crash test of VM operations;
#  4. node drains (tests/api/test_drain.py) of SOAK_DRAIN_VMS VMs (200) with a
#     kill -9 in the middle and seeded migrate faults, one run per seed of
#     SOAK_DRAIN_SEEDS (3 seeds);
#  5. reinstalls with kill -9 at random moments and SOAK_REINSTALL_RATE of
#     the Proxmox calls failing (tests/api/test_reinstall_crash.py,
#     SOAK_REINSTALL_ROUNDS rounds for each of the first SOAK_REINSTALL_SEEDS
#     seeds);
#  6. the config walk and the guest agent's confirmation under random faults
#     and dead nodes (tests/core/test_netwalk.c, SOAK_NETWALK_ROUNDS walks for
#     each of SOAK_NETWALK_SEEDS, default the seeds above).
# Each part reports per seed: jobs done/failed (and why), fault hits, the
# longest job, the time taken, and any broken promise. Results go to stdout
# and bench/results/soak.txt ("faulted" counts every fault rule hit, delays
# included). A third part runs the kill -9 crash test of VM operations
# (tests/core/test_control_crash.py: creations, power, resize, delete, and
# the event log checked against the store) longer: SOAK_CRASH_JOBS jobs over
# SOAK_CRASH_ROUNDS kills, for each of SOAK_CRASH_SEEDS. Exit status: 0 when
# every part kept every promise.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SEEDS=${SOAK_SEEDS:-101,102,103,104,105,106,107,108,109,110}
VMS=${SOAK_VMS:-20}
OPS=${SOAK_OPS:-15}
RATE=${SOAK_RATE:-0.07}
SHARED=${SOAK_SHARED_SEEDS:-$(echo "$SEEDS" | tr ',' '\n' | tail -3 | paste -sd,)}
STANDALONE=${SOAK_STANDALONE_SEEDS:-$(echo "$SEEDS" | tr ',' '\n' | head -2 | paste -sd,)}
KILLS=${SOAK_KILL_SEEDS:-$(echo "$SEEDS" | tr ',' '\n' | sed -n 4,6p | paste -sd,)}
PASSWORD=${SOAK_PASSWORD_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '3p;7p' | paste -sd,)}
NODE_DOWNS=${SOAK_NODE_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '5p;8p' | paste -sd,)}
HOSTS=${SOAK_HOSTS_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '8p' | paste -sd,)}
LAGS=${SOAK_LAG_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '4p;9p' | paste -sd,)}
CLOCKS=${SOAK_CLOCK_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '1p;5p;10p' | paste -sd,)}
HOLDS=${SOAK_HOLD_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '3p;6p' | paste -sd,)}
SEEKS=${SOAK_SEEK_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '4p;7p' | paste -sd,)}
ROLES=${SOAK_ROLE_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '2p;6p' | paste -sd,)}
MIXED=${SOAK_MIXED_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '2p' | paste -sd,)}
RECONCILES=${SOAK_RECONCILE_SEEDS-$(echo "$SEEDS" | tr ',' '\n' | sed -n '4p;6p;9p' | paste -sd,)}
OUT=bench/results/soak.txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PVESIM=$ROOT/build/pvesim BIN_DIR=$ROOT/build SCHEMA_DIR=$ROOT/build/share/pve-apidoc
{
  echo "proxd fault soak: seeds $SEEDS (on a shared pool: $SHARED; with a password: ${PASSWORD:-none}; nodes going down: ${NODE_DOWNS:-none}; through the members' hosts: ${HOSTS:-none}; lagging figures: ${LAGS:-none}; reconciling as they go: ${RECONCILES:-none}; clocks off: ${CLOCKS:-none}; a mixed fleet: ${MIXED:-none}; address holds: ${HOLDS:-none}; webhook seeks: ${SEEKS:-none}; the documented role: ${ROLES:-none}), $VMS VMs x $OPS jobs per seed, fault rate $RATE, release build"
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
  echo "$(nproc) CPUs, load average at start $(cut -d' ' -f1 /proc/loadavg)"
} | tee "$TMP/head"
status=0
for part in control create; do
  create=0 kills=
  [ "$part" = create ] && create=1 kills=$KILLS
  t0=$(date +%s.%N)
  FAULT_SEEDS=$SEEDS FAULT_VMS=$VMS FAULT_OPS=$OPS FAULT_RATE=$RATE FAULT_CREATE=$create \
    FAULT_SHARED_SEEDS=$SHARED FAULT_STANDALONE_SEEDS=$STANDALONE FAULT_KILL_SEEDS=$kills \
    FAULT_PASSWORD_SEEDS=$PASSWORD FAULT_NODE_SEEDS=$NODE_DOWNS FAULT_HOSTS_SEEDS=$HOSTS \
    FAULT_LAG_SEEDS=$LAGS FAULT_RECONCILE_SEEDS=$RECONCILES FAULT_CLOCK_SEEDS=$CLOCKS \
    FAULT_MIXED_SEEDS=$MIXED FAULT_HOLD_SEEDS=$HOLDS FAULT_SEEK_SEEDS=$SEEKS FAULT_ROLE_SEEDS=$ROLES \
    FAULT_REPORT="$TMP/$part.jsonl" PYTHONPATH=tests /usr/bin/python3 tests/core/test_faults_random.py \
    >"$TMP/$part.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  [ $rc -ne 0 ] && status=1
  {
    echo
    echo "part $part (FAULT_CREATE=$create, kills on: ${kills:-none}): exit $rc, $(echo "$t1 - $t0" | bc) s"
    grep -E '^(ok|FAIL) |^[0-9]+ passed' "$TMP/$part.log"
    grep -E '^  (VM|VMID|job|record|jobs|proxd)' "$TMP/$part.log" | head -40
    [ -f "$TMP/$part.jsonl" ] && /usr/bin/python3 - "$TMP/$part.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    r["frac"] = 100.0 * r["fault_hits"] / max(1, r["calls"])
    print("seed %(seed)d: %(jobs)d jobs (%(created)d of %(creations)d creations done), %(done)d done, "
          "%(failed)d failed; %(fault_hits)d of %(calls)d Proxmox calls faulted (%(frac).1f%%); "
          "longest job %(max_job_s).1f s; %(total_s).1f s; failures: %(failed_why)s" % r
          + ("; %(node_downs)d node downs, %(node_down_s).1f s" % r if "node_downs" in r else "")
          + ("; proxd left a host %(host_downs)d times" % r if "host_downs" in r else "")
          + ("; address holds: %(holds)s" % r if "holds" in r else "")
          + ("; webhook: %(webhook)s" % r if "webhook" in r else "")
          + ("; webhook seeks: %(seeks)s" % r if "seeks" in r else "")
          + ("; event stream: %(stream)s" % r if "stream" in r else "")
          + ("; reconciler's observed changes checked: %(observed)s" % r if r.get("observed") else ""))
tot = {k: sum(r[k] for r in rows) for k in ("jobs", "done", "failed", "fault_hits", "calls")}
print("total: %(jobs)d jobs, %(done)d done, %(failed)d failed, %(fault_hits)d of %(calls)d calls faulted" % tot)
PY
  } | tee "$TMP/$part.sum"
done
CRASH_SEEDS=${SOAK_CRASH_SEEDS:-201,202,203}
{
  echo
  echo "part crash+events: ${SOAK_CRASH_JOBS:-400} jobs, ${SOAK_CRASH_ROUNDS:-30} kills, seeds $CRASH_SEEDS"
  for seed in ${CRASH_SEEDS//,/ }; do
    t0=$(date +%s.%N)
    CRASH_SEED=$seed CRASH_JOBS=${SOAK_CRASH_JOBS:-400} CRASH_ROUNDS=${SOAK_CRASH_ROUNDS:-30} \
      PYTHONPATH=tests /usr/bin/python3 tests/core/test_control_crash.py >"$TMP/crash.$seed.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && touch "$TMP/crash.failed" # (a subshell: status is set below)
    echo "seed $seed: exit $rc, $(echo "$(date +%s.%N) - $t0" | bc) s"
    grep -E '^[0-9]+ (jobs|kills)|^events:|^FAIL |^[0-9]+ passed' "$TMP/crash.$seed.log"
  done
} | tee "$TMP/crash.sum"
[ -f "$TMP/crash.failed" ] && status=1
DVMS=${SOAK_DRAIN_VMS:-200}
: >"$TMP/drain.sum"
for seed in $(echo "${SOAK_DRAIN_SEEDS:-201,202,203}" | tr , ' '); do
  t0=$(date +%s.%N)
  DRAIN_VMS=$DVMS DRAIN_SEED=$seed PYTHONPATH=tests /usr/bin/python3 tests/api/test_drain.py \
    >"$TMP/drain.$seed.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  [ $rc -ne 0 ] && status=1
  {
    echo
    echo "part drain ($DVMS VMs, seed $seed): exit $rc, $(echo "$t1 - $t0" | bc) s"
    grep -E '^(ok|FAIL) |^[0-9]+ passed|^    (moved|faults)' "$TMP/drain.$seed.log"
  } | tee -a "$TMP/drain.sum"
done
# reinstalls: kill -9 at random moments, under faults, more rounds and seeds
t0=$(date +%s.%N)
: >"$TMP/reinstall.log"
rc=0
for seed in $(echo "$SEEDS" | tr ',' ' ' | cut -d' ' -f1-${SOAK_REINSTALL_SEEDS:-3}); do
  REINSTALL_CRASH_SEED=$seed REINSTALL_CRASH_ROUNDS=${SOAK_REINSTALL_ROUNDS:-40} \
    REINSTALL_FAULT_RATE=${SOAK_REINSTALL_RATE:-0.03} PYTHONPATH=tests \
    /usr/bin/python3 tests/api/test_reinstall_crash.py >>"$TMP/reinstall.log" 2>&1 || rc=1
  # onto another node (the VM's node full): kills during the migration too
  REINSTALL_MOVE_SEED=$seed REINSTALL_MOVE_ROUNDS=${SOAK_REINSTALL_MOVE_ROUNDS:-20} \
    REINSTALL_FAULT_RATE=${SOAK_REINSTALL_RATE:-0.03} PYTHONPATH=tests \
    /usr/bin/python3 tests/api/test_reinstall_move.py >>"$TMP/reinstall.log" 2>&1 || rc=1
done
t1=$(date +%s.%N)
[ $rc -ne 0 ] && status=1
{
  echo
  echo "part reinstall (kill -9 and faults): exit $rc, $(echo "$t1 - $t0" | bc) s"
  grep -E '^(seed|one|outcomes|faults hit|ok|FAIL) |^[0-9]+ passed|^  ' "$TMP/reinstall.log" | head -90
} | tee "$TMP/reinstall.sum"
# the config walk and the agent's confirmation under random faults and dead
# nodes (tests/core/test_netwalk.c test_random_faults), more seeds and walks
t0=$(date +%s.%N)
rc=0
cmake --build build/.release --target core_test_netwalk -- --no-print-directory -s >"$TMP/netwalk.log" 2>&1 &&
  NETWALK_FAULT_SEEDS=${SOAK_NETWALK_SEEDS:-$SEEDS} NETWALK_FAULT_ROUNDS=${SOAK_NETWALK_ROUNDS:-12} \
    build/.release/tests/core_test_netwalk >>"$TMP/netwalk.log" 2>&1 || rc=1
t1=$(date +%s.%N)
[ $rc -ne 0 ] && status=1
{
  echo
  echo "part netwalk (config walks and confirmations under faults): exit $rc, $(echo "$t1 - $t0" | bc) s"
  grep -E '^\[ (figures|  FAILED|  PASSED) |ERROR: ' "$TMP/netwalk.log" | head -40
} | tee "$TMP/netwalk.sum"
cat "$TMP/head" "$TMP/control.sum" "$TMP/create.sum" "$TMP/crash.sum" "$TMP/drain.sum" "$TMP/reinstall.sum" \
  "$TMP/netwalk.sum" >"$OUT"
echo "load average at the end $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT"
exit $status
