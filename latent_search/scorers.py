"""Gold-free scorers for rollouts: the Q-model's value, or agreement with sibling rollouts.

An oracle (the task's reward with the gold answer) is built by evaluation code, never here, and
carries ``oracle = True`` so every result produced with it is labelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

from .backend import Backend

ValueFn = Callable[[list[list[int]], list[bool]], list[float]]
"""(full sequences, finished flags) -> value of each sequence's newest state."""


def model_costs(fn, n: int) -> list[int]:
    """Model tokens the last call of a scorer / value function cost per row (0 if it ran none)."""
    costs = getattr(fn, "last_costs", None)
    return list(costs) if costs is not None and len(costs) == n else [0] * n


def state_values(prior) -> torch.Tensor:
    """V(s) = sum_a pi(a | s) Q(s, a) [B]. Deviation from max_a Q: the Q head is trained offline
    on the actions the policy takes, so a max over all K also ranges over untrained values."""
    return (prior.logits.float().softmax(-1) * prior.q.float()).sum(-1)


def q_value_fn(backend: Backend) -> ValueFn:
    """V(s) (policy-weighted Q, see state_values) at the newest state (for a finished sequence:
    the state before its last token, whose Q estimates the terminal reward). ``backend`` may be another model's than
    the search's (a CoLA Q head valuing token-level search); its tokens are charged either way."""

    def value(seqs: list[list[int]], done: list[bool]) -> list[float]:
        if not seqs:
            value.last_costs = []
            return []
        states = [s[:-1] if d and len(s) > 1 else s for s, d in zip(seqs, done)]
        prior = backend.prior(states)
        value.last_costs = list(backend.last_costs)
        if prior.q is None:
            raise ValueError("this search ranks by a Q head and the model has none (--value-model)")
        return state_values(prior).tolist()

    value.last_costs = []
    return value


def q_value_scorer(backend: Backend) -> Callable[[list[list[int]]], list[float]]:
    """Score a finished sequence by V(s) at the state before its last token: the Q-model's
    estimate of the terminal reward of what has been written (clipped to [0, 1])."""

    def score(seqs: list[list[int]]) -> list[float]:
        if not seqs:
            return []
        prior = backend.prior([s[:-1] if len(s) > 1 else s for s in seqs])
        score.last_costs = list(backend.last_costs)
        if prior.q is None:
            raise ValueError("the model has no Q head; use --scorer vote")
        return [min(1.0, max(0.0, float(v))) for v in state_values(prior)]

    score.oracle = False
    score.last_costs = []
    return score


def vote_scores(answers: list[str | None]) -> list[float]:
    """Self-consistency: the share of samples that reached the same final answer (None scores 0)."""
    counts = Counter(a for a in answers if a is not None)
    n = len(answers)
    return [counts[a] / n if a is not None else 0.0 for a in answers]
