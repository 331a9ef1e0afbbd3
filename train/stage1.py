"""Stage 1, constructing latent action control (paper section 3, reference pretrain_intention*):
(a) IDM + codebook + merge layers trained through the frozen backbone with straight-through
Gumbel-softmax actions and an entropy bonus; (b) the policy behaviour-cloned onto IDM actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from cola_models.blocks import positions_from_mask
from cola_models.config import BackboneSpec, ColaConfig
from cola_models.devices import Placement
from cola_models.errors import ColaError
from cola_models.model import ColaModel

from .common import finish_stage, freeze_all_but, run_phase, task_generation_defaults
from .data import DataConfig, sample_batch, tokenize, train_problems
from .loop import OptimConfig, RunDir, config_dict
from .losses import gumbel_softmax_st, masked_mean, neg_entropy, token_ce
from .precision import model_device, place
from .seeds import generator


@dataclass
class Stage1Config:
    backbone: str = ""
    """An HF causal-LM directory (e.g. the base stage's model/) or the preset "smollm2-135m"."""
    n_actions: int = 64
    idm_layers: int = 2
    policy_layers: int = 2
    merge_layers: int = 2
    head_ffn: int | None = 512
    merge_ffn: int | None = 512
    q_layers: int = 1
    output_mode: str = "plain"
    """"plain" trains at small scale; "reference" is the official lm_head(norm(s) - h)."""
    gumbel_tau: float = 2.0
    """Reference: 2.0."""
    entropy_weight: float = 1e-3
    """Reference: 0.001 (a bonus: the loss adds +w * sum p log p)."""
    max_new_tokens: int = 160

    def __post_init__(self) -> None:
        if self.gumbel_tau <= 0:
            raise ColaError(f"gumbel_tau={self.gumbel_tau} must be > 0")


@dataclass
class Stage1Run:
    model: Stage1Config = field(default_factory=Stage1Config)
    data: DataConfig = field(default_factory=DataConfig)
    idm_optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=500, lr=3e-3))
    bc_optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=400, lr=3e-3))
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


def build_cola(cfg: Stage1Config, seed: int) -> ColaModel:
    from cola_models.build import model_from_config
    from cola_models.presets import preset_config

    if not cfg.backbone:
        raise ColaError("stage1 needs a backbone (--model: a base LM directory or 'smollm2-135m')")
    if cfg.backbone == "smollm2-135m":
        spec = preset_config("smollm2-135m").backbone
    else:
        if not Path(cfg.backbone).is_dir():
            raise ColaError(f"backbone {cfg.backbone!r} is not a directory")
        spec = BackboneSpec(source="local", path=str(cfg.backbone))
    config = ColaConfig(
        backbone=spec,
        n_actions=cfg.n_actions,
        idm_layers=cfg.idm_layers,
        policy_layers=cfg.policy_layers,
        merge_layers=cfg.merge_layers,
        head_ffn=cfg.head_ffn,
        merge_ffn=cfg.merge_ffn,
        q_head=cfg.q_layers > 0,
        q_layers=max(cfg.q_layers, 0),
        output_mode=cfg.output_mode,
    )
    model = model_from_config(config, seed=seed)
    model.generation_defaults = task_generation_defaults(cfg.max_new_tokens)
    return model


def features(model: ColaModel, input_ids, attention_mask, *, grad: bool = False):
    """Backbone features h [B, T, D] (no graph unless the backbone trains) and head inputs."""
    key_mask = attention_mask.bool()
    positions = positions_from_mask(attention_mask)
    with torch.set_grad_enabled(grad):
        h, _ = model.backbone(input_ids, key_mask, positions)
    return h, positions, key_mask


def code_usage(actions: torch.Tensor, mask: torch.Tensor, n_actions: int) -> dict[str, float]:
    """Alive codes and usage perplexity of argmax actions over masked positions."""
    counts = torch.bincount(actions[mask.bool()], minlength=n_actions).float()
    p = counts / counts.sum().clamp(min=1)
    ppl = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
    return {"alive": float((counts > 0).sum()), "usage_ppl": float(ppl)}


def gumbel_noise(b, data: DataConfig, n_actions: int, g: torch.Generator) -> torch.Tensor:
    """Uniform noise [B, T-1, K] for a batch's rows, cut from one draw [global batch, max_len - 1,
    K]: right-aligned like the left-padded tokens, so a row's noise depends neither on which rank
    holds it nor on how much padding its batch has."""
    u = torch.rand(
        data.batch_size, data.max_len - 1, n_actions, generator=g
    )  # host: the same noise on every device
    steps = b.input_ids.shape[1] - 1
    return u[b.rows][:, u.shape[1] - steps :]


