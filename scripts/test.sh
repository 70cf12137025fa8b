#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, then every test of the workspace against the real
# models, in release mode (llama.cpp built in debug is too slow for real-model tests), benches
# included in criterion's quick test mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo test --release --workspace --all-targets "$@"
