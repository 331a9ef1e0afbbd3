"""A backend wrapper that makes one model call per row: the reference's one-node-per-call way,
kept to measure what lockstep batching buys (bench/search.py)."""

from __future__ import annotations

import torch

from ..types import Prior


class SerialBackend:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.level, self.n_actions, self.eos_id = inner.level, inner.n_actions, inner.eos_id
        self.device = inner.device
        self.last_costs: list[int] = []

    @property
    def usage(self):
        return self.inner.usage

    def _each(self, fn, prefixes, *rest):
        outs, costs = [], []
        for i, p in enumerate(prefixes):
            outs.append(fn([p], *(r[i : i + 1] for r in rest)))
            costs += self.inner.last_costs
        self.last_costs = costs
        return outs

    def prior(self, prefixes):
        outs = self._each(self.inner.prior, prefixes)
        q = None if outs[0].q is None else torch.cat([o.q for o in outs])
        return Prior(torch.cat([o.logits for o in outs]), q)

    def expand(self, prefixes, actions):
        return torch.cat(self._each(self.inner.expand, prefixes, actions))

    def rollout(self, prefixes, max_new_tokens, *, sample, generator=None, stop=()):
        outs = self._each(
            lambda p: self.inner.rollout(
                p, max_new_tokens, sample=sample, generator=generator, stop=stop
            ),
            prefixes,
        )
        return [o[0] for o in outs]

    def decode(self, tokens):
        return self.inner.decode(tokens)
