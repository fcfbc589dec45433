#!/usr/bin/env bash
# Runs the libFuzzer target over every network decoder for SECONDS (default
# 60), growing the corpus kept in fuzz/corpus/wire_decoders. libFuzzer needs
# a nightly toolchain; without one this says so and exits 0 (the bounded
# property tests of the same decoders run in every `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain (rustup toolchain install nightly); skipping libFuzzer" >&2
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (once)" >&2
    cargo +nightly install --locked cargo-fuzz
fi
mkdir -p fuzz/corpus/wire_decoders
cd fuzz
exec cargo +nightly fuzz run wire_decoders corpus/wire_decoders -- \
    -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1
