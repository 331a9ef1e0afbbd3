"""Stage 3 and its baselines on one code path: RL over latent actions (only the policy trains;
the language model is frozen, the paper's point) or over tokens (the plain LM, all weights train).

``algorithm = "grpo"``: group-relative advantages (r - mean, optionally / std), PPO clipping,
optional k3 KL to the starting policy, token- or sequence-level loss normalisation; groups whose
samples all earn the same reward are dropped and refilled (DAPO's dynamic sampling). The
reference's KL-in-reward + GAE(lambda=0.95, V=0) advantages are an option.
``algorithm = "rft"``: rejection-sampling fine-tuning (expert iteration): the same samples, and
the policy is behaviour-cloned onto the acting steps of the *correct* ones only."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cola_models.devices import Placement
from cola_models.errors import ColaError

from . import distributed
from .common import freeze_all_but
from .data import DataConfig, train_problems
from .loop import OptimConfig, RunDir, config_dict, train_loop
from .losses import (
    aggregate,
    grpo_advantages,
    kl_k3,
    masked_mean,
    ppo_clip_loss,
    reference_advantages,
)
from .precision import batch_to
from .rollouts import Group, Rollouts, SamplingSpec, draw_groups, groups_to_rollouts
from .seeds import generator, stream_seed


@dataclass
class RLConfig:
    model: str = ""
    """A CoLA model directory (level "latent") or a plain LM directory (level "token")."""
    level: str = "latent"
    algorithm: str = "grpo"
    """"grpo" (policy gradient) or "rft" (clone the correct samples' actions)."""
    group_size: int = 8
    """G samples per prompt (reference math script: 4; DSP tasks: 16)."""
    prompts_per_step: int = 8
    max_new_tokens: int = 128
    temperature: float = 1.0
    """Temperature of the acting distribution (reference: 1.0)."""
    top_k: int = 0
    """Top-k of the acting distribution; 0 = all (reference latent sampling: 40 of 64)."""
    check_weight: float = 0.0
    """GRPO: partial credit for consistent equations (SamplingSpec.check_weight); 0 = the task's
    reward alone (deviation from the reference when > 0: its reward is the answer's alone)."""
    kl_beta: float = 1e-3
    """Reference math GRPO: 0.001; 0 turns the KL term off (DAPO, Dr. GRPO)."""
    clip_eps: float = 0.2
    ppo_epochs: int = 2
    scale_rewards: str = "group"
    """"group": advantages divided by the group's reward std (GRPO); "none": r - mean only
    (Dr. GRPO: std scaling weights easy and hard problems unevenly)."""
    loss_norm: str = "token"
    """"token": the loss is a mean over every acting step of the batch (DAPO); "sequence": a mean
    per sample, then over samples (the original GRPO, which favours short samples)."""
    filter_groups: bool = True
    """Drop groups without signal (GRPO: tied rewards; RFT: no correct sample) and sample more
    prompts to refill the step, up to ``max_sample_rounds`` rounds of ``prompts_per_step``."""
    max_sample_rounds: int = 4
    eval_every: int = 10
    """Every this many steps (and at the first and last), greedy accuracy on a fixed held-out set
    is logged as ``eval_reward``: per-step training reward depends on which problems were drawn."""
    eval_problems: int = 64
    advantage: str = "grpo"
    """"grpo": every step of a sample gets its group-relative reward, KL as a k3 loss term;
    "reference": KL in the per-token reward + GAE(gamma=1, lambda=0.95, V=0), as the official
    trainer (deviation by default: with lambda=0.95 early steps of long samples get ~no signal)."""

    def __post_init__(self) -> None:
        checks = [
            (
                self.level in ("latent", "token"),
                f"level={self.level!r} must be 'latent' or 'token'",
            ),
            (self.algorithm in ("grpo", "rft"), f"algorithm={self.algorithm!r} must be grpo|rft"),
            (self.group_size >= 2, f"group_size={self.group_size} must be >= 2"),
            (self.prompts_per_step >= 1, f"prompts_per_step={self.prompts_per_step} must be >= 1"),
            (self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens} must be >= 1"),
            (self.temperature > 0, f"temperature={self.temperature} must be > 0"),
            (self.kl_beta >= 0, f"kl_beta={self.kl_beta} must be >= 0"),
            (self.check_weight >= 0, f"check_weight={self.check_weight} must be >= 0"),
            (
                self.check_weight == 0 or self.algorithm == "grpo",
                "check_weight is partial credit for GRPO; RFT keeps the right samples only",
            ),
            (0 < self.clip_eps < 1, f"clip_eps={self.clip_eps} must be in (0, 1)"),
            (self.ppo_epochs >= 1, f"ppo_epochs={self.ppo_epochs} must be >= 1"),
            (
                self.scale_rewards in ("group", "none"),
                f"scale_rewards={self.scale_rewards!r} must be group|none",
            ),
            (
                self.loss_norm in ("token", "sequence"),
                f"loss_norm={self.loss_norm!r} must be token|sequence",
            ),
            (self.max_sample_rounds >= 1, "max_sample_rounds must be >= 1"),
            (self.eval_every >= 1, f"eval_every={self.eval_every} must be >= 1"),
            (
                self.advantage in ("grpo", "reference"),
                f"advantage={self.advantage!r} must be grpo|reference",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ColaError(msg)

    @property
    def sampling(self) -> SamplingSpec:
        return SamplingSpec(
            self.group_size, self.max_new_tokens, self.temperature, self.top_k, self.check_weight
        )

    def keeps(self, group: Group) -> bool:
        """Whether a sampled group can teach this algorithm anything."""
        if not self.filter_groups:
            return True
        return max(group.rewards) > 0 if self.algorithm == "rft" else not group.tied


@dataclass
class RLRun:
    rl: RLConfig = field(default_factory=RLConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(n_train=20_000))
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            steps=60, lr=5e-5, warmup_steps=5, checkpoint_every=10, log_every=1
        )
    )
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


class _LatentActor:
    """log pi(a_t | s_t) of latent actions; the backbone is frozen so h is computed once."""

    def __init__(self, model, temperature: float = 1.0) -> None:
        self.model = model
        self.temperature = temperature
        self.ref = copy.deepcopy(model.policy).requires_grad_(False)
        self.params = freeze_all_but(model, model.policy)

    def prepare(self, r: Rollouts):
        from .stage1 import features

        return features(self.model, r.input_ids, r.attention_mask)

    def logprobs(self, ctx, r: Rollouts, ref: bool = False) -> tuple[Tensor, Tensor]:
        h, positions, key_mask = ctx
        head = self.ref if ref else self.model.policy
        logits = head(h, positions, key_mask)[0]  # [B, T, K]
        return _gather_acting(logits / self.temperature, r)


class _TokenActor:
    """log p(x_t | x_<t) of generated tokens; every LM weight trains."""

    def __init__(self, model, temperature: float = 1.0) -> None:
        self.model = model
        self.temperature = temperature
        self.ref = copy.deepcopy(model).requires_grad_(False)
        self.params = freeze_all_but(model, model)

    def prepare(self, r: Rollouts):
        return None

    def logprobs(self, ctx, r: Rollouts, ref: bool = False) -> tuple[Tensor, Tensor]:
        lm = self.ref if ref else self.model
        return _gather_acting(lm(r.input_ids, r.attention_mask) / self.temperature, r)


def _gather_acting(logits: Tensor, r: Rollouts) -> tuple[Tensor, Tensor]:
    """logits [B, T, N] -> (log-prob of each acting step [B, L], entropy of its distribution [B, L])."""
    picked = logits.gather(1, r.act_pos[..., None].expand(-1, -1, logits.shape[-1]))  # [B, L, N]
    logp_all = picked.float().log_softmax(-1)  # [B, L, N]
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # [B, L]
    return logp_all.gather(-1, r.acts[..., None])[..., 0], entropy


def _held_out(data: DataConfig, n: int) -> list:
    """A fixed held-out (test-split) mix of the training tasks for progress measurement."""
    from eval.tasks import get_task

    if n <= 0:
        return []
    total = sum(data.weights)
    out = []
    for name, w in zip(data.tasks, data.weights):
        out += get_task(name).generate(
            max(1, round(n * w / total)), seed=stream_seed(data.seed, "held_out"), split="test"
        )
    return out


def _held_out_accuracy(model, held_out: list, cfg: RLConfig) -> dict:
    """Greedy accuracy on the fixed held-out set, and the seconds it took (not training time)."""
    import time

    from eval.evaluate import evaluate_problems

    t0 = time.perf_counter()
    model.eval()
    mine = distributed.share(held_out)  # each rank its share; the accuracy is of all of them
    acc = evaluate_problems(model, mine, max_new_tokens=cfg.max_new_tokens)["accuracy"]
    model.train()
    right = sum(a * n for a, n in distributed.gather_objects((acc, len(mine))))
    # every rank reports the global value (the loop averages metrics over ranks)
    return {"eval_reward": right / len(held_out), "eval_seconds": time.perf_counter() - t0}


def load_actor_model(cfg: RLConfig, placement: Placement | None = None):
    """The model a stage trains, on the run's device in float32 (master weights)."""
    from cola_models.loading import load_model

    if not cfg.model:
        raise ColaError("RL needs a model (--model: a model directory)")
    device = (placement or Placement()).torch_device()
    model = load_model(cfg.model, device=str(device), dtype="float32")
    if model.kind != ("cola" if cfg.level == "latent" else "lm"):
        raise ColaError(
            f"level {cfg.level!r} needs a {'CoLA' if cfg.level == 'latent' else 'plain LM'} model; "
            f"{cfg.model} is a {model.kind} model"
        )
    return model


def _advantages(cfg: RLConfig, r: Rollouts, old: Tensor, ref: Tensor) -> Tensor:
    """Per acting step [B, L]: the group-relative reward (GRPO), or the reference's GAE form."""
    adv = grpo_advantages(r.rewards, cfg.group_size, scale=cfg.scale_rewards)  # [B]
    if cfg.advantage == "grpo":
        return adv[:, None].expand_as(old)
    return reference_advantages(adv, old - ref, r.act_mask, cfg.kl_beta)


def rl_update(actor, r: Rollouts, cfg: RLConfig, update) -> dict:
    """The optimisation of one step on a rollout batch; returns its metrics."""
    with torch.no_grad(), distributed.full_weights(actor.model):
        ctx = actor.prepare(r)
        old, entropy = actor.logprobs(ctx, r)
        ref, _ = actor.logprobs(ctx, r, ref=True)
    if cfg.algorithm == "rft":  # behaviour cloning onto the acting steps of correct samples
        mask = r.act_mask * (r.rewards > 0).to(r.act_mask.dtype)[:, None]

        def loss_fn() -> Tensor:
            return -aggregate(actor.logprobs(ctx, r)[0], mask, cfg.loss_norm)
    else:
        adv = _advantages(cfg, r, old, ref)

        def loss_fn() -> Tensor:
            logp, _ = actor.logprobs(ctx, r)
            loss = ppo_clip_loss(logp, old, adv, r.act_mask, cfg.clip_eps, norm=cfg.loss_norm)
            if cfg.advantage == "grpo" and cfg.kl_beta > 0:
                loss = loss + cfg.kl_beta * kl_k3(logp, ref, r.act_mask)
            return loss

    for _ in range(cfg.ppo_epochs):
        loss = update(loss_fn)
    return {
        "loss": loss.item(),
        "kl": masked_mean(old - ref, r.act_mask).item(),
        "entropy": masked_mean(entropy, r.act_mask).item(),
        "length": r.act_mask.sum(-1).mean().item(),
    }


def run_rl(cfg: RLRun, out: str | Path, *, quiet: bool = False, stage: str | None = None) -> Path:
    """Train with GRPO; returns the trained model directory (same kind as the input model)."""
    run = RunDir(out, stage or ("rl" if cfg.rl.level == "latent" else "token-rl"), config_dict(cfg))
    if run.done:
        return run.model_dir
    model = load_actor_model(cfg.rl, cfg.placement)
    device, compute = model.device, cfg.placement.torch_dtype()
    # The loss's log-probs are of the distribution the samples were drawn from (logits / T):
    # the ratio and the KL then compare like with like at any sampling temperature.
    actor = (_LatentActor if cfg.rl.level == "latent" else _TokenActor)(model, cfg.rl.temperature)
    problems = train_problems(cfg.data)
    rc = cfg.rl
    held_out = _held_out(cfg.data, rc.eval_problems)

    def step_fn(step: int, update) -> dict:
        g = generator(cfg.data.seed, "rollouts", step)
        model.eval()
        with distributed.full_weights(model):
            draw = draw_groups(
                model,
                problems,
                rc.sampling,
                rc.prompts_per_step,
                g,
                keep=rc.keeps,
                max_rounds=rc.max_sample_rounds if rc.filter_groups else 1,
            )
        model.train()
        metrics = {
            "reward": draw.reward,
            "zero_std_frac": draw.tied / draw.sampled,
            "distinct_answers": draw.distinct_answers,
            "samples": draw.sampled * rc.group_size,
            "groups_trained": len(draw.groups),
        }
        kept = int(distributed.global_sum(torch.tensor(len(draw.groups), device=device)))
        if kept:  # else every sampled group tied: nothing to learn from this step
            r = batch_to(groups_to_rollouts(model.tokenizer, draw.groups or [draw.spare]), device)
            if not draw.groups:  # this rank's part of the step: masked out
                r.act_mask.zero_()
            metrics.update(rl_update(actor, r, rc, update))
        if held_out and (step % rc.eval_every == 0 or step == cfg.optim.steps - 1):
            with distributed.full_weights(model):
                metrics.update(_held_out_accuracy(model, held_out, rc))
        return metrics

    rows = train_loop(
        run,
        model,
        actor.params,
        step_fn,
        cfg.optim,
        description=f"{rc.level} RL",
        quiet=quiet,
        compute=compute,
    )
    model.requires_grad_(False)
    model.save_pretrained(run.model_dir)
    run.finish({"final_reward": rows[-1]["reward"], "train_seconds": rows[-1]["time"]})
    return run.model_dir
