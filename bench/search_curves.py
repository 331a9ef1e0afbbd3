"""Accuracy versus model tokens per problem for every search, latent and token-level.

Each point is one `latent-search eval` run (resumable: re-running skips finished problems) on
held-out `arith` problems; search sizes are swept, no budget cap, so each point shows what that
size costs. Latent searches use the bundled `tiny-arith` (CoLA after latent RL, with its Q head);
token-level searches move over the base LM's tokens (`tiny-arith-base`, the backbone CoLA was
built on) and are valued by the same Q head (`--value-model tiny-arith`, its tokens charged).

Run:  python bench/search_curves.py --limit 500 --out runs/curves
      (writes OUT/compare.{json,md,png}; --only NAME ... runs a subset)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def methods():
    from eval.compare import Method
    from latent_search.search import SearchSpec

    lat, base, q = "tiny-arith", "tiny-arith-base", "tiny-arith"
    tok = {"value_model": q, "level": "token"}

    def S(**kw):  # noqa: N802 - the searches as first measured: Q-judged, first-token steps
        return SearchSpec(**{"scorer": "q", "candidates": "first-token", **kw})

    return [
        Method("greedy", lat, S()),
        Method("best-of-4 (Q)", lat, S(algorithm="best-of-n", n=4)),
        Method("best-of-16 (Q)", lat, S(algorithm="best-of-n", n=16)),
        Method("best-of-4 (vote)", lat, S(algorithm="best-of-n", n=4, scorer="vote")),
        Method("best-of-16 (vote)", lat, S(algorithm="best-of-n", n=16, scorer="vote")),
        Method("beam 2x2", lat, S(algorithm="beam", beam_width=2, expand_k=2)),
        Method("beam 4x4", lat, S(algorithm="beam", beam_width=4, expand_k=4)),
        Method("mcts 8", lat, S(algorithm="mcts", rounds=8)),
        Method("mcts 32", lat, S(algorithm="mcts", rounds=32)),
        Method("mcts-gumbel 32", lat, S(algorithm="mcts", rounds=32, gumbel=True)),
        Method("mcts-q 4", lat, S(algorithm="mcts-q", rounds=4)),
        Method("mcts-q 16", lat, S(algorithm="mcts-q", rounds=16)),
        Method("token greedy", base, S(), level="token"),
        Method(
            "token best-of-16 (vote)",
            base,
            S(algorithm="best-of-n", n=16, scorer="vote"),
            level="token",
        ),
        Method("token beam 2x2", base, S(algorithm="beam", beam_width=2, expand_k=2), **tok),
        Method("token beam 4x4", base, S(algorithm="beam", beam_width=4, expand_k=4), **tok),
        Method("token mcts 8", base, S(algorithm="mcts", rounds=8), **tok),
        Method("token mcts 32", base, S(algorithm="mcts", rounds=32), **tok),
    ]


def main() -> None:
    from eval.compare import run_compare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("runs/curves"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--only", nargs="*", default=None, help="method names to run")
    args = ap.parse_args()
    chosen = [m for m in methods() if not args.only or m.name in args.only]
    print(f"machine: {machine()}", flush=True)
    t0 = time.perf_counter()

    def progress(name: str) -> None:
        print(f"[{time.perf_counter() - t0:7.0f}s] {name}", flush=True)

    rows = run_compare(
        chosen,
        task="arith",
        out=args.out,
        limit=args.limit,
        batch_size=args.batch_size,
        progress=progress,
    )
    print((args.out / "compare.md").read_text())
    print(f"total {time.perf_counter() - t0:.0f}s for {len(rows)} methods")


if __name__ == "__main__":
    main()
