"""The verifier: a reward model of its own weights, trained on the final policy's samples to tell
right solutions of a problem from wrong ones (``latent-search train verifier``).

Data: the policy's own samples (G per problem) of *training-split* problems, written to
``samples.jsonl`` a chunk at a time (an interrupted run keeps what it sampled), and the same of
held-out test-split problems in ``heldout.jsonl`` for measuring it.
Labels: the outcome (the task's reward) at a sample's last token, and, for arith, exact step
labels at every answer token (``train/value_labels.py``: a prefix is on track while each of its
steps ``a op b = r`` is arithmetically right and reaches one of the gold solution's intermediate
values, a right sample's prefixes all count as on track, and a token carries the label of the
step it belongs to). Gold steps are read from training problems only.
Loss: per-position BCE on those labels, plus a within-problem Bradley-Terry term on the final
scores (-log sigmoid(s_right - s_wrong) over a problem's right/wrong pairs), the contrast that a
value trained on outcomes alone lacks. Logged: held-out within-problem AUC with its interval.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cola_models.devices import Placement, dtype_name
from cola_models.errors import ColaError

from . import distributed
from .data import DataConfig, train_problems
from .distributed import denominator
from .loop import OptimConfig, RunDir, config_dict, train_loop
from .losses import pairwise_loss
from .precision import place
from .seeds import generator, stream_seed


@dataclass
class VerifierConfig:
    policy: str = ""
    """The model whose samples the verifier learns to judge (the final policy)."""
    init: str = ""
    """A plain LM directory the verifier starts from (its own copy of every weight)."""
    n_problems: int = 2000
    samples_per_problem: int = 8
    heldout_problems: int = 200
    max_new_tokens: int = 160
    temperature: float = 1.0
    batch_problems: int = 8
    """Problems per step; each brings all its samples (the pairwise term needs them together)."""
    pairwise_weight: float = 1.0
    step_labels: bool = True
    synthetic: bool = False
    """Add, per training problem, its gold solution (right) and two made wrong the way the
    policy errs — a question number read in place of another, one result off — with later
    steps recomputed (train/negatives.py): contrast where all the policy's samples agree."""
    eval_every: int = 100

    def __post_init__(self) -> None:
        for name in ("n_problems", "samples_per_problem", "heldout_problems", "batch_problems"):
            if getattr(self, name) < 1:
                raise ColaError(f"verifier.{name}={getattr(self, name)} must be >= 1")
        if self.pairwise_weight < 0:
            raise ColaError(f"verifier.pairwise_weight={self.pairwise_weight} must be >= 0")


@dataclass
class VerifierRun:
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            steps=600, lr=3e-4, warmup_steps=30, checkpoint_every=100
        )
    )
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


