# Sourced by the bench scripts (`. scripts/bench-common.sh`): makes sure the
# release `oxray` binary is built, and sets
#   repo     the checkout
#   oxray    the binary
#   scratch  a directory removed when the script exits (runs write results/ there)
# and defines `median` (of the numbers on stdin, one per line).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/scripts/env.sh"
(cd "$repo" && cargo build --release --quiet --bin oxray)
oxray="${CARGO_TARGET_DIR:-$repo/target}/release/oxray"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

median() {
    sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
