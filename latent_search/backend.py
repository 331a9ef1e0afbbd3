"""The batched backend protocol the search algorithms speak, and its accounting.

Search sees only token prefixes (lists of ids) and asks, for a whole batch at once:
  prior(prefixes)            -> policy logits over the A actions (+ Q values when the model has them)
  expand(prefixes, actions)  -> the token each (prefix, action) pair produces (k per prefix)
  rollout(prefixes, ...)     -> continuations to the end
so a toy world, the torch backend and the vLLM backend are interchangeable, and the backend is
free to cache model state per prefix however suits its engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor


@dataclass
class Prior:
    logits: Tensor  # [B, A] policy logits over actions
    q: Tensor | None = None  # [B, A] Q(s, a), when the model has a Q head


@dataclass
class Usage:
    """Model work done so far: tokens run through the model and time spent inside it."""

    prefill_tokens: int = 0
    decode_tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    per_row: dict[int, int] = field(default_factory=dict)
    cached_tokens: int = 0
    """Prompt tokens an engine served from its prefix cache (vLLM); not counted in ``tokens``."""

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


@runtime_checkable
class Backend(Protocol):
    level: str
    """"latent" (actions are CoLA latent actions) or "token" (actions are token ids)."""
    n_actions: int
    eos_id: int | None
    usage: Usage
    last_costs: list[int]
    """Model tokens each row of the most recent call cost (prefill + decode)."""

    def prior(self, prefixes: list[list[int]]) -> Prior: ...

    def expand(self, prefixes: list[list[int]], actions: Tensor) -> Tensor:
        """actions [B, k] -> next token [B, k] of each (prefix, action)."""
        ...

    def rollout(
        self,
        prefixes: list[list[int]],
        max_new_tokens: int,
        *,
        sample: bool,
        generator=None,
        stop: tuple[str, ...] = (),
    ) -> list[list[int]]:
        """Continue each prefix to EOS, a stop string (kept in the tokens) or the length limit;
        returns the new tokens."""
        ...

    def decode(self, tokens: list[int]) -> str: ...
