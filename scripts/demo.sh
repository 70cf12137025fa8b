#!/usr/bin/env bash
# The demo: set-up, build, then SmolLM2-135M extracts contract fields from the cuad-mini dev
# split in-process and prints quality and speed. Extra arguments go to `promptloop eval`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release --bin promptloop
./target/release/promptloop eval --task evals/cuad-mini --split dev --model smollm2-135m "$@"
