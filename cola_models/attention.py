"""Grouped-query attention for the Hugging Face backbones without repeating keys and values.

HF's SDPA path on the CPU (whenever a mask is passed, which left-padded batches need) expands
every key/value head to the query heads it serves (``repeat_kv``): a copy of the layer's whole
KV cache at every decode step, quadratic in the text's length, and three times the cache for
SmolLM2's 9 query / 3 key-value heads. Here the query heads of each group are laid along the
query axis instead, so one SDPA call per layer reads each key/value head once; the arithmetic is
the same attention (same heads, same scale, same mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NAME = "latent_search_gqa"


def grouped_query_attention(
    module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """query [B, H, T, hd], key/value [B, G, S, hd] (H = G * R); mask [B, 1, T, S] bool or None.
    Returns [B, T, H, hd] as HF's attention functions do."""
    B, H, T, hd = query.shape
    G, S = key.shape[1], key.shape[2]
    R = H // G
    if R == 1 or (dropout and module.training) or kwargs.get("position_bias") is not None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    # HF's repeat_kv gives query head g*R + r kv head g: heads of a group are consecutive.
    q = query.reshape(B, G, R * T, hd)  # rows r*T + t
    mask = attention_mask
    if mask is None and T > 1:  # HF drops an all-valid mask and relies on causality
        mask = torch.ones(T, S, dtype=torch.bool, device=query.device).tril(S - T)[None, None]
    if mask is not None:
        mask = mask.repeat(1, 1, R, 1)  # [B|1, 1, R*T, S], rows in q's order
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(B, H, T, hd).transpose(1, 2).contiguous(), None  # [B, T, H, hd]


def use_grouped_query_attention(lm) -> None:
    """Switch an HF causal LM that uses SDPA to :func:`grouped_query_attention` (same masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(lm.config, "_attn_implementation", None) not in ("sdpa", NAME):
        return
    AttentionInterface.register(NAME, grouped_query_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    lm.config._attn_implementation = NAME
