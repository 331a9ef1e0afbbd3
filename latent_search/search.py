"""One entry point over the algorithms: name + budget + seed -> results, for solve and eval."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cola_models.errors import ColaError

from .baselines import BestOfNConfig, best_of_n, decode_once
from .beam import BeamConfig, beam_search
from .equations import equation_scorer, equation_value_fn
from .mcts import MCTSConfig, mcts
from .mcts_q import MCTSQConfig, mcts_q
from .scorers import q_value_fn, q_value_scorer, tie_broken, tie_broken_value
from .steps import CANDIDATES
from .tree import Tree
from .types import Backend, SearchResult, is_oracle

ALGORITHMS = ("greedy", "sample", "best-of-n", "beam", "mcts", "mcts-q")
RESUMABLE = ("mcts", "mcts-q")
SCORERS = (
    "q",
    "verifier",
    "likelihood",
    "equations",
    "equations-likelihood",
    "equations-q",
    "vote",
    "weighted-vote",
    "likelihood-vote",
)
NEEDS_MODEL = ("verifier", "weighted-vote", "likelihood", "likelihood-vote", "equations-likelihood")
"""Scorers the caller builds from a model (a reward model, or the searched LM itself)."""


@dataclass(frozen=True)
class SearchSpec:
    algorithm: str = "greedy"
    budget: int | None = None
    """Model tokens per problem (prefill + decode); None: the algorithm's own default size."""
    max_new_tokens: int = 256
    n: int = 8
    """Samples of best-of-n."""
    rounds: int = 32
    """Selection rounds of mcts-q; simulations of mcts."""
    scorer: str | None = None
    """How rollouts / samples / states are judged without the gold answer: "q" (the Q head's
    value), "verifier" (a reward model: P(right) of the text so far), "likelihood" (the searched
    model's own LM: the mean token probability of the text after the prompt; nothing trained),
    "equations" (no model: the text's equations recomputed, their numbers found in the
    question), "equations-likelihood" (ties broken by the likelihood), "equations-q" (ties of the check
    broken by the Q head's value), "vote" (best-of-n:
    majority answer), "weighted-vote" / "likelihood-vote" (best-of-n: answers weighted by the
    verifier / by the likelihood). None: "equations-likelihood" for best-of-n, "equations"
    otherwise (what docs/search.md's measurements support)."""
    seed: int = 0
    beam_width: int | None = None
    """None: 8."""
    expand_k: int | None = None
    """Actions tried per node by beam and mcts (distinct first tokens). None: beam 64 (every
    action), mcts 4."""
    gumbel: bool = False
    """mcts: Gumbel root selection (sequential halving) instead of PUCT at the root."""
    candidates: str | None = None
    """beam / mcts: a node's child steps are its top actions' first tokens completed greedily
    ("first-token"), the policy's own samples of the whole step ("sampled"), or single tokens,
    the distinct tokens of the top actions ("token"; a beam then runs a step per token).
    None: "token" for beam and mcts, "first-token" otherwise."""
    parallel: int = 8
    """mcts: simulations in flight per problem (virtual loss), batched into one model call."""
    c_puct: float | None = None
    """mcts: the PUCT exploration constant. None: 1.0."""
    aggregate: str | None = None
    """mcts: a node's value is its judge's value of the node ("last") or the lowest along its
    path from the root ("min": a fault found stays found, the PRM min over steps). None: "min"
    for the equation check's scorers, "last" otherwise."""

    def __post_init__(self) -> None:
        # The one set of defaults (the CLI passes its flags through, None where unset): a beam
        # over single tokens, 8 wide, every action tried, judged by the equation check.
        tree = self.algorithm in ("beam", "mcts")
        token = self.candidates in (None, "token") and tree
        fill = {
            "scorer": "equations-likelihood" if self.algorithm == "best-of-n" else "equations",
            "beam_width": 8,
            "expand_k": 64 if token else 4,
            "candidates": "token" if tree else "first-token",
            "c_puct": 1.0,
        }
        for name, value in fill.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.aggregate is None:  # the equation check finds faults: a fault found stays found
            low = self.scorer.startswith("equations")
            object.__setattr__(self, "aggregate", "min" if low else "last")
        self._validate()

    def _validate(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ColaError(
                f"unknown search {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        if self.budget is not None and self.budget < 1:
            raise ColaError(f"budget={self.budget} must be >= 1")
        if self.max_new_tokens < 1:
            raise ColaError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.scorer not in SCORERS:
            raise ColaError(f"scorer={self.scorer!r} must be one of {', '.join(SCORERS)}")
        for name in ("n", "rounds", "beam_width", "expand_k", "parallel"):
            if getattr(self, name) < 1:
                raise ColaError(f"{name}={getattr(self, name)} must be >= 1")
        if self.scorer.endswith("vote") and self.algorithm in (
            "beam",
            "mcts",
            "mcts-q",
        ):
            # Tree and beam searches value partial texts; a vote needs finished answers.
            raise ColaError(
                f"{self.algorithm} values states; --scorer {self.scorer} is for best-of-n"
            )
        if self.budget is not None and self.algorithm in ("greedy", "sample"):
            # One decode has no size to bound: its cost is set by --max-new-tokens alone.
            raise ColaError(
                f"--budget does not apply to {self.algorithm} (one decode, sized by "
                "--max-new-tokens); it binds best-of-n, beam, mcts and mcts-q"
            )
        if self.candidates not in CANDIDATES:
            raise ColaError(
                f"candidates={self.candidates!r} must be one of {', '.join(CANDIDATES)}"
            )
        if self.candidates == "sampled" and self.algorithm == "mcts-q":
            raise ColaError("mcts-q takes first-token or token candidates")
        if self.candidates != "first-token" and self.algorithm not in ("beam", "mcts", "mcts-q"):
            raise ColaError("--step-candidates applies to beam, mcts and mcts-q")
        if self.gumbel and self.candidates == "sampled":
            raise ColaError(
                "--gumbel samples root actions; it needs first-token or token candidates"
            )
        if self.aggregate not in ("min", "last"):
            raise ColaError(f"aggregate={self.aggregate!r} must be 'min' or 'last'")
        if self.c_puct < 0:
            raise ColaError(f"c_puct={self.c_puct} must be >= 0")
        if self.gumbel and self.algorithm != "mcts":
            raise ColaError("gumbel root selection is an option of --search mcts")


def _select(scorer_name: str, scorer) -> str:
    if is_oracle(scorer) or not scorer_name.endswith("vote"):
        return "value"
    return "vote" if scorer_name == "vote" else "weighted_vote"


def run_search(
    backend: Backend,
    prompts: list[list[int]],
    spec: SearchSpec,
    *,
    answer_fn: Callable[[str], str | None] | None = None,
    scorer=None,
    value_fn=None,
    value_backend: Backend | None = None,
    trees: list[Tree] | None = None,
    on_round: Callable[[list[Tree]], None] | None = None,
) -> list[SearchResult]:
    """Run ``spec.algorithm`` on every prompt (batched). ``scorer`` (finished texts) and
    ``value_fn`` (states of beam and mcts) judge with something other than the Q head: a reward
    model for ``spec.scorer`` "verifier" / "weighted-vote" (an oracle scorer must carry
    ``oracle = True``). ``value_backend`` supplies the Q head when
    the searched model has none (token-level search valued by a CoLA model's Q head).
    ``trees`` resumes saved mcts / mcts-q searches; ``on_round(trees)`` runs after each round
    of those two (to checkpoint them)."""
    results = _dispatch(
        backend, prompts, spec, answer_fn, scorer, value_fn, value_backend, trees, on_round
    )
    if spec.algorithm not in ("greedy", "sample"):  # the viewer shows what this judge said
        for r in results:
            if r.tree is not None:
                r.tree.meta["judge"] = spec.scorer
    return results


def _dispatch(
    backend, prompts, spec, answer_fn, scorer, value_fn, value_backend, trees, on_round
) -> list[SearchResult]:
    """``run_search`` without the bookkeeping: the algorithm's own call."""
    if (trees is not None or on_round is not None) and spec.algorithm not in RESUMABLE:
        raise ColaError(f"only {' and '.join(RESUMABLE)} searches can be saved and resumed")
    vb = value_backend or backend
    # The stream lives where the model samples (a CPU generator cannot drive CUDA sampling):
    # a seed's samples are reproducible on one kind of device, not across kinds.
    # (a backend of the caller's own without ``device`` is taken to live on the CPU)
    g = torch.Generator(device=getattr(backend, "device", "cpu")).manual_seed(spec.seed)
    if spec.algorithm in ("greedy", "sample"):
        return decode_once(
            backend, prompts, spec.max_new_tokens, sample=spec.algorithm == "sample", generator=g
        )
    if spec.scorer in NEEDS_MODEL and scorer is None:
        what = "the searched model" if "likelihood" in spec.scorer else "--verifier DIR"
        raise ColaError(f"--scorer {spec.scorer} needs a scorer built from {what}")
    if scorer is None and spec.scorer == "q":
        scorer = q_value_scorer(vb)
    if spec.scorer == "equations":  # reads the decoded text only: no model to build
        scorer = scorer or equation_scorer(backend)
        value_fn = value_fn or equation_value_fn(backend)
    if spec.scorer == "equations-q":  # the check first; the Q head where the check ties
        scorer = scorer or tie_broken(equation_scorer(backend), q_value_scorer(vb))
        value_fn = value_fn or tie_broken_value(equation_value_fn(backend), q_value_fn(vb))
    if value_fn is None:
        value_fn = q_value_fn(vb)
    if spec.algorithm == "best-of-n":
        cfg = BestOfNConfig(
            n=spec.n,
            max_new_tokens=spec.max_new_tokens,
            select=_select(spec.scorer, scorer),
            budget=spec.budget,
        )
        return best_of_n(backend, prompts, cfg, generator=g, scorer=scorer, answer_fn=answer_fn)
    if spec.algorithm == "mcts":
        mcfg = MCTSConfig(
            simulations=spec.rounds,
            expand_k=spec.expand_k,
            max_new_tokens=spec.max_new_tokens,
            budget=spec.budget,
            gumbel=spec.gumbel,
            candidates=spec.candidates,
            parallel=spec.parallel,
            c_puct=spec.c_puct,
            aggregate=spec.aggregate,
        )
        return mcts(backend, prompts, mcfg, value_fn, generator=g, trees=trees, on_round=on_round)
    if spec.algorithm == "beam":
        per_token = {"max_steps": spec.max_new_tokens} if spec.candidates == "token" else {}
        cfg = BeamConfig(
            beam_width=spec.beam_width,
            expand_k=spec.expand_k,
            max_new_tokens=spec.max_new_tokens,
            budget=spec.budget,
            candidates=spec.candidates,
            **per_token,  # a step per token: as many steps as tokens
        )
        return beam_search(backend, prompts, cfg, value_fn, generator=g)
    cfg = MCTSQConfig(
        rounds=spec.rounds,
        rollout_tokens=spec.max_new_tokens,
        max_depth=spec.max_new_tokens,
        budget=spec.budget,
        walk=spec.candidates == "token",
    )
    return mcts_q(backend, prompts, cfg, scorer, value_fn=value_fn, trees=trees, on_round=on_round)
