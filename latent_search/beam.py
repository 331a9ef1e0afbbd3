"""Step-level beam search over latent actions (or tokens), scored by a learned value.

A step starts with one of the policy's top-k actions at the beam's state (all k decoded from one
backbone step; actions that give the same token are merged) and is completed greedily up to a
step boundary (``step_stop``; ``step_tokens=0`` makes every step a single token). Hypotheses are
ranked by the value of their newest state; finished ones leave the beam for a pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .backend import Backend
from .result import SearchResult
from .scorers import ValueFn, model_costs
from .steps import expand_steps
from .tree import ROOT, Tree


@dataclass(frozen=True)
class BeamConfig:
    beam_width: int = 4
    expand_k: int = 4
    """Top-k actions tried from each beam (distinct first tokens only)."""
    max_steps: int = 16
    step_tokens: int = 48
    """Greedy tokens after a step's first token; 0 = single-token steps."""
    step_stop: tuple[str, ...] = (".", "\n")
    max_new_tokens: int = 256
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.beam_width < 1 or self.expand_k < 1 or self.max_steps < 1:
            raise ValueError("beam_width, expand_k and max_steps must be >= 1")
        if self.step_tokens < 0 or self.max_new_tokens < 1:
            raise ValueError("step_tokens must be >= 0 and max_new_tokens >= 1")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget={self.budget} must be >= 1")


@dataclass
class _Hyp:
    tokens: list[int]
    node: int
    score: float = 0.0
    done: bool = False


def beam_search(
    backend: Backend, prompts: list[list[int]], cfg: BeamConfig, value_fn: ValueFn
) -> list[SearchResult]:
    t0 = time.perf_counter()
    trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    beams = [[_Hyp([], ROOT)] for _ in prompts]
    pools: list[list[_Hyp]] = [[] for _ in prompts]
    spent = [0] * len(prompts)

    for _ in range(cfg.max_steps):
        live = [
            (i, h)
            for i, bs in enumerate(beams)
            for h in bs
            if cfg.budget is None or spent[i] < cfg.budget
        ]
        if not live:
            break
        steps, costs, _ = expand_steps(
            backend,
            [prompts[i] + h.tokens for i, h in live],
            k=cfg.expand_k,
            step_tokens=cfg.step_tokens,
            stop=cfg.step_stop,
            room=[cfg.max_new_tokens - len(h.tokens) for _, h in live],
        )
        new_hyps: list[tuple[int, _Hyp]] = []
        for (i, h), row_steps, c in zip(live, steps, costs):
            spent[i] += c
            for st in row_steps:
                toks = h.tokens + st.tokens
                done = st.terminal or len(toks) >= cfg.max_new_tokens
                node = trees[i].add_child(
                    h.node, st.action, st.tokens, prior=st.prior, terminal=st.terminal
                )
                new_hyps.append((i, _Hyp(toks, node, done=done)))
        values = value_fn(
            [prompts[i] + h.tokens for i, h in new_hyps], [h.done for _, h in new_hyps]
        )
        for (i, _), c in zip(new_hyps, model_costs(value_fn, len(new_hyps))):
            spent[i] += c
        for (i, h), v in zip(new_hyps, values):
            h.score = float(v)
            trees[i].value[h.node] = h.score
            trees[i].visits[h.node] = 1
        for i in range(len(prompts)):
            mine = [h for j, h in new_hyps if j == i]
            if not mine:
                continue
            pools[i] += [h for h in mine if h.done]
            open_ = sorted((h for h in mine if not h.done), key=lambda h: -h.score)
            beams[i] = open_[: cfg.beam_width]

    results = []
    secs = (time.perf_counter() - t0) / max(1, len(prompts))
    for i, tree in enumerate(trees):
        pool = pools[i] or beams[i]
        best = max(pool, key=lambda h: h.score) if pool else _Hyp([], ROOT)
        tree.meta.update(
            {
                "algorithm": "beam",
                "tokens": spent[i],
                "chosen": best.node,
                "config": {k: v for k, v in cfg.__dict__.items()},
            }
        )
        results.append(
            SearchResult(
                tokens=best.tokens,
                text=backend.decode(best.tokens),
                tree=tree,
                tokens_used=spent[i],
                seconds=secs,
                stats={"nodes": len(tree), "finished": len(pools[i])},
            )
        )
    return results