# ---------------------------------------------------------------------------------- samples
def _read_rows(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            assert isinstance(row, dict) and {"p", "text", "reward", "answer"} <= set(row)
        except (json.JSONDecodeError, AssertionError):
            raise ColaError(
                f"{path}:{n} is not a sample row; the cache is corrupt (delete {path.name} to "
                "resample it)"
            ) from None
        rows.append(row)
    return rows


def cached_samples(
    path: Path, model, problems: list, cfg: VerifierConfig, seed: int, stream: str
) -> list[dict]:
    """G samples of every problem, sampled in chunks of 64 problems and appended as they come;
    a rerun continues after the last whole chunk. Under torchrun the chunks are dealt to the ranks
    (each seeded by its first problem, so the rows do not depend on the world size) and rank 0
    writes them in order."""
    from cola_models.checkpoint import writes_files

    from .rollouts import SamplingSpec, sample_groups

    spec = SamplingSpec(cfg.samples_per_problem, cfg.max_new_tokens, cfg.temperature)
    chunk = 64  # problems per generation call: decoding cost is per step more than per row

    def resume_point() -> tuple[int, list[dict]]:
        rows = _read_rows(path) if path.is_file() else []
        done = len(rows) // (chunk * spec.group_size) * chunk
        return done, rows[: done * spec.group_size]  # a torn last chunk is redone

    done, rows = resume_point() if writes_files() else (0, [])
    done = distributed.agree(lambda: done)
    starts = list(range(done, len(problems), chunk))

    def sample(c: int) -> list[dict]:
        start = starts[c]
        groups = sample_groups(
            model, problems[start : start + chunk], spec, generator(seed, stream, start)
        )
        out = []
        for i, gr in enumerate(groups):
            for gen, rew, ans in zip(gr.gens, gr.rewards, gr.answers):
                text = model.tokenizer.decode(gr.prompt + gen, skip_special_tokens=True)
                out.append({"p": start + i, "text": text, "reward": rew, "answer": ans})
        return out

    if not writes_files():
        distributed.map_chunks(len(starts), sample, lambda part: None)
        distributed.barrier()
        return _read_rows(path)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")

        def keep(part: list[dict]) -> None:
            for row in part:
                f.write(json.dumps(row) + "\n")
            rows.extend(part)
            f.flush()
            os.fsync(f.fileno())

        distributed.map_chunks(len(starts), sample, keep)
    distributed.barrier()
    return rows


def synthetic_rows(problems: list, template: str | None, seed: int) -> list[dict]:
    """The labelled-for-free rows of every training problem (see ``VerifierConfig.synthetic``),
    in the sample rows' format, a pure function of the seed."""
    import random

    from eval.prompts import format_prompt

    from .negatives import gold_completion, swapped_number, wrong_result

    rng = random.Random(stream_seed(seed, "verifier_synthetic"))
    rows = []
    for i, p in enumerate(problems):
        gold = gold_completion(p)
        if gold is None:
            continue
        prompt = format_prompt(p.question, template)
        rows.append({"p": i, "text": prompt + gold, "reward": 1.0, "answer": p.answer})
        for make in (swapped_number, wrong_result):
            got = make(p, rng)
            if got is not None:
                rows.append({"p": i, "text": prompt + got[0], "reward": 0.0, "answer": got[1]})
    return rows


# ---------------------------------------------------------------------------------- labels
def label_batch(rm, rows: list[dict], problems: list, step_labels: bool):
    """Token ids [B, T] (left-padded), mask, labels [B, T] and label weights [B, T]: the outcome
    at the last token and, with ``step_labels``, dense labels (``train/value_labels.py``) at
    every token of the answer, so the verifier values any prefix, as a search asks it to."""
    from cola_models.tokenizer import left_pad, pad_id

    from .value_labels import sample_labels

    tok = rm.tokenizer
    enc = tok([r["text"] for r in rows], add_special_tokens=True, return_offsets_mapping=True)
    ids, mask = left_pad(enc["input_ids"], pad_id(tok))
    B, T = ids.shape
    labels, weights = torch.zeros(B, T), torch.zeros(B, T)  # host: moved once in verifier_loss
    for b, (row, offsets) in enumerate(zip(rows, enc["offset_mapping"])):
        shift = T - len(offsets)  # left padding
        right = row["reward"] > 0.5
        labels[b, T - 1], weights[b, T - 1] = float(right), 1.0
        if not step_labels:
            continue
        text = row["text"]
        start = _answer_start(text)
        gen = [i for i, (s, e) in enumerate(offsets) if e > start and e > s]
        dense = sample_labels(
            problems[row["p"]], text[:start], text[start:], [offsets[i][1] for i in gen], right
        )
        for i, lab in zip(gen, dense):
            if shift + i < T - 1:
                labels[b, shift + i], weights[b, shift + i] = lab, 1.0
    return ids, mask, labels, weights


def _answer_start(text: str) -> int:
    """Where the answer begins: after the prompt's last "Answer:" (the project's template)."""
    at = text.rfind("Answer:")
    return at + len("Answer:") if at >= 0 else 0


# ---------------------------------------------------------------------------------- loss
def verifier_loss(rm, rows, problems, cfg: VerifierConfig) -> tuple[Tensor, dict]:
    dev = rm.device
    batch = label_batch(rm, rows, problems, cfg.step_labels)
    ids, mask, labels, weights = (t.to(dev, non_blocking=True) for t in batch)  # [B, T] each
    logits = rm.token_logits(ids, mask)  # [B, T]
    bce = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()
    bce = bce / denominator(weights.sum())
    right = torch.tensor([r["reward"] > 0.5 for r in rows], device=dev)  # [B]
    group = torch.tensor([r["p"] for r in rows], device=dev)  # [B]
    pair = pairwise_loss(logits[:, -1], right, group)
    loss = bce + cfg.pairwise_weight * pair
    return loss, {"loss": loss.item(), "bce": bce.item(), "pairwise": pair.item()}


# ---------------------------------------------------------------------------------- run
def heldout_auc(rm, rows: list[dict]) -> dict:
    """Within-problem AUC (bootstrap interval) and pooled AUC of the verifier on held-out rows."""
    from .value_labels import heldout_report

    return heldout_report(rm.score_texts([r["text"] for r in rows])[0], rows)


def run_verifier(cfg: VerifierRun, out: str | Path, *, quiet: bool = False) -> Path:
    """Sample (cached), train, save the verifier as a reward-model directory; returns it."""
    from cola_models.loading import load_model
    from cola_models.reward_model import load_reward_model, reward_model_from_lm
    from eval.tasks import get_task

    vc = cfg.verifier
    if not vc.policy or not vc.init:
        raise ColaError(
            "train verifier needs [verifier] policy (the final policy) and init (an LM)"
        )
    from cola_models.catalog import resolve_name

    init = resolve_name(vc.init)
    if init is None:
        raise ColaError(f"verifier init {vc.init!r} is neither a bundled model nor a directory")
    run = RunDir(out, "verifier", config_dict(cfg))
    if run.done:
        return run.model_dir
    device, compute = cfg.placement.torch_device(), cfg.placement.torch_dtype()
    policy = load_model(vc.policy, device=str(device), dtype=dtype_name(compute))
    problems = train_problems(cfg.data)[: vc.n_problems]
    seed = cfg.data.seed
    held = get_task("arith").generate(
        vc.heldout_problems, seed=stream_seed(seed, "held_out"), split="test"
    )
    rows = cached_samples(
        run.path / "samples.jsonl", policy, problems, vc, seed, "verifier_samples"
    )
    held_rows = cached_samples(
        run.path / "heldout.jsonl", policy, held, vc, seed, "verifier_heldout"
    )
    template = policy.generation_defaults.get("prompt_template")
    del policy
    if vc.synthetic:  # training rows only: held-out AUC is measured on the policy's samples
        rows = rows + synthetic_rows(problems, template, seed)
    rm = reward_model_from_lm(init, seed=seed)
    place(rm.model, cfg.placement)
    by_problem: dict[int, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["p"], []).append(r)
    keys = sorted(by_problem)

    def step_fn(step: int, update) -> dict:
        g = generator(seed, "verifier_batches", step)
        pick = torch.randint(
            len(keys), (vc.batch_problems,), generator=g
        ).tolist()  # host: which problems
        # a rank takes whole problems, so a problem's right/wrong pairs meet on one rank
        batch = [r for i in distributed.share(pick) for r in by_problem[keys[i]]]
        metrics = update(lambda: verifier_loss(rm, batch, problems, vc))[1]
        if step % vc.eval_every == 0 or step == cfg.optim.steps - 1:
            rm.model.eval()
            with distributed.full_weights(rm.model):
                metrics.update(heldout_auc(rm, held_rows))
            rm.model.train()
        return metrics

    rows_log = train_loop(
        run,
        rm.model,
        list(rm.model.parameters()),
        step_fn,
        cfg.optim,
        description="verifier",
        quiet=quiet,
        compute=compute,
    )
    rm.model.eval()
    with distributed.full_weights(rm.model):
        rm.meta.update({"policy": vc.policy, "heldout": heldout_auc(rm, held_rows)})
    rm.save_pretrained(run.model_dir)
    if run.writer:
        load_reward_model(run.model_dir)  # what was written loads as a reward model
    run.finish({**rm.meta["heldout"], "final_loss": rows_log[-1]["loss"]})
    return run.model_dir
