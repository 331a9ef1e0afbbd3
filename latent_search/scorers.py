"""Gold-free scorers for rollouts: the Q-model's value, or agreement with sibling rollouts.

An oracle (the task's reward with the gold answer) is built by evaluation code, never here, and
carries ``oracle = True`` so every result produced with it is labelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from .backend import Backend


def q_value_scorer(backend: Backend) -> Callable[[list[list[int]]], list[float]]:
    """Score a finished sequence by max_a Q(s, a) at the state before its last token: the Q-model's
    estimate of the terminal reward of what has been written (clipped to [0, 1])."""

    def score(seqs: list[list[int]]) -> list[float]:
        if not seqs:
            return []
        prior = backend.prior([s[:-1] if len(s) > 1 else s for s in seqs])
        if prior.q is None:
            raise ValueError("the model has no Q head; use --scorer vote")
        return [min(1.0, max(0.0, float(v))) for v in prior.q.max(-1).values]

    score.oracle = False
    return score


def vote_scores(answers: list[str | None]) -> list[float]:
    """Self-consistency: the share of samples that reached the same final answer (None scores 0)."""
    counts = Counter(a for a in answers if a is not None)
    n = len(answers)
    return [counts[a] / n if a is not None else 0.0 for a in answers]
