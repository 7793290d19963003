#!/usr/bin/env bash
# make demo: start pvesim with five nodes and walk a VM lifecycle against it.
# (Until proxd exists; then this shows proxd and proxctl doing the job.)
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 scripts/demo.py "$@"
