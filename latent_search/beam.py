"""Step-level beam search over latent actions (or tokens), ranked by a gold-free judge.

A step is proposed by ``steps.candidate_steps``: one of the policy's top-k actions at the beam's
state completed greedily up to a step boundary (``step_stop``), the policy's own samples of the
step, or a single token (``step_tokens=0`` / "token" candidates). Hypotheses are ranked by the
judge's value of their newest text, ties by the summed log-prior of their steps; finished ones
leave the beam for a pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cola_models.errors import ColaError

from .ledger import Choice, Ledger
from .steps import CANDIDATES, branching, candidate_steps
from .tree import ROOT, Tree
from .types import Backend, SearchResult, ValueFn


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
    candidates: str = "first-token"
    """How a beam's next steps are proposed: "first-token" or "sampled" (see steps.py)."""

    def __post_init__(self) -> None:
        if self.beam_width < 1 or self.expand_k < 1 or self.max_steps < 1:
            raise ColaError("beam_width, expand_k and max_steps must be >= 1")
        if self.step_tokens < 0 or self.max_new_tokens < 1:
            raise ColaError("step_tokens must be >= 0 and max_new_tokens >= 1")
        if self.budget is not None and self.budget < 1:
            raise ColaError(f"budget={self.budget} must be >= 1")
        if self.candidates not in CANDIDATES:
            raise ColaError(
                f"candidates={self.candidates!r} must be one of {', '.join(CANDIDATES)}"
            )


@dataclass
class _Hyp:
    tokens: list[int]
    node: int
    score: float = 0.0
    done: bool = False
    logp: float = 0.0
    """Summed log-prior of the hypothesis' steps: breaks ties of ``score`` (a judge that finds
    nothing wrong with several texts gives them all 1.0), so the policy's likelier one stays."""


def _rank(h: _Hyp) -> tuple[float, float]:
    """Best first: by the judge's score, then by the policy's log-prior."""
    return (-h.score, -h.logp)


def _grow(
    ledger: Ledger, trees, prompts, live, cfg: BeamConfig, generator
) -> list[tuple[int, _Hyp]]:
    """Every live hypothesis extended by each of its candidate steps (one batch)."""
    steps = candidate_steps(
        ledger,
        [i for i, _ in live],
        [prompts[i] + h.tokens for i, h in live],
        mode=cfg.candidates,
        k=cfg.expand_k,
        step_tokens=cfg.step_tokens,
        stop=cfg.step_stop,
        room=[cfg.max_new_tokens - len(h.tokens) for _, h in live],
        generator=generator,
    )
    new = []
    for (i, h), row_steps in zip(live, steps):
        for st in row_steps:
            toks = h.tokens + st.tokens
            node = trees[i].add_child(
                h.node, st.action, st.tokens, prior=st.prior, terminal=st.terminal
            )
            done = st.terminal or len(toks) >= cfg.max_new_tokens
            logp = h.logp + math.log(max(st.prior, 1e-30))
            new.append((i, _Hyp(toks, node, done=done, logp=logp)))
    return new


def _evaluate(ledger: Ledger, trees, prompts, new, value_fn: ValueFn) -> None:
    values = ledger.value(
        [i for i, _ in new],
        value_fn,
        [prompts[i] + h.tokens for i, h in new],
        [h.done for _, h in new],
    )
    for (i, h), v in zip(new, values):
        h.score = float(v)
        trees[i].value[h.node] = h.score
        trees[i].visits[h.node] = 1


def beam_search(
    backend: Backend,
    prompts: list[list[int]],
    cfg: BeamConfig,
    value_fn: ValueFn,
    *,
    generator=None,
) -> list[SearchResult]:
    """``generator`` draws the sampled step candidates (``cfg.candidates == "sampled"``)."""
    trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    beams = [[_Hyp([], ROOT)] for _ in prompts]
    pools: list[list[_Hyp]] = [[] for _ in prompts]
    ledger = Ledger(backend, len(prompts), budget=cfg.budget, prompt_lens=[len(p) for p in prompts])

    for _ in range(cfg.max_steps):
        live = [(i, h) for i in ledger.open_problems() for h in beams[i]]
        if not live:
            break
        new = _grow(ledger, trees, prompts, live, cfg, generator)
        _evaluate(ledger, trees, prompts, new, value_fn)
        for i in {i for i, _ in new}:  # finished hypotheses leave for the pool; the best stay
            mine = [h for j, h in new if j == i]
            pools[i] += [h for h in mine if h.done]
            beams[i] = sorted((h for h in mine if not h.done), key=_rank)[: cfg.beam_width]

    choices = []
    for i, tree in enumerate(trees):
        pool = pools[i] or beams[i]
        best = min(pool, key=_rank) if pool else _Hyp([], ROOT)
        stats = {"nodes": len(tree), "finished": len(pools[i]), "branching": branching(tree)}
        choices.append(Choice(best.tokens, tree, best.node, stats))
    return ledger.results(choices, algorithm="beam", config=cfg)
