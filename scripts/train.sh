#!/usr/bin/env bash
# The main job in one command: sets up libtorch (once, cached outside the
# clone), builds oxray in release mode and trains PPO on CartPole-v1 on the
# embedded single-node cluster until it is solved. Extra arguments go to
# `oxray train` (e.g. `--set seed=2`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release --bin oxray
exec target/release/oxray train configs/ppo-cartpole.yaml "$@"
