"""The torch reference backend: a CoLA model (latent actions) or a plain LM (token actions).

Model state is cached per exact token prefix (LRU). A prefix whose parent is cached costs one
incremental step (one backbone step: CoLA's one-step-per-node property); anything else is
prefilled. Every model call is batched over all prefixes of the request.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict

import torch
from torch import Tensor

from ..types import Prior, Usage


class TorchBackend:
    def __init__(
        self,
        model,
        *,
        cache_rows: int = 4096,
        cache_bytes: int = 3 << 30,
        max_extend: int = 32,
        values: bool = True,
    ) -> None:
        """``values=False``: a CoLA model's states leave its Q head out (``prior`` returns no
        Q), for searches judged by something else; each step then skips the Q stack."""
        self.model = model
        self.device = model.device
        self.level = "latent" if model.kind == "cola" else "token"
        self.n_actions = model.n_actions if self.level == "latent" else model.backbone.vocab_size
        self.eos_id = model.tokenizer.eos_token_id
        self.usage = Usage()
        self.last_costs: list[int] = []
        """Model tokens each input row of the most recent call cost (for per-problem budgets)."""
        self._states: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._cache_rows = cache_rows
        # States hold KV caches: bound them by an estimate of their memory as well as by count
        # (a 4096-row cache of 300-token SmolLM2 states would need tens of GB).
        self._cache_tokens = max(1, cache_bytes // state_bytes_per_token(model))
        self._cached_tokens = 0
        self.max_extend = max_extend
        """A prefix at most this many tokens past a cached state is stepped to, not prefilled."""
        from cola_models.lm import LMState
        from cola_models.state import ColaState

        self._state_cls = ColaState if self.level == "latent" else LMState
        self._start = (
            functools.partial(model.start, values=values) if self.level == "latent" else model.start
        )

    # ------------------------------------------------------------------ states
    def _remember(self, key: tuple[int, ...], state) -> None:
        if key not in self._states:
            self._cached_tokens += len(key)
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > 1 and (
            len(self._states) > self._cache_rows or self._cached_tokens > self._cache_tokens
        ):
            old, _ = self._states.popitem(last=False)
            self._cached_tokens -= len(old)

    def _timed(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.usage.seconds += time.perf_counter() - t
        self.usage.calls += 1
        return out

    def states(self, prefixes: list[list[int]], room: int = 0):
        """A batched state for ``prefixes`` (row i <-> prefixes[i]), with ``room`` free cache
        slots after the longest (for a generation about to start from it)."""
        rows, whole = self._rows(prefixes, room)
        if whole is not None:  # a search's new nodes, each a step from its parent: no re-gather
            return whole
        return self._state_cls.cat(rows, room)

    def _rows(self, prefixes: list[list[int]], room: int = 0):
        """The one-row state of every prefix (cached, extended or prefilled) and, when the call
        extended exactly ``prefixes`` together, that batch with ``room`` free slots (else None).
        Sets ``last_costs``."""
        from cola_models.generation import length_groups
        from cola_models.tokenizer import left_pad

        keys = [tuple(p) for p in prefixes]
        cost = {k: 0 for k in keys}
        rows: dict[tuple[int, ...], object] = {}
        # A new prefix extends its nearest cached ancestor token by token when that is close
        # (a child is one step from its node; a finished step a few from its last state), and
        # is prefilled otherwise.
        extend: list[tuple[tuple[int, ...], int]] = []
        fill_keys = []
        for k in dict.fromkeys(keys):
            if k in self._states:
                continue
            j = next(
                (
                    j
                    for j in range(1, min(self.max_extend, len(k) - 1) + 1)
                    if k[:-j] in self._states
                ),
                None,
            )
            if j is None:
                fill_keys.append(k)
            else:
                extend.append((k, j))
        whole = None  # the extension's own batch, when it is exactly the batch asked for
        if extend:
            same = not fill_keys and keys == [k for k, _ in extend]
            got, whole = self._extend(extend, room if same else 0)
            rows.update(got)
            whole = whole if same else None
            for k, j in extend:
                cost[k] = j
        # Prefixes of very different lengths are prefilled apart: in one left-padded batch
        # every row would pay attention and activations up to the longest.
        for group in length_groups([len(k) for k in fill_keys]):
            ids, mask = left_pad([list(fill_keys[i]) for i in group], 0, self.model.device)
            filled = self._timed(self._start, ids, mask)
            self.usage.prefill_tokens += int(mask.sum())
            for row, i in enumerate(group):
                rows[fill_keys[i]] = filled.select([row])
                cost[fill_keys[i]] = len(fill_keys[i])
        seen: set[tuple[int, ...]] = set()
        self.last_costs = []
        for k in keys:  # a prefix asked twice in one call is paid once
            self.last_costs.append(0 if k in seen else cost[k])
            seen.add(k)
        # Take every state this call returns before remembering the new ones: remembering can
        # evict (LRU bound reached inside the call), and must not evict what the call needs.
        needed = [rows.get(k) or self._states[k] for k in keys]
        for k in keys:
            if k in self._states:
                self._states.move_to_end(k)
        for k, st in rows.items():
            self._remember(k, st)
        return needed, whole

    def _extend(self, todo: list[tuple[tuple[int, ...], int]], room: int = 0):
        """States of keys k from their cached ancestors k[:-j]: j batched incremental steps,
        rows leaving the batch as they arrive. Returns ({k: its state}, the batch of every row
        in ``todo``'s order with ``room`` free slots when all of them arrive at the last step,
        else None)."""
        steps = max(j for _, j in todo)
        state = self._state_cls.cat([self._states[k[:-j]] for k, j in todo], room=steps + room)
        order = list(range(len(todo)))  # batch row -> index into todo
        out = {}
        for step in range(steps):
            tokens = torch.tensor(
                [todo[i][0][len(todo[i][0]) - todo[i][1] + step] for i in order],
                device=self.model.device,
            )
            state = self._timed(self.model.advance, state, tokens)
            self.usage.decode_tokens += len(order)
            keep = []
            for row, i in enumerate(order):
                k, j = todo[i]
                if step + 1 == j:
                    out[k] = state.select([row])
                else:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(order):
                state = state.select(keep, room=steps - step)
                order = [order[r] for r in keep]
        whole = len(order) == len(todo) and len(todo) > 1
        return out, (state if whole else None)

    # ------------------------------------------------------------------ protocol
    # A prior and an expansion read only each state's last outputs (logits, features): they are
    # stacked from the one-row states, never joined into a batch with its KV caches.
    def prior(self, prefixes: list[list[int]]) -> Prior:
        rows, _ = self._rows(prefixes)
        if self.level == "latent":
            q = None if rows[0].q_values is None else torch.cat([r.q_values for r in rows])
            return Prior(torch.cat([r.policy_logits for r in rows]), q)
        return Prior(torch.cat([r.logits for r in rows]), None)

    def expand(self, prefixes: list[list[int]], actions: Tensor) -> Tensor:
        if self.level == "token":
            self.last_costs = [0] * len(prefixes)
            return actions.clone()  # the action is the token
        rows, _ = self._rows(prefixes)
        h = torch.cat([r.h for r in rows])  # [B, D]
        actions = actions.to(self.device, non_blocking=True)  # [B, k], from the host
        return self._timed(self.model.next_token_logits, h, actions).argmax(-1)  # [B, k]

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
        # Rows in ascending prefix length: rows that share left padding sit together, and a
        # decode step's attention skips it run by run (cola_models.attention.row_spans).
        order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]))
        ordered = [prefixes[i] for i in order]
        # Start from the cached prefix states (a search's new node is one step from its parent)
        # and keep each row's final state: valuing the finished text (Q at the state before its
        # last token) or extending it then costs nothing more.
        start = self.states(ordered, room=max_new_tokens)
        costs = list(self.last_costs)
        out = self._timed(
            lambda: generate(
                self.model, ordered, cfg, generator=generator, state=start, keep_states=True
            )
        )
        self.usage.decode_tokens += out.decode_tokens
        for p, toks, st in zip(ordered, out.token_ids, out.final_states):
            self._remember(tuple(p) + tuple(toks[:-1]), st)
        tokens: list[list[int]] = [[] for _ in prefixes]
        self.last_costs = [0] * len(prefixes)
        for pos, i in enumerate(order):
            tokens[i] = out.token_ids[pos]
            self.last_costs[i] = costs[pos] + len(tokens[i]) - 1
        return tokens

    def decode(self, tokens: list[int]) -> str:
        return self.model.tokenizer.decode(tokens, skip_special_tokens=True)


def kv_bytes_per_token(model) -> int:
    """Keys and values one cached token holds across every attention layer: the backbone's and,
    for CoLA, the policy and Q stacks' (shaped as the backbone's)."""
    hf = model.backbone.hf_config
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    layers = hf.num_hidden_layers
    if model.kind == "cola":
        layers += model.config.policy_layers + (model.config.q_layers if model.q is not None else 0)
    return 2 * layers * kv * head_dim * _element_bytes(model)


def state_bytes_per_token(model) -> int:
    """Rough memory of one cached token of a state: its keys and values plus the backbone
    features."""
    return kv_bytes_per_token(model) + model.backbone.hf_config.hidden_size * _element_bytes(model)


def _element_bytes(model) -> int:
    return torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
