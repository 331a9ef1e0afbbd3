"""`arith`: GSM8K-style multi-step word problems; level = number of arithmetic steps (1-4)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from eval.answers import last_boxed

from .base import Problem, _generate, _Retry, _steps_text

_PEOPLE = (
    ("Tom", "he"), ("Mia", "she"), ("Sam", "he"), ("Ava", "she"), ("Leo", "he"), ("Zoe", "she"),
    ("Ben", "he"), ("Lily", "she"), ("Max", "he"), ("Emma", "she"), ("Noah", "he"), ("Ella", "she"),
    ("Jack", "he"), ("Ruby", "she"), ("Omar", "he"), ("Nina", "she"), ("Ravi", "he"), ("Lena", "she"),
    ("Ken", "he"), ("Sara", "she"),
)  # fmt: skip
_PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her")}
# (plural noun, edible?) — edible items also get "eats".
_ITEMS = (
    ("apples", True), ("pencils", False), ("stickers", False), ("marbles", False), ("cards", False),
    ("coins", False), ("shells", False), ("stamps", False), ("cookies", True), ("candies", True),
    ("eggs", True), ("beads", False),
)  # fmt: skip
_CONTAINERS = (("bags", "bag"), ("boxes", "box"), ("packs", "pack"), ("jars", "jar"))
_THINGS = ("book", "toy", "hat", "ball", "kite", "game", "lamp", "pen", "cup", "mug")
_CHANGE_BILLS = (10, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class _ArithLimits:
    """Number ranges per level: small operands early on, results bounded so texts stay short."""

    start: tuple[int, int]  # an initial amount
    small: int  # largest operand of a + or - step
    factor: int  # largest operand of a * step (the other factor is at most 12)
    cap: int  # largest allowed intermediate or final result


_ARITH_LIMITS = {
    1: _ArithLimits(start=(3, 20), small=20, factor=10, cap=200),
    2: _ArithLimits(start=(3, 20), small=20, factor=10, cap=200),
    3: _ArithLimits(start=(5, 30), small=30, factor=12, cap=500),
    4: _ArithLimits(start=(5, 40), small=40, factor=12, cap=999),
}
# Mostly 1-2 step problems, which a tiny model can learn; 3-4 steps give headroom for search.
_ARITH_WEIGHTS = {1: 0.3, 2: 0.3, 3: 0.25, 4: 0.15}


class _Story:
    """Builds one word problem sentence by sentence while recording the arithmetic steps.

    The running `value` is the quantity the final question asks about; every block below turns
    into one sentence and 0-2 steps. `op` enforces the invariants the worked solution relies on:
    every intermediate result is a positive integer no larger than the level's cap, and division
    is exact. A violated invariant raises `_Retry`, and the whole problem is redrawn.
    """

    def __init__(self, rng: random.Random, lim: _ArithLimits) -> None:
        self.rng = rng
        self.lim = lim
        self.steps: list[list] = []
        self.sentences: list[str] = []
        self.value = 0
        (name, gender), (friend, _) = rng.sample(_PEOPLE, 2)
        he, him, his = _PRONOUNS[gender]
        item, edible = rng.choice(_ITEMS)
        conts, cont = rng.choice(_CONTAINERS)
        thing, thing2 = rng.sample(_THINGS, 2)
        self.edible = edible
        self.discounted = False
        self.fields = {
            "N": name, "F": friend, "he": he, "him": him, "his": his, "He": he.capitalize(),
            "His": his.capitalize(), "items": item, "conts": conts, "cont": cont, "thing": thing,
            "things": thing + "s", "thing2": thing2, "things2": thing2 + "s",
        }  # fmt: skip

    def randint(self, lo: int, hi: int) -> int:
        if lo > hi:
            raise _Retry
        return self.rng.randint(lo, hi)

    def op(self, a: int, sym: str, b: int) -> int:
        if sym == "+":
            r = a + b
        elif sym == "-":
            r = a - b
        elif sym == "*":
            r = a * b
        else:
            if b == 0 or a % b:
                raise _Retry
            r = a // b
        if not 0 < r <= self.lim.cap:
            raise _Retry
        self.steps.append([a, sym, b, r])
        return r

    def say(self, template: str, **numbers: int) -> None:
        """Append one sentence; `{other}` is a fresh random purchase, for stories buying several."""
        extra: dict[str, str] = {}
        if "{other}" in template:
            extra["other"] = self.rng.choice([t for t in _THINGS if t != self.fields["thing"]])
        self.sentences.append(template.format(**self.fields, **extra, **numbers))

    def divisor(self, hi: int = 12) -> int:
        """A divisor of the running value in 2..hi that leaves at least 2; redraw when none exists."""
        options = [d for d in range(2, hi + 1) if self.value % d == 0 and self.value // d >= 2]
        if not options:
            raise _Retry
        return self.rng.choice(options)


def _arith_start(s: _Story, kind: str, steps: int) -> None:
    """Opening sentence, introducing the quantity; with steps=1 it is a product (groups, wages)."""
    lim, rng = s.lim, s.rng
    if steps == 0:
        a = s.randint(*lim.start)
        s.value = a
        s.say(
            {
                "count": "{N} has {a} {items}.",
                "money": "{N} has {a} dollars.",
                "cost": "{N} buys a {thing} for {a} dollars.",
            }[kind],
            a=a,
        )
        return
    a, b = s.randint(2, lim.factor), s.randint(2, 12)
    s.value = s.op(a, "*", b)
    template = {
        "count": rng.choice(
            (
                "{N} has {a} {conts} of {items} with {b} in each.",
                "{N} buys {a} {conts} of {b} {items}.",
            )
        ),
        "money": "{N} earns {b} dollars a day for {a} days.",
        "cost": "{N} buys {a} {things} at {b} dollars each.",
    }[kind]
    s.say(template, a=a, b=b)


def _arith_middle(s: _Story, kind: str, steps: int) -> None:
    """One event changing the running quantity: +, -, * or exact / (1 step), or +/- a product (2)."""
    lim, rng, v = s.lim, s.rng, s.value
    if steps == 2:
        sym = rng.choice("+-" if kind != "cost" else "+")
        if sym == "+":
            b, c = s.randint(2, 6), s.randint(2, 12)
            template = {
                "count": "{He} buys {b} more {conts} with {c} in each.",
                "money": "{He} then earns {c} dollars a day for {b} days.",
                "cost": "{He} also buys {b} {things2} at {c} dollars each.",
            }[kind]
        else:
            b = s.randint(2, 5)
            c = s.randint(1 if kind == "count" else 2, min(12, (v - 1) // b))
            template = {
                "count": "{He} gives {c} to each of {b} friends.",
                "money": "{He} buys {b} {things} at {c} dollars each.",
            }[kind]
        s.say(template, b=b, c=c)
        s.value = s.op(v, sym, s.op(b, "*", c))
        return
    # at most one discount per purchase story: a run of coupons reads oddly and adds no skill
    choices = {"count": "+-*/", "money": "+-*", "cost": "+" if s.discounted else "+-"}[kind]
    sym = rng.choices(choices, weights=(0.35, 0.35, 0.15, 0.15)[: len(choices)])[0]
    if sym == "+":
        b = s.randint(2, lim.small)
        template = rng.choice(
            {
                "count": (
                    "{He} buys {b} more.",
                    "{F} gives {him} {b} more.",
                    "{He} finds {b} more.",
                ),
                "money": ("{He} earns {b} more dollars.", "{F} gives {him} {b} dollars."),
                "cost": ("{He} also buys a {other} for {b} dollars.",),
            }[kind]
        )
    elif sym == "-":
        b = s.randint(1 if kind == "count" else 2, min(lim.small, v - 1))
        count_verbs = [
            "{He} gives {b} to {F}.",
            "{He} loses {b}.",
            "{He} sells {b}.",
            "{He} gives away {b}.",
        ]
        if s.edible:
            count_verbs.append("{He} eats {b}.")
        template = rng.choice(
            {
                "count": count_verbs,
                "money": ["{He} spends {b} dollars on a {other}."],
                "cost": ["{He} gets {b} dollars off."],
            }[kind]
        )
        s.discounted = s.discounted or kind == "cost"
    elif sym == "*":
        b = s.randint(2, min(5, lim.cap // max(v, 1)))
        template = rng.choice(
            {
                "count": (
                    "Then {he} has {b} times as many.",
                    "{He} then has {b} times as many {items}.",
                ),
                "money": ("Then {his} savings grow {b} times.",),
            }[kind]
        )
    else:
        b = s.divisor()
        template = "{He} splits them into {b} equal piles and keeps one."
    s.say(template, b=b)
    s.value = s.op(v, sym, b)


def _arith_end(s: _Story, kind: str, steps: int) -> None:
    """The question; with steps=1 it asks for one more operation (sharing, boxes, change)."""
    rng, v = s.rng, s.value
    if steps == 0:
        s.say(
            {
                "count": "How many {items} does {N} have now?",
                "money": "How many dollars does {N} have now?",
                "cost": "How many dollars does {N} spend?",
            }[kind]
        )
        return
    if kind == "cost" and rng.random() < 0.5:
        bill = next((x for x in _CHANGE_BILLS if x > v), None)
        if bill is None:
            raise _Retry
        s.say("{He} pays with {p} dollars. How much change does {he} get?", p=bill)
        s.value = s.op(bill, "-", v)
        return
    b = s.divisor()
    template = {
        "count": rng.choice(
            (
                "{He} shares them equally among {b} friends. How many does each friend get?",
                "{He} packs them into {conts} of {b}. How many {conts} does {he} fill?",
            )
        ),
        "money": "{He} splits the money equally among {b} friends. How many dollars does each get?",
        "cost": "The cost is split equally among {b} people. How many dollars does each pay?",
    }[kind]
    s.say(template, b=b)
    s.value = s.op(v, "/", b)


def _make_arith(rng: random.Random, level: int) -> tuple[str, str, str, dict]:
    """A word problem with exactly `level` steps: start (0-1) + middle events (1-2 each) + end (0-1)."""
    s = _Story(rng, _ARITH_LIMITS[level])
    kind = rng.choices(("count", "money", "cost"), weights=(0.55, 0.2, 0.25))[0]
    start = rng.choice((0, 1)) if level >= 2 else rng.choice((0, 0, 1))
    left = level - start
    end = 1 if left >= 1 and rng.random() < 0.35 else 0
    left -= end
    _arith_start(s, kind, start)
    while left > 0:
        size = 2 if left >= 2 and rng.random() < 0.35 else 1
        _arith_middle(s, kind, size)
        left -= size
    _arith_end(s, kind, end)
    if len(s.steps) != level:  # cannot happen by construction; guards future template edits
        raise _Retry
    answer = str(s.value)
    solution = f"{_steps_text(s.steps)} \\boxed{{{answer}}}"
    return " ".join(s.sentences), solution, answer, {"steps": s.steps}


_INT_ANSWER = re.compile(r"[+-]?\d+(?:\.0*)?")


def _parse_int_answer(text: str) -> int | None:
    """An integer from boxed content like "1,200", "$20", "20.0"; None when it is not one."""
    s = text.strip()
    if len(s) > 40:
        return None
    for junk in (",", "\\$", "$", "\\!", " "):
        s = s.replace(junk, "")
    if not _INT_ANSWER.fullmatch(s):
        return None
    return int(s.split(".")[0])


class ArithTask:
    """GSM8K-style multi-step word problems; level = number of arithmetic steps (1-4)."""

    name = "arith"
    levels = (1, 2, 3, 4)

    def generate(
        self, n: int, *, seed: int, split: str = "train", levels: tuple[int, ...] | None = None
    ) -> list[Problem]:
        """`n` distinct problems of `split`, identical for identical arguments."""
        return _generate(self.name, _make_arith, _ARITH_WEIGHTS, n, seed, split, levels)

    def reward(self, problem: Problem, text: str) -> float:
        """1.0 iff the last \\boxed{} holds the right integer; any malformed text gives 0.0."""
        try:
            if not isinstance(text, str):
                return 0.0
            boxed = last_boxed(text)
            if boxed is None:
                return 0.0
            value = _parse_int_answer(boxed)
            return 1.0 if value is not None and value == int(problem.answer) else 0.0
        except Exception:  # a reward must never crash a training run, whatever the model wrote
            return 0.0
