#!/usr/bin/env bash
# The gate's A/A test: the task's prompt scored once on a split, then N variants of it that
# differ only in whitespace (each seeded: a space before some line ends, extra blank lines at
# the end), each gated against the first exactly as `optimize --accept bootstrap` gates a
# candidate (harness/examples/aa_gate.rs). The acceptance rate should stay at or below what the
# confidence allows. A script, not part of CI.
#
#   scripts/aa.sh [OUT_DIR]     environment: TASK (evals/banking77), SPLIT (train), SEEDS (20),
#                               CONFIDENCE (0.9), LIMIT (all), FLAGS (more eval flags)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/aa}"
TASK="${TASK:-evals/banking77}"
SPLIT="${SPLIT:-train}"
SEEDS="${SEEDS:-20}"
BIN="${PROMPTLOOP:-./target/release/promptloop}"
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set PROMPTLOOP)" >&2; exit 2; }
mkdir -p "$OUT"
limit=()
[ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
prompt="$(sed -n 's/^prompt *= *"\(.*\)"/\1/p' "$TASK/task.toml")"
cp "$TASK/${prompt:-prompt.txt}" "$OUT/base.txt"
eval_one() {
    [ -f "$OUT/$1.jsonl" ] && return 0
    # shellcheck disable=SC2086
    "$BIN" -q eval --task "$TASK" --split "$SPLIT" --prompt "$OUT/$1.txt" "${limit[@]}" --out "$OUT/$1.part" ${FLAGS:-} >/dev/null
    mv "$OUT/$1.part" "$OUT/$1.jsonl"
}
eval_one base
variants=()
for s in $(seq 1 "$SEEDS"); do
    python3 - "$OUT/base.txt" "$OUT/v$s.txt" "$s" <<'PY'
import random, sys
src, dst, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
lines = open(src, encoding="utf-8").read().rstrip("\n").split("\n")
# Whitespace only: a trailing space on some lines, then 1-3 blank lines at the end.
out = [l + " " if rng.random() < 0.3 else l for l in lines]
text = "\n".join(out) + "\n" * rng.randint(2, 4)
assert text.split() == open(src, encoding="utf-8").read().split()
open(dst, "w", encoding="utf-8").write(text)
PY
    eval_one "v$s"
    variants+=("$OUT/v$s.jsonl")
done
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo run -q --release -p harness --example aa_gate -- "${CONFIDENCE:-0.9}" "$OUT/base.jsonl" "${variants[@]}" | tee "$OUT/aa.txt"
