#!/usr/bin/env bash
# Runs every test of the workspace, after setting up what they need: libtorch
# and Gymnasium in the cached venv (the Gymnasium parity tests run the real
# Gymnasium next to oxray's environments).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo test --workspace --release --no-fail-fast "$@"
