"""Step-level beam search over latent actions (or tokens), ranked by a gold-free judge.

A step is proposed by ``steps.propose``: one of the policy's top-k actions at the beam's
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
from .schedule import Ask, drive
from .steps import CANDIDATES, STEP_STOP, Proposal, branching, propose
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
    step_stop: tuple[str, ...] = STEP_STOP
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


def _step(tree: Tree, prompt: list[int], beam: list[_Hyp], how: Proposal, cfg: BeamConfig):
    """Every hypothesis of the beam extended by each of its candidate steps, each judged."""
    steps = yield from propose(
        [prompt + h.tokens for h in beam], how, [cfg.max_new_tokens - len(h.tokens) for h in beam]
    )
    new = []
    for h, row_steps in zip(beam, steps):
        for st in row_steps:
            toks = h.tokens + st.tokens
            node = tree.add_child(
                h.node, st.action, st.tokens, prior=st.prior, terminal=st.terminal
            )
            done = st.terminal or len(toks) >= cfg.max_new_tokens
            logp = h.logp + math.log(max(st.prior, 1e-30))
            new.append(_Hyp(toks, node, done=done, logp=logp))
    values = yield Ask("value", [prompt + h.tokens for h in new], done=[h.done for h in new])
    for h, v in zip(new, values):
        h.score = float(v)
        tree.value[h.node] = h.score
        tree.visits[h.node] = 1
    return new


def _search(i: int, tree: Tree, ledger: Ledger, how: Proposal, cfg: BeamConfig):
    """The beam of problem i, as a coroutine of model calls (see latent_search.schedule)."""
    beam, pool = [_Hyp([], ROOT)], []
    for _ in range(cfg.max_steps):
        if not beam or not ledger.open(i):
            break
        new = yield from _step(tree, tree.prompt_tokens, beam, how, cfg)
        pool += [h for h in new if h.done]  # finished hypotheses leave for the pool
        beam = sorted((h for h in new if not h.done), key=_rank)[: cfg.beam_width]
    best = min(pool or beam, key=_rank) if pool or beam else _Hyp([], ROOT)
    stats = {"nodes": len(tree), "finished": len(pool), "branching": branching(tree)}
    return Choice(best.tokens, tree, best.node, stats)


def beam_search(
    backend: Backend,
    prompts: list[list[int]],
    cfg: BeamConfig,
    value_fn: ValueFn,
    *,
    generator=None,
) -> list[SearchResult]:
    """``generator`` draws the sampled step candidates (``cfg.candidates == "sampled"``). Every
    problem's beam runs free on the scheduler (latent_search.schedule), its calls batched with
    the others'."""
    trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    ledger = Ledger(backend, len(prompts), budget=cfg.budget, prompt_lens=[len(p) for p in prompts])
    how = Proposal(
        cfg.candidates, cfg.expand_k, cfg.step_tokens, cfg.step_stop, backend.eos_id,
        backend.n_actions,
    )  # fmt: skip
    searches = {i: _search(i, t, ledger, how, cfg) for i, t in enumerate(trees)}
    choices = drive(ledger, searches, value_fn=value_fn, generator=generator)
    return ledger.results([choices[i] for i in range(len(trees))], algorithm="beam", config=cfg)
