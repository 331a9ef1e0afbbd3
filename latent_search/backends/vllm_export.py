"""Model directories that vLLM loads: a CoLA model as one Llama-named decoder stack (backbone,
then policy and Q layers) under the ``ColaVLLMForCausalLM`` architecture, or a plain LM as its
own HF directory. Weights in safetensors; no tokenizer (the backend sends token ids only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import Tensor

from cola_models.errors import ColaError


def _head_renames(prefix: str, first: int, n: int) -> dict[str, str]:
    """ColaModel block-stack names -> HF Llama layer names at global indices first.."""
    out = {}
    for j in range(n):
        src, dst = f"{prefix}.blocks.layers.{j}.", f"model.layers.{first + j}."
        out.update(
            {
                src + "input_norm.weight": dst + "input_layernorm.weight",
                src + "post_norm.weight": dst + "post_attention_layernorm.weight",
                **{
                    src + f"attn.{p}.weight": dst + f"self_attn.{p}.weight"
                    for p in ("q_proj", "k_proj", "v_proj", "o_proj")
                },
                **{
                    src + f"{p}.weight": dst + f"mlp.{p}.weight"
                    for p in ("gate_proj", "up_proj", "down_proj")
                },
            }
        )
    return out


def export_for_vllm(model, directory: str | os.PathLike, *, dtype: str = "float32") -> Path:
    """Write ``model`` (a ColaModel) as a vLLM model directory: an HF-style config.json naming
    the ``ColaVLLMForCausalLM`` architecture (the CoLA sizes under ``"cola"``) and one
    model.safetensors in HF Llama layer naming (policy and Q layers numbered after the
    backbone's). The IDM is left out: inference never uses it. No tokenizer: token ids only."""
    from safetensors.torch import save_file

    from cola_models.devices import torch_dtype

    from .vllm_plugin import ARCHITECTURE

    cfg = model.config
    hf = dict(cfg.backbone.hf_config)
    if hf.get("model_type") != "llama":
        raise ColaError(
            f"the vLLM backend serves Llama-architecture backbones; this one is "
            f"{hf.get('model_type')!r} (use --backend torch)"
        )
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ColaError("the vLLM backend does not serve backbones with attention/MLP biases")
    shape = model.backbone.block_shape(cfg.head_ffn)
    L = int(hf["num_hidden_layers"])
    P = cfg.policy_layers
    # The vLLM model computes a Q head over h only: one that also reads the LM's surprise at
    # each token (q_features "h+lm") is left out, and a search that reads Q says it has none.
    plain_q = cfg.q_head and model.q is not None and cfg.q_features == "h"
    q_layers = cfg.q_layers if plain_q else 0
    dt = torch_dtype(dtype)
    hf.update(
        architectures=[ARCHITECTURE],
        dtype=str(dt).removeprefix("torch."),
        cola={
            "n_actions": cfg.n_actions,
            "policy_layers": P,
            "q_head": q_layers > 0,
            "q_layers": q_layers,
            "merge_layers": cfg.merge_layers,
            "merge_ffn": model.world.merge[0].down_proj.in_features,
            "head_ffn": shape.ffn,
            "rope_theta": shape.rope_theta,
            "output_mode": cfg.output_mode,
            "action_temperature": cfg.action_temperature,
            "action_top_k": cfg.action_top_k,
        },
    )
    renames = _head_renames("policy", L, P)
    renames.update(_head_renames("q", L + P, q_layers))
    renames.update(
        {
            "policy.blocks.norm.weight": "model.policy_norm.weight",
            "policy.out.weight": "model.policy_out.weight",
            "q.blocks.norm.weight": "model.q_norm.weight",
            "q.out.weight": "model.q_out.weight",
        }
    )
    tied = bool(hf.get("tie_word_embeddings", False))
    tensors: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        if name.startswith("idm.") or (name.startswith("q.") and not q_layers):
            continue
        if name.startswith("backbone.lm.model."):
            new = "model." + name.removeprefix("backbone.lm.model.")
        elif name == "backbone.lm.lm_head.weight":
            if tied:
                continue
            new = "lm_head.weight"
        elif name.startswith("world."):
            new = name
        elif name in renames:
            new = renames[name]
        else:
            raise ValueError(f"cannot place weight {name!r} in the vLLM export")
        tensors[new] = t.detach().to("cpu", dt).contiguous()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    return out


def export_lm_for_vllm(model, directory: str | os.PathLike) -> Path:
    """Write a plain LM (``PlainLM``) as a standard HF directory (config.json + safetensors) that
    vLLM loads with its own implementation of the architecture. No tokenizer: token ids only."""
    from cola_models.backbone import quiet_hf

    quiet_hf()
    out = Path(directory)
    model.backbone.lm.save_pretrained(str(out), safe_serialization=True)
    return out
