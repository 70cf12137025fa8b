#!/usr/bin/env bash
# The demo: set-up, build, then the main job on the shipped cuad-mini task. SmolLM2-135M runs
# in-process; a short offline `optimize` with the default search (no API: field-guidance
# `edits`, then instructions x evidence-centred worked examples chosen by a bandit, `joint`)
# scores baseline against best on train, dev and test, writes the HTML report, and prints what
# to try next. The task's records come from the data root (../shared/datasets beside the
# checkout, or PROMPTLOOP_DATA / --data-root). Extra arguments go to `promptloop optimize`
# (e.g. `--max-iterations 4`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release --bin promptloop
bin=./target/release/promptloop
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
mkdir -p runs
# The default search and acceptance rule, on part of each split so that it fits a few minutes
# on 2 cores: 8 train, 5 dev and 6 test contracts, 2 iterations (DEMO_TRAIN, DEMO_DEV, DEMO_TEST,
# DEMO_ITERATIONS change them).
DEMO_TRAIN="${DEMO_TRAIN:-8}" DEMO_DEV="${DEMO_DEV:-5}" DEMO_TEST="${DEMO_TEST:-6}" DEMO_ITERATIONS="${DEMO_ITERATIONS:-2}"
"$bin" optimize --task evals/cuad-mini --optimizer none --out "$run" \
    --limit-train "$DEMO_TRAIN" --limit-dev "$DEMO_DEV" --limit-test "$DEMO_TEST" --max-iterations "$DEMO_ITERATIONS" "$@"
report="$("$bin" report "$run")"
cat <<TEXT

What the numbers mean: each example's score is the mean over its 4 fields (title, parties, date,
governing law) of how well the model's value matches the gold one (0 to 1); "exact" counts
contracts with every field right. Baseline is the task's own prompt; best is the prompt the
search kept: it had to score higher on train (by more than chance, a paired bootstrap) AND not
lower on dev (held out). Test was never seen by the search, so its row is the honest measure.
With $DEMO_TRAIN train contracts, small gains are noise: the report shows what the gate could detect.

The report:      $report
The best prompt: $run/best_prompt.txt

Next:
  # an LLM rewrites the prompt from the worst failures (any OpenAI-compatible endpoint)
  OPENAI_API_KEY=... $bin optimize --task evals/cuad-mini --optimizer openai:gpt-4o-mini --out runs/rewrite
  # or a local optimizer model, no API
  $bin optimize --task evals/cuad-mini --optimizer local:gemma3-270m --out runs/local
  # your own data: records with a text and a gold object
  $bin init my-task --from examples.jsonl && $bin eval --task my-task --split dev
TEXT
