"""A gold-free judge that needs no model: check the equations a solution writes.

Worked arithmetic ("7*12=84. 84+24=108. ...") can be checked against the question alone:
  - a calculator: every ``a op b = r`` is recomputed exactly;
  - a reading check: every operand is a number of the question or the result of an earlier
    equation (a number the question does not hold is a misreading);
  - the final answer is the last equation's result;
  - every computation is a complete equation: arithmetic written outside one (a step without
    its result, an operator left dangling) fails a check, so a text cannot reach full marks by
    leaving out or breaking off the step that would have been wrong;
  - a finished text is complete: every number of the question and every result but the last
    is used by an equation (a step left out leaves a number unused).
The score is the share of these checks the text passes (1.0: nothing found wrong). No answer is
read and no model runs, so no tokens are charged. Measured before it drives a search (docs/search.md,
"Measured: the verifier report"): on the bundled arith model's samples it ranks a problem's
right samples above its wrong ones at within-problem AUC 0.81 [0.77, 0.85], against the
likelihood's 0.74 and the Q head's 0.50; the calculator alone does most of it (most of that
model's wrong answers start with a miscalculated result). The completeness checks took it from
0.82 [0.76, 0.88] to 0.86 [0.81, 0.91] on 200 problems x 32 samples ("Measured: the equation
check"). It only judges texts that write
their arithmetic as equations (single ``a op b = r``); a finished text with none scores 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .types import Backend, Meter, Scorer, ValueFn

_NUM = r"-?\d+(?:\.\d+)?"
_EQUATION = re.compile(rf"({_NUM})\s*([-+*/×])\s*({_NUM})\s*=\s*({_NUM})")
_NUMBER = re.compile(_NUM)
_EQUALS = re.compile(r"=")
_EXPRESSION = re.compile(rf"{_NUM}\s*[-+*/×]\s*{_NUM}")
_DANGLING = re.compile(rf"{_NUM}\s*[-+*/×](?!\s*-?\d)")
"""Arithmetic written outside a well-formed equation: a computation stated without its result
("84+24 is the total"), or an operator left without its operand ("84+ then"). Either is a step
the calculator cannot check, so each counts as a failed check: a text must not reach full marks
by leaving out (or breaking off) the equation that would have been wrong."""
_BOXED = re.compile(r"\\boxed\{\s*([^{}]*?)\s*\}")


def _value(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*×":
        return a * b
    return a / b if b else None


@dataclass(frozen=True)
class Checked:
    """One equation ``a op b = r`` of a text, checked."""

    match: re.Match
    read: int
    """Operands (0-2) that are numbers of the question or results of earlier equations."""
    right: Fraction | None
    """What ``a op b`` is (None: division by zero)."""

    @property
    def computed(self) -> bool:
        return self.right == Fraction(self.match.group(4))


def check_each(question: str, equations: list[re.Match]) -> list[Checked]:
    """The reading check and the calculator on each of ``equations`` (matches of a text, in
    order), with the numbers of ``question``."""
    given = {Fraction(x) for x in _NUMBER.findall(question)}
    results: set[Fraction] = set()
    out = []
    for m in equations:
        a, op, b, r = m.groups()
        a, b = Fraction(a), Fraction(b)
        out.append(Checked(m, sum(x in given or x in results for x in (a, b)), _value(a, op, b)))
        results.add(Fraction(r))
    return out


def find_equations(text: str) -> list[re.Match]:
    return list(_EQUATION.finditer(text))


def equation_checks(question: str, text: str, *, finished: bool = True) -> tuple[int, int]:
    """(checks passed, checks made) on ``text``'s equations, reading numbers from ``question``.
    An unfinished text (a search's partial solution) is not asked for its final answer, and its
    last equation is not judged while its result may still be growing ("21+44=6" before "5")."""
    checks = _checks(question, text, finished)
    return sum(ok for ok, _ in checks), len(checks)


def failed_checks(question: str, text: str, *, finished: bool = True) -> list[str]:
    """What the check found wrong in ``text``, one phrase per failed check (the viewer shows
    them beside a node)."""
    return [what for ok, what in _checks(question, text, finished) if not ok]


def _checks(question: str, text: str, finished: bool) -> list[tuple[bool, str]]:
    """Every check made on ``text``: (passed, what it checked)."""
    text = text.rstrip() if not finished else text
    found = find_equations(text)
    equals = [m.start() for m in _EQUALS.finditer(text)]
    if not finished and found and found[-1].end() == len(text):
        found.pop()  # its result may still grow: judged once something follows it
        equals.pop()
    elif not finished and equals and not text[equals[-1] + 1 :].strip():
        equals.pop()  # an "=" still waiting for its result
    out: list[tuple[bool, str]] = []
    for c in check_each(question, found):
        eq = c.match.group(0)
        out.append((c.computed, f"{eq}: the calculator says {_show(c.right)}"))
        out += [(True, eq)] * c.read + [(False, f"{eq}: a number not in the question")] * (
            2 - c.read
        )
    # An "=" outside every well-formed equation ("7*12=x.") is a malformed one: it fails, so that
    # a text cannot escape the checks by not writing a number.
    out += [(False, "an '=' outside a well-formed equation")] * (len(equals) - len(found))
    out += [(False, f"'{m}' is not a complete equation") for m in _unchecked(text, found, finished)]
    if finished:
        out += _unused(question, found)
        boxed = _BOXED.findall(text)
        last = found[-1].group(4) if found else None
        right = bool(boxed and last is not None and _same_number(boxed[-1], last))
        out.append((right, "the boxed answer is not the last result"))
    return out


def _unused(question: str, found: list[re.Match]) -> list[tuple[bool, str]]:
    """Completeness of a finished text: every number of the question is an operand of some
    equation, and every result but the last is an operand of a later one. A number left unused
    is a step left out (a solution that skips "He gives 20 to Omar" checks as right
    otherwise); a question with a number no solution needs costs every solution of it alike,
    so the check still ranks solutions of one problem."""
    if not found:
        return []
    operands = [{Fraction(m.group(1)), Fraction(m.group(3))} for m in found]
    used = set().union(*operands)
    given = {Fraction(x) for x in _NUMBER.findall(question)}
    out = [(x in used, f"{_show(x)} of the question is never used") for x in sorted(given)]
    for k, m in enumerate(found[:-1]):
        r = Fraction(m.group(4))
        later = any(r in ops for ops in operands[k + 1 :])
        out.append((later, f"{m.group(0)}: its result is never used"))
    return out


def _show(x: Fraction | None) -> str:
    if x is None:
        return "division by zero"
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def _unchecked_arithmetic(text: str, found: list[re.Match], finished: bool) -> int:
    """How many expressions and dangling operators stand outside ``found``."""
    return len(_unchecked(text, found, finished))


def _unchecked(text: str, found: list[re.Match], finished: bool) -> list[str]:
    """Expressions and dangling operators outside ``found`` (see ``_EXPRESSION``). The tail of
    an unfinished text may still become an equation ("84+2" before "4=108"), so it is left out
    there."""
    spans = [m.span() for m in found]
    tail = len(text) if finished else _tail_start(text)

    def outside(m: re.Match) -> bool:
        return m.start() < tail and not any(a <= m.start() < b for a, b in spans)

    expressions = [m for m in _EXPRESSION.finditer(text) if outside(m)]
    covered = [m.span() for m in expressions]
    dangling = [
        m for m in _DANGLING.finditer(text)
        if outside(m) and not any(a <= m.start() < b for a, b in covered)
    ]  # fmt: skip
    return [m.group(0).strip() for m in sorted(expressions + dangling, key=lambda m: m.start())]


def _tail_start(text: str) -> int:
    """Where the last sentence of a growing text starts (after the last ". " or newline)."""
    return max(text.rfind(". "), text.rfind("\n")) + 1


def _same_number(a: str, b: str) -> bool:
    try:
        return Fraction(a.replace(",", "")) == Fraction(b)
    except (ValueError, ZeroDivisionError):
        return False


def equation_score(question: str, text: str, *, finished: bool = True) -> float:
    """Share of the checks passed, in [0, 1]; 0 for a finished text with no equation, and 1 for
    an unfinished one that has written none yet (nothing is wrong with it so far)."""
    passed, made = equation_checks(question, text, finished=finished)
    if finished and not _EQUATION.search(text):
        return 0.0
    return passed / made if made else 1.0


class _Texts:
    """(question, solution) texts of prompt + solution token rows. A search asks for the same
    prompts at every step and every hypothesis, so each prompt is decoded once."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.prompts: dict[tuple[int, ...], str] = {}

    def __call__(self, seqs: list[list[int]], meter: Meter) -> list[tuple[str, str]]:
        starts = meter.starts
        if starts is None:
            raise ValueError("the equation check needs to know where each prompt ends")
        out = []
        for s, n in zip(seqs, starts):
            key = tuple(s[:n])
            if key not in self.prompts:
                self.prompts[key] = self.backend.decode(s[:n])
            out.append((self.prompts[key], self.backend.decode(s[n:])))
        return out


def equation_scorer(backend: Backend) -> Scorer:
    """Score finished sequences (prompt + solution) by :func:`equation_score`."""
    texts = _Texts(backend)

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        return [equation_score(q, t) for q, t in texts(seqs, meter)]

    score.oracle = False
    return score


def equation_value_fn(backend: Backend) -> ValueFn:
    """Value of partial sequences (beam and mcts at step ends): the checks of what is written."""
    texts = _Texts(backend)

    def value(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        return [equation_score(q, t, finished=d) for (q, t), d in zip(texts(seqs, meter), done)]

    return value
