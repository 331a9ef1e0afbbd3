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
    spans = kwargs.get("row_spans")
    if T != 1 or not spans or len(spans) == 1 and spans[0][2] == 0:
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    else:  # decode: each run of rows reads only the key slots some row of it uses
        out = q.new_empty(B, G, R, hd)
        for a, b, s in spans:
            m = None if mask is None else mask[a:b, :, :, s:]
            out[a:b] = F.scaled_dot_product_attention(
                q[a:b], key[a:b, :, s:], value[a:b, :, s:], attn_mask=m, scale=scaling
            )
    return out.reshape(B, H, T, hd).transpose(1, 2).contiguous(), None  # [B, T, H, hd]


def row_spans(key_mask: Tensor, waste: float = 1.25) -> list[tuple[int, int, int]]:
    """Runs of consecutive rows of a left-padded key_mask [B, S] as (first row, end row, first
    slot any of them uses), cut so that a run reads at most ``waste`` times its rows' real keys.
    A decode step's attention then skips the padding before each run's longest row: a batch
    whose prompts differ severalfold in length otherwise reads every row to the longest."""
    B, S = key_mask.shape
    first = key_mask.int().argmax(-1).tolist()  # each row's first valid slot
    spans: list[tuple[int, int, int]] = []
    a, start, real = 0, first[0], S - first[0]
    for i in range(1, B):
        s = min(start, first[i])
        if (i + 1 - a) * (S - s) > waste * (real + S - first[i]):
            spans.append((a, i, start))
            a, start, real = i, first[i], S - first[i]
        else:
            start, real = s, real + S - first[i]
    spans.append((a, B, start))
    return spans


def use_grouped_query_attention(lm) -> None:
    """Switch an HF causal LM that uses SDPA to :func:`grouped_query_attention` (same masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(lm.config, "_attn_implementation", None) not in ("sdpa", NAME):
        return
    AttentionInterface.register(NAME, grouped_query_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    lm.config._attn_implementation = NAME
