"""Small pieces shared by the stage modules: checkpoint weights, model loading, generation defaults."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cola_models.checkpoint import load_state, save_state, writes_files

from .loop import WEIGHTS, train_loop


def save_weights(model: nn.Module, directory: Path) -> None:
    """The model's weights (gathered when sharded; rank 0 writes)."""
    if writes_files():
        directory.mkdir(parents=True, exist_ok=True)
    save_state(model, directory / WEIGHTS)


def load_weights(model: nn.Module, directory: Path) -> None:
    load_state(model, directory / WEIGHTS)


def task_generation_defaults(max_new_tokens: int) -> dict:
    from eval.prompts import PROMPT_TEMPLATE

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


def run_phase(
    model: nn.Module,
    run,
    params,
    step_fn,
    optim,
    *,
    description: str,
    quiet: bool,
    compute: torch.dtype = torch.float32,
) -> dict:
    """One trained phase of a stage: skipped (weights reloaded) when ``run`` is already done,
    else trained with the shared loop, its weights saved and its last metrics recorded."""
    if run.done:
        load_weights(model, run.model_dir)
    else:
        rows = train_loop(
            run,
            model,
            params,
            step_fn,
            optim,
            description=description,
            quiet=quiet,
            compute=compute,
        )
        save_weights(model, run.model_dir)
        run.finish(rows[-1])
    return run.summary()


def finish_stage(model: nn.Module, run, summary: dict) -> Path:
    """Freeze, save the stage's model to ``run.model_dir`` and mark the run done."""
    model.requires_grad_(False)
    model.save_pretrained(run.model_dir)
    run.finish(summary)
    return run.model_dir
