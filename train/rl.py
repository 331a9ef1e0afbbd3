"""Stage 3 and its baseline on one code path: GRPO-style RL over latent actions (only the policy
trains; the language model is frozen, the paper's point) or over tokens (the plain LM, all weights
train). Group-normalised rewards, PPO clipping, KL to the starting policy over the acting
log-probs; the reference's GAE(lambda=0.95, V=0) advantages are an option."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cola_models.errors import ColaError
from cola_models.generation import GenerationConfig, generate
from cola_models.tokenizer import encode, left_pad, pad_id

from .common import freeze_all_but, load_weights, save_weights
from .data import DataConfig, train_problems
from .loop import OptimConfig, RunDir, config_dict, train_loop
from .losses import grpo_advantages, kl_k3, masked_mean, ppo_clip_loss, reference_advantages
from .seeds import generator, stream_seed


@dataclass
class RLConfig:
    model: str = ""
    """A CoLA model directory (level "latent") or a plain LM directory (level "token")."""
    level: str = "latent"
    group_size: int = 8
    """G samples per prompt (reference math script: 4; DSP tasks: 16)."""
    prompts_per_step: int = 8
    max_new_tokens: int = 128
    temperature: float = 1.0
    """Temperature of the acting distribution (reference: 1.0)."""
    top_k: int = 0
    """Top-k of the acting distribution; 0 = all (reference latent sampling: 40 of 64)."""
    kl_beta: float = 1e-3
    """Reference math GRPO: 0.001."""
    clip_eps: float = 0.2
    ppo_epochs: int = 2
    eval_every: int = 10
    """Every this many steps (and at the last), greedy accuracy on a fixed held-out set is logged
    as ``eval_reward``: per-step training reward depends on which problems were drawn."""
    eval_problems: int = 64
    advantage: str = "grpo"
    """"grpo": every step of a sample gets its group-normalised reward, KL as a k3 loss term;
    "reference": KL in the per-token reward + GAE(gamma=1, lambda=0.95, V=0), as the official
    trainer (deviation by default: with lambda=0.95 early steps of long samples get ~no signal)."""

    def __post_init__(self) -> None:
        checks = [
            (
                self.level in ("latent", "token"),
                f"level={self.level!r} must be 'latent' or 'token'",
            ),
            (self.group_size >= 2, f"group_size={self.group_size} must be >= 2"),
            (self.prompts_per_step >= 1, f"prompts_per_step={self.prompts_per_step} must be >= 1"),
            (self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens} must be >= 1"),
            (self.temperature > 0, f"temperature={self.temperature} must be > 0"),
            (self.kl_beta >= 0, f"kl_beta={self.kl_beta} must be >= 0"),
            (0 < self.clip_eps < 1, f"clip_eps={self.clip_eps} must be in (0, 1)"),
            (self.ppo_epochs >= 1, f"ppo_epochs={self.ppo_epochs} must be >= 1"),
            (
                self.advantage in ("grpo", "reference"),
                f"advantage={self.advantage!r} must be grpo|reference",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ColaError(msg)


@dataclass
class RLRun:
    rl: RLConfig = field(default_factory=RLConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(n_train=20_000))
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            steps=60, lr=5e-5, warmup_steps=5, checkpoint_every=10, log_every=1
        )
    )


@dataclass
class Rollouts:
    input_ids: Tensor  # [B, T] prompt + generated, left-padded
    attention_mask: Tensor  # [B, T]
    act_pos: Tensor  # [B, L] index of the state that chose each acting step
    acts: Tensor  # [B, L] latent actions or tokens
    act_mask: Tensor  # [B, L]
    rewards: Tensor  # [B]


def collect(model, problems: list, cfg: RLConfig, generator: torch.Generator) -> Rollouts:
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    G, tok = cfg.group_size, model.tokenizer
    prompts = [format_prompt(p.question) for p in problems for _ in range(G)]
    gen_cfg = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        action="sample",
        action_temperature=cfg.temperature,
        action_top_k=cfg.top_k,
        token="greedy",
    )
    out = generate(model, prompts, gen_cfg, generator=generator)
    rewards = torch.tensor(
        [
            get_task(problems[i // G].task).reward(problems[i // G], t)
            for i, t in enumerate(out.texts)
        ]
    )
    return make_rollouts(tok, encode(tok, prompts), out.token_ids, out.action_ids, rewards.float())


def make_rollouts(
    tokenizer,
    prompts: list[list[int]],
    gens: list[list[int]],
    acts: list[list[int]],
    rewards: Tensor,
) -> Rollouts:
    """Left-padded prompt + generation batch, and where each acting step's state sits."""
    input_ids, mask = left_pad([p + g for p, g in zip(prompts, gens)], pad_id(tokenizer))
    T, L = input_ids.shape[1], max(len(g) for g in gens)
    act_pos = torch.zeros(len(gens), L, dtype=torch.long)
    act_ids = torch.zeros(len(gens), L, dtype=torch.long)
    act_mask = torch.zeros(len(gens), L)
    for i, (a, g) in enumerate(zip(acts, gens)):
        n = len(g)
        act_pos[i, :n] = torch.arange(T - n - 1, T - 1)  # the state that chose generated token j
        act_ids[i, :n] = torch.tensor(a)
        act_mask[i, :n] = 1
    return Rollouts(input_ids, mask, act_pos, act_ids, act_mask, rewards)


