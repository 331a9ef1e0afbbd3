"""Heads that map backbone features h to K numbers per position: IDM, policy and Q.

All three are the same shape in the reference: a stack of backbone-shaped transformer blocks
over h (detached, so they never move the backbone), a final RMSNorm, and Linear(D -> K).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import BlockShape, BlockStack, StackCache


class ActionHead(nn.Module):
    """h [B, T, D] -> [B, T, K] through ``n_layers`` causal blocks with their own KV cache."""

    def __init__(self, shape: BlockShape, n_layers: int, n_actions: int) -> None:
        super().__init__()
        self.blocks = BlockStack(shape, n_layers)
        self.out = nn.Linear(shape.dim, n_actions, bias=False)

    def forward(
        self,
        h: Tensor,
        positions: Tensor,
        key_mask: Tensor,
        cache: StackCache | None = None,
        extra: Tensor | None = None,
    ) -> tuple[Tensor, StackCache]:
        """``extra`` [B, T, D] is added to the (detached) features: inputs of the head's own."""
        x = h.detach() if extra is None else h.detach() + extra
        y, cache = self.blocks(x, positions, key_mask, cache)
        return self.out(y), cache


SURPRISE = 3
"""Features of :func:`lm_surprise` per token."""


@torch.no_grad()
def lm_surprise(token_logits, h_prev: Tensor, tokens: Tensor) -> Tensor:
    """What the LM knew of each token written: h_prev [..., D] (the features before it), tokens
    [...] -> [..., 3]: log p(token), the best log p at that position, their gap (0 when the LM
    would have written it). ``token_logits`` maps features to the LM's vocabulary logits."""
    logp = token_logits(h_prev).float().log_softmax(-1)  # [..., V]
    lp = logp.gather(-1, tokens[..., None])[..., 0]
    best = logp.max(-1).values
    return torch.stack([lp, best, lp - best], -1)


def sequence_surprise(token_logits, h: Tensor, input_ids: Tensor) -> Tensor:
    """:func:`lm_surprise` of every token of [B, T] sequences with features h [B, T, D] ->
    [B, T, 3]; the first position (no token before it to predict it) gets zeros."""
    inner = lm_surprise(token_logits, h[:, :-1], input_ids[:, 1:])  # [B, T-1, 3]
    return torch.cat([inner.new_zeros(h.shape[0], 1, SURPRISE), inner], dim=1)


def idm_transition_logits(
    idm: ActionHead, h: Tensor, positions: Tensor, key_mask: Tensor
) -> Tensor:
    """Inverse dynamics: logits of a_t for every transition x_t -> x_{t+1}, shape [B, T-1, K].

    The IDM is causal over h, and h_{t+1} already contains x_{t+1}; so its output at t+1 sees the
    history plus exactly one future token. The reference shifts it back to t
    (``x_action[:, :-1] = x_action[:, 1:]``); we drop the last position instead of keeping a
    meaningless one.
    """
    logits, _ = idm(h, positions, key_mask)  # [B, T, K]
    return logits[:, 1:]
