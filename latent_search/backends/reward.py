"""A reward model (``cola_models.reward_model``) as a search's scorer and value function.

The reward model reads text, not the policy's token ids: each sequence is decoded with the
searched model's tokenizer and re-encoded with the reward model's own (an external reward model
has its own vocabulary). It never sees a gold answer: only the text written so far. Its forward
tokens are charged to the problems through the meter, like any other model work.

An outcome reward model reads the whole text and answers at its last token; a process reward
model (``cola_models.prm``) reads the question and the text's steps, cut where the search's own
steps end, and answers at each step.
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


def _prm_judge(prm, decode: Callable[[list[int]], str], question_of=None):
    """(seqs, done, meter) -> scores of a process reward model (``cola_models.prm``): the text
    after each prompt cut into the search's own steps (``steps.split_steps``), each step scored
    at its mark, the step scores aggregated (``prm.settings.aggregate``). ``question_of`` turns
    a decoded prompt into the question the PRM reads (None: the prompt as it is)."""
    from cola_models.prm import aggregate_steps

    from ..steps import split_steps

    prompts: dict[tuple[int, ...], str] = {}  # a search asks for the same prompts every step

    def question(tokens: list[int]) -> str:
        key = tuple(tokens)
        if key not in prompts:
            text = decode(tokens)
            prompts[key] = question_of(text) if question_of else text
        return prompts[key]

    def judge(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        starts = meter.starts
        if starts is None:
            raise ValueError("a process reward model needs to know where each prompt ends")
        items = []
        for s, n in zip(seqs, starts):
            steps = [p.strip() for p in split_steps(decode(s[n:]))]
            items.append((question(s[:n]), [p for p in steps if p]))
        per_step, costs = prm.score_steps(items)
        meter.charge(costs)
        # No step written: nothing is wrong yet with a partial text; a finished one has no answer.
        return [
            aggregate_steps(p, prm.settings.aggregate) if p else (0.0 if d else 1.0)
            for p, d in zip(per_step, done)
        ]

    return judge


def prm_scorer(prm, decode: Callable[[list[int]], str], question_of=None) -> Scorer:
    """Score of a finished sequence by a process reward model: its steps' scores aggregated."""
    judge = _prm_judge(prm, decode, question_of)

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        return judge(seqs, [True] * len(seqs), meter)

    score.oracle = False
    return score


def prm_value_fn(prm, decode: Callable[[list[int]], str], question_of=None) -> ValueFn:
    """Value of a partial sequence by a process reward model: its complete steps so far and the
    unfinished one, each scored, aggregated."""
    return _prm_judge(prm, decode, question_of)
