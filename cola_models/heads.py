"""Heads that map backbone features h to K numbers per position: IDM, policy and Q.

All three are the same shape in the reference: a stack of backbone-shaped transformer blocks
over h (detached, so they never move the backbone), a final RMSNorm, and Linear(D -> K).
"""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import BlockShape, BlockStack, StackCache


class ActionHead(nn.Module):
    """h [B, T, D] -> [B, T, K] through ``n_layers`` causal blocks with their own KV cache."""

    def __init__(self, shape: BlockShape, n_layers: int, n_actions: int) -> None:
        super().__init__()
        self.blocks = BlockStack(shape, n_layers)
        self.out = nn.Linear(shape.dim, n_actions, bias=False)

    def forward(
        self, h: Tensor, positions: Tensor, key_mask: Tensor, cache: StackCache | None = None
    ) -> tuple[Tensor, StackCache]:
        y, cache = self.blocks(h.detach(), positions, key_mask, cache)
        return self.out(y), cache


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
