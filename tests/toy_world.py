"""A toy world for search tests: action a produces token a + 10; a sequence ends (EOS = 1) after
``horizon`` generated tokens; the prior prefers low actions; Q is exact for a known target."""

from __future__ import annotations

import torch

from latent_search.types import Prior, Usage


class ToyBackend:
    level = "latent"
    device = torch.device("cpu")

    def __init__(self, n_actions: int = 4, horizon: int = 3, prior_bias: float = 1.0) -> None:
        self.n_actions, self.horizon, self.eos_id = n_actions, horizon, 1
        self.usage, self.last_costs = Usage(), []
        self.prior_logits = -prior_bias * torch.arange(n_actions, dtype=torch.float)
        self.prompt_len: dict[tuple, int] = {}

    def _gen(self, p: list[int]) -> list[int]:
        return [t for t in p if t >= 10]

    def prior(self, prefixes):
        self.last_costs = [1] * len(prefixes)
        logits = self.prior_logits.expand(len(prefixes), -1).clone()
        return Prior(logits, torch.zeros(len(prefixes), self.n_actions))

    def expand(self, prefixes, actions):
        self.last_costs = [1] * len(prefixes)
        out = actions + 10
        for row, p in enumerate(prefixes):
            if len(self._gen(p)) >= self.horizon:
                out[row] = 1  # every action ends a finished sequence
        return out

    def rollout(self, prefixes, max_new_tokens, *, sample, generator=None, stop=()):
        outs = []
        for p in prefixes:
            n = self.horizon - len(self._gen(p))
            outs.append([10] * max(0, min(n, max_new_tokens)) + [1])  # greedy = action 0
        self.last_costs = [len(o) for o in outs]
        return outs

    def decode(self, tokens):
        return " ".join(str(t) for t in tokens)


def target_scorer(target: list[int]):
    """1.0 when the generated tokens start with ``target``'s tokens, partial credit per match."""

    def score(seqs, meter=None):
        out = []
        for s in seqs:
            gen = [t for t in s if t >= 10]
            out.append(sum(1 for a, b in zip(gen, target) if a == b) / len(target))
        return out

    return score


def fault_judge(target: list[int]):
    """A fault-finding value function: 1.0 while the generated tokens follow ``target``, 0 once
    they leave it (the shape of the equation check: nothing wrong until a fault shows)."""

    def value(seqs, done, meter=None):
        gen = [[t for t in s if t >= 10] for s in seqs]
        return [float(all(a == b for a, b in zip(g, target))) for g in gen]

    return value
