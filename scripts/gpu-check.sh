#!/usr/bin/env bash
# The CUDA check: builds promptloop with llama.cpp's CUDA backend (`--features cuda`: every layer
# offloaded), then on the GPU runs an eval pass (cuad-mini dev) and the benches, and the same eval
# with the GPU hidden (CUDA_VISIBLE_DEVICES=, the CPU path of the same binary) to compare speed
# and outputs. Figures to read, not a test.
#
#   scripts/gpu-check.sh            (needs nvcc and the CUDA libraries; nvidia-smi to report the GPU)
#
# Environment: PROMPTLOOP_MODELS (the GGUFs; default $PROMPTLOOP_CACHE/models, filled by
# scripts/setup.sh), OUT (a directory for the JSON results; default target/gpu-check),
# CUDA_ARCH (e.g. 90 for H100/H200: CMake's CUDAARCHS, the architectures llama.cpp is built for;
# default: CMake's choice, which may be slow to build or miss the GPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODEL="${PROMPTLOOP_MODELS:-$CACHE/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT="${OUT:-target/gpu-check}"
mkdir -p "$OUT"
[ -f "$MODEL" ] || { echo "$MODEL missing: run scripts/setup.sh (or set PROMPTLOOP_MODELS)" >&2; exit 1; }
command -v nvcc >/dev/null || { echo "nvcc not found: the CUDA build needs the CUDA toolkit" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc --version | tail -1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-$(nproc)}"
if [ -n "${CUDA_ARCH:-}" ]; then export CUDAARCHS="$CUDA_ARCH"; fi
t0=$(date +%s)
cargo build --release -p harness --features cuda 2>&1 | tail -3
echo "build: $(( $(date +%s) - t0 )) s"
BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/promptloop"

pass() {  # label, output file, then env assignments for the run
    local label="$1" file="$2"; shift 2
    env "$@" "$BIN" -q eval --task evals/cuad-mini --split dev --model "$MODEL" --engine llama --json --out "$OUT/$file.jsonl" \
        | tail -1 | tee "$OUT/$file.json" | python3 -c "
import json, sys
s = json.load(sys.stdin); wall = s['speed']['wall_ms'] / 1000
print(f'{sys.argv[1]:<10} {s[\"examples\"]} examples  {s[\"examples\"] / wall:7.2f} ex/s  {wall:7.1f} s  score {s[\"mean_score\"]:.3f}  peak {s[\"speed\"].get(\"peak_rss_bytes\", 0) >> 20} MiB')
" "$label"
}
pass "gpu" gpu-eval
pass "cpu" cpu-eval CUDA_VISIBLE_DEVICES=
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = lambda f: {r["id"]: r["output"] for r in map(json.loads, open(f"{out}/{f}.jsonl"))}
g, c = rows("gpu-eval"), rows("cpu-eval")
same = sum(g[k] == c.get(k) for k in g)
print(f"outputs equal on GPU and CPU: {same} of {len(g)} (float order differs between backends; greedy ties may flip)")
PY
"$BIN" -q bench --model "$MODEL" --engine llama --prefill-tokens 128,512,2048 --json | tail -1 > "$OUT/bench-gpu.json"
python3 - "$OUT/bench-gpu.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
for m in b.get("metrics", []):
    print(f"bench {m.get('name', '?'):<40} {m.get('value', m.get('median', '?'))} {m.get('unit', '')}")
PY
