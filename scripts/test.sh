#!/usr/bin/env bash
# Runs every test of the workspace, after setting up what they need: libtorch
# and Gymnasium in the cached venv (the Gymnasium parity tests run the real
# Gymnasium next to oxray's environments). Then checks that the suite left no
# oxray file in /dev/shm: every node, worker, driver and collective group must
# remove its shared memory, whatever way it ended.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
shm_files() {
    find /dev/shm -maxdepth 1 -name 'oxray-*' -printf '%f\n' 2>/dev/null | sort
}
before=$(mktemp)
trap 'rm -f "$before"' EXIT
shm_files >"$before"
status=0
cargo test --workspace --release --no-fail-fast "$@" || status=$?
# Files that existed before the suite (another run on this machine) are not
# this suite's.
left=$(shm_files | comm -13 "$before" -)
if [ -n "$left" ]; then
    echo "error: the test suite left oxray files in /dev/shm:" >&2
    echo "$left" | sed 's/^/  /' >&2
    status=1
fi
exit "$status"
