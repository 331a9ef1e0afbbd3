"""Batched incremental state of a CoLA model: what a search node or a generation row carries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import StackCache, shared_padding
from .errors import ColaError


@dataclass
class ColaState:
    """B prefixes after their last token has been read.

    All caches are plain tensors so rows can be selected (branching a search node) and states of
    different lengths concatenated (batching nodes of many trees) without touching any HF API.
    """

    key_mask: Tensor  # [B, S] bool, False on left padding
    next_pos: Tensor  # [B] long, the RoPE position of the next token
    h: Tensor  # [B, D] backbone features of the last token
    policy_logits: Tensor  # [B, K]
    q_values: Tensor | None  # [B, K] or None without a Q head
    backbone_cache: StackCache
    policy_cache: StackCache
    q_cache: StackCache | None

    @property
    def batch_size(self) -> int:
        return self.h.shape[0]

    def select(self, index: Tensor | list[int], room: int = 0) -> ColaState:
        """Rows ``index`` (a copy): [B] -> [len(index)]. Repeats are allowed (branching).
        ``room``: cache slots left free after the prefix, for tokens about to be appended."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.h.device)
        start = shared_padding(self.key_mask[index])  # RoPE positions live in next_pos
        return self._mapped(index, start, lambda c: c.select(index, room, start))

    def compacted(self, keep: list[int]) -> ColaState:
        """Rows ``keep`` (ascending) in these caches' own buffers (see StackCache.compacted)."""
        index = torch.as_tensor(keep, dtype=torch.long, device=self.h.device)
        return self._mapped(index, 0, lambda c: c.compacted(keep))

    def reserved(self, n_new: int) -> ColaState:
        """The same state with cache room for ``n_new`` more tokens (see StackCache.reserved)."""
        return self._mapped(None, 0, lambda c: c.reserved(n_new))

    def _mapped(self, index: Tensor | None, start: int, cache) -> ColaState:
        """Rows ``index`` of the per-row tensors (all when None), key slots from ``start`` on,
        and ``cache`` applied to each KV cache."""

        def rows(t: Tensor) -> Tensor:
            return t if index is None else t[index]

        return ColaState(
            key_mask=rows(self.key_mask)[:, start:],
            next_pos=rows(self.next_pos),
            h=rows(self.h),
            policy_logits=rows(self.policy_logits),
            q_values=None if self.q_values is None else rows(self.q_values),
            backbone_cache=cache(self.backbone_cache),
            policy_cache=cache(self.policy_cache),
            q_cache=None if self.q_cache is None else cache(self.q_cache),
        )

    @staticmethod
    def cat(states: list[ColaState], room: int = 0) -> ColaState:
        """Concatenate along the batch, left-padding shorter caches (masked keys), with ``room``
        free cache slots after (a single state is returned as it is)."""
        if len(states) == 1:
            return states[0]
        if len({s.q_cache is None for s in states}) > 1:  # Q-less states (start(values=False))
            raise ColaError("cannot join states with and without the Q head's values")
        S = max(s.key_mask.shape[1] for s in states)
        pads = [S - s.key_mask.shape[1] for s in states]

        def caches(name: str) -> StackCache | None:
            got = [getattr(s, name) for s in states]
            return None if got[0] is None else StackCache.cat(got, room)

        return ColaState(
            key_mask=torch.cat(
                [F.pad(s.key_mask, (n, 0), value=False) for s, n in zip(states, pads)]
            ),
            next_pos=torch.cat([s.next_pos for s in states]),
            h=torch.cat([s.h for s in states]),
            policy_logits=torch.cat([s.policy_logits for s in states]),
            q_values=None
            if states[0].q_values is None
            else torch.cat([s.q_values for s in states]),
            backbone_cache=caches("backbone_cache"),
            policy_cache=caches("policy_cache"),
            q_cache=caches("q_cache"),
        )
