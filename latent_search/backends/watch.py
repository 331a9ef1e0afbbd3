"""A backend that reports every call it serves: for live progress (tokens against a budget) and
for accounting tests. It changes nothing about the calls."""

from __future__ import annotations

from collections.abc import Callable


class Watched:
    def __init__(self, inner, on_call: Callable[[str, list[int]], None]) -> None:
        """``on_call(method, per-row costs)`` runs after each prior / expand / rollout."""
        self.inner = inner
        self.on_call = on_call
        self.level, self.n_actions, self.eos_id = inner.level, inner.n_actions, inner.eos_id
        self.device = inner.device

    @property
    def usage(self):
        return self.inner.usage

    @property
    def last_costs(self) -> list[int]:
        return self.inner.last_costs

    def _report(self, method: str, out):
        self.on_call(method, list(self.inner.last_costs))
        return out

    def prior(self, prefixes):
        return self._report("prior", self.inner.prior(prefixes))

    def expand(self, prefixes, actions):
        return self._report("expand", self.inner.expand(prefixes, actions))

    def rollout(self, prefixes, max_new_tokens, **kw):
        return self._report("rollout", self.inner.rollout(prefixes, max_new_tokens, **kw))

    def decode(self, tokens):
        return self.inner.decode(tokens)

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()
