"""Stage 2, fine-tuning under action guidance (reference train_sft_intention*): the language world
model (the whole backbone and its head) is fine-tuned on task solutions (response tokens only)
under IDM actions (FTA-I), then the policy is re-cloned onto the IDM because its input features
moved. FTA-P instead uses the frozen policy's greedy action and needs no re-clone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cola_models.devices import Placement
from cola_models.errors import ColaError
from cola_models.loading import load_cola_dir

from .common import finish_stage, freeze_all_but, run_phase
from .data import DataConfig, sample_batch, tokenize, train_problems
from .loop import OptimConfig, RunDir, config_dict
from .losses import masked_mean, token_ce
from .precision import place
from .stage1 import features, run_bc_phase


@dataclass
class Stage2Config:
    model: str = ""
    """The stage-1 CoLA model directory."""
    guidance: str = "idm"
    """"idm" (FTA-I: IDM actions, then re-clone the policy) or "policy" (FTA-P: frozen policy's
    greedy action)."""

    def __post_init__(self) -> None:
        if self.guidance not in ("idm", "policy"):
            raise ColaError(f"guidance={self.guidance!r} must be 'idm' or 'policy'")


@dataclass
class Stage2Run:
    model: Stage2Config = field(default_factory=Stage2Config)
    data: DataConfig = field(default_factory=DataConfig)
    wm_optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=200, lr=5e-4))
    bc_optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=250, lr=2e-3))
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


def wm_step(model, b, guidance: str) -> tuple[torch.Tensor, dict]:
    """World-model CE on response tokens with the backbone trainable, actions from the IDM
    (argmax) or the frozen policy (greedy)."""
    h, positions, key_mask = features(model, b.input_ids, b.attention_mask, grad=True)
    with torch.no_grad():
        head = model.idm if guidance == "idm" else model.policy
        logits_a = head(h, positions, key_mask)[0]
        actions = logits_a[:, 1:].argmax(-1) if guidance == "idm" else logits_a[:, :-1].argmax(-1)
    logits = model.world_logits(h[:, :-1], actions)
    # Deviation: the reference's FTA-P detaches norm(s) so only its "- h" term reaches the backbone;
    # here the gradient takes the full path in both modes.
    targets, mask = b.input_ids[:, 1:], b.target_mask
    loss = token_ce(logits, targets, mask)
    with torch.no_grad():
        acc = masked_mean((logits.argmax(-1) == targets).float(), mask)
    return loss, {"loss": loss.item(), "wm_acc": acc.item()}


def run_stage2(cfg: Stage2Run, out: str | Path, *, quiet: bool = False) -> Path:
    out = Path(out)
    top = RunDir(out, "stage2", config_dict(cfg))
    if top.done:
        return top.model_dir
    if not cfg.model.model:
        raise ColaError("stage2 needs a model (--model: the stage-1 model directory)")
    model = load_cola_dir(Path(cfg.model.model), device="cpu", dtype="float32")
    device, compute = place(model, cfg.placement)
    examples = tokenize(model.tokenizer, train_problems(cfg.data), cfg.data.max_len)

    def wm_step_fn(step, update):
        b = sample_batch(
            examples, cfg.data, step, model.tokenizer, completion_only=True, device=device
        )
        return update(lambda: wm_step(model, b, cfg.model.guidance))[1]

    summary = {
        "wm": run_phase(
            model,
            RunDir(out / "wm", "stage2-wm", config_dict(cfg)),
            freeze_all_but(model, model.backbone),
            wm_step_fn,
            cfg.wm_optim,
            description="stage2 world model",
            quiet=quiet,
            compute=compute,
        )
    }
    if cfg.model.guidance == "idm":
        summary["bc"] = run_bc_phase(
            model,
            RunDir(out / "bc", "stage2-bc", config_dict(cfg)),
            examples,
            cfg.data,
            cfg.bc_optim,
            completion_only=True,
            quiet=quiet,
            description="stage2 re-clone policy",
            compute=compute,
        )
    return finish_stage(model, top, summary)
