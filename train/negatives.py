"""Labelled-for-free verifier examples of a training problem: its gold solution (right), and
solutions made wrong the way the policy goes wrong — a number of the question read in place of
another (the commonest error of the tiny policy: "11*2=22" where there are 11 bags of 4), or one
step's result off — with every later step recomputed, so the arithmetic stays self-consistent
and only reading the question against the solution tells them apart.

Only training problems reach this module (gold steps are read); each function returns None where
a problem offers no such variant.
"""

from __future__ import annotations

import random
import re

from cola_models.errors import ColaError

_NUMBER = re.compile(r"\d+")


def _require_train(problem) -> list[list]:
    from eval.tasks import split_of

    if split_of(problem.question) != "train":
        raise ColaError("synthetic examples read gold steps; a held-out problem reached them")
    steps = (problem.data or {}).get("steps")
    if problem.task != "arith" or not steps:
        return []
    return [list(s) for s in steps]


def _apply(op: str, a: int, b: int) -> int | None:
    if op == "/":
        return a // b if b and a % b == 0 else None
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _recompute(steps: list[list], start: int, old: int, new: int) -> list[list] | None:
    """Steps after ``start`` whose operand was the previous step's old result take the new one;
    None when a result stops being a positive integer (the variant would not parse as a story)."""
    out = [list(s) for s in steps]
    for k in range(start + 1, len(out)):
        a, op, b, r = out[k]
        if a == old:
            a = new
        elif b == old:
            b = new
        else:
            continue
        res = _apply(op, a, b)
        if res is None or res <= 0:
            return None
        old, new = r, res
        out[k] = [a, op, b, res]
    return out


def _text(steps: list[list]) -> str:
    """The completion in the task's own worked-solution format (see format_example)."""
    from eval.tasks.base import _steps_text

    return f" {_steps_text(steps)} \\boxed{{{steps[-1][3]}}}"


def gold_completion(problem) -> str | None:
    steps = _require_train(problem)
    return _text(steps) if steps else None


def swapped_number(problem, rng: random.Random) -> tuple[str, str] | None:
    """(completion, its answer) with one operand that the question states replaced by another
    number of the question."""
    steps = _require_train(problem)
    numbers = sorted({int(x) for x in _NUMBER.findall(problem.question)})
    spots = [
        (i, side)
        for i, s in enumerate(steps)
        for side in (0, 2)
        if s[side] in numbers and len(numbers) > 1
    ]
    rng.shuffle(spots)
    for i, side in spots:
        others = [n for n in numbers if n != steps[i][side]]
        rng.shuffle(others)
        for n in others:
            a, op, b, r = steps[i]
            a, b = (n, b) if side == 0 else (a, n)
            res = _apply(op, a, b)
            if res is None or res <= 0 or res == r:
                continue
            new = [*steps[:i], [a, op, b, res], *steps[i + 1 :]]
            new = _recompute(new, i, r, res)
            if new is not None and new[-1][3] != steps[-1][3]:
                return _text(new), str(new[-1][3])
    return None


def wrong_result(problem, rng: random.Random) -> tuple[str, str] | None:
    """(completion, its answer) with one step's result off by 1-10, later steps recomputed."""
    steps = _require_train(problem)
    order = list(range(len(steps)))
    rng.shuffle(order)
    for i in order:
        r = steps[i][3]
        off = rng.choice([d for d in range(-10, 11) if d and r + d > 0])
        new = [*steps[:i], [*steps[i][:3], r + off], *steps[i + 1 :]]
        new = _recompute(new, i, r, r + off)
        if new is not None and new[-1][3] != steps[-1][3]:
            return _text(new), str(new[-1][3])
    return None
