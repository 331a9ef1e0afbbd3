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
        self.weight = nn.Parameter(torch.ones(dim))  # host: built, then moved with the module
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(positions: Tensor, head_dim: int, theta: float, dtype) -> tuple[Tensor, Tensor]:
    """cos, sin [B, 1, T, hd] of the rotary embedding (HF Llama convention, unscaled) at
    positions [B, T]: computed once per stack and step, shared by its layers."""
    hd = head_dim
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, hd, 2, device=positions.device, dtype=torch.float32) / hd)
    )
    angles = positions.float()[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, T, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rope(x: Tensor, rot: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate x [B, H, T, hd] by ``rope_tables``' (cos, sin)."""
    cos, sin = rot
    return x * cos + _rotate_half(x) * sin


class StackCache:
    """Per-layer keys/values of one block stack, each layer in a preallocated buffer
    [B, H_kv, C, hd] of which this state owns the first ``length`` slots.

    Appending a token writes one slot in place, so a decode step costs that token rather than a
    copy of the whole cache (the capacity C grows geometrically when full). States are values:
    several may share one buffer, each owning a prefix of it. ``tip`` (shared by every state over
    the same buffers, as are the buffer lists themselves) records how far any of them has
    written; only the state at the tip may append in place, and when the buffers are full it
    swaps larger ones into the shared lists layer by layer (every sharing state keeps its prefix,
    and the old buffer is freed at once, so memory peaks at one layer above the cache). Extending
    an older state a second time (a search node branching twice) copies its prefix into buffers
    of its own first, so no state ever sees another's tokens.
    """

    GROWTH = 1.125  # capacity multiplier when a buffer is full: amortised O(1) copies per token
    MIN_ROOM = 8  # slots added at least, so short decodes do not reallocate every few tokens

    def __init__(
        self,
        kbuf: list[Tensor] | None = None,
        vbuf: list[Tensor] | None = None,
        length: int = 0,
        tip: list[int] | None = None,
    ) -> None:
        self.kbuf = kbuf if kbuf is not None else []
        self.vbuf = vbuf if vbuf is not None else []
        self.length = length
        self.tip = tip if tip is not None else [length]

    @property
    def keys(self) -> list[Tensor]:
        return [k[:, :, : self.length] for k in self.kbuf]  # views [B, H_kv, S, hd]

    @property
    def values(self) -> list[Tensor]:
        return [v[:, :, : self.length] for v in self.vbuf]

    @property
    def capacity(self) -> int:
        return self.kbuf[0].shape[2] if self.kbuf else 0

    def _room_for(self, n: int) -> int:
        return max(n, int(self.capacity * self.GROWTH), self.length + self.MIN_ROOM)

    def extended(self, n_new: int) -> StackCache:
        """A cache of ``length + n_new`` slots whose last ``n_new`` the next forward fills
        (``write``): the same buffers when this state is at the tip and they have room, else a
        copy of this state's prefix into larger ones."""
        S, need = self.length, self.length + n_new
        if not self.kbuf:  # a prefill: buffers are allocated by the first write, exactly sized
            return StackCache([], [], need, [need])
        if self.tip[0] == S:
            if need > self.capacity:
                room = self._room_for(need)
                for i in range(len(self.kbuf)):
                    self.kbuf[i] = _copy_prefix(self.kbuf[i], S, room)
                    self.vbuf[i] = _copy_prefix(self.vbuf[i], S, room)
            self.tip[0] = need
            return StackCache(self.kbuf, self.vbuf, need, self.tip)
        room = self._room_for(need)
        return StackCache(
            [_copy_prefix(k, S, room) for k in self.kbuf],
            [_copy_prefix(v, S, room) for v in self.vbuf],
            need,
            [need],
        )

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store layer ``layer``'s new keys/values [B, H_kv, T, hd] in the last T slots and return
        the layer's full keys/values (views [B, H_kv, length, hd])."""
        T = k.shape[2]
        if layer == len(self.kbuf):  # prefill: allocate exactly (a decode grows it once)
            self.kbuf.append(k.new_empty(k.shape[0], k.shape[1], self.length, k.shape[3]))
            self.vbuf.append(v.new_empty(v.shape[0], v.shape[1], self.length, v.shape[3]))
        self.kbuf[layer][:, :, self.length - T : self.length] = k
        self.vbuf[layer][:, :, self.length - T : self.length] = v
        return self.kbuf[layer][:, :, : self.length], self.vbuf[layer][:, :, : self.length]

    def reserved(self, n_new: int) -> StackCache:
        """This state with room for ``n_new`` more tokens, so that appending them never grows the
        buffers (a generation knows its length: growing by 1.125 as it goes would copy the cache
        some eight times over). At the tip the shared buffers are swapped for larger ones (other
        states keep their prefixes); elsewhere the prefix is copied into buffers of its own, the
        copy its first extension would make anyway."""
        S, need = self.length, self.length + n_new
        if not self.kbuf or need <= self.capacity and self.tip[0] == S:
            return self
        if self.tip[0] != S:
            return StackCache(
                [_copy_prefix(k, S, need) for k in self.kbuf],
                [_copy_prefix(v, S, need) for v in self.vbuf],
                S,
            )
        for i in range(len(self.kbuf)):
            self.kbuf[i] = _copy_prefix(self.kbuf[i], S, need)
            self.vbuf[i] = _copy_prefix(self.vbuf[i], S, need)
        return self

    def select(self, index: Tensor, room: int = 0, start: int = 0) -> StackCache:
        """Rows ``index`` [B'] of the batch: a copy of slots ``start:length`` of their prefixes
        (slots before ``start`` are left padding of every selected row), ``room`` free slots
        after; used to branch search nodes and to drop finished rows."""
        S = self.length
        return StackCache(
            [_select_rows(k, index, start, S, room) for k in self.kbuf],
            [_select_rows(v, index, start, S, room) for v in self.vbuf],
            S - start,
        )

    def compacted(self, index: list[int]) -> StackCache:
        """Rows ``index`` (ascending) moved to the front of these very buffers, which then end at
        ``len(index)`` rows: finished rows leave a generation without a new allocation (fresh
        buffers of this size cost more in page faults than the copy itself). Only for buffers
        this state owns alone: rows of other states sharing them would be overwritten."""
        S = self.length
        for bufs in (self.kbuf, self.vbuf):
            for buf in bufs:
                for i, j in enumerate(index):  # j >= i: row j is read before anything writes it
                    if i != j:
                        buf[i, :, :S] = buf[j, :, :S]
        n = len(index)
        return StackCache([k[:n] for k in self.kbuf], [v[:n] for v in self.vbuf], S)

    @staticmethod
    def cat(caches: list[StackCache], room: int = 0) -> StackCache:
        """Concatenate along the batch, right-aligned to the longest (left slots of shorter ones
        are masked padding), with ``room`` free slots after: one copy per layer."""
        S = max(c.length for c in caches)
        shortest = min(c.length for c in caches)
        n_layers = len(caches[0].kbuf)

        def layer(bufs: str, i: int) -> Tensor:
            parts = [getattr(c, bufs)[i] for c in caches]
            B = sum(p.shape[0] for p in parts)
            first = parts[0]
            out = first.new_empty(B, first.shape[1], S + room, first.shape[3])
            # Padding slots are masked, but must be finite (softmax weight 0 times NaN is NaN):
            # zeroed in one call for the slots where any part has padding, not once per part (a
            # search gathers dozens of one-row states at a time). Room after S is written first.
            out[:, :, : S - shortest].zero_()
            row = 0
            for c, p in zip(caches, parts):
                out[row : row + p.shape[0], :, S - c.length : S] = p[:, :, : c.length]
                row += p.shape[0]
            return out

        return StackCache(
            [layer("kbuf", i) for i in range(n_layers)],
            [layer("vbuf", i) for i in range(n_layers)],
            S,
        )


def _copy_prefix(buf: Tensor, length: int, capacity: int) -> Tensor:
    """A new buffer [B, H, capacity, hd] holding buf's first ``length`` slots."""
    out = buf.new_empty(buf.shape[0], buf.shape[1], capacity, buf.shape[3])
    out[:, :, :length] = buf[:, :, :length]
    return out


def shared_padding(key_mask: Tensor) -> int:
    """How many leading slots are padding in every row of key_mask [B, S]: a batch that lost
    its longest prompt drops them, so attention stops reading them at every step."""
    valid = key_mask.any(0).nonzero()
    return int(valid[0]) if len(valid) else 0


def _select_rows(buf: Tensor, index: Tensor, start: int, end: int, room: int) -> Tensor:
    """A new buffer [len(index), H, end - start + room, hd] holding rows ``index`` of slots
    ``start:end``: gathered straight into it (one copy, not a gather then a copy)."""
    out = buf.new_empty(len(index), buf.shape[1], end - start + room, buf.shape[3])
    torch.index_select(buf[:, :, start:end], 0, index, out=out[:, :, : end - start])
    return out


class Attention(nn.Module):
    def __init__(self, s: BlockShape) -> None:
        super().__init__()
        self.s = s
        self.q_proj = nn.Linear(s.dim, s.n_heads * s.head_dim, bias=s.qkv_bias)
        self.k_proj = nn.Linear(s.dim, s.n_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.v_proj = nn.Linear(s.dim, s.n_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.o_proj = nn.Linear(s.n_heads * s.head_dim, s.dim, bias=False)

    def forward(
        self, x: Tensor, rot: tuple[Tensor, Tensor], mask: Tensor, cache: StackCache, layer: int
    ) -> Tensor:
        s = self.s
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, s.n_heads, s.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, s.n_kv_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, s.n_kv_heads, s.head_dim).transpose(1, 2)
        q, k = rope(q, rot), rope(k, rot)
        k, v = cache.write(layer, k, v)  # past + new, in place: [B, H_kv, S, hd]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=s.n_heads != s.n_kv_heads
        )  # [B, H, T, hd]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, s: BlockShape) -> None:
        super().__init__()
        self.input_norm = RMSNorm(s.dim, s.norm_eps)
        self.attn = Attention(s)
        self.post_norm = RMSNorm(s.dim, s.norm_eps)
        self.gate_proj = nn.Linear(s.dim, s.ffn, bias=False)
        self.up_proj = nn.Linear(s.dim, s.ffn, bias=False)
        self.down_proj = nn.Linear(s.ffn, s.dim, bias=False)

    def forward(self, x, rot, mask, cache: StackCache, layer: int):
        x = x + self.attn(self.input_norm(x), rot, mask, cache, layer)
        h = self.post_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


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
        cache = (cache or StackCache()).extended(x.shape[1])
        shape = self.layers[0].attn.s
        rot = rope_tables(positions, shape.head_dim, shape.rope_theta, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, rot, mask, cache, i)
        return self.norm(x), cache
