#!/usr/bin/env bash
# Trains PPO on CartPole with one Learner actor holding one GPU and checks that
# the Learner really trained on CUDA (`learner device: cuda:N` in the summary).
# Run it on a machine with an NVIDIA GPU; it fails on a machine without one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/env.sh"
python -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
(cd "$repo" && cargo build --release --quiet)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
"$repo/target/release/oxray" train "$repo/configs/ppo-cartpole.yaml" \
    --name gpu-check --set learners.num_learners=1 --set learners.num_gpus_per_learner=1 | tee train.log
grep -q '^learner device: cuda:' train.log || { echo "gpu-check: FAILED, the Learner did not run on CUDA" >&2; exit 1; }
grep -q '^done: env_runners/episode_return_mean' train.log || { echo "gpu-check: FAILED, CartPole not solved" >&2; exit 1; }
echo "gpu-check: OK"
