#!/usr/bin/env bash
# Trains PPO on CartPole with one Learner actor holding one GPU, then with two
# data-parallel Learner actors sharing the GPUs (half a GPU each, so one GPU
# is enough), and checks that every Learner really trained on CUDA
# (`learner device: cuda:N[, cuda:M]` in the summary) and solved CartPole.
# Run it on a machine with an NVIDIA GPU; it fails on a machine without one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/env.sh"
python -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
(cd "$repo" && cargo build --release --quiet)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
# train NAME LEARNERS GPUS_PER_LEARNER
train() {
    "$repo/target/release/oxray" train "$repo/configs/ppo-cartpole.yaml" --name "$1" \
        --set learners.num_learners="$2" --set learners.num_gpus_per_learner="$3" | tee "$1.log"
    local cuda_devices
    cuda_devices=$(grep '^learner device: ' "$1.log" | grep -o 'cuda:[0-9]*' | wc -l)
    [ "$cuda_devices" -eq "$2" ] || { echo "gpu-check: FAILED, $1: $cuda_devices of $2 Learners ran on CUDA" >&2; exit 1; }
    grep -q '^done: env_runners/episode_return_mean' "$1.log" || { echo "gpu-check: FAILED, $1: CartPole not solved" >&2; exit 1; }
}
train gpu-check 1 1
train gpu-check-2learners 2 0.5
echo "gpu-check: OK"
