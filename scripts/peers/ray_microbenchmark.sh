#!/usr/bin/env bash
# Ray 2.60's own `ray microbenchmark` on chosen metrics, written as the figures
# file `oxray microbenchmark --compare FILE` reads; run it right before oxray's
# microbenchmark (machines of one kind differ from day to day, so only figures
# from the same sitting compare).
#
# usage: scripts/peers/ray_microbenchmark.sh [FILTER [OUT]]
#   FILTER  metric-name substrings separated by '|' (each runs as Ray's
#           TESTS_TO_RUN; oxray's filter takes the same string); default: the
#           metrics below
#   OUT     figures file (default ray-microbenchmark.tsv): one line per metric,
#           "NAME<TAB>MEAN<TAB>SD" in ops/s as Ray printed them, after '#' lines
#           naming Ray's version, the date, the filter and the load
#
# Ray comes from the peers venv when it holds ray 2.60.0
# (${OXRAY_PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxray/peers-venv}, which
# scripts/bench-vs-peers.sh creates) when it can run the microbenchmark,
# otherwise from
# ${XDG_CACHE_HOME:-$HOME/.cache}/oxray/ray-venv, created on first use with
# ray[default]==2.60.0 and numpy from the package index.
set -euo pipefail

ray_version=2.60.0
# Every metric of Ray's that oxray's microbenchmark also measures.
default_filter="single client get calls|single client put calls|multi client put calls"
default_filter+="|single client put gigabytes|single client tasks and get batch"
default_filter+="|multi client put gigabytes|single client get object containing 10k refs"
default_filter+="|single client wait 1k refs|single client tasks sync|single client tasks async"
default_filter+="|multi client tasks async|1:1 actor calls sync|1:1 actor calls async"
default_filter+="|1:1 actor calls concurrent"
default_filter+="|1:n actor calls async|n:n actor calls async|n:n actor calls with arg async"
default_filter+="|1:1 async-actor calls sync|1:1 async-actor calls async"
default_filter+="|1:1 async-actor calls with args async|1:n async-actor calls async"
default_filter+="|n:n async-actor calls async|placement group create/removal"
filter=${1:-$default_filter}
out=${2:-ray-microbenchmark.tsv}

cache=${XDG_CACHE_HOME:-$HOME/.cache}/oxray
# The microbenchmark needs ray[default]'s extras (grpcio), which ray[rllib]
# alone does not install: import it, not just ray.
has_ray() {
    "$1/bin/python" -c "import ray, ray._private.ray_perf, numpy, sys; sys.exit(ray.__version__ != '$ray_version')" >/dev/null 2>&1
}
venv=${OXRAY_PEERS_VENV:-$cache/peers-venv}
if ! has_ray "$venv"; then
    venv=$cache/ray-venv
    if ! has_ray "$venv"; then
        echo "ray_microbenchmark: installing ray[default]==$ray_version into $venv (once, minutes)" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet "ray[default]==$ray_version" numpy
    fi
fi

figures=$(mktemp)
trap 'rm -f "$figures"' EXIT
IFS='|' read -ra patterns <<<"$filter"
for pattern in "${patterns[@]}"; do
    # What `ray microbenchmark` runs (ray._private.ray_perf.main) less its
    # closing Ray Client section, which starts a client server per metric
    # even when the filter skips them all and measures Ray Client, not the
    # core. Ray's cluster is its own, stopped at exit: nothing here stops
    # other Ray clusters on the machine.
    output=$(TESTS_TO_RUN="$pattern" RAY_USAGE_STATS_ENABLED=0 "$venv/bin/python" -c '
import ray._private.ray_perf as perf
perf.client_microbenchmark_main = lambda results=None: results
perf.main()
' 2>&1) || {
        echo "$output" >&2
        echo "ray_microbenchmark: Ray's microbenchmark failed on '$pattern'" >&2
        exit 1
    }
    grep -E ' per second [0-9.e+-]+ \+- ' <<<"$output" | tee -a "$figures" >&2 || {
        echo "ray_microbenchmark: no Ray metric matches '$pattern'" >&2
        exit 1
    }
done

{
    echo "# ray $ray_version microbenchmark, $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
    echo "# filter: $filter"
    echo "# load average$(uptime | sed 's/.*load average//')"
    # "NAME per second MEAN +- SD" -> NAME<TAB>MEAN<TAB>SD, each metric once.
    sed -E 's/^(.*) per second ([0-9.e+-]+) \+- ([0-9.e+-]+)$/\1\t\2\t\3/' "$figures" | awk -F'\t' '!seen[$1]++'
} >"$out"
echo "ray_microbenchmark: wrote $(grep -vc '^#' "$out") figures to $out" >&2
