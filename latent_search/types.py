"""The engine's types: the batched backend protocol the searches speak, what a search returns,
and the two ways a search judges text (scorers of finished sequences, value functions of states).

Search sees only token prefixes (lists of ids) and asks, for a whole batch at once:
  prior(prefixes)            -> policy logits over the A actions (+ Q values when the model has them)
  expand(prefixes, actions)  -> the token each (prefix, action) pair produces (k per prefix)
  rollout(prefixes, ...)     -> continuations to the end
so a toy world, the torch backend and the vLLM backend are interchangeable, and the backend is
free to cache model state per prefix however suits its engine. Each call leaves its per-row cost
in ``last_costs``; a search never reads it itself: it calls backends through a
:class:`latent_search.ledger.Ledger`, which charges every row to the problem it served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .tree import Tree


@dataclass
class Prior:
    logits: Tensor  # [B, A] policy logits over actions
    q: Tensor | None = None  # [B, A] Q(s, a), when the model has a Q head


@dataclass
class Usage:
    """Model work a backend did so far: tokens run through the model and time spent inside it."""

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
    device: torch.device
    """Where the backend's tensors live: a random stream handed to ``rollout`` is made there
    (``cola_models.devices.make_generator``). A search reads backend outputs only through its
    ledger, which brings each call's outputs to the host at once."""
    usage: Usage
    last_costs: list[int]
    """Model tokens each row of the most recent call cost (prefill + decode); 0 for rows served
    from a cache. Every call, expand included, sets it."""

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


@dataclass
class SearchResult:
    tokens: list[int]
    """Generated tokens of the chosen answer (after the prompt)."""
    text: str
    tree: Tree | None
    tokens_used: int
    """Model forward tokens (prefill + decode) spent on this problem, every call included."""
    seconds: float
    stats: dict = field(default_factory=dict)
    oracle: bool = False
    """Whether a scorer that reads the gold answer chose this result."""


class Meter(Protocol):
    """What a scorer or value function is handed to run models on behalf of its rows: each row's
    cost is charged to the problem the row belongs to (see ``latent_search.ledger``)."""

    def prior(self, backend: Backend, prefixes: list[list[int]]) -> Prior: ...

    def charge(self, costs: list[int]) -> None:
        """Charge work done outside a backend (e.g. a verifier's forward pass), per row."""
        ...

    @property
    def starts(self) -> list[int] | None:
        """Where each row's generated text begins (its prompt's length); None if unknown."""
        ...


Scorer = Callable[[list[list[int]], Meter], list[float]]
"""(full token sequences (prompt + generated), meter) -> scores in [0, 1]. A scorer that runs a
model does so through the meter, which charges each row's cost to its problem. A scorer that
reads the gold answer is an *oracle* and must say so (``scorer.oracle = True``); searches copy
that flag into every result."""

ValueFn = Callable[[list[list[int]], list[bool], Meter], list[float]]
"""(full sequences, finished flags, meter) -> value of each sequence's newest state."""


def is_oracle(scorer) -> bool:
    return bool(getattr(scorer, "oracle", False))
