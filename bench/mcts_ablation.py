"""What each part of the per-token MCTS buys: the same problems and budget, one part off at a time.

Rows: the default (token children, walks, chain collapsing, path-min values with the equation
check, 8 simulations in flight); without chain collapsing (a node per token); without walks
(AlphaZero: one expansion per simulation, the leaf's own value); with the last value instead of
the path's min; one simulation in flight (no virtual loss). Each row reports accuracy, model
tokens and wall seconds per problem, nodes per tree and Python calls to the model per problem
(batched calls of the whole batch, so fewer is faster). Gold answers grade, never search.

Run:  python bench/mcts_ablation.py --limit 100 --budget 236
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, md_table  # noqa: E402

VARIANTS = {
    "default": {},
    "no chain collapsing": {"collapse": False},
    "no walks (AlphaZero leaf value)": {"walk": False},
    "last value, not the path's min": {"aggregate": "last"},
    "1 simulation in flight": {"parallel": 1},
}


def run(name: str, change: dict, problems, budget: int) -> dict:
    from eval.searcher import load_searcher
    from eval.tasks import get_task
    from latent_search.equations import equation_value_fn
    from latent_search.mcts import MCTSConfig, mcts
    from latent_search.search import SearchSpec

    # The configuration `--search mcts --budget B` runs (SearchSpec's defaults), then the change.
    base = dict(simulations=100_000, candidates="token", expand_k=64, budget=budget,
                aggregate="min")  # fmt: skip
    cfg = MCTSConfig(**{**base, **change})
    searcher = load_searcher("tiny-arith", SearchSpec("mcts"))  # a fresh prefix cache each
    backend, task = searcher.backend, get_task("arith")
    prompts = searcher.encode([p.question for p in problems], 256)
    calls0 = backend.usage.calls
    t0 = time.perf_counter()
    results = []
    for a in range(0, len(prompts), 32):  # eval's batches of 32 problems
        results += mcts(backend, prompts[a : a + 32], cfg, equation_value_fn(backend))
    seconds = time.perf_counter() - t0
    right = [task.reward(p, r.text) == 1.0 for p, r in zip(problems, results)]
    n = len(problems)
    return {
        "variant": name,
        "accuracy": sum(right) / n,
        "tokens_per_problem": sum(r.tokens_used for r in results) / n,
        "seconds_per_problem": seconds / n,
        "nodes_per_tree": sum(len(r.tree) for r in results) / n,
        "model_calls": backend.usage.calls - calls0,
        "change": change,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--budget", type=int, default=236)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from eval.tasks import get_task

    problems = get_task("arith").generate(args.limit, seed=1, split="test")
    print(f"machine: {machine()}; {args.limit} problems, budget {args.budget}", flush=True)
    rows = [run(k, v, problems, args.budget) for k, v in VARIANTS.items()]
    header = ["variant", "accuracy", "tokens / problem", "s / problem", "nodes / tree", "calls"]
    cells = [[r["variant"], f"{r['accuracy']:.1%}", f"{r['tokens_per_problem']:.0f}",
              f"{r['seconds_per_problem']:.3f}", f"{r['nodes_per_tree']:.1f}", r["model_calls"]]
             for r in rows]  # fmt: skip
    print(md_table(header, cells))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
