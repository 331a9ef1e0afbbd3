"""Many problems' searches as coroutines, their model calls batched across problems.

Every tree search (beam, mcts, mcts-q) is written for one problem: it yields an :class:`Ask` (the
model call it waits on) and is sent the answer. :func:`drive` serves the asks of every waiting
problem of one kind in one backend call (through the ledger, which charges every row to its
problem), cheap kinds first, rollouts last. Problems are not held in step: one whose round
needed no rollout goes on to its next round at once, and its next rollout joins the others' in
the same call, so a rollout call holds rows from problems at different rounds and the model runs
nearly as many rows per step as the problems' own chains of calls allow. A problem's own calls
run in the same order whatever the others do, so a search that does not sample builds the same
tree whatever the batch. (Sampled rollouts draw from one shared stream, so their draws depend on
which problems share a call.)
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .ledger import Ledger
from .types import Prior, Scorer, ValueFn

CHEAP = ("value", "score", "prior", "expand")
"""Kinds of ask served before any rollout, in this order: no more than one forward each."""


@dataclass
class Ask:
    """One problem's model call: ``kind`` is "prior", "expand" (``actions`` [len(rows), k]),
    "rollout" (``max_new_tokens``, ended at a ``stop`` string, greedy unless ``sample``),
    "score" (rows are whole sequences, judged by the search's scorer), "value" (rows are states,
    ``done`` says which are finished, judged by the search's value function) or "round" (no
    model work: the problem finished a round, and waits there when rounds are kept in step)."""

    kind: str
    rows: list[list[int]] = field(default_factory=list)
    actions: Tensor | None = None
    max_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    sample: bool = False
    done: list[bool] = field(default_factory=list)


Search = Generator[Ask, object, object]


@dataclass
class Judges:
    """What a drive's "score", "value" and sampled "rollout" asks are served with."""

    scorer: Scorer | None = None
    value_fn: ValueFn | None = None
    generator: torch.Generator | None = None


def drive(
    ledger: Ledger,
    searches: dict[int, Search],
    *,
    scorer: Scorer | None = None,
    value_fn: ValueFn | None = None,
    generator: torch.Generator | None = None,
    on_round: Callable[[], None] | None = None,
) -> dict[int, object]:
    """Run every problem's search (problem i <-> ``searches[i]``, rows charged to i) to its end;
    returns what each search returned. ``on_round``: called whenever every problem has finished
    the same number of rounds (to checkpoint them); problems then wait for each other at the end
    of each round."""
    judges = Judges(scorer, value_fn, generator)
    waiting: dict[int, Ask] = {}
    returned: dict[int, object] = {}

    def resume(i: int, answer) -> None:
        try:
            waiting[i] = searches[i].send(answer)
        except StopIteration as stop:
            waiting.pop(i, None)
            returned[i] = stop.value

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
        for i, answer in _serve(ledger, _next_batch(waiting), judges).items():
            resume(i, answer)
    return returned


def _next_batch(waiting: dict[int, Ask]) -> dict[int, Ask]:
    """The asks served next: every ask of the cheapest kind waiting; with only rollouts left, the
    shortest ones (a macro-step's or a step's before a full rollout, so that a problem whose next
    ask is a full rollout joins the next call) of one (length, stop, sampling) kind."""
    kind = next((k for k in CHEAP if any(a.kind == k for a in waiting.values())), None)
    if kind is not None:
        return {i: a for i, a in waiting.items() if a.kind == kind}
    rollouts = {i: a for i, a in waiting.items() if a.kind == "rollout"}
    first = min(rollouts.values(), key=lambda a: a.max_new_tokens)
    key = (first.max_new_tokens, first.stop, first.sample)
    return {i: a for i, a in rollouts.items() if (a.max_new_tokens, a.stop, a.sample) == key}


def _serve(ledger: Ledger, asks: dict[int, Ask], judges: Judges) -> dict[int, object]:
    """Every ask (all of one kind) in one batched call; returns each problem's answer."""
    kind = next(iter(asks.values())).kind
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
        out = ledger.score(owners, judges.scorer, rows)
    elif kind == "value":
        done = [d for a in asks.values() for d in a.done]
        out = ledger.value(owners, judges.value_fn, rows, done)
    else:  # rollout: every ask has the same length, stop strings and sampling
        a = next(iter(asks.values()))
        out = ledger.rollout(
            owners, rows, a.max_new_tokens, sample=a.sample, stop=a.stop,
            generator=judges.generator if a.sample else None,
        )  # fmt: skip
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
