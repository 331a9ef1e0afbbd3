"""Batched incremental state of a CoLA model: what a search node or a generation row carries."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import StackCache


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

    def select(self, index: Tensor | list[int]) -> ColaState:
        """Rows ``index`` (a copy): [B] -> [len(index)]. Repeats are allowed (branching)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.h.device)
        return ColaState(
            key_mask=self.key_mask[index],
            next_pos=self.next_pos[index],
            h=self.h[index],
            policy_logits=self.policy_logits[index],
            q_values=None if self.q_values is None else self.q_values[index],
            backbone_cache=self.backbone_cache.select(index),
            policy_cache=self.policy_cache.select(index),
            q_cache=None if self.q_cache is None else self.q_cache.select(index),
        )

    @staticmethod
    def cat(states: list[ColaState]) -> ColaState:
        """Concatenate along the batch, left-padding shorter caches (masked keys)."""
        if len(states) == 1:
            return states[0]
        S = max(s.key_mask.shape[1] for s in states)

        def pad_cache(cache: StackCache | None, n: int) -> StackCache | None:
            if cache is None:
                return None
            return StackCache(
                [F.pad(k, (0, 0, n, 0)) for k in cache.keys],
                [F.pad(v, (0, 0, n, 0)) for v in cache.values],
            )

        padded = []
        for s in states:
            n = S - s.key_mask.shape[1]
            padded.append(
                replace(
                    s,
                    key_mask=F.pad(s.key_mask, (n, 0), value=False),
                    backbone_cache=pad_cache(s.backbone_cache, n),
                    policy_cache=pad_cache(s.policy_cache, n),
                    q_cache=pad_cache(s.q_cache, n),
                )
            )

        def cat_cache(caches: list[StackCache | None]) -> StackCache | None:
            if caches[0] is None:
                return None
            n_layers = len(caches[0].keys)
            return StackCache(
                [torch.cat([c.keys[i] for c in caches]) for i in range(n_layers)],
                [torch.cat([c.values[i] for c in caches]) for i in range(n_layers)],
            )

        return ColaState(
            key_mask=torch.cat([s.key_mask for s in padded]),
            next_pos=torch.cat([s.next_pos for s in padded]),
            h=torch.cat([s.h for s in padded]),
            policy_logits=torch.cat([s.policy_logits for s in padded]),
            q_values=None
            if padded[0].q_values is None
            else torch.cat([s.q_values for s in padded]),
            backbone_cache=cat_cache([s.backbone_cache for s in padded]),
            policy_cache=cat_cache([s.policy_cache for s in padded]),
            q_cache=cat_cache([s.q_cache for s in padded]),
        )
