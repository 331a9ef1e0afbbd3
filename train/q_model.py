"""The Q-model for search: a head over the K latent actions trained on the CoLA policy's own
samples of *training* problems (``latent-search train q``). Only the Q head trains; the policy,
the world model and the backbone are frozen (deviation: a head on the CoLA backbone's features
instead of the reference's separate 8B model).

Two objectives:
* "process" (default; deviation from the reference): Q(s_t, a_t) and V(s_t) = sum_a pi(a|s_t)
  Q(s_t, a) regress the dense step label of the token a_t writes (``train/value_labels.py``:
  exact step labels from training problems' gold steps, or Monte Carlo ones, the outcome after
  the last step), plus Bradley-Terry terms on the final V of a problem's right and wrong samples
  and on Q of the two actions where a right and a wrong sample part (sibling pairs). The value
  of every prefix is then trained, which is what a search reads, and the contrast inside a
  problem is what ranking needs: the reference's objective below left the bundled head at
  within-problem AUC 0.40-0.50, and the new one, on a fresh head that also reads the LM's
  surprise at each token, reaches about 0.64 (bench/value_audit.py, docs/search.md).
* "td" (reference section 6): offline double-DQN / SARSA with the sample's task reward as the
  terminal reward and a hard-updated target network.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

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
from .rollouts import Rollouts, make_rollouts
from .seeds import generator, stream_seed


@dataclass
class QConfig:
    model: str = ""
    """CoLA model directory (with a Q head of its own when ``q_layers`` is 0)."""
    samples_per_problem: int = 8
    """N of best-of-N sampling (reference: ~16)."""
    n_problems: int = 2000
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
    """Rows per step ("td"); "process" takes batch_problems problems with all their samples."""
    objective: str = "process"
    """"process" (dense step labels + within-problem contrast) or "td" (the reference's)."""
    batch_problems: int = 4
    pairwise_weight: float = 1.0
    """Weight of the within-problem Bradley-Terry term on the final V ("process")."""
    sibling_weight: float = 1.0
    """Weight of the Bradley-Terry term on sibling actions where a right and a wrong sample of
    one problem part ("process"; rStar-Math's preference pairs)."""
    q_layers: int = 2
    """Rebuild the Q head fresh with this many blocks (0: train the model's own head)."""
    q_features: str = "h+lm"
    """What a fresh head reads (``ColaConfig.q_features``): "h" or "h+lm" (the LM's surprise at
    each token besides h)."""
    labels: str = "exact"
    """"exact": step labels from the gold steps of training problems (arith; the outcome at
    every token elsewhere); "mc": Monte Carlo step labels, the share of ``mc_rollouts`` policy
    rollouts from each step's end that end right (Math-Shepherd; any graded task)."""
    mc_rollouts: int = 4
    eval_every: int = 250
    """Steps between measurements of the held-out within-problem AUC (logged in metrics)."""
    heldout_problems: int = 300
    """Test-split problems whose samples measure the head's within-problem AUC at the end."""

    def __post_init__(self) -> None:
        if self.labels not in ("exact", "mc") or self.mc_rollouts < 1:
            raise ColaError(f"labels={self.labels!r} must be 'exact' or 'mc'; mc_rollouts >= 1")
        if self.objective not in ("process", "td"):
            raise ColaError(f"objective={self.objective!r} must be 'process' or 'td'")
        if (
            self.batch_problems < 1
            or self.q_layers < 0
            or min(self.pairwise_weight, self.sibling_weight) < 0
        ):
            raise ColaError("batch_problems must be >= 1; q_layers and the weights >= 0")
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
        default_factory=lambda: OptimConfig(steps=1500, lr=5e-4, checkpoint_every=250)
    )
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


