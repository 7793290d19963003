#!/usr/bin/env bash
# API benchmark (not a test: it reports its targets and never fails the
# build). `make bench` runs it after bench_create.py, against the release
# build; results go to stdout and bench/results/api.txt.
#
# 1. Throughput: GET /v1/vms/{vmid} (a random VMID of the 10,000 per request)
#    and a page of GET /v1/vms (limit=100, a random `after` cursor per
#    request), driven by wrk over keep-alive connections (-t THREADS -c CONNS
#    -d DURATION, admin bearer token), RUNS runs each; we quote the median
#    requests/s and the median p99 latency. Target: >= 20,000 requests/s on
#    2 cores. wrk, proxd (and an idle pvesim) share this machine's cores:
#    the figure is what proxd serves while the load generator takes its
#    share of the same CPUs.
# 2. Memory: proxd restarted against a slow pvesim (--time-scale
#    BENCH_API_SLOW_SCALE), 200 creations queued with POST /v1/vms; VmRSS and
#    VmHWM of proxd read from /proc/<pid>/status while the jobs are in flight
#    (the database says queued or running). Target: <= 32 MiB.
#
# How the 10,000 VMs get there (the fastest honest way): proxd's own schema
# is created by `proxd token create` (which also makes the admin token);
# proxd is not running; python3's sqlite3 module then inserts 10,000 `vms`
# rows (state enabled, power stopped, ubuntu, 1 core, 1024 MiB, 10 GiB,
# 20 owners, spread over sv1..sv5) and their `vmid_alloc` rows (used), as a
# finished creation leaves them. The same VMs are written into pvesim's
# state file (--state-dir: same VMID, node, cores, memory, disk, stopped,
# tag proxd), so proxd's reconciler, which runs at start and every
# reconcile_interval, finds every record matching Proxmox and leaves it
# alone (without them it would mark all 10,000 "lost"). The script checks
# that no record was touched at the end. pvesim gets a fleet file with big
# nodes (64 CPUs, 1 TiB RAM, 200 TB local-lvm) so that 2,000 VMs per node
# still leave room for the 200 creations.
#
# Environment: BENCH_API_N (10000), BENCH_API_JOBS (200), BENCH_API_RUNS (3),
# BENCH_API_DURATION (10s), BENCH_API_THREADS (2), BENCH_API_CONNS (64),
# BENCH_API_SLOW_SCALE (1.0), PVESIM_SCHEMA_DIR, PROXD, PVESIM.
# BENCH_API_ONLY=memory runs only part 2 (for iterating on memory): it prints
# the memory lines (plus proxd's /proc/PID/smaps_rollup in flight) and
# leaves bench/results/api.txt alone; BENCH_API_SMAPS=FILE also saves
# proxd's whole /proc/PID/smaps there at that moment.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PVESIM=${PVESIM:-$ROOT/build/pvesim}
PROXD=${PROXD:-$(dirname "$PVESIM")/proxd}
N=${BENCH_API_N:-10000}
JOBS=${BENCH_API_JOBS:-200}
RUNS=${BENCH_API_RUNS:-3}
DURATION=${BENCH_API_DURATION:-10s}
THREADS=${BENCH_API_THREADS:-2}
CONNS=${BENCH_API_CONNS:-64}
SLOW_SCALE=${BENCH_API_SLOW_SCALE:-1.0}
ONLY=${BENCH_API_ONLY:-}
case "$ONLY" in "" | memory) ;; *) echo "BENCH_API_ONLY: only 'memory' is known" >&2; exit 2 ;; esac
FAST_SCALE=0.01
VMID_LO=10000
OWNERS=20
TARGET_RPS=20000
TARGET_RSS_MIB=32
RESULTS=$ROOT/bench/results/api.txt
SIM_TOKEN="root@pam!bench=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"

if ! command -v wrk >/dev/null 2>&1; then
    echo "== wrk is missing: installing it (apt-get install -y wrk)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
