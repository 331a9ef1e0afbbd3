"""Judge integrity: how many answers of a search reach full marks from the equation check's
calculator, reading and answer checks while writing arithmetic outside a checked equation (a
step without its result, an operator left dangling) — texts the check counted as fully right
before it failed such steps (``latent_search.equations``, "unchecked arithmetic").

    python bench/judge_integrity.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a finished `latent-search eval --out` (its results.jsonl holds the questions
and the texts); nothing is run again and no gold answer is read for the count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def count(run: Path) -> dict:
    from latent_search.equations import _unchecked_arithmetic, equation_checks, find_equations

    path = run / "results.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} is missing (not an eval run directory)")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    full_old, gamed = 0, 0
    for r in rows:
        text = r["output"]
        passed, made = equation_checks(r["question"], text)
        unchecked = _unchecked_arithmetic(text, find_equations(text), True)
        if passed == made - unchecked and find_equations(text):  # full marks without the new checks
            full_old += 1
            gamed += unchecked > 0
    return {"run": str(run), "n": len(rows), "full_marks_old_checks": full_old, "unchecked": gamed,
            "accuracy": sum(r["correct"] for r in rows) / max(1, len(rows))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    print("| run | n | full marks (old checks) | of them with unchecked arithmetic | accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for run in args.runs:
        c = count(run)
        print(f"| {c['run']} | {c['n']} | {c['full_marks_old_checks']} | {c['unchecked']} | "
              f"{c['accuracy']:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
