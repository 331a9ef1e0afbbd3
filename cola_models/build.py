"""``model_from_config``: a ColaModel built from its config (backbone loaded or random, heads new)."""

from __future__ import annotations

import torch

from .backbone import Backbone, build_backbone_from_config, load_backbone
from .config import ColaConfig
from .devices import torch_device, torch_dtype
from .errors import ColaError
from .model import ColaModel


def parameter_count(config: ColaConfig) -> int:
    """Parameters of the model ``config`` builds (tied tensors once), counted on the meta device:
    nothing is allocated."""
    with torch.device("meta"):
        model = ColaModel(config, Backbone(build_backbone_from_config(config.backbone.hf_config)))
    return sum(model.param_counts().values())


def available_memory() -> int | None:
    """Bytes of memory the kernel reports as available (Linux), or None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits_in_memory(config: ColaConfig, dtype: torch.dtype) -> None:
    """Refuse, before any allocation, a model whose weights alone exceed the available memory
    (e.g. the 8B preset on a laptop), with the estimate."""
    if not (config.backbone.hf_config or {}).get("model_type"):
        return  # a pretrained backbone's size is known only once its own config is read
    need = parameter_count(config) * torch.finfo(dtype).bits // 8
    have = available_memory()
    if have is not None and need > have:
        raise ColaError(
            f"this model needs about {need / 2**30:.1f} GiB for its weights in {dtype} "
            f"({need // (torch.finfo(dtype).bits // 8) / 1e9:.2f}B parameters); "
            f"{have / 2**30:.1f} GiB is available"
        )


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
    dev = torch_device(device)
    dt = torch_dtype(dtype, dev)
    if dev.type == "cpu":
        check_fits_in_memory(config, dt)
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