fi
WORK=$(mktemp -d /tmp/proxd-bench-api.XXXXXX)
SIM_PID=
PROXD_PID=
OUT=()
say() { echo "$*"; OUT+=("$*"); }
stop_pid() { # stop one process we started, by its id
    local p=$1
    [ -n "$p" ] || return 0
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    stop_pid "$PROXD_PID"
    stop_pid "$SIM_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

# A free block of ports: pvesim's entry point, its 5 nodes, its control port,
# proxd's API (tests/lib/ports.py, the tests' own).
read -r SIM_PORT API_PORT < <(PYTHONPATH="$ROOT/tests" /usr/bin/python3 -c \
    'from lib.ports import free_port_block; b = free_port_block(8); print(b, b + 7)')

cat > "$WORK/fleet.json" <<EOF
{"nodes": [
$(for i in 1 2 3 4 5; do
    sep=,; [ $i = 5 ] && sep=
    echo " {\"name\": \"sv$i\", \"cpus\": 64, \"memory_gb\": 1024, \"bandwidth_mb\": 500,"
    echo "  \"storages\": [{\"id\": \"local\", \"type\": \"dir\", \"content\": \"iso,vztmpl,backup\", \"total_gb\": 100, \"used_gb\": 12},"
    echo "               {\"id\": \"local-lvm\", \"type\": \"lvmthin\", \"content\": \"images,rootdir\", \"total_gb\": 200000}]}$sep"
done)
]}
EOF

start_sim() { # $1: time scale
    "$PVESIM" --listen 127.0.0.1:$SIM_PORT --fleet "$WORK/fleet.json" --state-dir "$WORK/sim" \
        --token "$SIM_TOKEN" --time-scale "$1" --auth-delay 0 --log-level error \
        > "$WORK/sim.out" 2>> "$WORK/sim.log" &
    SIM_PID=$!
    for _ in $(seq 600); do
        grep -q '^fingerprint' "$WORK/sim.out" 2>/dev/null && return 0
        kill -0 $SIM_PID 2>/dev/null || break
        sleep 0.1
    done
    echo "pvesim did not start:" >&2; tail -20 "$WORK/sim.log" >&2; exit 1
}

start_proxd() {
    "$PROXD" --config "$WORK/proxd.conf" 2>> "$WORK/proxd.log" &
    PROXD_PID=$!
    for _ in $(seq 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/readyz")" = 200 ] && return 0
        kill -0 $PROXD_PID 2>/dev/null || break
        sleep 0.1
    done
    echo "proxd did not become ready:" >&2; tail -20 "$WORK/proxd.log" >&2; exit 1
}

# ---- the fleet: pvesim's templates, then 10,000 VMs in its state file -------
echo "== pvesim: 5 nodes, writing $N VMs into its state"
start_sim $FAST_SCALE
stop_pid "$SIM_PID"; SIM_PID=  # it saves $WORK/sim/state.json on exit
python3 - "$WORK/sim/state.json" "$N" "$VMID_LO" <<'EOF'
import json, sys
path, n, lo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
st = json.load(open(path))
nodes = [x["name"] for x in st["nodes"]]
for i in range(n):
    vmid = lo + i
    mac = "BC:24:11:%02X:%02X:%02X" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    st["vms"].append({
        "vmid": vmid, "node": nodes[i % len(nodes)], "power": "stopped",
        "conf": {"name": "bench-%05d" % i, "cores": 1, "sockets": 1, "memory": "1024",
                 "scsi0": "local-lvm:vm-%d-disk-0,size=10G" % vmid, "scsihw": "virtio-scsi-pci",
                 "ide2": "local-lvm:vm-%d-cloudinit,media=cdrom,size=4M" % vmid,
                 "net0": "virtio=%s,bridge=vmbr0" % mac, "boot": "order=scsi0", "ostype": "l26",
                 "agent": "1", "ipconfig0": "ip=dhcp", "tags": "proxd",
                 "smbios1": "uuid=%08x-0000-4000-8000-%012d" % (vmid, vmid)},
        "pending": {}, "pending_delete": [], "ha": False, "ha_state": "", "acpi": True,
        "flock_shared": 0, "flock_exclusive": 0})
json.dump(st, open(path, "w"))
EOF

# ---- proxd: configuration, schema and admin token, then the records -------
{
    echo "[proxd]"
    echo "listen = 127.0.0.1:$API_PORT"
    echo "database = sqlite:$WORK/proxd.db"
    echo "placement = spread"
    echo "log_level = info"
    echo "[proxmox]"
    echo "token = $SIM_TOKEN"
    echo "verify_tls = no"
    echo "[os ubuntu]"
    echo "vmid_range = $VMID_LO-$((VMID_LO + N + JOBS + 999))"
    for i in 0 1 2 3 4; do
        echo "[node sv$((i + 1))]"
        echo "host = 127.0.0.1:$SIM_PORT"
        echo "cluster = pvesim"
        echo "storage = local-lvm"
        echo "template.ubuntu = $((8000 + 10 * i))"
    done
} > "$WORK/proxd.conf"
"$PROXD" --check-config "$WORK/proxd.conf" >/dev/null
TOKEN=$("$PROXD" token create --config "$WORK/proxd.conf" --owner bench --role admin 2>/dev/null | tail -1)
echo "== proxd stopped: inserting $N VM records into $WORK/proxd.db"
python3 - "$WORK/proxd.db" "$N" "$VMID_LO" "$OWNERS" <<'EOF'
import sqlite3, sys, time
path, n, lo, owners = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
now = int(time.time() * 1000)
db = sqlite3.connect(path)
with db:
    db.executemany(
        "INSERT INTO vms (vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb,"
        " job, error, pending, created_at, updated_at)"
        " VALUES (?, 'ubuntu', ?, ?, ?, 'enabled', 'stopped', 1, 1024, 10, '', '', NULL, ?, ?)",
        ((lo + i, "bench-%05d" % i, "tenant%02d" % (i % owners), "sv%d" % (i % 5 + 1), now, now)
         for i in range(n)))
    db.executemany("INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
                   " VALUES (?, 'used', '', 0, ?)", ((lo + i, now) for i in range(n)))
db.close()
EOF

# ---- throughput ------------------------------------------------------------
API=http://127.0.0.1:$API_PORT
if [ -z "$ONLY" ]; then
start_sim $FAST_SCALE
start_proxd
sleep 3 # let the start-up reconciliation (10,000 records against the fleet) finish
code=$(curl -s -o "$WORK/one.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$API/v1/vms/$VMID_LO")
[ "$code" = 200 ] || { echo "GET /v1/vms/$VMID_LO answered $code: $(cat "$WORK/one.json")" >&2; exit 1; }
curl -s -H "Authorization: Bearer $TOKEN" "$API/v1/vms?limit=100" > "$WORK/page.json"
page=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["vms"]))' "$WORK/page.json")
ONE_BYTES=$(wc -c < "$WORK/one.json"); PAGE_BYTES=$(wc -c < "$WORK/page.json")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
[ "$page" = 100 ] || { echo "GET /v1/vms?limit=100 returned $page VMs" >&2; exit 1; }

