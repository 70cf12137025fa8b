#!/usr/bin/env bash
# Search strategies side by side at the same eval budget and seed: one `promptloop optimize`
# run each on the same task, then a table of baseline and best mean on train, dev and test,
# exact matches on test, the best prompt's tokens, evals run and wall time, and each strategy's
# test gain over the first one (today's `demos`) with a paired bootstrap interval over the
# test examples (90%, 10,000 resamples, seeded).
#
#   scripts/strategies.sh [OUT_DIR] [STRATEGY...]      (extra optimize flags in $FLAGS)
#
# Strategies (names below; default: demos joint pareto rewrite-local opro-local reflect-local):
#   demos          --proposer demos --demo-excerpt head   (the offline default before joint)
#   edits          --proposer edits
#   edits+demos    --proposer edits,demos --demo-excerpt evidence
#   pareto         --proposer edits,demos,merge --demo-excerpt evidence --search pareto
#   joint          --proposer edits,joint --demo-excerpt evidence   (the offline default)
#   rewrite-local  --optimizer local:gemma3-270m --proposer rewrite
#   opro-local     --optimizer local:gemma3-270m --proposer opro
#   reflect-local  --optimizer local:gemma3-270m --proposer reflect
#
# Environment: TASK (evals/cuad-mini), MAX_EVALS (150), SEED (0), CANDIDATES (2),
# ACCEPT (mean), FLAGS (more optimize flags, e.g. "--limit-train 8").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/strategies-$(date +%Y%m%d-%H%M%S)}"
shift || true
STRATS=("$@")
[ ${#STRATS[@]} -gt 0 ] || STRATS=(demos joint pareto rewrite-local opro-local reflect-local)
TASK="${TASK:-evals/cuad-mini}"
BIN="${PROMPTLOOP:-./target/release/promptloop}"
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set PROMPTLOOP)" >&2; exit 2; }
mkdir -p "$OUT"
common=(--task "$TASK" --max-evals "${MAX_EVALS:-150}" --seed "${SEED:-0}" --candidates "${CANDIDATES:-2}"
    --max-iterations 20 --accept "${ACCEPT:-mean}" -q)
for s in "${STRATS[@]}"; do
    case "$s" in
        demos) args=(--optimizer none --proposer demos --demo-excerpt head) ;;
        edits) args=(--optimizer none --proposer edits) ;;
        edits+demos) args=(--optimizer none --proposer edits,demos --demo-excerpt evidence) ;;
        pareto) args=(--optimizer none --proposer edits,demos,merge --demo-excerpt evidence --search pareto) ;;
        joint) args=(--optimizer none --proposer edits,joint --demo-excerpt evidence) ;;
        rewrite-local) args=(--optimizer local:gemma3-270m --proposer rewrite) ;;
        opro-local) args=(--optimizer local:gemma3-270m --proposer opro) ;;
        reflect-local) args=(--optimizer local:gemma3-270m --proposer reflect) ;;
        *) echo "unknown strategy $s" >&2; exit 2 ;;
    esac
    dir="$OUT/$s"
    if [ -f "$dir/run.jsonl" ] && grep -q '"type":"final"' "$dir/run.jsonl"; then
        echo "[$s] done before: $dir" >&2
        continue
    fi
    echo "[$s] promptloop optimize ${args[*]} ${common[*]} ${FLAGS:-}" >&2
    start=$(date +%s)
    if [ -d "$dir" ]; then
        # shellcheck disable=SC2086
        "$BIN" optimize --resume "$dir" -q ${FLAGS:-} >/dev/null
    else
        # shellcheck disable=SC2086
        "$BIN" optimize "${args[@]}" "${common[@]}" --out "$dir" ${FLAGS:-} >/dev/null
    fi
    echo $(( $(date +%s) - start )) > "$dir/wall_s"
done

python3 - "$OUT" "${STRATS[@]}" <<'PY'
import json, random, sys, os
out, strats = sys.argv[1], sys.argv[2:]
def load(s):
    recs = [json.loads(l) for l in open(os.path.join(out, s, "run.jsonl")) if l.strip()]
    fin = next(r for r in recs if r["type"] == "final")
    test = {}
    for r in recs:
        if r["type"] == "eval" and r["split"] == "test" and r["prompt_sha256"] == fin["best_sha256"]:
            test[r["record"]["id"]] = r["record"]["score"]
    evals = sum(1 for r in recs if r["type"] == "eval")
    wall = open(os.path.join(out, s, "wall_s")).read().strip() if os.path.exists(os.path.join(out, s, "wall_s")) else "?"
    return fin, test, evals, wall
def boot(deltas, n=10000, seed=7):
    rng = random.Random(seed)
    k = len(deltas)
    means = sorted(sum(deltas[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    return means[int(0.05 * n)], means[int(0.95 * n) - 1]
runs = {s: load(s) for s in strats}
print("| strategy | train base -> best | dev base -> best | test base -> best | test exact (best) | best prompt tokens | accepted | evals | wall s | test gain over demos [90% CI] |")
print("|---|---|---|---|---|---|---|---|---|---|")
ref = runs[strats[0]][1]
for s in strats:
    fin, test, evals, wall = runs[s]
    rows = {r["split"]: r for r in fin["rows"]}
    cell = lambda sp: f'{rows[sp]["baseline_mean"]:.3f} -> {rows[sp]["best_mean"]:.3f}' if sp in rows else "-"
    tokens = fin.get("prompt_tokens") or [None, None]
    ids = sorted(set(ref) & set(test))
    if s == strats[0] or not ids:
        gain = "-"
    else:
        d = [test[i] - ref[i] for i in ids]
        lo, hi = boot(d)
        gain = f"{sum(d)/len(d):+.3f} [{lo:+.3f}, {hi:+.3f}]"
    exact = rows["test"]["best_exact"] if "test" in rows else "-"
    print(f'| {s} | {cell("train")} | {cell("dev")} | {cell("test")} | {exact} | {tokens[1]} | {fin["accepted"]} | {evals} | {wall} | {gain} |')
PY
