"""Llama-shaped transformer blocks for the new CoLA stacks (IDM, policy, Q), with a KV cache.

The backbone stays a Hugging Face model; these stacks are small, self-contained and must run
incrementally beside it, so they are written here against plain tensors rather than against
the HF cache API, which changes between releases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def positions_from_mask(mask: Tensor) -> Tensor:
    """RoPE positions for a left-padded batch: [B, T] mask -> [B, T] positions (0 at first token)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class BlockShape:
    """Shape of one Llama decoder block."""

    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False  # Qwen2-style backbones carry a bias on q/k/v


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotary embedding (HF Llama convention, unscaled). x: [B, H, T, hd], positions: [B, T]."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
    angles = positions.float()[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, T, hd]
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    return x * cos + _rotate_half(x) * sin


@dataclass
class StackCache:
    """Per-layer keys/values of one block stack: each [B, H_kv, S, hd]."""

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def select(self, index: Tensor) -> StackCache:
        """Rows ``index`` [B'] of the batch (a copy; used to branch search nodes)."""
        return StackCache([k[index] for k in self.keys], [v[index] for v in self.values])

    def pad_left(self, n: int) -> StackCache:
        """Prepend ``n`` empty (masked) key/value slots to every layer."""
        if n == 0:
            return self
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, n, 0))  # noqa: E731
        return StackCache([pad(k) for k in self.keys], [pad(v) for v in self.values])

    @staticmethod
    def cat(caches: list[StackCache]) -> StackCache:
        """Concatenate equal-length caches along the batch."""
        n_layers = len(caches[0].keys)
        return StackCache(
            [torch.cat([c.keys[i] for c in caches]) for i in range(n_layers)],
            [torch.cat([c.values[i] for c in caches]) for i in range(n_layers)],
        )


class Attention(nn.Module):
    def __init__(self, s: BlockShape) -> None:
        super().__init__()
        self.s = s
        self.q_proj = nn.Linear(s.dim, s.n_heads * s.head_dim, bias=s.qkv_bias)
        self.k_proj = nn.Linear(s.dim, s.n_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.v_proj = nn.Linear(s.dim, s.n_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.o_proj = nn.Linear(s.n_heads * s.head_dim, s.dim, bias=False)

    def forward(
        self, x: Tensor, positions: Tensor, mask: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        s = self.s
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, s.n_heads, s.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, s.n_kv_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, s.n_kv_heads, s.head_dim).transpose(1, 2)
        q, k = rope(q, positions, s.rope_theta), rope(k, positions, s.rope_theta)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # [B, H_kv, S, hd]
            v = torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=s.n_heads != s.n_kv_heads
        )  # [B, H, T, hd]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1)), (k, v)


class Block(nn.Module):
    def __init__(self, s: BlockShape) -> None:
        super().__init__()
        self.input_norm = RMSNorm(s.dim, s.norm_eps)
        self.attn = Attention(s)
        self.post_norm = RMSNorm(s.dim, s.norm_eps)
        self.gate_proj = nn.Linear(s.dim, s.ffn, bias=False)
        self.up_proj = nn.Linear(s.dim, s.ffn, bias=False)
        self.down_proj = nn.Linear(s.ffn, s.dim, bias=False)

    def forward(self, x, positions, mask, past):
        a, kv = self.attn(self.input_norm(x), positions, mask, past)
        x = x + a
        h = self.post_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)), kv


def attention_mask(key_mask: Tensor, n_new: int) -> Tensor:
    """Boolean attention mask [B, 1, T, S] for T new queries over S keys (past + new).

    A query sees earlier valid keys and always itself, so left-padding rows never turn a
    softmax into NaN (a NaN value would leak into valid rows through 0 * NaN).
    """
    B, S = key_mask.shape
    q_idx = torch.arange(S - n_new, S, device=key_mask.device)[:, None]  # [T, 1]
    k_idx = torch.arange(S, device=key_mask.device)[None, :]  # [1, S]
    causal = k_idx <= q_idx  # [T, S]
    allowed = causal[None] & key_mask[:, None, :].bool()  # [B, T, S]
    allowed = allowed | (k_idx == q_idx)[None]
    return allowed[:, None]


class BlockStack(nn.Module):
    """N blocks then a final RMSNorm, run over backbone features h (never over token ids)."""

    def __init__(self, shape: BlockShape, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(shape) for _ in range(n_layers))
        self.norm = RMSNorm(shape.dim, shape.norm_eps)

    def forward(
        self, x: Tensor, positions: Tensor, key_mask: Tensor, cache: StackCache | None = None
    ) -> tuple[Tensor, StackCache]:
        """x: [B, T, D]; positions: [B, T]; key_mask: [B, S] with S = past + T. Returns y, cache."""
        mask = attention_mask(key_mask, x.shape[1])
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = (cache.keys[i], cache.values[i]) if cache is not None else None
            x, (k, v) = layer(x, positions, mask, past)
            keys.append(k)
            values.append(v)
        return self.norm(x), StackCache(keys, values)