cat > "$WORK/common.lua" <<'EOF'
local lo, n = tonumber(os.getenv("VMID_LO")), tonumber(os.getenv("VMS_N"))
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local counter = 0
function setup(thread) counter = counter + 1; thread:set("seed", counter) end
function init(args) math.randomseed(os.time() * 1000 + (seed or 0)) end
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
        latency:percentile(50) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
cat "$WORK/common.lua" > "$WORK/get.lua"
echo 'function request() return wrk.format("GET", "/v1/vms/" .. (lo + math.random(0, n - 1))) end' >> "$WORK/get.lua"
cat "$WORK/common.lua" > "$WORK/list.lua"
echo 'function request() return wrk.format("GET", "/v1/vms?limit=100&after=" .. math.random(0, n - 100)) end' >> "$WORK/list.lua"
export VMID_LO VMS_N=$N TOKEN

median() { python3 -c 'import statistics,sys; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
declare -A RPS P99
run_wrk() { # $1: name, $2: script, $3: path
    local rps=() p99=() line
    wrk -t"$THREADS" -c"$CONNS" -d2s -s "$WORK/$2" "$API$3" >/dev/null # warm-up
    for r in $(seq "$RUNS"); do
        line=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/$2" "$API$3" | grep '^RESULT')
        read -r _ a b c d e <<<"$line"
        printf '   %-24s run %d: %9.0f req/s  p99 %7.2f ms  p50 %6.2f ms  non-2xx %s  socket errors %s\n' \
            "$1" "$r" "$a" "$b" "$c" "$d" "$e"
        [ "$d" = 0 ] && [ "$e" = 0 ] || echo "   (!) $1: $d non-2xx answers, $e socket errors" >&2
        rps+=("$a"); p99+=("$b")
    done
    RPS[$1]=$(median "${rps[@]}")
    P99[$1]=$(median "${p99[@]}")
}
echo "== wrk -t$THREADS -c$CONNS -d$DURATION --latency, keep-alive, $RUNS runs each"
run_wrk "GET /v1/vms/{vmid}" get.lua "/v1/vms/$VMID_LO"
run_wrk "GET /v1/vms?limit=100" list.lua "/v1/vms?limit=100"
RSS_AFTER_WRK=$(awk '/VmRSS/ {print $2}' /proc/$PROXD_PID/status)
HWM_AFTER_WRK=$(awk '/VmHWM/ {print $2}' /proc/$PROXD_PID/status)
THREADS_PROXD=$(awk '/Threads/ {print $2}' /proc/$PROXD_PID/status)
stop_pid "$PROXD_PID"; PROXD_PID=
stop_pid "$SIM_PID"; SIM_PID=
CHANGED=$(sqlite3 "$WORK/proxd.db" "SELECT count(*) FROM vms WHERE state <> 'enabled' OR power <> 'stopped'")
fi

# ---- memory with JOBS creations in flight ---------------------------------------
echo "== memory: pvesim at --time-scale $SLOW_SCALE, $JOBS creations queued with POST /v1/vms"
start_sim "$SLOW_SCALE"
start_proxd
sleep 3
RSS_IDLE=$(awk '/VmRSS/ {print $2}' /proc/$PROXD_PID/status)
accepted=0
for i in $(seq "$JOBS"); do
    c=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' \
        -d "{\"os\":\"ubuntu\",\"name\":\"mem-$i\",\"cores\":1,\"memory_mb\":1024,\"disk_gb\":20,\"owner\":\"tenant$(printf %02d $((i % OWNERS)))\"}" \
        "$API/v1/vms")
    [ "$c" = 202 ] && accepted=$((accepted + 1))
done
RSS_MAX=0
INFLIGHT_MIN=$JOBS
for _ in $(seq 20); do
    sleep 0.5
    rss=$(awk '/VmRSS/ {print $2}' /proc/$PROXD_PID/status)
    inflight=$(sqlite3 "$WORK/proxd.db" "SELECT count(*) FROM jobs WHERE kind = 'create' AND state IN ('queued', 'running')")
    [ "$rss" -gt "$RSS_MAX" ] && RSS_MAX=$rss
    [ "$inflight" -lt "$INFLIGHT_MIN" ] && INFLIGHT_MIN=$inflight
done
if [ -n "$ONLY" ]; then
    cp /proc/$PROXD_PID/smaps_rollup "$WORK/smaps_rollup" 2>/dev/null || true
    [ -z "${BENCH_API_SMAPS:-}" ] || cp /proc/$PROXD_PID/smaps "$BENCH_API_SMAPS" 2>/dev/null || true
fi
RUNNING=$(sqlite3 "$WORK/proxd.db" "SELECT count(*) FROM jobs WHERE kind = 'create' AND state = 'running'")
HWM=$(awk '/VmHWM/ {print $2}' /proc/$PROXD_PID/status)
stop_pid "$PROXD_PID"; PROXD_PID=
stop_pid "$SIM_PID"; SIM_PID=

# ---- report ----------------------------------------------------------------------
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }
pf() { python3 -c "import sys; print('PASS' if $1 else 'FAIL')"; }
memory_report() {
    say "memory ($N records, $accepted of $JOBS creations accepted, pvesim --time-scale $SLOW_SCALE):"
    say "  VmRSS before the creations       $(mib "$RSS_IDLE") MiB"
    say "  VmRSS max while in flight        $(mib "$RSS_MAX") MiB  (>= $INFLIGHT_MIN jobs queued or running, $RUNNING running at the end)  $(pf "$RSS_MAX <= $TARGET_RSS_MIB * 1024") (target <= $TARGET_RSS_MIB MiB)"
    say "  VmHWM                            $(mib "$HWM") MiB  $(pf "$HWM <= $TARGET_RSS_MIB * 1024")"
}
if [ -n "$ONLY" ]; then
    memory_report
    echo "proxd's smaps_rollup at the end of the flight:"
    grep -E '^(Rss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean)' "$WORK/smaps_rollup" 2>/dev/null | sed 's/^/  /'
    echo "(memory part only: bench/results/api.txt left alone)"
    exit 0
