#!/usr/bin/env bash
# oxray against Stable-Baselines3 and RLlib on the same task, back to back on
# this machine: per seed, oxray on ALGO's config, then each peer; a table of
# solved?, env steps to the target, wall time to it (from process start) and
# env steps/s, with the medians over seeds and each peer's ratios to oxray.
#
#   scripts/bench-vs-peers.sh ALGO [SEEDS...]     ALGO: ppo | dqn | ppo-tuned | dqn-tuned | sac | appo | impala | cql | iql
#   scripts/bench-vs-peers.sh ppo 1 2 3           (seeds 1 2 3 are the default)
#
#   ALGO       oxray config                            peers                       target
#   ppo        configs/peers/ppo-cleanrl-cartpole.yaml SB3 (same settings), RLlib  CartPole 475
#   dqn        configs/peers/dqn-sb3-cartpole.yaml     SB3 (same settings), RLlib  CartPole 450
#   ppo-tuned  configs/ppo-cartpole.yaml               as ppo                      CartPole 475
#   dqn-tuned  configs/dqn-cartpole.yaml               as dqn                      CartPole 450 in 100k steps
#   sac        configs/sac-pendulum.yaml               SB3 (zoo settings), RLlib   Pendulum -250 in 20k steps
#   appo       configs/appo-cartpole.yaml              RLlib                       CartPole 450
#   impala     configs/impala-cartpole.yaml            RLlib                       CartPole 450
#   cql        configs/cql-pendulum.yaml               RLlib (same settings)       Pendulum evaluation -250
#   iql        configs/iql-pendulum.yaml               RLlib (same settings)       Pendulum evaluation -250
# `ppo` and `dqn` compare throughput on the same hyperparameters; the
# `-tuned` runs compare wall time to the target, each framework on its own
# tuned settings. `cql` and `iql` learn offline: the first 3,000 steps of a
# `configs/sac-pendulum.yaml` run are recorded once, then each seed of oxray
# and of RLlib (scripts/peers/rllib_offline.py, same hyperparameters, the
# recording as Parquet through Ray Data) trains on it until the mean return
# of a 10-episode evaluation after an iteration reaches -250; their "env
# steps" are the recorded transitions trained on.
# RLlib runs its tuned examples' settings (scripts/peers/rllib_cartpole.py).
# Targets are the mean return over the last 100 episodes; for SAC over the
# last 5, the smoothing window of RLlib's tuned Pendulum example whose target
# it is (`metrics_num_episodes_for_smoothing=5`; 20k steps are 100 episodes).
#
# The peers run in their own venv, created on first use (several minutes):
# ${OXRAY_PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxray/peers-venv}.
# Every run gets BENCH_LIMIT seconds (default 600) before it counts as
# unsolved; BENCH_LOG_DIR, if set, keeps each run's output there.
# PEERS picks some of ALGO's peers (PEERS=sb3 skips RLlib's ~400 s a seed;
# PEERS= runs oxray alone). OXRAY_BASELINE=/path/to/an/older/oxray also runs
# that binary on each seed, as run `oxray-baseline`, to measure a change
# against the peers in one session. BENCH_THREADS: see below.
set -euo pipefail
algo=${1:-}
shift || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
peer_algo=${algo%-tuned}
case "$algo" in
    ppo) config=configs/peers/ppo-cleanrl-cartpole.yaml target=475 window=100 known=(sb3 rllib) ;;
    dqn) config=configs/peers/dqn-sb3-cartpole.yaml target=450 window=100 known=(sb3 rllib) ;;
    ppo-tuned) config=configs/ppo-cartpole.yaml target=475 window=100 known=(sb3 rllib) ;;
    dqn-tuned) config=configs/dqn-cartpole.yaml target=450 window=100 known=(sb3 rllib) ;;
    sac) config=configs/sac-pendulum.yaml target=-250 window=5 known=(sb3 rllib) ;;
    appo) config=configs/appo-cartpole.yaml target=450 window=100 known=(rllib) ;;
    impala) config=configs/impala-cartpole.yaml target=450 window=100 known=(rllib) ;;
    cql) config=configs/cql-pendulum.yaml target=-250 window=1 known=(rllib) ;;
    iql) config=configs/iql-pendulum.yaml target=-250 window=1 known=(rllib) ;;
    *)
        echo "usage: $0 ppo|dqn|ppo-tuned|dqn-tuned|sac|appo|impala|cql|iql [SEEDS...]" >&2
        exit 2
        ;;