def _rows_of(model, problems: list, cfg: QConfig, g: torch.Generator, first: int, labels: bool):
    """One sampled group per problem as JSON rows: prompt and generated ids, the actions, the
    task's reward and (training problems) the dense labels of the generated tokens: exact step
    labels, or Monte Carlo ones (``cfg.labels``)."""
    from .rollouts import SamplingSpec, sample_groups

    spec = SamplingSpec(cfg.samples_per_problem, cfg.max_new_tokens, cfg.temperature, cfg.top_k)
    groups = sample_groups(model, problems, spec, g)
    rows = [
        {"p": first + i, "prompt": gr.prompt, "gen": gen, "acts": acts, "reward": reward}
        for i, gr in enumerate(groups)
        for gen, acts, reward in zip(gr.gens, gr.acts, gr.rewards)
    ]
    if labels:
        owners = [gr.problem for gr in groups for _ in gr.gens]
        for row, lab in zip(rows, _labels_of(model, owners, rows, cfg, g)):
            row["labels"] = lab
    return rows


def _labels_of(model, problems: list, rows: list[dict], cfg: QConfig, g) -> list[list[float]]:
    """Dense labels of each row's generated tokens (``problems[i]``: row i's problem)."""
    from .mc_labels import mc_labels
    from .value_labels import sample_labels, token_ends

    if cfg.labels == "mc":
        samples = [(p, r["prompt"], r["gen"], r["reward"]) for p, r in zip(problems, rows)]
        return mc_labels(model, samples, cfg.mc_rollouts, cfg.max_new_tokens, g)
    tok, out = model.tokenizer, []
    for p, r in zip(problems, rows):
        prompt_text = tok.decode(r["prompt"], skip_special_tokens=True)
        gen_text = tok.decode(r["gen"], skip_special_tokens=True)
        ends = token_ends(tok, prompt_text, r["gen"])
        out.append(sample_labels(p, prompt_text, gen_text, ends, r["reward"] > 0.5))
    return out


def _cached(path: Path, run: RunDir, sample, n_chunks: int) -> list[dict]:
    """Rows sampled once (``sample(c)`` for each of ``n_chunks`` chunks, dealt to the ranks) and
    kept in ``path``."""
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows: list[dict] = []
    distributed.map_chunks(n_chunks, sample, rows.extend)
    if run.writer:
        write_atomic(path, "".join(json.dumps(x) + "\n" for x in rows))
    distributed.barrier()
    return rows if run.writer else _cached(path, run, sample, n_chunks)


