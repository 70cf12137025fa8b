#!/usr/bin/env python3
"""The table of scripts/quality.sh, from the run directories OUT/<task>/<strategy>/seed<N>/.

Per (task, strategy): test baseline -> best, averaged over the seeds; the test gain with a 90%
paired bootstrap interval over the test examples (each example's gain averaged over the seeds;
10,000 resamples, seeded); the gain's spread across seeds (min..max); how many seeds' own
intervals are above zero; dev baseline -> best; evals used and wall time per run; whether the
seeds changed the search at all. Then each strategy's test gain over the second one (paired, per
example) and an aggregate row per strategy. Missing or unfinished runs are listed, not guessed.

usage: quality_table.py OUT MAX_EVALS "TASKS" "STRATEGIES" "SEEDS"
"""
import json
import os
import random
import sys

out, max_evals = sys.argv[1], sys.argv[2]
tasks, strats, seeds = sys.argv[3].split(), sys.argv[4].split(), sys.argv[5].split()


def load(d):
    path = os.path.join(d, "run.jsonl")
    if not os.path.exists(path):
        return None
    recs = []
    for line in open(path, encoding="utf-8"):
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line of a run killed part way
    fin = next((r for r in recs if r["type"] == "final"), None)
    if fin is None:
        return None

    def scores(split, sha):
        return {r["record"]["id"]: r["record"]["score"] for r in recs
                if r["type"] == "eval" and r["split"] == split and r["prompt_sha256"] == sha}

    wall = None
    if os.path.exists(os.path.join(d, "wall_s")):
        wall = int(open(os.path.join(d, "wall_s")).read().strip() or 0)
    return {
        "fin": fin,
        "rows": {r["split"]: r for r in fin["rows"]},
        "base_test": scores("test", fin["baseline_sha256"]),
        "best_test": scores("test", fin["best_sha256"]),
        "evals": sum(1 for r in recs if r["type"] == "eval"),
        "wall": wall,
        "trail": tuple(r["prompt_sha256"] for r in recs if r["type"] == "candidate"),
    }


def boot(deltas, n=10000, seed=7):
    if not deltas:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    k = len(deltas)
    means = sorted(sum(deltas[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    return means[int(0.05 * n)], means[int(0.95 * n) - 1]


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


runs, missing = {}, []
for t in tasks:
    for s in strats:
        for seed in seeds:
            r = load(os.path.join(out, t, s, f"seed{seed}"))
            if r is None:
                missing.append(f"{t}/{s}/seed{seed}")
            else:
                runs[(t, s, seed)] = r

print(f"# Quality: test baseline -> best, budget {max_evals} evals per run, seeds {' '.join(seeds)}\n")
print("| task | strategy | seeds | test base -> best | test gain [90% CI] | gain min..max over seeds | seeds with CI > 0 | dev base -> best | evals per run | wall s per run | search |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
gains = {s: [] for s in strats}
per_example_best = {}
for t in tasks:
    for s in strats:
        rs = [runs[(t, s, seed)] for seed in seeds if (t, s, seed) in runs]
        if not rs:
            continue
        ids = sorted(set.intersection(*(set(r["base_test"]) & set(r["best_test"]) for r in rs)))
        if not ids:
            print(f"| {t} | {s} | {len(rs)} | (no test split) | | | | | | | |")
            continue
        base = {i: mean(r["base_test"][i] for r in rs) for i in ids}
        best = {i: mean(r["best_test"][i] for r in rs) for i in ids}
        per_example_best[(t, s)] = best
        deltas = [best[i] - base[i] for i in ids]
        lo, hi = boot(deltas)
        seed_gains = [mean(r["best_test"][i] - r["base_test"][i] for i in ids) for r in rs]
        above = sum(1 for r in rs if boot([r["best_test"][i] - r["base_test"][i] for i in ids])[0] > 0)
        g = mean(deltas)
        gains[s].append((t, g, lo))
        dev = (mean(r["rows"]["dev"]["baseline_mean"] for r in rs), mean(r["rows"]["dev"]["best_mean"] for r in rs))
        walls = [r["wall"] for r in rs if r["wall"] is not None]
        deterministic = len(rs) > 1 and len({r["trail"] for r in rs}) == 1
        print(
            f"| {t} | {s} | {len(rs)} | {mean(base.values()):.3f} -> {mean(best.values()):.3f} | "
            f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}] | {min(seed_gains):+.3f}..{max(seed_gains):+.3f} | {above}/{len(rs)} | "
            f"{dev[0]:.3f} -> {dev[1]:.3f} | {mean(r['evals'] for r in rs):.0f} | "
            f"{mean(walls):.0f} | {'deterministic: every seed proposed the same' if deterministic else 'seeds differ'} |"
        )

print("\n| strategy | tasks | mean test gain (points) | tasks with CI > 0 | tasks that lose (gain < 0) |")
print("|---|---|---|---|---|")
for s in strats:
    gs = gains[s]
    if gs:
        print(f"| {s} | {len(gs)} | {100 * mean(g for _, g, _ in gs):+.1f} | {sum(1 for _, _, lo in gs if lo > 0)} | "
              f"{', '.join(t for t, g, _ in gs if g < 0) or 'none'} |")

if len(strats) >= 2:
    a, b = strats[0], strats[1]
    print(f"\n| task | test gain of {a} over {b} [90% CI] |")
    print("|---|---|")
    for t in tasks:
        if (t, a) in per_example_best and (t, b) in per_example_best:
            pa, pb = per_example_best[(t, a)], per_example_best[(t, b)]
            ids = sorted(set(pa) & set(pb))
            d = [pa[i] - pb[i] for i in ids]
            lo, hi = boot(d)
            print(f"| {t} | {mean(d):+.3f} [{lo:+.3f}, {hi:+.3f}] |")

if missing:
    print(f"\nNot finished (rerun scripts/quality.sh {out} to resume): {', '.join(missing)}")
