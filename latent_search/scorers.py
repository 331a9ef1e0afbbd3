"""Gold-free judges of text: the Q-model's value, or agreement with sibling samples.

An oracle (the task's reward with the gold answer) is built by evaluation code, never here, and
carries ``oracle = True`` so every result produced with it is labelled.
"""

from __future__ import annotations

from collections import Counter

import torch

from cola_models.errors import ColaError

from .types import Backend, Meter, Scorer, ValueFn, is_oracle


def state_values(prior) -> torch.Tensor:
    """V(s) = sum_a pi(a | s) Q(s, a) [B]. Deviation from max_a Q: the Q head is trained offline
    on the actions the policy takes, so a max over all K also ranges over untrained values."""
    return (prior.logits.float().softmax(-1) * prior.q.float()).sum(-1)


def _newest_states(seqs: list[list[int]], done: list[bool]) -> list[list[int]]:
    """A finished sequence is valued at the state before its last token (EOS), whose Q
    estimates the terminal reward; an open one at its newest state."""
    return [s[:-1] if d and len(s) > 1 else s for s, d in zip(seqs, done)]


def q_value_fn(backend: Backend) -> ValueFn:
    """V(s) (policy-weighted Q, see state_values) at the newest state. ``backend`` may be another
    model's than the search's (a CoLA Q head valuing token-level search); the meter charges its
    tokens to the problems either way."""

    def value(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        prior = meter.prior(backend, _newest_states(seqs, done))
        if prior.q is None:
            raise ColaError("this search ranks by a Q head and the model has none (--value-model)")
        return state_values(prior).tolist()

    return value


def q_value_scorer(backend: Backend) -> Scorer:
    """Score a finished sequence by V(s) at the state before its last token: the Q-model's
    estimate of the terminal reward of what has been written (clipped to [0, 1])."""
    value = q_value_fn(backend)

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        try:
            vs = value(seqs, [True] * len(seqs), meter)
        except ValueError:
            raise ColaError("the model has no Q head; use --scorer vote") from None
        return [min(1.0, max(0.0, v)) for v in vs]

    score.oracle = False
    return score


def vote_scores(answers: list[str | None], weights: list[float] | None = None) -> list[float]:
    """Self-consistency: each sample scores the share of the (weighted) votes its final answer
    got; a sample without an answer scores 0. ``weights`` (>= 0, e.g. a verifier's P(right))
    make it a weighted vote; without them every sample counts 1."""
    weights = [1.0] * len(answers) if weights is None else [max(0.0, w) for w in weights]
    totals: Counter = Counter()
    for a, w in zip(answers, weights):
        if a is not None:
            totals[a] += w
    whole = sum(weights) or 1.0
    return [totals[a] / whole if a is not None else 0.0 for a in answers]


TIE_WEIGHT = 1e-6
"""Weight of the second judge in :func:`tie_broken`: below the smallest gap between two
different first scores (shares of checks, n/m with m in the tens), above float rounding."""


def tie_broken(first: Scorer, second: Scorer) -> Scorer:
    """Rank by ``first``; where it ties, by ``second`` (both in [0, 1]). A text the first judge
    cannot check (every score 0) is ranked by the second alone."""

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        return [a + TIE_WEIGHT * b for a, b in zip(first(seqs, meter), second(seqs, meter))]

    score.oracle = is_oracle(first) or is_oracle(second)
    return score


def tie_broken_value(first: ValueFn, second: ValueFn) -> ValueFn:
    """:func:`tie_broken` for the values of partial texts."""

    def value(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        a, b = first(seqs, done, meter), second(seqs, done, meter)
        return [x + TIE_WEIGHT * y for x, y in zip(a, b)]

    return value
