#!/usr/bin/env bash
# Examples per second of the same eval pass (cuad-mini dev, first N examples) on one and on two
# single-thread llama-servers (`--engine server:URL[,URL]`), and on the in-process llama engine
# with one thread. A benchmark to read, not a timed test: the figures depend on the machine and on
# what else runs on it.
#
#   scripts/fleet-bench.sh [N]      (default 8 examples)
#
# Servers: 127.0.0.1 on free ports, `-np 1 -t 1 -c 8192 --no-jinja`, stopped on exit. The binary
# is built with the CI flags (CARGO_BUILD_JOBS, default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${1:-8}"
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODEL="${PROMPTLOOP_MODELS:-$CACHE/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$MODEL" ] || { echo "$MODEL missing: run scripts/setup.sh" >&2; exit 1; }
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
CONFIG=()
FEATURES="engines/candle"
if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
    CONFIG=(--config "$CACHE/mlx/cargo-config.toml"); FEATURES="$FEATURES,engines/mlx"
fi
cargo build "${CONFIG[@]}" --release -p harness --features "$FEATURES" >&2
PROMPTLOOP="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/promptloop"
BIN="$(scripts/build-llama-cpp.sh llama-server)/llama-server"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Starts a server and sets URL; not in a $(...) subshell, so the EXIT trap sees its pid.
start_server() {
    local port; port="$(free_port)"
    "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" -np 1 -t 1 -c 8192 --no-jinja --no-webui \
        >"$(mktemp -t fleet-bench-XXXX.log)" 2>&1 &
    PIDS+=($!)
    URL="http://127.0.0.1:$port"
    for _ in $(seq 1 240); do
        if python3 -c "import urllib.request; urllib.request.urlopen('$URL/health', timeout=2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    echo "llama-server on $port not healthy within 120 s" >&2; exit 1
}
# One eval pass; prints "label  examples/s  wall s  mean score".
pass() {
    local label="$1"; shift
    "$PROMPTLOOP" -q eval --task evals/cuad-mini --split dev --limit "$N" --json "$@" | tail -1 | python3 -c "
import json, sys
s = json.load(sys.stdin)
wall = s['speed']['wall_ms'] / 1000
print(f'{sys.argv[1]:<28} {s[\"examples\"] / wall:8.3f} ex/s  {wall:7.1f} s  score {s[\"mean_score\"]:.3f}')
" "$label"
}
start_server; A="$URL"; start_server; B="$URL"
echo "cuad-mini dev, $N examples, SmolLM2-135M Q4_1; $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg)"
pass "in-process llama, 1 thread" --engine llama --threads 1 --batch-size 1 --prefix-cache off
pass "1 llama-server (-t 1)" --engine "server:$A"
pass "2 llama-servers (-t 1 each)" --engine "server:$A,$B"