def idm_step(model: ColaModel, b, cfg: Stage1Config, u: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Stage 1a loss on one batch: world-model CE under Gumbel-ST IDM actions + entropy bonus.
    ``u``: the Gumbel uniforms [B, T-1, K] (``gumbel_noise``)."""
    h, positions, key_mask = features(model, b.input_ids, b.attention_mask)
    idm_logits = model.idm(h, positions, key_mask)[0][:, 1:]  # [B, T-1, K]
    onehot, p = gumbel_softmax_st(idm_logits, cfg.gumbel_tau, u)
    logits = model.world_logits(h[:, :-1], weights=onehot)  # [B, T-1, V]
    targets, mask = b.input_ids[:, 1:], b.target_mask
    ce = token_ce(logits, targets, mask)
    loss = ce + cfg.entropy_weight * neg_entropy(p, mask)
    with torch.no_grad():
        greedy = idm_logits.argmax(-1)
        wm_acc = masked_mean(
            (model.world_logits(h[:, :-1], greedy).argmax(-1) == targets).float(), mask
        )
        lm_acc = masked_mean(
            (model.backbone.token_logits(h[:, :-1]).argmax(-1) == targets).float(), mask
        )
    return loss, {
        "loss": ce.item(),
        "wm_acc": wm_acc.item(),
        "backbone_acc": lm_acc.item(),
        **code_usage(greedy, mask, model.n_actions),
    }


def bc_step(model: ColaModel, b) -> tuple[torch.Tensor, dict]:
    """Behaviour cloning: CE(policy logits at t, IDM argmax action a_t) (reference stage 1b)."""
    h, positions, key_mask = features(model, b.input_ids, b.attention_mask)
    with torch.no_grad():
        target = model.idm(h, positions, key_mask)[0][:, 1:].argmax(-1)  # [B, T-1]
    logits = model.policy(h, positions, key_mask)[0][:, :-1]  # [B, T-1, K]
    mask = b.target_mask
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
    loss = masked_mean(ce, mask)
    with torch.no_grad():
        top5 = (logits.topk(5, -1).indices == target[..., None]).any(-1).float()
        top1 = (logits.argmax(-1) == target).float()
    return loss, {
        "loss": loss.item(),
        "top1": masked_mean(top1, mask).item(),
        "top5": masked_mean(top5, mask).item(),
    }


def run_bc_phase(
    model,
    run: RunDir,
    examples,
    data: DataConfig,
    optim: OptimConfig,
    *,
    completion_only: bool,
    quiet: bool,
    description: str,
    compute: torch.dtype = torch.float32,
) -> dict:
    """Behaviour-clone the policy onto IDM actions (stage 1b, and FTA-I's re-clone)."""
    params = freeze_all_but(model, model.policy)
    device = model_device(model)

    def step_fn(step, update):
        b = sample_batch(
            examples, data, step, model.tokenizer, completion_only=completion_only, device=device
        )
        return update(lambda: bc_step(model, b))[1]

    return run_phase(
        model, run, params, step_fn, optim, description=description, quiet=quiet, compute=compute
    )


def run_stage1(cfg: Stage1Run, out: str | Path, *, quiet: bool = False) -> Path:
    """Train IDM + world model head, then the BC policy; returns the CoLA model directory."""
    out = Path(out)
    top = RunDir(out, "stage1", config_dict(cfg))
    if top.done:
        return top.model_dir
    model = build_cola(cfg.model, cfg.data.seed)
    device, compute = place(model, cfg.placement)
    examples = tokenize(model.tokenizer, train_problems(cfg.data), cfg.data.max_len)

    def idm_step_fn(step, update):
        b = sample_batch(
            examples, cfg.data, step, model.tokenizer, completion_only=False, device=device
        )
        g = generator(cfg.data.seed, "gumbel", step)
        # drawn on the host (the same noise on every device), then copied
        noise = gumbel_noise(b, cfg.data, model.n_actions, g).to(device, non_blocking=True)
        return update(lambda: idm_step(model, b, cfg.model, noise))[1]

    summary = {
        "idm": run_phase(
            model,
            RunDir(out / "idm", "stage1-idm", config_dict(cfg)),
            freeze_all_but(model, model.idm, model.world),
            idm_step_fn,
            cfg.idm_optim,
            description="stage1 IDM+WM",
            quiet=quiet,
            compute=compute,
        ),
        "bc": run_bc_phase(
            model,
            RunDir(out / "bc", "stage1-bc", config_dict(cfg)),
            examples,
            cfg.data,
            cfg.bc_optim,
            completion_only=False,
            quiet=quiet,
            description="stage1 BC policy",
            compute=compute,
        ),
    }
    return finish_stage(model, top, summary)
