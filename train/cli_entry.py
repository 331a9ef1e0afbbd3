"""What ``latent-search train STAGE`` runs: resolve preset <- TOML <- flags, then one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cola_models.errors import ColaError

STAGES = ("base", "stage1", "stage2", "rl", "token-rl", "rft", "q", "verifier", "pipeline")


def stage_default(stage: str, preset: str):
    from dataclasses import replace

    from .pipeline import pipeline_config

    pipe = pipeline_config(preset)
    return {
        "base": pipe.base,
        "stage1": pipe.stage1,
        "stage2": pipe.stage2,
        "rl": pipe.rl,
        "token-rl": pipe.token_rl,
        # Rejection-sampling fine-tuning: latent RL's samples and schedule, correct ones cloned.
        "rft": replace(pipe.rl, rl=replace(pipe.rl.rl, algorithm="rft")),
        "q": pipe.q,
        "verifier": pipe.verifier,
        "pipeline": pipe,
    }[stage]


# Which nested field the --model flag fills, per stage.
_MODEL_FIELD = {
    "stage1": ("model", "backbone"),
    "stage2": ("model", "model"),
    "rl": ("rl", "model"),
    "token-rl": ("rl", "model"),
    "rft": ("rl", "model"),
    "q": ("q", "model"),
    "verifier": ("verifier", "policy"),
}


def flag_overrides(
    stage: str,
    *,
    model: str | None,
    steps: int | None,
    seed: int | None,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """CLI flags as nested config overrides."""
    over: dict[str, Any] = {}
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if placement:
        over["placement"] = placement
    if model is not None:
        if stage not in _MODEL_FIELD:
            raise ColaError(f"--model does not apply to stage {stage!r}")
        section, key = _MODEL_FIELD[stage]
        over[section] = {key: model}
    if seed is not None:
        if stage == "pipeline":
            over["seed"] = seed
        else:
            over["data"] = {"seed": seed}
    if steps is not None:
        if steps < 1:
            raise ColaError(f"--steps={steps} must be >= 1")
        optim_fields = {
            "base": ["optim"],
            "stage1": ["idm_optim", "bc_optim"],
            "stage2": ["wm_optim", "bc_optim"],
            "rl": ["optim"],
            "token-rl": ["optim"],
            "rft": ["optim"],
            "q": ["optim"],
            "verifier": ["optim"],
        }
        if stage == "pipeline":
            raise ColaError("--steps does not apply to the pipeline; use a TOML config")
        for f in optim_fields[stage]:
            over[f] = {"steps": steps}
    return over


def _check_inputs(stage: str, cfg, out: Path) -> None:
    """Everything a stage reads or writes, checked before its run directory is touched: the
    output place, and the input model (a bundled name becomes its directory)."""
    from cola_models.atomic import check_writable_dir
    from cola_models.catalog import resolve_name

    check_writable_dir(out)
    if stage not in _MODEL_FIELD:
        return
    section, key = _MODEL_FIELD[stage]
    holder = getattr(cfg, section)
    name = getattr(holder, key)
    if not name:
        raise ColaError(f"train {stage} needs --model (its input model; see --help)")
    if stage == "stage1" and name == "smollm2-135m":
        return  # the GGUF backbone preset, resolved by the stage itself
    path = resolve_name(name)
    if path is None:
        raise ColaError(f"--model {name!r} is neither a bundled model nor a directory")
    setattr(holder, key, str(path))


def run_stage(
    stage: str,
    *,
    preset: str,
    config: Path | None,
    out: Path,
    model: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    quiet: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> dict:
    import torch

    from . import configs, distributed
    from .base import run_base
    from .pipeline import run_pipeline
    from .q_model import run_q
    from .rl import run_rl
    from .stage1 import run_stage1
    from .stage2 import run_stage2
    from .verifier import run_verifier

    if stage not in STAGES:
        raise ColaError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    cfg = configs.resolve(
        stage_default(stage, preset),
        config,
        flag_overrides(stage, model=model, steps=steps, seed=seed, device=device, dtype=dtype),
    )
    # A device that is not there, or an unknown dtype: one line, before anything is written.
    placed = torch.device(cfg.placement.resolved().device)
    _check_inputs(stage, cfg, out)
    # torchrun with several processes: join the group (nccl on GPUs, gloo on CPUs), else nothing
    distributed.setup(placed)
    if stage == "token-rl":
        cfg.rl.level = "token"
    elif stage == "rl":
        cfg.rl.level = "latent"
    elif stage == "rft":
        cfg.rl.algorithm = "rft"
    if stage == "pipeline":
        report = run_pipeline(cfg, out, quiet=quiet)
        distributed.teardown()
        return {"report": report, "out": str(out)}
    runner = {
        "base": run_base,
        "stage1": run_stage1,
        "stage2": run_stage2,
        "rl": run_rl,
        "token-rl": run_rl,
        "rft": lambda c, o, quiet: run_rl(c, o, quiet=quiet, stage="rft"),
        "q": run_q,
        "verifier": run_verifier,
    }[stage]
    model_dir = runner(cfg, out, quiet=quiet)
    distributed.teardown()
    return {"stage": stage, "model": str(model_dir), "out": str(out)}


def torchrun_rank() -> int:
    """This process's rank under torchrun (0 outside it), read from the launcher's environment."""
    import os

    return int(os.environ.get("RANK", "0"))
