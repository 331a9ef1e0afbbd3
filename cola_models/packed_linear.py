"""Inference-time linear layers on oneDNN with prepacked weights (CPU, float32).

PyTorch's CPU ``F.linear`` calls MKL's sgemm, which on this project's reference machine (AMD EPYC,
AVX-512) runs small-batch decoding at about half the speed of oneDNN with weights reordered once
into its blocked layout — the kernel path vLLM's and Inductor's CPU backends use. Packing swaps the
``forward`` of every ``nn.Linear`` for one that multiplies with a packed copy of the weight when no
gradient is wanted, and falls back to ``F.linear`` whenever one is (training), so a model being
trained and sampled from (RL rollouts) stays exact: the copy is re-packed whenever the weight
changes (its version counter moves with every in-place update, optimizer steps included).
The packed copy costs memory equal to the linear weights.
"""

from __future__ import annotations

import os
import types
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENV_OFF = "LATENT_SEARCH_PACKED_LINEAR"
"""Set to 0 to keep every linear on ``F.linear`` (e.g. to compare the two)."""


_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Module -> (weight's version, pointer, dtype; packed weight). Kept off the module so copying
or pickling a model never meets the opaque oneDNN tensor: a copy re-packs at its first use."""


def available() -> bool:
    return (
        os.environ.get(ENV_OFF, "1") != "0"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def _packed_forward(self: nn.Linear, x: Tensor) -> Tensor:
    w = self.weight
    wants_grad = torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)
    if wants_grad or x.device.type != "cpu" or w.dtype != torch.float32 or x.dtype != w.dtype:
        return F.linear(x, w, self.bias)
    key = (w._version, w.data_ptr(), w.dtype)
    got = _PACKED.get(self)
    if got is None or got[0] != key:  # first use, or the weight changed since it was packed
        got = _PACKED[self] = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), None))
    bias = None if self.bias is None else self.bias.detach()
    return torch.ops.mkldnn._linear_pointwise(x, got[1], bias, "none", [], "")


def pack_linears(model: nn.Module) -> int:
    """Route the float32 CPU ``nn.Linear`` layers of ``model`` through packed oneDNN weights
    (packed lazily at first use). Returns how many layers were switched; 0 where unavailable."""
    if not available():
        return 0
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.float32:
            module.forward = types.MethodType(_packed_forward, module)
            n += 1
    return n
