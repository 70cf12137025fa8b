#!/usr/bin/env bash
# Reference figures from llama.cpp's own llama-bench, for the same model and thread count as
# `cargo bench -p promptloop-benches`. llama-bench is built (once, cached) from the llama.cpp
# source that ships inside the llama-cpp-sys-2 crate our engine links, with GGML_NATIVE like our
# build (.cargo/config.toml sets target-cpu=native).
#
#   scripts/llama-bench.sh [MODEL.gguf] [THREADS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODEL="${1:-${PROMPTLOOP_MODELS:-$CACHE/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${2:-$(nproc)}"
[ -f "$MODEL" ] || { echo "model $MODEL missing: run scripts/setup.sh models" >&2; exit 1; }

manifest="$(cd "$ROOT" && cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in pkgs if p["name"] == "llama-cpp-sys-2"))')"
SRC="$(dirname "$manifest")/llama.cpp"
VERSION="$(basename "$(dirname "$manifest")")"
BUILD="$CACHE/llama-bench/$VERSION"
BIN="$BUILD/bin/llama-bench"
if [ ! -x "$BIN" ]; then
    echo "building llama-bench from $SRC (once; cached in $BUILD)" >&2
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF >/dev/null
    cmake --build "$BUILD" --target llama-bench -j "${CARGO_BUILD_JOBS:-2}" >/dev/null
fi
"$BIN" -m "$MODEL" -t "$THREADS" -p 128,512,2048 -n 128 -r 5 -o md
