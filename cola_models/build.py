"""``model_from_config``: a ColaModel built from its config (backbone loaded or random, heads new)."""

from __future__ import annotations

import torch

from .backbone import Backbone, build_backbone_from_config, load_backbone, torch_device, torch_dtype
from .config import ColaConfig
from .model import ColaModel


def model_from_config(
    config: ColaConfig,
    *,
    device: str = "cpu",
    seed: int = 0,
    dtype: str = "float32",
    allow_download: bool = False,
    load_weights: bool = True,
    tokenizer=None,
) -> ColaModel:
    """Build a ColaModel: backbone per ``config.backbone`` (weights loaded when ``load_weights``),
    new heads initialised from ``seed`` without touching the caller's global RNG."""
    dev, dt = torch_device(device), torch_dtype(dtype)
    if dev.type == "meta":
        with torch.device("meta"):
            lm = build_backbone_from_config(config.backbone.hf_config)
            return ColaModel(config, Backbone(lm), tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if load_weights and config.backbone.source != "random":
            lm, tok = load_backbone(config.backbone, allow_download=allow_download)
            tokenizer = tokenizer or tok
        else:
            lm = build_backbone_from_config(config.backbone.hf_config)
        model = ColaModel(config, Backbone(lm), tokenizer)
    return model.to(device=dev, dtype=dt).eval()
