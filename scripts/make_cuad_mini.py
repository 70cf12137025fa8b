#!/usr/bin/env python3
"""Builds evals/cuad (a copy of shared/datasets/cuad) and evals/cuad-mini from it.

cuad-mini keeps 4 entity fields (document_name, parties, agreement_date, governing_law) over
short contracts (<= MAX_CHARS characters), so one eval pass takes minutes on 2 CPU cores.
Splits stay disjoint: train draws from CUAD train, then the unused pool; dev from CUAD dev, then
the pool; test from CUAD test. Selection is deterministic (sorted by id). Run from the repo root:

    python3 scripts/make_cuad_mini.py ../shared/datasets/cuad
"""
import json
import shutil
import sys
from pathlib import Path

FIELDS = ["document_name", "parties", "agreement_date", "governing_law"]
MAX_CHARS = 10_000
SIZES = {"train": 16, "dev": 10, "test": 12}


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(src):
    src = Path(src)
    full, mini = Path("evals/cuad"), Path("evals/cuad-mini")
    for name in ["train.jsonl", "dev.jsonl", "test.jsonl", "schema.json", "SOURCE.md"]:
        shutil.copyfile(src / name, full / name)

    pool = sorted((r for r in rows(src / "unused_pool.jsonl") if len(r["text"]) <= MAX_CHARS), key=lambda r: r["id"])
    for split in ["train", "dev", "test"]:
        short = sorted((r for r in rows(src / f"{split}.jsonl") if len(r["text"]) <= MAX_CHARS), key=lambda r: r["id"])
        picked = short[: SIZES[split]]
        if split != "test":
            while len(picked) < SIZES[split] and pool:
                picked.append(pool.pop(0))
        with open(mini / f"{split}.jsonl", "w", encoding="utf-8") as out:
            for r in picked:
                expected = {k: r["expected"][k] for k in FIELDS}
                out.write(json.dumps({"id": r["id"], "text": r["text"], "expected": expected}, ensure_ascii=False) + "\n")
        print(split, len(picked), "docs, max chars", max(len(r["text"]) for r in picked))

    schema = json.loads((src / "schema.json").read_text(encoding="utf-8"))
    schema["$id"] = "cuad-mini.expected.schema.json"
    schema["title"] = "CUAD v1 contract key information: 4 entity fields (cuad-mini)"
    schema["required"] = FIELDS
    schema["properties"] = {k: schema["properties"][k] for k in FIELDS}
    (mini / "schema.json").write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/cuad")
