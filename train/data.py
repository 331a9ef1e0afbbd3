"""Training data from the procedural tasks: tokenized prompt + completion pairs and batches.

Every batch is a pure function of (seed, step), so a resumed run sees exactly the data it would
have seen without the interruption.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cola_models.errors import ColaError
from cola_models.tokenizer import encode, left_pad, pad_id

from .distributed import share
from .precision import batch_to
from .seeds import generator


@dataclass
class DataConfig:
    tasks: tuple[str, ...] = ("arith", "countdown")
    weights: tuple[float, ...] = (0.85, 0.15)
    """Share of each task in the training mix (countdown's generator supplies ~15k distinct
    training problems; arith's are unlimited)."""
    n_train: int = 100_000
    """Problems generated for training (train split: disjoint from held-out by construction)."""
    max_len: int = 160
    """Examples longer than this many tokens are dropped."""
    batch_size: int = 32
    seed: int = 0
    levels: tuple[int, ...] = ()
    """Only problems of these difficulty levels (arith: solution steps); empty: every level."""

    def __post_init__(self) -> None:
        self.tasks, self.weights = tuple(self.tasks), tuple(self.weights)
        self.levels = tuple(self.levels)
        if any(lv < 1 for lv in self.levels):
            raise ColaError(f"data.levels={list(self.levels)} must be levels >= 1")
        if len(self.tasks) != len(self.weights) or not self.tasks:
            raise ColaError("data.tasks and data.weights must be non-empty and of equal length")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ColaError("data.weights must be >= 0 with a positive sum")
        if self.n_train < 1 or self.max_len < 8 or self.batch_size < 1:
            raise ColaError(
                "data.n_train >= 1, data.max_len >= 8 and data.batch_size >= 1 are required"
            )


def train_problems(cfg: DataConfig) -> list:
    """The deterministic training problem mix (train split only)."""
    from eval.tasks import get_task

    total = sum(cfg.weights)
    problems = []
    for name, w in zip(cfg.tasks, cfg.weights):
        n = round(cfg.n_train * w / total)
        if n:
            problems += get_task(name).generate(
                n, seed=cfg.seed, split="train", levels=cfg.levels or None
            )
    # host: the data order, the same on every device
    order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(cfg.seed))
    return [problems[i] for i in order.tolist()]


@dataclass
class Examples:
    """Token ids of bos + prompt + completion + eos, and where the completion starts."""

    ids: list[list[int]]
    prompt_lens: list[int]
    problems: list

    def __len__(self) -> int:
        return len(self.ids)


def tokenize(tokenizer, problems: list, max_len: int) -> Examples:
    from eval.prompts import format_example

    pairs = [format_example(p) for p in problems]
    prompts = encode(tokenizer, [p for p, _ in pairs])
    completions = encode(tokenizer, [c for _, c in pairs], add_bos=False)
    eos = tokenizer.eos_token_id
    ids, lens, kept = [], [], []
    for p, c, prob in zip(prompts, completions, problems):
        seq = p + c + [eos]
        if len(seq) <= max_len:
            ids.append(seq)
            lens.append(len(p))
            kept.append(prob)
    if not ids:
        raise ColaError(f"no training example fits in max_len={max_len} tokens")
    return Examples(ids, lens, kept)


@dataclass
class Batch:
    input_ids: Tensor  # [B, T] left-padded
    attention_mask: Tensor  # [B, T]
    target_mask: Tensor  # [B, T-1] 1 where token t+1 is a trained target
    indices: list[int]
    rows: list[int]
    """Where these rows sit in the global batch (all of it with one process)."""


def make_batch(
    ex: Examples,
    indices: list[int],
    tokenizer,
    *,
    completion_only: bool,
    device="cpu",
    rows: list[int] | None = None,
) -> Batch:
    seqs = [ex.ids[i] for i in indices]
    input_ids, mask = left_pad(seqs, pad_id(tokenizer), device)
    T = input_ids.shape[1]
    # A target needs a real token on both sides: with left padding, mask[:, 1:] alone also made
    # each shorter row's BOS a target of the pad before it, a count that changed with padding.
    target = mask[:, 1:] * mask[:, :-1]
    if completion_only:
        for row, i in enumerate(indices):
            start = T - len(ex.ids[i])  # left padding
            # targets are tokens at positions >= start + prompt_len, i.e. target index - 1
            target[row, : start + ex.prompt_lens[i] - 1] = 0
    return Batch(input_ids, mask, target, indices, rows or list(range(len(indices))))


def sample_batch(
    ex: Examples,
    cfg: DataConfig,
    step: int,
    tokenizer,
    *,
    completion_only: bool,
    device: torch.device | None = None,
) -> Batch:
    """Batch ``step`` of the run, or under torchrun this rank's rows of it (``distributed.share``):
    the global batch is the same for every world size, and for every device (drawn on the host,
    then copied to ``device``)."""
    g = generator(cfg.seed, "batches", step)
    idx = torch.randint(len(ex), (cfg.batch_size,), generator=g).tolist()  # host: which rows
    rows = share(list(range(len(idx))))
    if not rows:
        raise ColaError(f"data.batch_size={cfg.batch_size} is smaller than the number of ranks")
    batch = make_batch(
        ex, [idx[r] for r in rows], tokenizer, completion_only=completion_only, rows=rows
    )
    return batch if device is None else batch_to(batch, device)
