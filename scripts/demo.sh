#!/usr/bin/env bash
# make demo: the whole mission on one machine. pvesim plays five Proxmox VE
# nodes (sv1 is offline), proxd runs on SQLite with a generated configuration
# and token, and proxctl creates VMs (watch them fail over past sv1) and walks
# one through its lifecycle. Everything started here is stopped at the end.
# Environment: DEMO_BIN (where proxd, proxctl, pvesim are; default build/),
# DEMO_DATABASE (proxd's store URL, e.g. postgresql://...; default a SQLite
# file in the demo's temporary directory), DEMO_SIM_PORT and DEMO_API_PORT
# (pvesim's first port and proxd's API port; default 18006 and 18080).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${DEMO_BIN:-$PWD/build}
SIM_PORT=${DEMO_SIM_PORT:-18006}
API_PORT=${DEMO_API_PORT:-18080}
WORK=$(mktemp -d /tmp/proxd-demo.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
    echo "== everything stopped"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "pvesim: five Proxmox VE nodes sv1..sv5 on 127.0.0.1:$SIM_PORT"
TOKEN_SECRET=$(cat /proc/sys/kernel/random/uuid)
"$B/pvesim" --listen 127.0.0.1:$SIM_PORT --nodes sv1,sv2,sv3,sv4,sv5 \
    --token "root@pam!proxd=$TOKEN_SECRET" --time-scale 0.05 --log-level warn \
    > "$WORK/sim.out" 2> "$WORK/sim.log" &
PIDS+=($!)
SIM_PID=$!
for _ in $(seq 100); do
    grep -q '^fingerprint' "$WORK/sim.out" 2>/dev/null && break
    kill -0 "$SIM_PID" 2>/dev/null || break # it ended: a port taken, most likely
    sleep 0.1
done
FP=$(awk '/^fingerprint/ {print $2}' "$WORK/sim.out")
if [ -z "$FP" ]; then
    # never go on: the calls below would reach whatever holds the port
    echo "demo: pvesim did not start on 127.0.0.1:$SIM_PORT; it said:" >&2
    sed 's/^/    /' "$WORK/sim.log" >&2
    echo "demo: pvesim takes six ports from DEMO_SIM_PORT on (the cluster's, then one a node);" \
        "set DEMO_SIM_PORT to the first of six free ones" >&2
    exit 1
fi
cat "$WORK/sim.out"
curl -sk -X POST "https://127.0.0.1:$SIM_PORT/_sim/nodes/sv1" -d '{"state":"offline"}' >/dev/null
echo "sv1 is now offline (its port refuses connections; the cluster shows it offline)"

step "proxd: configuration (TLS pinned to pvesim's certificate), token, daemon"
{
    echo "[proxd]"
    echo "listen = 127.0.0.1:$API_PORT"
    echo "database = ${DEMO_DATABASE:-sqlite:$WORK/proxd.db}"
    echo "reconcile_interval = 30"
    echo "[proxmox]"
    echo "token = root@pam!proxd=$TOKEN_SECRET"
    echo "fingerprint = $FP"
    echo "[limits]"
    echo "memory_margin_mb = 1024"
    echo "disk_margin_gb = 10"
    for os in ubuntu:1000-1999 centos:2000-2999 windows:3000-3999 debian:4000-4999; do
        echo "[os ${os%%:*}]"; echo "vmid_range = ${os#*:}"
    done
    for i in 0 1 2 3 4; do
        echo "[node sv$((i + 1))]"
        echo "host = 127.0.0.1:$SIM_PORT"
        echo "cluster = pvesim"
        echo "storage = local-lvm"
        echo "template.ubuntu = $((8000 + 10 * i))"
        echo "template.debian = $((8001 + 10 * i))"
        echo "template.centos = $((8002 + 10 * i))"
        echo "template.windows = $((8003 + 10 * i))"
    done
} > "$WORK/proxd.conf"
run "$B/proxd" --check-config "$WORK/proxd.conf"
export PROXD_URL=http://127.0.0.1:$API_PORT
PROXD_TOKEN=$("$B/proxd" token create --config "$WORK/proxd.conf" --owner demo --role admin | tail -1)
export PROXD_TOKEN
echo "token for 'demo' (admin) created; proxd keeps only its hash"
"$B/proxd" --config "$WORK/proxd.conf" 2> "$WORK/proxd.log" &
PIDS+=($!)
PROXD_PID=$!
# ready: the inventory has been read (creations answer 503 "starting" before)
READY=""
for _ in $(seq 150); do
    kill -0 "$PROXD_PID" 2>/dev/null || break # it ended: its port taken, most likely
    curl -sf -m 2 "$PROXD_URL/readyz" >/dev/null && READY=1 && break
    sleep 0.1
done
if [ -z "$READY" ]; then
    if kill -0 "$PROXD_PID" 2>/dev/null; then
        echo "demo: proxd on 127.0.0.1:$API_PORT was not ready within 15 s; its log:" >&2
    else
        echo "demo: proxd did not start on 127.0.0.1:$API_PORT; its log:" >&2
    fi
    tail -n 20 "$WORK/proxd.log" | sed 's/^/    /' >&2
    echo "demo: if the port is taken, set DEMO_API_PORT to a free one" >&2
    exit 1
fi
run "$B/proxctl" node list
# what needs an operator's attention; it exits 1 when anything does (sv1 is down)
run "$B/proxctl" status || true

step "create three VMs: sv1 is down, so they land on the next nodes"
ssh-keygen -q -t ed25519 -N '' -C demo@example -f "$WORK/id_demo"
run "$B/proxctl" vm create --os ubuntu --name web-1 --cores 2 --memory 2G --disk 40G \
    --ssh-key "$WORK/id_demo.pub"
run "$B/proxctl" vm create --os debian --name db-1 --cores 4 --memory 4G --disk 20G \
    --ssh-key "$WORK/id_demo.pub"
run "$B/proxctl" vm create --os centos --name app-1 --cores 1 --memory 1G --disk 16G
run "$B/proxctl" vm list
grep -E 'marked down|placed on' "$WORK/proxd.log" | sed 's/^/    proxd: /' | head -8 || true

step "lifecycle of web-1 (VM 1000)"
run "$B/proxctl" vm pause 1000
run "$B/proxctl" vm resume 1000
run "$B/proxctl" vm resize 1000 --disk 60G
run "$B/proxctl" vm set 1000 --memory 4G
run "$B/proxctl" vm show 1000
run "$B/proxctl" vm shutdown 1000 --timeout 30 --force
run "$B/proxctl" vm delete 1000
run "$B/proxctl" vm list
run "$B/proxctl" os list
run "$B/proxctl" node list
