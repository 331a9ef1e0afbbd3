"""The Q-model for search (reference section 6): offline double-DQN over the K latent actions on
the CoLA policy's own best-of-N samples for *training* problems, the sample's task reward as the
terminal reward, a hard-updated target network. Deviation: a head on the CoLA backbone's features
instead of a separate 8B model; only the Q head trains."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cola_models.atomic import write_atomic
from cola_models.checkpoint import full_state
from cola_models.devices import Placement
from cola_models.errors import ColaError

from . import distributed
from .common import freeze_all_but
from .data import DataConfig, train_problems
from .loop import OptimConfig, RunDir, config_dict, train_loop
from .losses import double_dqn_targets, masked_mean
from .precision import batch_to
from .rl import RLConfig, load_actor_model
from .rollouts import Rollouts, collect, make_rollouts
from .seeds import generator


@dataclass
class QConfig:
    model: str = ""
    """CoLA model directory with a Q head (q_layers > 0 at stage 1)."""
    samples_per_problem: int = 8
    """N of best-of-N sampling (reference: ~16)."""
    n_problems: int = 256
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    gamma: float = 0.99
    """Reference: 0.99."""
    target_update: int = 50
    """Hard target-network update period in steps (reference: 50)."""
    target: str = "sarsa"
    """"double-dqn" (reference): y = r + gamma Q_tgt(s', argmax_a Q(s', a)); "sarsa": y = r +
    gamma Q_tgt(s', a'_taken). Deviation by default: offline, the max over 64 actions that the
    data rarely takes extrapolates (mean Q(s_0) 0.99 against a success rate of 0.25)."""
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ColaError(f"gamma={self.gamma} must be in (0, 1]")
        if self.samples_per_problem < 1 or self.n_problems < 1 or self.batch_size < 1:
            raise ColaError("samples_per_problem, n_problems and batch_size must be >= 1")
        if self.target not in ("sarsa", "double-dqn"):
            raise ColaError(f"target={self.target!r} must be 'sarsa' or 'double-dqn'")
        if self.target_update < 1:
            raise ColaError(f"target_update={self.target_update} must be >= 1")


@dataclass
class QRun:
    q: QConfig = field(default_factory=QConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(n_train=20_000))
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(steps=200, lr=5e-4, checkpoint_every=50)
    )
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


def _samples(model, run: RunDir, cfg: QRun) -> list[dict]:
    """Best-of-N samples on training problems, cached in samples.jsonl (collected once)."""
    path = run.path / "samples.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    problems = train_problems(cfg.data)[: cfg.q.n_problems]
    rl_cfg = RLConfig(
        model=cfg.q.model,
        group_size=max(2, cfg.q.samples_per_problem),
        max_new_tokens=cfg.q.max_new_tokens,
        temperature=cfg.q.temperature,
        top_k=cfg.q.top_k,
    )
    rows: list[dict] = []
    chunk = max(1, 64 // rl_cfg.group_size)

    def sample(c: int) -> list[dict]:
        # Each chunk seeded by its index: the rows do not depend on how many ranks sample.
        g = generator(cfg.data.seed, "q_samples", c)
        r = collect(model, problems[c * chunk : (c + 1) * chunk], rl_cfg.sampling, g)
        lengths = r.act_mask.sum(-1).long().tolist()  # [B], read once
        ids, mask = r.input_ids.tolist(), r.attention_mask.tolist()
        acts, rewards = r.acts.tolist(), r.rewards.tolist()
        return [
            {
                "ids": [t for t, m in zip(ids[b], mask[b]) if m],
                "acts": acts[b][:n],
                "reward": rewards[b],
            }
            for b, n in enumerate(lengths)
        ]

    distributed.map_chunks(-(-len(problems) // chunk), sample, rows.extend)
    if run.writer:
        write_atomic(path, "".join(json.dumps(x) + "\n" for x in rows))
    distributed.barrier()
    return rows if run.writer else _samples(model, run, cfg)


def _batch(rows: list[dict], tokenizer) -> Rollouts:
    """Stored samples (prompt + generated ids, actions, reward) back into a rollout batch."""
    n = [len(r["acts"]) for r in rows]
    return make_rollouts(
        tokenizer,
        [r["ids"][: len(r["ids"]) - k] for r, k in zip(rows, n)],
        [r["ids"][len(r["ids"]) - k :] for r, k in zip(rows, n)],
        [r["acts"] for r in rows],
        torch.tensor([r["reward"] for r in rows], dtype=torch.float),  # host: moved with the batch
    )


def q_step(
    model, target_q, r: Rollouts, gamma: float, target: str = "sarsa"
) -> tuple[torch.Tensor, dict]:
    from .stage1 import features

    h, positions, key_mask = features(model, r.input_ids, r.attention_mask)
    K, T = model.n_actions, r.input_ids.shape[1]
    q = model.q(h, positions, key_mask)[0]  # [B, T, K]
    with torch.no_grad():
        q_tgt = target_q(h, positions, key_mask)[0]
    idx = r.act_pos[..., None].expand(-1, -1, K)  # [B, L, K]
    nxt = (r.act_pos + 1).clamp(max=T - 1)[..., None].expand(-1, -1, K)
    q_sa = q.gather(1, idx).gather(-1, r.acts[..., None])[..., 0]  # [B, L]
    lengths = r.act_mask.sum(-1).long()  # [B]
    done = torch.arange(r.acts.shape[1], device=r.acts.device)[None] >= (lengths[:, None] - 1)
    rewards = r.rewards[:, None] * done.float()
    with torch.no_grad():
        if target == "sarsa":
            next_act = torch.cat([r.acts[:, 1:], r.acts[:, -1:]], dim=1)  # a_{t+1} (unused at end)
            bootstrap = q_tgt.gather(1, nxt).gather(-1, next_act[..., None])[..., 0]
            y = rewards + gamma * bootstrap * (~done).float()
        else:
            y = double_dqn_targets(
                q.gather(1, nxt).detach(), q_tgt.gather(1, nxt), rewards, done, gamma
            )
        # Deviation: rewards lie in [0, 1], so targets are clipped to it; unclipped offline
        # bootstrapping overestimated (Q ~ 1.8) on the tiny model.
        y = y.clamp(0.0, 1.0)
    loss = masked_mean((q_sa - y) ** 2, r.act_mask)
    return loss, {
        "loss": loss.item(),
        "q_first": q_sa[:, 0].mean().item(),
        "reward": r.rewards.mean().item(),
    }


def run_q(cfg: QRun, out: str | Path, *, quiet: bool = False) -> Path:
    run = RunDir(out, "q", config_dict(cfg))
    if run.done:
        return run.model_dir
    model = load_actor_model(RLConfig(model=cfg.q.model, level="latent"), cfg.placement)
    if model.q is None:
        raise ColaError(f"{cfg.q.model} has no Q head (build it with q_layers > 0)")
    rows = _samples(model, run, cfg)
    params = freeze_all_but(model, model.q)
    target_q = copy.deepcopy(model.q).requires_grad_(False)
    synced = {"once": False}

    def step_fn(step: int, update) -> dict:
        if step % cfg.q.target_update == 0 or not synced["once"]:
            # On resume the target restarts from the checkpointed online head; that is the true
            # target when checkpoint_every is a multiple of target_update (the default).
            target_q.load_state_dict(full_state(model.q))
            synced["once"] = True
        g = generator(cfg.data.seed, "q_batches", step)
        idx = torch.randint(
            len(rows), (cfg.q.batch_size,), generator=g
        ).tolist()  # host: which rows
        batch = _batch(distributed.share([rows[i] for i in idx]), model.tokenizer)
        batch = batch_to(batch, model.device)
        return update(lambda: q_step(model, target_q, batch, cfg.q.gamma, cfg.q.target))[1]

    hist = train_loop(
        run,
        model,
        params,
        step_fn,
        cfg.optim,
        description="Q-model",
        quiet=quiet,
        compute=cfg.placement.torch_dtype(),
    )
    model.requires_grad_(False)
    model.save_pretrained(run.model_dir)
    run.finish(
        {
            "final_loss": hist[-1]["loss"],
            "samples": len(rows),
            "sample_reward": sum(r["reward"] for r in rows) / len(rows),
        }
    )
    return run.model_dir
