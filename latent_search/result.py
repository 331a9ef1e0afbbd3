"""What every search returns, and the scorer interface that gives rollouts their reward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .tree import Tree


@dataclass
class SearchResult:
    tokens: list[int]
    """Generated tokens of the chosen answer (after the prompt)."""
    text: str
    tree: Tree | None
    tokens_used: int
    """Model forward tokens (prefill + decode) spent on this problem."""
    seconds: float
    stats: dict = field(default_factory=dict)


Scorer = Callable[[list[list[int]]], list[float]]
"""Full token sequences (prompt + generated) -> scores in [0, 1]. A scorer that reads the gold
answer is an *oracle* and must say so (``scorer.oracle = True``); searches copy that flag into
every result."""


def is_oracle(scorer) -> bool:
    return bool(getattr(scorer, "oracle", False))
