#!/usr/bin/env bash
# The quality benchmark: every (task, strategy, seed) run at one stated eval budget, then a
# table per task of baseline -> best on test with a paired bootstrap interval, the spread across
# seeds, evals used and wall time, and an aggregate row. A script, not part of CI.
#
#   scripts/quality.sh [OUT_DIR]        (default runs/quality; rerun to resume: finished runs
#                                        are skipped, a run killed part way is resumed)
#   scripts/quality.sh OUT_DIR --table  (only print the table from the runs there)
#
# The protocol (docs/quality.md): defaults are chosen on dev; test is read once, at the end, by
# this table. Baseline and best of a run are scored on the same test examples in the same run,
# so each run's gain has a paired interval; strategies run at the same budget and seeds.
#
# Environment (defaults in brackets):
#   TASKS        [cuad-mini banking77 nlupp-hotels evidence-inference cuad]
#   STRATEGIES   [default demos]   default = what `promptloop optimize --optimizer none` runs;
#                                  demos = --proposer demos --demo-excerpt head (the old default)
#   SEEDS        [0 1 2]
#   MAX_EVALS    [200]             per run, for every task and strategy
#   LIMITS_<task with - as _>     extra flags per task, e.g. LIMITS_cuad="--limit-train 12 ..."
#                                  (defaults below keep a whole table within a night on 2 cores)
#   FLAGS        more flags for every optimize run (e.g. "--threads 2")
#   PROMPTLOOP   the binary [./target/release/promptloop]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/quality}"
TABLE_ONLY=0
[ "${2:-}" = "--table" ] && TABLE_ONLY=1
read -r -a TASKS <<< "${TASKS:-cuad-mini banking77 nlupp-hotels evidence-inference cuad}"
read -r -a STRATS <<< "${STRATEGIES:-default demos}"
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
MAX_EVALS="${MAX_EVALS:-200}"
BIN="${PROMPTLOOP:-./target/release/promptloop}"
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set PROMPTLOOP)" >&2; exit 2; }
mkdir -p "$OUT"

# Split limits per task: what one run of 200 evals can afford on 2 cores in well under an hour.
limits() {
    local var="LIMITS_${1//-/_}"
    if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
    case "$1" in
        cuad-mini) echo "" ;;                                                  # 16 / 10 / 12
        banking77) echo "--limit-train 40 --limit-dev 40 --limit-test 100" ;;
        nlupp-hotels) echo "--limit-train 30 --limit-dev 30 --limit-test 60" ;;
        evidence-inference) echo "--limit-train 20 --limit-dev 20 --limit-test 40" ;;
        cuad) echo "--limit-train 8 --limit-dev 8 --limit-test 16 --on-overflow truncate" ;;
        *) echo "" ;;
    esac
}

strategy_flags() {
    case "$1" in
        default) echo "--optimizer none" ;;
        demos) echo "--optimizer none --proposer demos --demo-excerpt head" ;;
        edits) echo "--optimizer none --proposer edits" ;;
        joint) echo "--optimizer none --proposer joint" ;;
        *) echo "unknown strategy $1" >&2; exit 2 ;;
    esac
}

if [ "$TABLE_ONLY" = 0 ]; then
    for task in "${TASKS[@]}"; do
        for s in "${STRATS[@]}"; do
            for seed in "${SEEDS[@]}"; do
                dir="$OUT/$task/$s/seed$seed"
                if [ -f "$dir/run.jsonl" ] && grep -q '"type":"final"' "$dir/run.jsonl"; then
                    continue
                fi
                mkdir -p "$(dirname "$dir")"
                start=$(date +%s)
                # shellcheck disable=SC2046,SC2086
                if [ -f "$dir/run.jsonl" ]; then
                    echo "[$task $s seed $seed] resuming $dir" >&2
                    "$BIN" -q optimize --resume "$dir" ${FLAGS:-} >/dev/null || echo "[$task $s seed $seed] failed (exit $?)" >&2
                else
                    echo "[$task $s seed $seed] promptloop optimize $(strategy_flags "$s") $(limits "$task")" >&2
                    "$BIN" -q optimize --task "evals/$task" $(strategy_flags "$s") $(limits "$task") \
                        --seed "$seed" --max-evals "$MAX_EVALS" --max-iterations 50 --out "$dir" ${FLAGS:-} >/dev/null \
                        || echo "[$task $s seed $seed] failed (exit $?)" >&2
                fi
                echo $(( $(date +%s) - start + $(cat "$dir/wall_s" 2>/dev/null || echo 0) )) > "$dir/wall_s.new" \
                    && mv "$dir/wall_s.new" "$dir/wall_s"
            done
        done
    done
fi

python3 scripts/quality_table.py "$OUT" "$MAX_EVALS" "${TASKS[*]}" "${STRATS[*]}" "${SEEDS[*]}"
