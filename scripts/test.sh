#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, then every test of the workspace against the real
# models, in release mode (llama.cpp built in debug is too slow for real-model tests), benches
# included in criterion's quick test mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# One test at a time: the real-model tests each run llama.cpp on every core, and OpenMP threads
# of several engines spinning on 2 cores slow each other down by an order of magnitude.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}"
cargo test --release --workspace --all-targets "$@"
