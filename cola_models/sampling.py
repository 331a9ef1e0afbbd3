"""Choosing actions and tokens from logits, with randomness passed in explicitly."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample one index per row. logits: [B, N] -> [B]. top_k=0 keeps all N."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def uniform_actions(
    batch: int, n_actions: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random actions [B]: the control beside policy sampling."""
    return torch.randint(n_actions, (batch,), device=device, generator=generator)
