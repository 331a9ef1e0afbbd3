"""Small pieces shared by the stage modules: checkpoint weights, model loading, generation defaults."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cola_models.io import load_state, save_state

WEIGHTS = "weights.safetensors"


def save_weights(model: nn.Module, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_state(model, directory / WEIGHTS)


def load_weights(model: nn.Module, directory: Path) -> None:
    load_state(model, directory / WEIGHTS)


def task_generation_defaults(max_new_tokens: int) -> dict:
    from eval.tasks import PROMPT_TEMPLATE

    return {"prompt_template": PROMPT_TEMPLATE, "max_new_tokens": max_new_tokens}


def trainable(params) -> list[nn.Parameter]:
    out = [p for p in params if p.requires_grad]
    if not out:
        raise RuntimeError("no trainable parameters")
    return out


def freeze_all_but(model: nn.Module, *modules: nn.Module) -> list[nn.Parameter]:
    """requires_grad only on ``modules``' parameters; returns them (deduplicated)."""
    model.requires_grad_(False)
    params: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(True)
            params[id(p)] = p
    return list(params.values())
