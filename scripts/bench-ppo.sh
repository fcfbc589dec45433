#!/usr/bin/env bash
# Wall time of `oxray train CONFIG` from process start to exit, per seed, and
# the env steps it took: the figures issue-level targets are stated in.
#
#   scripts/bench-ppo.sh [CONFIG] [SEEDS...]
#   scripts/bench-ppo.sh configs/ppo-cartpole.yaml 1 2 3 4 5     (the default)
#
# Builds the release binary first, runs each seed in a scratch directory and
# prints one line per seed plus the median wall time.
set -euo pipefail
. "$(dirname "$0")/bench-common.sh"
config=$(realpath "${1:-$repo/configs/ppo-cartpole.yaml}")
shift || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3 4 5)

walls=()
printf '%-6s %-8s %-12s %-12s %-10s %s\n' seed solved env_steps return wall_s steps/s
for seed in "${seeds[@]}"; do
    start=$(date +%s.%N)
    (cd "$scratch" && "$oxray" train "$config" --set seed="$seed" --name "seed$seed" >"$scratch/seed$seed.log" 2>&1)
    end=$(date +%s.%N)
    wall=$(python3 -c "print(round($end - $start, 2))")
    walls+=("$wall")
    last=$(tail -n 1 "$scratch"/results/seed"$seed"/*/result.json)
    read -r steps ret target <<<"$(
        python3 - "$last" "$config" <<'PY'
import json, re, sys
r = json.loads(sys.argv[1])
m = re.search(r"^\s*episode_return_mean:\s*(\S+)", open(sys.argv[2]).read(), re.M)
print(int(r["num_env_steps_sampled_lifetime"]), r.get("env_runners/episode_return_mean", float("nan")),
      m.group(1) if m else "nan")
PY
    )"
    solved=$(python3 -c "print('yes' if float('$ret') >= float('$target') else 'no')")
    printf '%-6s %-8s %-12s %-12.1f %-10.2f %.0f\n' "$seed" "$solved" "$steps" "$ret" "$wall" \
        "$(python3 -c "print($steps / $wall)")"
done
median=$(printf '%s\n' "${walls[@]}" | median)
echo "median wall: ${median} s over ${#seeds[@]} seeds ($(basename "$config"))"