def _samples(model, run: RunDir, cfg: QRun, *, heldout: bool = False) -> list[dict]:
    """The policy's samples of training problems (samples.jsonl, with labels) or of held-out
    test-split problems (heldout.jsonl, no labels: gold steps never reach them)."""
    from eval.tasks import get_task

    if heldout:
        seed = stream_seed(cfg.data.seed, "held_out")  # the verifier's held-out problems
        problems = get_task("arith").generate(cfg.q.heldout_problems, seed=seed, split="test")
    else:
        problems = train_problems(cfg.data)[: cfg.q.n_problems]
    # 512 rows per generation call: decoding cost is per step, far more than per row on a CPU
    # (64-row calls sampled 25x slower).
    chunk = max(1, 512 // cfg.q.samples_per_problem)
    stream = "q_heldout" if heldout else "q_samples"

    def sample(c: int) -> list[dict]:
        # Each chunk seeded by its index: the rows do not depend on how many ranks sample.
        part = problems[c * chunk : (c + 1) * chunk]
        g = generator(cfg.data.seed, stream, c)
        return _rows_of(model, part, cfg.q, g, c * chunk, labels=not heldout)

    path = run.path / ("heldout.jsonl" if heldout else "samples.jsonl")
    return _cached(path, run, sample, -(-len(problems) // chunk))


def _batch(rows: list[dict], tokenizer) -> Rollouts:
    """Stored samples (prompt and generated ids, actions, reward) back into a rollout batch."""
    return make_rollouts(
        tokenizer,
        [r["prompt"] for r in rows],
        [r["gen"] for r in rows],
        [r["acts"] for r in rows],
        torch.tensor([r["reward"] for r in rows], dtype=torch.float),  # host: moved with the batch
    )


def _labels(rows: list[dict], like: Tensor) -> Tensor:
    """Dense labels [B, L] aligned with the batch's acting steps (zero where masked)."""
    out = torch.zeros(like.shape)  # host: filled row by row, moved once
    for b, r in enumerate(rows):
        out[b, : len(r["labels"])] = torch.tensor(r["labels"])  # host: one row of labels
    return out.to(like.device, non_blocking=True)


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


def state_values_at(model, r: Rollouts) -> tuple[Tensor, Tensor]:
    """Q(s, .) [B, L, K] at each acting step's state and V(s) = sum_a pi(a|s) Q(s, a) [B, L]
    (pi the frozen policy's, as ``latent_search.scorers.state_values`` reads it in search)."""
    from .stage1 import features

    h, positions, key_mask = features(model, r.input_ids, r.attention_mask)
    K = model.n_actions
    idx = r.act_pos[..., None].expand(-1, -1, K)  # [B, L, K]
    q = model.q_sequence(h, r.input_ids, positions, key_mask).gather(1, idx).float()  # [B, L, K]
    with torch.no_grad():
        pi = model.policy(h, positions, key_mask)[0].gather(1, idx).float().softmax(-1)
    return q, (pi * q).sum(-1)


def _final(v: Tensor, mask: Tensor) -> Tensor:
    """V at each row's last acting state (the state that wrote EOS or the last token) [B]."""
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B]
    return v.gather(1, last[:, None])[:, 0]


PAIR_TEMPERATURE = 0.1
"""A gap of 0.1 in V between a problem's right and wrong sample is one logit of preference."""


def sibling_pairs(rows: list[dict]) -> list[tuple[int, int, int, int]]:
    """(row, j, action of the right sample, action of the wrong one) for every right and wrong
    sample of one problem that share their first j generated tokens and part at token j: two
    actions tried at one state, one on the way to a right answer, one not (rStar-Math's sibling
    steps, read off the policy's own samples)."""
    out = []
    for a, right in enumerate(rows):
        for wrong in rows:
            if right["p"] != wrong["p"] or right["reward"] <= 0.5 or wrong["reward"] > 0.5:
                continue
            x, y = right["gen"], wrong["gen"]
            j = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), None)
            if j is not None:
                out.append((a, j, right["acts"][j], wrong["acts"][j]))
    return out


def q_process_step(model, r: Rollouts, labels: Tensor, group: Tensor, pairs, cfg: QConfig):
    """Regress Q(s_t, a_t) and V(s_t) on the dense label of the token a_t writes ([B, L]); plus
    Bradley-Terry on the final V of a problem's right/wrong samples and on Q of the two actions
    of each sibling pair (``sibling_pairs``) at the state where they part."""
    from .losses import pairwise_loss

    q, v = state_values_at(model, r)
    q_sa = q.gather(-1, r.acts[..., None])[..., 0]  # [B, L]
    regress = masked_mean((q_sa - labels) ** 2 + (v - labels) ** 2, r.act_mask)
    # V is a probability: Bradley-Terry on its difference at temperature PAIR_TEMPERATURE
    # (a clamp to take the log-odds would cut the gradient wherever V leaves [0, 1]).
    final = _final(v, r.act_mask) / PAIR_TEMPERATURE
    pair = pairwise_loss(final, r.rewards > 0.5, group)
    sib = torch.zeros((), device=q.device)
    if pairs:
        b, j, a_r, a_w = torch.tensor(pairs, device=q.device).unbind(-1)  # [P] each
        gap = (q[b, j, a_r] - q[b, j, a_w]) / PAIR_TEMPERATURE  # [P]
        sib = torch.nn.functional.softplus(-gap).mean()
    loss = regress + cfg.pairwise_weight * pair + cfg.sibling_weight * sib
    metrics = {"regress": regress.item(), "pairwise": pair.item(), "siblings": sib.item()}
    return loss, {"loss": loss.item(), **metrics, "sibling_pairs": len(pairs)}


