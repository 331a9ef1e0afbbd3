"""Step-level beam search over latent actions (or tokens), scored by a learned value.

A step starts with one of the policy's top-k actions at the beam's state (all k decoded from one
backbone step; actions that give the same token are merged) and is completed greedily up to a
step boundary (``step_stop``; ``step_tokens=0`` makes every step a single token). Hypotheses are
ranked by the value of their newest state; finished ones leave the beam for a pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .backend import Backend
from .result import SearchResult
from .tree import ROOT, Tree

ValueFn = Callable[[list[list[int]], list[bool]], list[float]]
"""(full sequences, finished flags) -> value of each sequence's newest state."""


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
    eos = backend.eos_id

    for _ in range(cfg.max_steps):
        live = [
            (i, h)
            for i, bs in enumerate(beams)
            for h in bs
            if cfg.budget is None or spent[i] < cfg.budget
        ]
        if not live:
            break
        prefixes = [prompts[i] + h.tokens for i, h in live]
        prior = backend.prior(prefixes)
        for (i, _), c in zip(live, backend.last_costs):
            spent[i] += c
        k = min(cfg.expand_k, backend.n_actions)
        top = prior.logits.float().topk(k, dim=-1)  # [B, k]
        probs = prior.logits.float().softmax(-1)
        first = backend.expand(prefixes, top.indices)  # [B, k]
        cands: list[tuple[int, _Hyp, int, int, float]] = []  # (problem, parent, action, token, p)
        for row, (i, h) in enumerate(live):
            seen: set[int] = set()
            for j in range(k):
                t = int(first[row, j])
                if t not in seen:
                    seen.add(t)
                    a = int(top.indices[row, j])
                    cands.append((i, h, a, t, float(probs[row, a])))
        conts: list[list[int]] = [[] for _ in cands]
        grow = [
            n
            for n, (_, h, _, t, _) in enumerate(cands)
            if cfg.step_tokens > 0 and t != eos and len(h.tokens) + 1 < cfg.max_new_tokens
        ]
        if grow:
            outs = backend.rollout(
                [prompts[cands[n][0]] + cands[n][1].tokens + [cands[n][3]] for n in grow],
                min(cfg.step_tokens, cfg.max_new_tokens),
                sample=False,
                stop=cfg.step_stop,
            )
            for n, out, c in zip(grow, outs, backend.last_costs):
                conts[n] = out
                spent[cands[n][0]] += c
        new_hyps: list[tuple[int, _Hyp]] = []
        for n, (i, h, a, t, p) in enumerate(cands):
            step = [t] + conts[n]
            toks = (h.tokens + step)[: cfg.max_new_tokens]
            done = eos in step or len(toks) >= cfg.max_new_tokens
            node = trees[i].add_child(h.node, a, step, prior=p, terminal=eos in step)
            new_hyps.append((i, _Hyp(toks, node, done=done)))
        values = value_fn(
            [prompts[i] + h.tokens for i, h in new_hyps], [h.done for _, h in new_hyps]
        )
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


def q_value_fn(backend: Backend) -> ValueFn:
    """V(s) = max_a Q(s, a) at the newest state (for a finished sequence: the state before its
    last token, whose Q estimates the terminal reward)."""

    def value(seqs: list[list[int]], done: list[bool]) -> list[float]:
        if not seqs:
            return []
        states = [s[:-1] if d and len(s) > 1 else s for s, d in zip(seqs, done)]
        prior = backend.prior(states)
        if prior.q is None:
            raise ValueError("beam search ranks by the Q head; this model has none")
        return prior.q.float().max(-1).values.tolist()

    return value
