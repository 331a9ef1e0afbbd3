"""A small, safe arithmetic parser for grading countdown answers written by a model.

Why a hand-written parser: the text being graded is arbitrary model output, so it must never reach
`eval`/`exec`/`ast` (code execution, `9**9**9`-style blow-ups). The grammar here is deliberately tiny
— non-negative integer literals, `+ - * /`, parentheses and an optional unary minus — and has no
exponent, so the size of any value is bounded by the (capped) input length. Arithmetic uses
`fractions.Fraction`, so `7/2*2` is exactly 7 and no float rounding can turn a wrong answer right.

Grammar (usual precedence, left-associative):

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := '-' unary | atom
    atom   := INT | '(' expr ')'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

MAX_LEN = 200
"""Longer inputs are rejected outright: a real answer to a 3-4 number puzzle is a few dozen chars."""

MAX_DEPTH = 40
"""Nesting cap (parentheses + unary minus), so deep input cannot exhaust Python's recursion limit."""

MAX_DIGITS = 12
"""Cap on one literal's digits; the puzzles use small numbers, and this keeps values tiny."""

# Common non-ASCII / LaTeX spellings of the operators a model may copy from math text.
_REPLACEMENTS = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\\left", ""),
    ("\\right", ""),
    ("×", "*"),
    ("·", "*"),
    ("÷", "/"),
    ("−", "-"),
    ("–", "-"),
)


class ExprError(ValueError):
    """The text is not a valid expression (syntax, too long, too deep, division by zero...)."""


@dataclass(frozen=True)
class Evaluated:
    """Result of evaluating an expression: its exact value and the literals it used, in order."""

    value: Fraction
    numbers: tuple[int, ...]


def normalize(text: str) -> str:
    """Map LaTeX/unicode operator spellings to ASCII; leaves everything else for the tokenizer."""
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    return text


def tokenize(text: str) -> list[str]:
    """Split into integer literals and single-character operators; whitespace is skipped.

    Anything else (letters, dots, underscores, quotes, `^`) is an error, which is what keeps
    `__import__('os')` or `2.5` from ever being interpreted; `**` tokenizes but fails to parse.
    """
    if len(text) > MAX_LEN:
        raise ExprError(f"expression longer than {MAX_LEN} characters")
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\n\r":
            i += 1
        elif c in "+-*/()":
            tokens.append(c)
            i += 1
        elif "0" <= c <= "9":
            j = i
            while j < n and "0" <= text[j] <= "9":
                j += 1
            if j - i > MAX_DIGITS:
                raise ExprError("number literal too long")
            tokens.append(text[i:j])
            i = j
        else:
            raise ExprError(f"unexpected character {c!r}")
    if not tokens:
        raise ExprError("empty expression")
    return tokens


class _Parser:
    """Recursive-descent evaluator over a token list; records every literal it consumes."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ExprError("unexpected end of expression")
        self.pos += 1
        return tok

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary()
            if op == "*":
                value = value * rhs
            else:
                if rhs == 0:
                    raise ExprError("division by zero")
                value = value / rhs
        return value

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError("expression nested too deeply")

    def unary(self) -> Fraction:
        if self.peek() == "-":
            self.take()
            self._enter()
            value = -self.unary()
            self.depth -= 1
            return value
        return self.atom()

    def atom(self) -> Fraction:
        tok = self.take()
        if tok == "(":
            self._enter()
            value = self.expr()
            if self.take() != ")":
                raise ExprError("expected ')'")
            self.depth -= 1
            return value
        if tok.isdigit():
            number = int(tok)
            self.numbers.append(number)
            return Fraction(number)
        raise ExprError(f"unexpected token {tok!r}")


def evaluate(text: str) -> Evaluated:
    """Exact value and used literals of `text`; raises `ExprError` on anything malformed."""
    if not isinstance(text, str):
        raise ExprError("expression must be a string")
    if len(text) > MAX_LEN:  # checked before normalizing, so normalization never sees huge input
        raise ExprError(f"expression longer than {MAX_LEN} characters")
    parser = _Parser(tokenize(normalize(text)))
    value = parser.expr()
    if parser.pos != len(parser.tokens):
        raise ExprError(f"unexpected token {parser.tokens[parser.pos]!r}")
    return Evaluated(value, tuple(parser.numbers))


def uses_only(used: Iterable[int], available: Iterable[int]) -> bool:
    """Multiset check: every literal used is available, each at most as often as it is given."""
    have = Counter(available)
    need = Counter(used)
    return all(have[k] >= c for k, c in need.items())


def solves(text: str, numbers: Iterable[int], target: int) -> bool:
    """True iff `text` is a valid expression over a sub-multiset of `numbers` equal to `target`.

    Intermediate values may be negative or fractional (only the final value is graded), which is the
    usual lenient countdown check; it never raises.
    """
    try:
        result = evaluate(text)
    except (ExprError, ZeroDivisionError, RecursionError, ValueError, TypeError):
        return False
    return uses_only(result.numbers, numbers) and result.value == target
