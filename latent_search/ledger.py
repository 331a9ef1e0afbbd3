"""One ledger per batched search: every model call is charged to the problems it served.

A search over P problems calls its backend (and its scorer's or value function's backend) with
rows from many problems at once. Each call goes through :class:`Ledger` together with ``owners``
(the problem of every row); the backend's per-row costs of that call are added to those problems.
So a budget binds on everything a problem cost, expansions and valuations included, and the
per-problem tokens of a search add up to all model work it caused. The ledger also builds the
search's results and their tree metadata, the same way for every algorithm.

The ledger is also where the model's device meets the host: a search's trees are Python objects,
so each batched call's outputs (priors, expanded tokens) come back to the CPU in one transfer
(float32), and the backend takes the actions onto its device. Search code then never reads a
device tensor element by element (thousands of synchronisations per expansion on a GPU).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .tree import Tree
from .types import Backend, Prior, SearchResult, is_oracle


def on_host(prior: Prior) -> Prior:
    """A prior's logits (and Q) as float32 CPU tensors, in one device-to-host copy."""
    if prior.q is None:
        return Prior(prior.logits.float().cpu())
    both = torch.stack((prior.logits.float(), prior.q.float())).cpu()  # [2, B, A]
    return Prior(both[0], both[1])


@dataclass
class RowMeter:
    """The ledger bound to the rows of one scorer or value-function call (a ``types.Meter``): a
    scorer runs its model through ``prior`` (any backend) or reports other work through ``charge``."""

    ledger: Ledger
    owners: list[int]

    def prior(self, backend: Backend, prefixes: list[list[int]]) -> Prior:
        return self.ledger.prior(self.owners, prefixes, backend=backend)

    def charge(self, costs: list[int]) -> None:
        self.ledger.charge(self.owners, costs)

    @property
    def starts(self) -> list[int] | None:
        """Where each row's generated text begins (its prompt's length), when the search said."""
        lens = self.ledger.prompt_lens
        return None if lens is None else [lens[o] for o in self.owners]


@dataclass
class Choice:
    """What a search settled on for one problem: the answer's tokens, and its tree if it has one."""

    tokens: list[int]
    tree: Tree | None = None
    node: int | None = None
    stats: dict = field(default_factory=dict)


class Ledger:
    def __init__(
        self,
        backend: Backend,
        n_problems: int,
        *,
        budget: int | None = None,
        spent: list[int] | None = None,
        prompt_lens: list[int] | None = None,
    ) -> None:
        self.backend = backend
        self.budget = budget
        self.prompt_lens = prompt_lens
        self.spent = list(spent) if spent is not None else [0] * n_problems
        """Model tokens charged to each problem so far (a resumed search starts from its own)."""
        if len(self.spent) != n_problems:
            raise ValueError(f"{len(self.spent)} spent counts for {n_problems} problems")
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ budget
    def open(self, i: int) -> bool:
        """Problem i may still spend (no budget, or under it)."""
        return self.budget is None or self.spent[i] < self.budget

    def open_problems(self) -> list[int]:
        return [i for i in range(len(self.spent)) if self.open(i)]

    # ------------------------------------------------------------------ metered calls
    def charge(self, owners: list[int], costs: list[int]) -> None:
        if len(costs) != len(owners):
            raise ValueError(f"{len(costs)} costs reported for {len(owners)} rows")
        for i, c in zip(owners, costs):
            self.spent[i] += int(c)

    def _charged(self, owners: list[int], backend: Backend, out):
        self.charge(owners, backend.last_costs)
        return out

    def prior(self, owners: list[int], prefixes: list[list[int]], *, backend=None) -> Prior:
        be = backend or self.backend
        return self._charged(owners, be, on_host(be.prior(prefixes)))

    def expand(
        self, owners: list[int], prefixes: list[list[int]], actions: Tensor, *, backend=None
    ) -> Tensor:
        be = backend or self.backend
        return self._charged(owners, be, be.expand(prefixes, actions).cpu())

    def rollout(
        self,
        owners: list[int],
        prefixes: list[list[int]],
        max_new_tokens: int,
        *,
        sample: bool,
        generator=None,
        stop: tuple[str, ...] = (),
        backend=None,
    ) -> list[list[int]]:
        if not prefixes:
            return []
        be = backend or self.backend
        outs = be.rollout(prefixes, max_new_tokens, sample=sample, generator=generator, stop=stop)
        return self._charged(owners, be, outs)

    def meter(self, owners: list[int]) -> RowMeter:
        return RowMeter(self, list(owners))

    def score(self, owners: list[int], scorer, seqs: list[list[int]]) -> list[float]:
        return list(scorer(seqs, self.meter(owners))) if seqs else []

    def value(
        self, owners: list[int], value_fn, seqs: list[list[int]], done: list[bool]
    ) -> list[float]:
        return list(value_fn(seqs, done, self.meter(owners))) if seqs else []

    # ------------------------------------------------------------------ results
    def results(
        self, choices: list[Choice], *, algorithm: str, config, scorer=None
    ) -> list[SearchResult]:
        """SearchResults of every problem; a tree's metadata records the algorithm, its config,
        the tokens spent, the chosen node and whether an oracle scored it."""
        seconds = (time.perf_counter() - self._t0) / max(1, len(choices))
        oracle = is_oracle(scorer)
        conf = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        out = []
        for i, ch in enumerate(choices):
            if ch.tree is not None:
                ch.tree.meta.update(
                    {
                        "algorithm": algorithm,
                        "tokens": self.spent[i],
                        "oracle": oracle,
                        "chosen": ch.node,
                        "config": conf,
                    }
                )
            out.append(
                SearchResult(
                    tokens=ch.tokens,
                    text=self.backend.decode(ch.tokens),
                    tree=ch.tree,
                    tokens_used=self.spent[i],
                    seconds=seconds,
                    stats=ch.stats,
                    oracle=oracle,
                )
            )
        return out
