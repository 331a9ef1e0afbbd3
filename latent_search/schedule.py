"""Many problems' searches as coroutines, their model calls batched across problems.

A search written for one problem yields an :class:`Ask` (the model call it waits on) and is sent
the answer. :func:`drive` serves the asks of every waiting problem of one kind in one backend call
(through the ledger, which charges every row to its problem), cheap kinds first, rollouts last.
Problems are not held in step: one whose round needed no rollout (every candidate wrote a token
a sibling has) goes on to its next round at once, and its next rollout joins the others' in the
same call, so a rollout call holds rows from problems at different rounds and the model runs
nearly as many rows per step as the problems' own chains of rollouts allow. A problem's own calls
run in the same order whatever the others do, so its tree does not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .ledger import Ledger
from .types import Prior, Scorer

CHEAP = ("score", "prior", "expand")
"""Kinds of ask served before any rollout, in this order: each takes one batched forward."""


@dataclass
class Ask:
    """One problem's model call: ``kind`` is "prior", "expand" (``actions`` [len(rows), k]),
    "rollout" (greedy, ``max_new_tokens``), "score" (rows are whole sequences) or "round" (no
    model work: the problem finished a round, and waits there when rounds are kept in step)."""

    kind: str
    rows: list[list[int]] = field(default_factory=list)
    actions: Tensor | None = None
    max_new_tokens: int = 0


Search = Generator[Ask, object, None]


def drive(
    ledger: Ledger,
    searches: dict[int, Search],
    *,
    scorer: Scorer | None = None,
    on_round: Callable[[], None] | None = None,
) -> None:
    """Run every problem's search (problem i <-> ``searches[i]``, rows charged to i) to its end.
    ``on_round``: called whenever every problem has finished the same number of rounds (to
    checkpoint them); problems then wait for each other at the end of each round."""
    waiting: dict[int, Ask] = {}

    def resume(i: int, answer) -> None:
        try:
            waiting[i] = searches[i].send(answer)
        except StopIteration:
            waiting.pop(i, None)

    for i in searches:
        resume(i, None)
    while waiting:
        rounds = [i for i, a in waiting.items() if a.kind == "round"]
        if rounds and (on_round is None or len(rounds) == len(waiting)):
            if on_round is not None:
                on_round()
            for i in rounds:
                resume(i, None)
            continue
        kind = next((k for k in CHEAP if any(a.kind == k for a in waiting.values())), None)
        asks = {i: a for i, a in waiting.items() if a.kind == (kind or "rollout")}
        if kind is None:  # the shortest rollouts (a macro-step's) first: a problem whose next
            n = min(a.max_new_tokens for a in asks.values())  # ask is a full rollout joins
            asks = {i: a for i, a in asks.items() if a.max_new_tokens == n}  # the next call
        for i, answer in _serve(ledger, kind or "rollout", asks, scorer).items():
            resume(i, answer)


def _serve(ledger: Ledger, kind: str, asks: dict[int, Ask], scorer=None) -> dict[int, object]:
    """Every ask (all of ``kind``) in one batched call; returns each problem's answer."""
    owners = [i for i, a in asks.items() for _ in a.rows]
    rows = [r for a in asks.values() for r in a.rows]
    if kind == "prior":
        out = ledger.prior(owners, rows)
        return _split(
            asks, lambda a, b: Prior(out.logits[a:b], None if out.q is None else out.q[a:b])
        )
    if kind == "expand":
        width = max(a.actions.shape[1] for a in asks.values())
        acts = torch.cat([_padded(a.actions, width) for a in asks.values()])  # [rows, width]
        toks = ledger.expand(owners, rows, acts)
        widths = [a.actions.shape[1] for a in asks.values()]
        return {
            i: t[:, :w] for (i, t), w in zip(_split(asks, lambda a, b: toks[a:b]).items(), widths)
        }
    if kind == "score":
        out = ledger.score(owners, scorer, rows)
    else:  # rollout: every ask has the same max_new_tokens
        n = next(iter(asks.values())).max_new_tokens
        out = ledger.rollout(owners, rows, n, sample=False)
    return _split(asks, lambda a, b: out[a:b])


def _split(asks: dict[int, Ask], part) -> dict[int, object]:
    """``part(a, b)``: the answer rows a:b of a batched call -> each problem's own rows."""
    got, a = {}, 0
    for i, ask in asks.items():
        got[i] = part(a, a + len(ask.rows))
        a += len(ask.rows)
    return got


def _padded(actions: Tensor, width: int) -> Tensor:
    """actions [n, k] -> [n, width], repeating the last column (its answer is cut off again)."""
    return torch.cat([actions, actions[:, -1:].expand(-1, width - actions.shape[1])], dim=1)