fi
G=${RPS["GET /v1/vms/{vmid}"]}; L=${RPS["GET /v1/vms?limit=100"]}
say "proxd API benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
say "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), shared and noisy;"
say "  wrk and proxd share the same $(nproc) cores (wrk -t$THREADS -c$CONNS, keep-alive), pvesim idle beside them;"
say "  load average before the runs: $LOAD_START"
say "database: $N VM records (SQLite, WAL), $OWNERS owners, admin token; proxd $THREADS_PROXD threads"
say ""
say "throughput (wrk -t$THREADS -c$CONNS -d$DURATION --latency, median of $RUNS runs):"
say "  GET /v1/vms/{vmid} (random of $N)        $(printf '%8.0f' "$G") req/s  p99 $(printf '%6.2f' "${P99["GET /v1/vms/{vmid}"]}") ms  $(pf "$G >= $TARGET_RPS") (target >= $TARGET_RPS req/s)"
say "  GET /v1/vms?limit=100 (random page)       $(printf '%8.0f' "$L") req/s  p99 $(printf '%6.2f' "${P99["GET /v1/vms?limit=100"]}") ms  $(pf "$L >= $TARGET_RPS") (target >= $TARGET_RPS req/s)"
say "  answer sizes: one VM $ONE_BYTES bytes, a page of 100 $PAGE_BYTES bytes"
say "  proxd after the wrk runs: VmRSS $(mib "$RSS_AFTER_WRK") MiB, VmHWM $(mib "$HWM_AFTER_WRK") MiB"
say "  records changed by proxd during the run (reconciler): $CHANGED of $N"
say ""
memory_report
mkdir -p "$(dirname "$RESULTS")"
printf '%s\n' "${OUT[@]}" > "$RESULTS"
echo "(written to bench/results/api.txt)"