@torch.no_grad()
def heldout_auc(model, rows: list[dict], batch: int = 64) -> dict:
    """Within-problem AUC (bootstrap interval) and pooled AUC of the final V on held-out rows:
    how well the head ranks a problem's right samples above its wrong ones."""
    from .value_labels import heldout_report

    scores: list[float] = []
    for s in range(0, len(rows), batch):
        r = batch_to(_batch(rows[s : s + batch], model.tokenizer), model.device)
        scores += _final(state_values_at(model, r)[1], r.act_mask).tolist()
    return heldout_report(scores, rows)


def fresh_q_head(model, layers: int, features: str, seed: int) -> None:
    """Replace the Q head by a new one of ``layers`` blocks reading ``features``, its initial
    weights drawn from the run's seed."""
    from dataclasses import replace

    from cola_models.heads import SURPRISE, ActionHead

    shape = model.backbone.block_shape(model.config.head_ffn)
    model.config = replace(model.config, q_head=True, q_layers=layers, q_features=features)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "q_init"))
        model.q = ActionHead(shape, layers, model.n_actions).to(model.device)
        lm = features == "h+lm"
        model.q_in = torch.nn.Linear(SURPRISE, model.backbone.dim).to(model.device) if lm else None


def _td_steps(model, rows: list[dict], cfg: QRun):
    """The reference's offline TD objective: random rows, a hard-updated target network."""
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

    return step_fn


def _process_steps(model, rows: list[dict], cfg: QRun):
    """Dense step labels and within-problem contrast: whole problems per step, so that a
    problem's right and wrong samples meet in one batch (and on one rank)."""
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(r["p"], []).append(r)
    keys = sorted(by)

    def step_fn(step: int, update) -> dict:
        g = generator(cfg.data.seed, "q_batches", step)
        pick = torch.randint(
            len(keys), (cfg.q.batch_problems,), generator=g
        ).tolist()  # host: which problems
        part = [r for i in distributed.share(pick) for r in by[keys[i]]]
        batch = batch_to(_batch(part, model.tokenizer), model.device)
        labels = _labels(part, batch.act_mask)
        group = torch.tensor([r["p"] for r in part], device=model.device)  # [B]
        pairs = sibling_pairs(part)
        return update(lambda: q_process_step(model, batch, labels, group, pairs, cfg.q))[1]

    return step_fn


def run_q(cfg: QRun, out: str | Path, *, quiet: bool = False) -> Path:
    run = RunDir(out, "q", config_dict(cfg))
    if run.done:
        return run.model_dir
    model = load_actor_model(RLConfig(model=cfg.q.model, level="latent"), cfg.placement)
    if cfg.q.q_layers:
        fresh_q_head(model, cfg.q.q_layers, cfg.q.q_features, cfg.data.seed)
    if model.q is None:
        raise ColaError(f"{cfg.q.model} has no Q head (build it with q_layers > 0)")
    rows = _samples(model, run, cfg)
    held = _samples(model, run, cfg, heldout=True)
    if cfg.q.objective == "td" and model.q_in is not None:
        raise ColaError("objective 'td' trains a Q head that reads h only (q_features = 'h')")
    params = freeze_all_but(model, *(m for m in (model.q, model.q_in) if m is not None))
    steps = (_process_steps if cfg.q.objective == "process" else _td_steps)(model, rows, cfg)

    def step_fn(step: int, update) -> dict:
        metrics = steps(step, update)
        if step % cfg.q.eval_every == 0 or step == cfg.optim.steps - 1:
            model.eval()
            with distributed.full_weights(model):
                metrics.update(heldout_auc(model, held))
            model.train()
        return metrics

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
    measured = {k: hist[-1].get(k) for k in ("auc_within", "auc_lo", "auc_hi", "auc_pooled")}
    run.finish(
        {
            "final_loss": hist[-1]["loss"],
            "samples": len(rows),
            "sample_reward": sum(r["reward"] for r in rows) / len(rows),
            "heldout": measured,
        }
    )
    return run.model_dir
