"""Wall time of the tree searches against batched greedy decoding, in one run, as ratios.

The same held-out arith problems, in eval's batches of 32, through one loaded model per search
(each its own prefix cache, so no search reads another's cached states): greedy, the per-token
beam and per-token MCTS at the same budgets as bench/budgets.py. The searches alternate over
--repeats rounds and each figure is the median round, so drift on a shared machine hits every
search alike. Reported: seconds per problem, seconds per 1,000 model tokens, and the two ratios
the MCTS issue asks for (MCTS against the beam at equal tokens; every search's seconds per token
against greedy's).

Run:  python bench/search_speed.py --limit 64 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from budgets import WIDTHS  # noqa: E402
from common import machine, md_table  # noqa: E402

GREEDY_TOKENS = 59.3
"""Greedy's mean model tokens per problem on the 500 problems (bench/budgets.py)."""


def searches(multiples: list[int]):
    from latent_search.search import SearchSpec

    yield "greedy", SearchSpec()
    for m in multiples:
        budget = round(m * GREEDY_TOKENS)
        yield f"beam {WIDTHS[m]} wide ({m}x)", SearchSpec("beam", beam_width=WIDTHS[m])
        yield f"mcts ({m}x)", SearchSpec("mcts", budget=budget, rounds=100_000)
        yield f"mcts-q ({m}x)", SearchSpec("mcts-q", budget=budget, rounds=100_000,
                                           candidates="token")  # fmt: skip


def once(spec, prompts) -> tuple[float, float]:
    """(seconds, model tokens) of one search over every prompt, from a cold prefix cache."""
    from eval.searcher import load_searcher
    from latent_search.search import run_search

    searcher = load_searcher("tiny-arith", spec)
    t0 = time.perf_counter()
    tokens = 0
    for a in range(0, len(prompts), 32):
        out = run_search(searcher.backend, prompts[a : a + 32], spec, **searcher.search_args())
        tokens += sum(r.tokens_used for r in out)
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--multiples", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from eval.searcher import load_searcher
    from eval.tasks import get_task
    from latent_search.search import SearchSpec

    problems = get_task("arith").generate(args.limit, seed=1, split="test")
    encode = load_searcher("tiny-arith", SearchSpec()).encode
    prompts = encode([p.question for p in problems], 256)
    todo = list(searches(args.multiples))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in todo}
    for _, spec in todo:  # warm-up: first calls of each kind pay one-time costs
        once(spec, prompts[:2])
    for _ in range(args.repeats):
        for name, spec in todo:
            runs[name].append(once(spec, prompts))
    n = len(prompts)
    rows = {}
    for name, got in runs.items():
        sec = statistics.median(s for s, _ in got)
        tok = statistics.median(t for _, t in got) / n
        rows[name] = {"s_per_problem": sec / n, "tokens": tok, "s_per_ktok": 1000 * sec / n / tok}
    g = rows["greedy"]["s_per_ktok"]
    print(f"machine: {machine()}; {n} problems, median of {args.repeats}")
    header = ["search", "tokens / problem", "s / problem", "s / 1k tokens", "× greedy's s / token"]
    cells = [[name, f"{r['tokens']:.0f}", f"{r['s_per_problem']:.3f}", f"{r['s_per_ktok']:.2f}",
              f"{r['s_per_ktok'] / g:.2f}"] for name, r in rows.items()]  # fmt: skip
    print(md_table(header, cells))
    for m in args.multiples:
        b, t = rows[f"beam {WIDTHS[m]} wide ({m}x)"], rows[f"mcts ({m}x)"]
        print(f"{m}x: mcts / beam wall time per problem {t['s_per_problem'] / b['s_per_problem']:.2f}"
              f" (tokens {t['tokens']:.0f} / {b['tokens']:.0f})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
