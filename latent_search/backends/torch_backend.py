"""The torch reference backend: a CoLA model (latent actions) or a plain LM (token actions).

Model state is cached per exact token prefix (LRU). A prefix whose parent is cached costs one
incremental step (one backbone step: CoLA's one-step-per-node property); anything else is
prefilled. Every model call is batched over all prefixes of the request.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import torch
from torch import Tensor

from ..backend import Prior, Usage


class TorchBackend:
    def __init__(self, model, *, cache_rows: int = 4096) -> None:
        self.model = model
        self.level = "latent" if model.kind == "cola" else "token"
        self.n_actions = model.n_actions if self.level == "latent" else model.backbone.vocab_size
        self.eos_id = model.tokenizer.eos_token_id
        self.usage = Usage()
        self.last_costs: list[int] = []
        """Model tokens each input row of the most recent call cost (for per-problem budgets)."""
        self._states: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._cache_rows = cache_rows
        from cola_models.lm import LMState
        from cola_models.state import ColaState

        self._state_cls = ColaState if self.level == "latent" else LMState

    # ------------------------------------------------------------------ states
    def _remember(self, key: tuple[int, ...], state) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self._cache_rows:
            self._states.popitem(last=False)

    def _timed(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.usage.seconds += time.perf_counter() - t
        self.usage.calls += 1
        return out

    def states(self, prefixes: list[list[int]]):
        """A batched state for ``prefixes`` (row i <-> prefixes[i])."""
        from cola_models.tokenizer import left_pad

        keys = [tuple(p) for p in prefixes]
        cost = {k: 0 for k in keys}
        rows: dict[tuple[int, ...], object] = {}
        step_keys = [
            k for k in dict.fromkeys(keys) if k not in self._states and k[:-1] in self._states
        ]
        fill_keys = [k for k in dict.fromkeys(keys) if k not in self._states and k not in step_keys]
        if step_keys:
            parents = self._state_cls.cat([self._states[k[:-1]] for k in step_keys])
            tokens = torch.tensor([k[-1] for k in step_keys])
            stepped = self._timed(self.model.advance, parents, tokens)
            self.usage.decode_tokens += len(step_keys)
            for i, k in enumerate(step_keys):
                rows[k] = stepped.select([i])
                cost[k] = 1
        if fill_keys:
            ids, mask = left_pad([list(k) for k in fill_keys], 0)
            filled = self._timed(self.model.start, ids, mask)
            self.usage.prefill_tokens += int(mask.sum())
            for i, k in enumerate(fill_keys):
                rows[k] = filled.select([i])
                cost[k] = len(k)
        seen: set[tuple[int, ...]] = set()
        self.last_costs = []
        for k in keys:  # a prefix asked twice in one call is paid once
            self.last_costs.append(0 if k in seen else cost[k])
            seen.add(k)
        for k, st in rows.items():
            self._remember(k, st)
        for k in keys:
            if k in self._states:
                self._states.move_to_end(k)
        return self._state_cls.cat([rows.get(k) or self._states[k] for k in keys])

    # ------------------------------------------------------------------ protocol
    def prior(self, prefixes: list[list[int]]) -> Prior:
        st = self.states(prefixes)
        if self.level == "latent":
            return Prior(st.policy_logits, st.q_values)
        return Prior(st.logits, None)

    def expand(self, prefixes: list[list[int]], actions: Tensor) -> Tensor:
        if self.level == "token":
            return actions.clone()  # the action is the token
        st = self.states(prefixes)
        return self._timed(self.model.next_token_logits, st, actions).argmax(-1)  # [B, k]

    def rollout(
        self,
        prefixes: list[list[int]],
        max_new_tokens: int,
        *,
        sample: bool,
        generator=None,
        stop: tuple[str, ...] = (),
    ) -> list[list[int]]:
        from cola_models.generation import GenerationConfig, generate

        if not prefixes:
            self.last_costs = []
            return []
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            action="sample" if sample else "greedy",
            stop_strings=stop,
        )
        # Start from the cached prefix states (a search's new node is one step from its parent)
        # and keep each row's final state: valuing the finished text (Q at the state before its
        # last token) or extending it then costs nothing more.
        start = self.states(prefixes)
        costs = list(self.last_costs)
        out = self._timed(
            lambda: generate(
                self.model, prefixes, cfg, generator=generator, state=start, keep_states=True
            )
        )
        self.usage.decode_tokens += out.decode_tokens
        for p, toks, st in zip(prefixes, out.token_ids, out.final_states):
            self._remember(tuple(p) + tuple(toks[:-1]), st)
        self.last_costs = [c + len(t) - 1 for c, t in zip(costs, out.token_ids)]
        return out.token_ids

    def decode(self, tokens: list[int]) -> str:
        return self.model.tokenizer.decode(tokens, skip_special_tokens=True)
