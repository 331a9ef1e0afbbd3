"""A reward model (``cola_models.reward_model``) as a search's scorer and value function.

The reward model reads text, not the policy's token ids: each sequence is decoded with the
searched model's tokenizer and re-encoded with the reward model's own (an external reward model
has its own vocabulary). It never sees a gold answer: only the text written so far. Its forward
tokens are charged to the problems through the meter, like any other model work.
"""

from __future__ import annotations

from collections.abc import Callable

from ..types import Meter, Scorer, ValueFn


def reward_scorer(rm, decode: Callable[[list[int]], str]) -> Scorer:
    """Score of a finished sequence (prompt + answer): P(right) from the reward model."""

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        scores, costs = rm.score_texts([decode(s) for s in seqs])
        meter.charge(costs)
        return scores

    score.oracle = False
    return score


def reward_value_fn(rm, decode: Callable[[list[int]], str]) -> ValueFn:
    """Value of a partial sequence (a step prefix): the reward model's P(it ends right), as a
    process reward model reads a prefix."""
    score = reward_scorer(rm, decode)

    def value(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        return score(seqs, meter)

    return value
