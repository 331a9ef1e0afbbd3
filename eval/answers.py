"""Final-answer extraction from model text: \\boxed{...} (nested braces), GSM8K's '#### N',
'the answer is ...', and (on request) the last number. Pure string code, safe on any input."""

from __future__ import annotations

import re

_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.\s|\.$|$|\n)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")
# A number as models write one: sign, thousands separators, decimals, an optional "/denominator".
# The lookarounds keep it from starting or ending inside a longer run of digits or separators.
_NUMBER = re.compile(r"(?<![\d.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?(?![\d])")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if absent/unclosed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # "\boxed 5" form
        m = re.match(r"\\boxed\s+([^\s$]+)", text[start:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def last_number(text: str) -> str | None:
    """The last number in a text ("1,000", "-2.5", "3/4"), or None when it holds none."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract_answer(text: str, *, fallback_last_number: bool = False) -> str | None:
    """The final answer a text commits to, or None when it commits to none.

    Order: last \\boxed{}, last '#### N', last 'the answer is ...'; with
    ``fallback_last_number`` the last number in the text when none of those is present (what graders
    of free-form GSM8K-style output do; off by default because a search scorer must not count a
    number the text never committed to as its answer).
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    m = _HASHES.findall(text)
    if m:
        return m[-1].strip()
    m = _ANSWER_IS.findall(text)
    if m:
        return m[-1].strip().rstrip(".")
    if fallback_last_number:
        return last_number(text)
    return None
