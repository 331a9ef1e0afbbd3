"""A backend wrapper for accounting tests: it adds up every row cost the backend reports."""


class Counting:
    """Delegates to a backend and adds up every row cost it reports, per method."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.level, self.n_actions, self.eos_id = inner.level, inner.n_actions, inner.eos_id
        self.usage = inner.usage
        self.totals = {"prior": 0, "expand": 0, "rollout": 0}

    @property
    def last_costs(self):
        return self.inner.last_costs

    def _count(self, name, out):
        self.totals[name] += sum(self.inner.last_costs)
        return out

    def prior(self, prefixes):
        return self._count("prior", self.inner.prior(prefixes))

    def expand(self, prefixes, actions):
        return self._count("expand", self.inner.expand(prefixes, actions))

    def rollout(self, prefixes, max_new_tokens, **kw):
        return self._count("rollout", self.inner.rollout(prefixes, max_new_tokens, **kw))

    def decode(self, tokens):
        return self.inner.decode(tokens)
