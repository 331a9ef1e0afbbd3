"""What every procedural task shares: the Problem record, the train/test split and the generator
driver.

Procedurally generated math tasks with verifiable rewards, for a tiny model on a CPU.

Why generated instead of GSM8K/Countdown dumps: a 3M-parameter byte-level model with a 128-192
token context needs short, regular texts whose difficulty can be dialled (`level`), an unlimited
supply of fresh training problems, and a reward that is exact and cheap to compute for RL/search.
Every problem carries a terse worked solution (one equation per step, then `\\boxed{...}`) that is
itself guaranteed to earn reward 1.0, so it can serve as a supervised target.

Determinism and disjoint splits: `generate` uses a private `random.Random` seeded from
(task name, split, seed), and the split of a problem is a pure function of its question text
(`split_of`, a stable hash), so train and test can never share a question, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cola_models.errors import ColaError


@dataclass(frozen=True)
class Problem:
    """One generated problem. Frozen so a dataset cannot be mutated by accident after generation."""

    task: str  # "arith" or "countdown"
    id: str  # stable id, e.g. "arith-train-s0-17"
    question: str
    solution: str  # step-by-step worked solution ending with the final answer in \boxed{...}
    answer: str  # canonical final answer (arith: the integer; countdown: the target)
    level: int
    # Task-specific facts the reward needs (countdown: numbers/target). Left out of the hash so a
    # Problem stays hashable although a dict is not.
    data: dict = field(default_factory=dict, hash=False)


# --------------------------------------------------------------------------------------- splits

_SPLIT_SALT = b"latent-search/eval-tasks/split/v1\x00"
_TEST_BUCKETS = 10  # one bucket in ten is "test"


def split_of(question: str) -> str:
    """Return "test" for ~10% of question texts and "train" for the rest, stably across machines.

    hashlib rather than `hash()` because str hashing is randomized per process (PYTHONHASHSEED),
    which would silently reshuffle the splits between training and evaluation.
    """
    digest = hashlib.sha256(_SPLIT_SALT + question.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % _TEST_BUCKETS == 0 else "train"


# ------------------------------------------------------------------------------- shared driver


class Task(Protocol):
    """What training/evaluation code relies on; both tasks below implement it."""

    name: str
    levels: tuple[int, ...]

    def generate(
        self, n: int, *, seed: int, split: str = "train", levels: tuple[int, ...] | None = None
    ) -> list[Problem]: ...

    def reward(self, problem: Problem, text: str) -> float: ...


class _Retry(Exception):
    """Raised inside a generator when the random choices hit a constraint; the attempt is redrawn."""


# A maker draws one candidate problem at a level: (question, solution, answer, data).
_Maker = Callable[[random.Random, int], tuple[str, str, str, dict]]


def _generate(
    name: str,
    maker: _Maker,
    weights: dict[int, float],
    n: int,
    seed: int,
    split: str,
    levels: tuple[int, ...] | None,
) -> list[Problem]:
    """Rejection-sample `n` distinct problems of `split`; shared by every task so all behave alike.

    Each output slot draws its level from `weights` (restricted to `levels`) once, then draws
    candidates at that level until one is kept; candidates that violate a constraint, fall in the
    other split, or repeat a question are skipped. Fixing the level before rejecting keeps the level
    mix equal to `weights` even though harder levels are rejected more often. The attempt budget is
    generous (the test split keeps ~1 candidate in 10) but finite, so asking for more problems than
    a level can supply fails loudly instead of looping forever.
    """
    if split not in ("train", "test"):
        raise ColaError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0:
        raise ColaError(f"n must be >= 0, got {n}")
    chosen = tuple(weights) if levels is None else tuple(levels)
    bad = [lv for lv in chosen if lv not in weights]
    if not chosen or bad:
        raise ColaError(
            f"{name}: levels must be a non-empty subset of {tuple(weights)}, got {levels}"
        )
    level_weights = [weights[lv] for lv in chosen]
    rng = random.Random(f"{name}|{split}|{seed}")  # str seeds are hashed with sha512: stable
    seen: set[str] = set()
    out: list[Problem] = []
    budget = 2000 + 300 * n
    while len(out) < n:
        level = rng.choices(chosen, weights=level_weights)[0]
        while True:
            budget -= 1
            if budget < 0:
                raise RuntimeError(
                    f"{name}: could not find {n} distinct {split} problems at levels {chosen}"
                )
            try:
                question, solution, answer, data = maker(rng, level)
            except _Retry:
                continue
            if question not in seen and split_of(question) == split:
                break
        seen.add(question)
        out.append(
            Problem(
                task=name,
                id=f"{name}-{split}-s{seed}-{len(out)}",
                question=question,
                solution=solution,
                answer=answer,
                level=level,
                data=data,
            )
        )
    return out


def _steps_text(steps: list[list]) -> str:
    """`a op b = r.` per step, space-separated: one short regular equation a tiny model can copy."""
    return " ".join(f"{a}{op}{b}={r}." for a, op, b, r in steps)
