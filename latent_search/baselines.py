"""The plain baselines: greedy, one sample, and best-of-N (by value or by majority vote)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .backend import Backend
from .result import SearchResult, is_oracle
from .scorers import model_costs, vote_scores


@dataclass(frozen=True)
class BestOfNConfig:
    n: int = 8
    max_new_tokens: int = 256
    select: str = "value"
    """"value" (the scorer's score, e.g. the Q-model) or "vote" (majority over final answers)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n} must be >= 1")
        if self.select not in ("value", "vote"):
            raise ValueError(f"select={self.select!r} must be 'value' or 'vote'")


def decode_once(
    backend: Backend, prompts: list[list[int]], max_new_tokens: int, *, sample: bool, generator=None
) -> list[SearchResult]:
    t0 = time.perf_counter()
    outs = backend.rollout(prompts, max_new_tokens, sample=sample, generator=generator)
    secs = (time.perf_counter() - t0) / max(1, len(prompts))
    return [
        SearchResult(tokens=o, text=backend.decode(o), tree=None, tokens_used=c, seconds=secs)
        for o, c in zip(outs, backend.last_costs)
    ]


def best_of_n(
    backend: Backend,
    prompts: list[list[int]],
    cfg: BestOfNConfig,
    *,
    generator=None,
    scorer: Callable[[list[list[int]]], list[float]] | None = None,
    answer_fn: Callable[[str], str | None] | None = None,
) -> list[SearchResult]:
    """N policy samples per prompt in one batch; keep the best by value or by vote."""
    t0 = time.perf_counter()
    flat = [p for p in prompts for _ in range(cfg.n)]
    outs = backend.rollout(flat, cfg.max_new_tokens, sample=True, generator=generator)
    costs = list(backend.last_costs)
    texts = [backend.decode(o) for o in outs]
    if cfg.select == "vote":
        if answer_fn is None:
            raise ValueError("vote selection needs an answer extractor")
        scores = []
        for i in range(len(prompts)):
            scores += vote_scores([answer_fn(t) for t in texts[i * cfg.n : (i + 1) * cfg.n]])
    else:
        if scorer is None:
            raise ValueError("value selection needs a scorer")
        scores = scorer([p + o for p, o in zip(flat, outs)])
        for i, c in enumerate(model_costs(scorer, len(flat))):
            costs[i] += c
    secs = (time.perf_counter() - t0) / max(1, len(prompts))
    results = []
    for i in range(len(prompts)):
        rows = range(i * cfg.n, (i + 1) * cfg.n)
        best = max(rows, key=lambda r: scores[r])
        results.append(
            SearchResult(
                tokens=outs[best],
                text=texts[best],
                tree=None,
                tokens_used=sum(costs[r] for r in rows),
                seconds=secs,
                stats={
                    "scores": [scores[r] for r in rows],
                    "select": cfg.select,
                    "oracle": cfg.select == "value" and is_oracle(scorer),
                },
            )
        )
    return results