esac
read -r -a peers <<<"${PEERS-${known[*]}}"
for peer in "${peers[@]}"; do
    case " ${known[*]} " in
        *" $peer "*) ;;
        *)
            echo "bench-vs-peers: PEERS: $algo has no peer '$peer' (it has: ${known[*]})" >&2
            exit 2
            ;;
    esac
done
baseline=${OXRAY_BASELINE:-}
if [ -n "$baseline" ] && [ ! -x "$baseline" ]; then
    echo "bench-vs-peers: OXRAY_BASELINE: $baseline is not an executable" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$here/../$config" ]; then
    echo "bench-vs-peers: $config does not exist in this checkout; nothing to compare for $algo" >&2
    exit 1
fi
. "$here/bench-common.sh"
config="$repo/$config"
limit=${BENCH_LIMIT:-600}
logs=${BENCH_LOG_DIR:-$scratch}
mkdir -p "$logs"

peers_venv="${OXRAY_PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxray/peers-venv}"
if ! "$peers_venv/bin/python" -c 'import ray.rllib, stable_baselines3' >/dev/null 2>&1; then
    echo "bench-vs-peers: installing the peers into $peers_venv (once, several minutes)" >&2
    python3 -m venv "$peers_venv" &&
        "$peers_venv/bin/pip" install --quiet --upgrade pip &&
        "$peers_venv/bin/pip" install --quiet torch==2.13.0 "ray[rllib]==2.60.0" stable-baselines3 gymnasium==1.2.2 ||
        { echo "bench-vs-peers: could not set up $peers_venv" >&2; exit 1; }
fi

# BENCH_THREADS (default 1) threads for each side's learning: oxray's
# Learner reserves that many CPUs (learners.num_cpus_per_learner) and runs
# that many threads; the peers' torch gets that many intra-op threads. One
# by default, as oxray's shipped configs: on a small machine extra intra-op
# threads only contend with the env loop.
threads=${BENCH_THREADS:-1}
case "$threads" in
    '' | *[!0-9]* | 0)
        echo "bench-vs-peers: BENCH_THREADS: expected a whole number of threads, at least 1, got '$threads'" >&2
        exit 2
        ;;
esac
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
threads_set=()
[ "$threads" = 1 ] || threads_set=(--set "learners.num_cpus_per_learner=$threads")
results="$scratch/results.jsonl"
timed() { # RUN SEED CMD...
    local run=$1 seed=$2
    shift 2
    python3 "$here/peers/time_to_target.py" --run "$run" --seed "$seed" --target "$target" \
        --window "$window" --limit "$limit" --out "$results" --log "$logs/$run-seed$seed.log" -- "$@"
}

# The offline algorithms' recording, made once; every run reads it.
offline=()
case "$algo" in
    cql | iql)
        echo "bench-vs-peers: recording the first 3,000 steps of configs/sac-pendulum.yaml" >&2
        (cd "$scratch" && "$oxray" train "$repo/configs/sac-pendulum.yaml" --name record \
            --set offline_data.output="$scratch/recorded" --set stop.env_steps=3000 >/dev/null)
        offline=(--set offline_data.input_="$scratch/recorded")
        ;;
esac
peer_command() { # PEER SEED
    case "$algo" in
        cql | iql) echo "$here/peers/$1_offline.py $peer_algo $2 $scratch/recorded" ;;
        *) echo "$here/peers/$1_cartpole.py $peer_algo $2" ;;
    esac
}

echo "load before: $(uptime)"
for seed in "${seeds[@]}"; do
    if [ -n "$baseline" ]; then
        (cd "$scratch" && timed oxray-baseline "$seed" "$baseline" train "$config" --set seed="$seed" "${threads_set[@]}" "${offline[@]}" --name "baseline-seed$seed")
    fi
    (cd "$scratch" && timed oxray "$seed" "$oxray" train "$config" --set seed="$seed" "${threads_set[@]}" "${offline[@]}" --name "seed$seed")
    for peer in "${peers[@]}"; do
        read -r -a command <<<"$(peer_command "$peer" "$seed")"
        timed "$peer-$peer_algo" "$seed" "$peers_venv/bin/python" "${command[@]}"
    done
done
echo "load after: $(uptime)"
python3 "$here/peers/summarize.py" "$results" "mean return over the last $window episodes >= $target ($(basename "$config"))"
