"""`countdown`: reach a target from 3-4 given numbers with + - * /, each used at most once."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from eval.answers import last_boxed

from .base import Problem, _generate, _Retry, _steps_text
from .countdown_expr import MAX_LEN as _EXPR_MAX_LEN
from .countdown_expr import solves


@dataclass(frozen=True)
class _CountdownLimits:
    """How many numbers, their range, and the range of targets, per level."""

    count: int
    lo: int
    hi: int
    target_lo: int
    target_hi: int
    mul_weight: float  # bias toward * so larger targets are reachable


_COUNTDOWN_LIMITS = {
    1: _CountdownLimits(count=3, lo=1, hi=10, target_lo=10, target_hi=100, mul_weight=1.0),
    2: _CountdownLimits(count=4, lo=2, hi=12, target_lo=10, target_hi=150, mul_weight=1.0),
    3: _CountdownLimits(count=4, lo=2, hi=25, target_lo=100, target_hi=999, mul_weight=2.5),
}
_COUNTDOWN_WEIGHTS = {1: 0.4, 2: 0.35, 3: 0.25}


def _combine(
    left: tuple[int, str, int], op: str, right: tuple[int, str, int]
) -> tuple[int, str, int]:
    """Value, minimal-parenthesis text and precedence (1: + -, 2: * /, 3: atom) of `left op right`.

    Parentheses are dropped only where exact (rational) arithmetic gives the same value, which is
    all the grader checks: a+(b-c) = a+b-c and a*(b/c) = a*b/c, but a-(b+c) and a/(b*c) keep them.
    """
    (lv, lt, lp), (rv, rt, rp) = left, right
    if op in "*/" and lp == 1:
        lt = f"({lt})"
    if (op == "-" and rp == 1) or (op == "*" and rp == 1) or (op == "/" and rp <= 2):
        rt = f"({rt})"
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv // rv if rv else 0}[op]
    return value, f"{lt}{op}{rt}", 1 if op in "+-" else 2


def _make_countdown(rng: random.Random, level: int) -> tuple[str, str, str, dict]:
    """Random numbers combined pairwise in random order into one expression; its value is the target.

    Building the answer first guarantees solvability; every step keeps a positive integer (larger
    minus smaller, exact division only) so the worked solution reads like a human's.
    """
    lim = _COUNTDOWN_LIMITS[level]
    numbers = [rng.randint(lim.lo, lim.hi) for _ in range(lim.count)]
    pool = [(x, str(x), 3) for x in numbers]
    steps: list[list] = []
    seen = set(numbers)
    while len(pool) > 1:
        i, j = sorted(rng.sample(range(len(pool)), 2), reverse=True)
        x, y = pool.pop(i), pool.pop(j)
        if x[0] < y[0]:
            x, y = y, x
        ops, weights = ["+"], [1.0]
        if y[0] > 1:
            ops.append("*")
            weights.append(lim.mul_weight)
        if x[0] > y[0]:
            ops.append("-")
            weights.append(0.8)
        if y[0] > 1 and x[0] % y[0] == 0:
            ops.append("/")
            weights.append(1.0)
        op = rng.choices(ops, weights=weights)[0]
        if op in "+*" and rng.random() < 0.5:
            x, y = y, x  # commutative: either order reads naturally
        z = _combine(x, op, y)
        # A result seen before (a given number or an earlier result) means some steps cancel out,
        # e.g. 24+2=26. 26-2=24: a wasteful solution is a poor training target, so redraw.
        if z[0] > 2 * lim.target_hi or z[0] in seen:
            raise _Retry
        seen.add(z[0])
        steps.append([x[0], op, y[0], z[0]])
        pool.append(z)
    target, expr, _ = pool[0]
    if not lim.target_lo <= target <= lim.target_hi or target in numbers:
        raise _Retry
    question = f"Use {', '.join(map(str, numbers))} to make {target}."
    solution = f"{_steps_text(steps)} \\boxed{{{expr}}}"
    return (
        question,
        solution,
        str(target),
        {"numbers": numbers, "target": target, "expression": expr},
    )


_TRAILING_EQ = re.compile(r"^(.*?)=\s*([+-]?\d+)\s*$", re.DOTALL)


class CountdownTask:
    """Reach a target from 3-4 given numbers with + - * /, each number used at most once."""

    name = "countdown"
    levels = (1, 2, 3)

    def generate(
        self, n: int, *, seed: int, split: str = "train", levels: tuple[int, ...] | None = None
    ) -> list[Problem]:
        """`n` distinct problems of `split`, identical for identical arguments."""
        return _generate(self.name, _make_countdown, _COUNTDOWN_WEIGHTS, n, seed, split, levels)

    def reward(self, problem: Problem, text: str) -> float:
        """1.0 iff the last \\boxed{} is an expression over the given numbers equal to the target.

        `\\boxed{expr = target}` is accepted (the stated right-hand side must be the target). The
        expression goes through the safe parser in `eval.tasks.countdown_expr`, never through eval().
        """
        try:
            if not isinstance(text, str):
                return 0.0
            boxed = last_boxed(text)
            if boxed is None or len(boxed) > _EXPR_MAX_LEN:
                return 0.0
            target = int(problem.data["target"])
            expr = boxed
            if "=" in expr:
                m = _TRAILING_EQ.match(expr)
                if m is None or "=" in m.group(1) or int(m.group(2)) != target:
                    return 0.0
                expr = m.group(1)
            return 1.0 if solves(expr, problem.data["numbers"], target) else 0.0
        except Exception:  # a reward must never crash a training run, whatever the model wrote
            return 0.0