class _LatentActor:
    """log pi(a_t | s_t) of latent actions; the backbone is frozen so h is computed once."""

    def __init__(self, model) -> None:
        self.model = model
        self.ref = copy.deepcopy(model.policy).requires_grad_(False)
        self.params = freeze_all_but(model, model.policy)

    def prepare(self, r: Rollouts):
        from .stage1 import features

        return features(self.model, r.input_ids, r.attention_mask)

    def logprobs(self, ctx, r: Rollouts, ref: bool = False) -> Tensor:
        h, positions, key_mask = ctx
        head = self.ref if ref else self.model.policy
        logits = head(h, positions, key_mask)[0]  # [B, T, K]
        return _gather_acting(logits, r)


class _TokenActor:
    """log p(x_t | x_<t) of generated tokens; every LM weight trains."""

    def __init__(self, model) -> None:
        self.model = model
        self.ref = copy.deepcopy(model).requires_grad_(False)
        self.params = freeze_all_but(model, model)

    def prepare(self, r: Rollouts):
        return None

    def logprobs(self, ctx, r: Rollouts, ref: bool = False) -> Tensor:
        lm = self.ref if ref else self.model
        return _gather_acting(lm(r.input_ids, r.attention_mask), r)


def _gather_acting(logits: Tensor, r: Rollouts) -> Tensor:
    """logits [B, T, N] -> log-prob of each acting step [B, L]."""
    picked = logits.gather(1, r.act_pos[..., None].expand(-1, -1, logits.shape[-1]))  # [B, L, N]
    return picked.float().log_softmax(-1).gather(-1, r.acts[..., None])[..., 0]


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


def load_actor_model(cfg: RLConfig):
    from cola_models.loading import load_model

    if not cfg.model:
        raise ColaError("RL needs a model (--model: a model directory)")
    model = load_model(cfg.model)
    if model.kind != ("cola" if cfg.level == "latent" else "lm"):
        raise ColaError(
            f"level {cfg.level!r} needs a {'CoLA' if cfg.level == 'latent' else 'plain LM'} model; "
            f"{cfg.model} is a {model.kind} model"
        )
    return model


def run_rl(cfg: RLRun, out: str | Path, *, quiet: bool = False, stage: str | None = None) -> Path:
    """Train with GRPO; returns the trained model directory (same kind as the input model)."""
    run = RunDir(out, stage or ("rl" if cfg.rl.level == "latent" else "token-rl"), config_dict(cfg))
    if run.done:
        return run.model_dir
    model = load_actor_model(cfg.rl)
    actor = (_LatentActor if cfg.rl.level == "latent" else _TokenActor)(model)
    problems = train_problems(cfg.data)
    rc = cfg.rl
    held_out = _held_out(cfg.data, rc.eval_problems)

    def step_fn(step: int, update) -> dict:
        g = generator(cfg.data.seed, "rollouts", step)
        idx = torch.randint(len(problems), (rc.prompts_per_step,), generator=g).tolist()
        model.eval()
        r = collect(model, [problems[i] for i in idx], rc, g)
        model.train()
        ctx = actor.prepare(r)
        with torch.no_grad():
            old = actor.logprobs(ctx, r)
            ref = actor.logprobs(ctx, r, ref=True)
        if rc.advantage == "grpo":
            adv = grpo_advantages(r.rewards, rc.group_size)[:, None].expand_as(old)
        else:
            adv = reference_advantages(
                grpo_advantages(r.rewards, rc.group_size), old - ref, r.act_mask, rc.kl_beta
            )
        for _ in range(rc.ppo_epochs):
            logp = actor.logprobs(ctx, r)
            loss = ppo_clip_loss(logp, old, adv, r.act_mask, rc.clip_eps)
            if rc.advantage == "grpo":
                loss = loss + rc.kl_beta * kl_k3(logp, ref, r.act_mask)
            update(loss)
        with torch.no_grad():
            kl = masked_mean(old - ref, r.act_mask)
        metrics = {
            "reward": r.rewards.mean().item(),
            "kl": kl.item(),
            "length": r.act_mask.sum(-1).mean().item(),
            "loss": loss.item(),
        }
        if held_out and (
            (step + 1) % rc.eval_every == 0 or step == 0 or step == cfg.optim.steps - 1
        ):
            from eval.evaluate import evaluate_problems

            model.eval()
            metrics["eval_reward"] = evaluate_problems(
                model, held_out, max_new_tokens=rc.max_new_tokens
            )["accuracy"]
            model.train()
        return metrics

    rows = train_loop(
        run,
        model,
        actor.params,
        step_fn,
        cfg.optim,
        description=f"{rc.level} RL",
        save_model=save_weights,
        load_model_state=load_weights,
        quiet=quiet,
    )
    model.requires_grad_(False)
    model.save_pretrained(run.model_dir)
    run.finish({"final_reward": rows[-1]["reward"], "train_seconds": rows[-1]["time"]})
    return run.model_dir
