"""Paired comparison of eval runs on the same problems: each run's accuracy against a baseline,
the problems only one of them solved, and McNemar's exact test (two-sided binomial on those).

    python bench/paired.py runs/likelihood/greedy runs/likelihood2/bo8-likelihood ...

The first directory is the baseline; every directory is a finished `latent-search eval --out`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def correct(run: Path) -> dict[str, bool]:
    path = run / "results.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} is missing (not an eval run directory)")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {r["id"]: bool(r["correct"]) for r in rows}


def mcnemar_p(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs as a fair coin."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline", type=Path)
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    base = correct(args.baseline)
    print(f"baseline {args.baseline}: {sum(base.values()) / len(base):.1%} of {len(base)}")
    print("| run | accuracy | wins | losses | McNemar p |")
    print("| --- | --- | --- | --- | --- |")
    for run in args.runs:
        other = correct(run)
        if other.keys() != base.keys():
            sys.exit(f"error: {run} holds other problems than {args.baseline}")
        wins = sum(other[k] and not base[k] for k in base)
        losses = sum(base[k] and not other[k] for k in base)
        acc = sum(other.values()) / len(other)
        print(f"| {run} | {acc:.1%} | {wins} | {losses} | {mcnemar_p(wins, losses):.3f} |")


if __name__ == "__main__":
    main()
