"""The language world model's head: codebook + merge MLPs + output, on top of backbone features.

Given h_t and a latent action a_t it predicts x_{t+1}. The action enters only after the backbone,
so the backbone's KV cache never depends on actions and one backbone step serves all K actions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MergeMLP(nn.Module):
    """SwiGLU over concat[s, e_a]: gate/up Linear(2D -> F), down Linear(F -> D) (reference shape)."""

    def __init__(self, dim: int, ffn: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(2 * dim, ffn, bias=False)
        self.up_proj = nn.Linear(2 * dim, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, dim, bias=False)

    def forward(self, s: Tensor, e: Tensor) -> Tensor:
        x = torch.cat([s, e], dim=-1)  # [..., 2D]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class WorldModelHead(nn.Module):
    def __init__(self, dim: int, n_actions: int, n_merge: int, merge_ffn: int, output_mode: str):
        super().__init__()
        # Reference: Linear(K -> D, bias=False) applied to a one-hot; an embedding table is the
        # same map. Init N(0, 1) rather than nn.Linear's uniform(+-1/sqrt(K)) (deviation: at small
        # scale the tiny experiment trained with N(0, 1)).
        self.codebook = nn.Embedding(n_actions, dim)
        nn.init.normal_(self.codebook.weight, std=1.0)
        self.merge = nn.ModuleList(MergeMLP(dim, merge_ffn) for _ in range(n_merge))
        self.output_mode = output_mode

    @property
    def n_actions(self) -> int:
        return self.codebook.num_embeddings

    def embed(self, actions: Tensor | None = None, weights: Tensor | None = None) -> Tensor:
        """e_a [..., D] from action ids [...] or (straight-through) one-hot weights [..., K]."""
        if weights is not None:
            return weights.to(self.codebook.weight.dtype) @ self.codebook.weight
        return self.codebook(actions)

    def merged(self, h: Tensor, e: Tensor) -> Tensor:
        """s = h; s <- s + MergeMLP(s, e) for each merge layer. h, e: [..., D]."""
        s = h
        for layer in self.merge:
            s = s + layer(s, e)
        return s

    def logits(
        self,
        h: Tensor,
        final_norm: nn.Module,
        lm_head: nn.Module,
        actions: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """Token logits [..., V] for features h [..., D] under actions [...] (or weights [..., K])."""
        s = self.merged(h, self.embed(actions, weights))
        if self.output_mode == "reference":
            # Official code: lm_head(final_norm(s) - h). Kept for fidelity; it does not train on
            # small backbones (a normed output minus h cannot express the backbone's own logits).
            return lm_head(final_norm(s) - h)
        return lm_head(final_norm(s))  # deviation: "plain" output, the small-model default
