"""How well a scorer ranks solutions of the same problem, before it is trusted to drive a search.

A *group* is the k samples of one problem: their scores, whether each is right (gold used, for
measurement only) and each one's final answer. From groups:
  within_problem_auc   mean over problems with right and wrong samples of P(score(right) >
                       score(wrong)); what selection among a problem's samples needs. Bootstrap
                       95% interval over problems.
  pooled_auc           the same across all samples of all problems, which also rewards knowing
                       which problems are easy (a value that only knows difficulty scores well here).
  best_of              accuracy when one of the first k samples is chosen by score, by majority
                       vote, by score-weighted vote (scores must then be >= 0), or ORACLE (any
                       is right: the ceiling).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from cola_models.errors import ColaError


@dataclass(frozen=True)
class Group:
    scores: list[float]
    correct: list[bool]
    answers: list[str | None]


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a random positive outscores a random negative), ties counting half."""
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _group_auc(g: Group) -> float | None:
    return auc(
        [s for s, c in zip(g.scores, g.correct) if c],
        [s for s, c in zip(g.scores, g.correct) if not c],
    )


def within_problem_auc(
    groups: list[Group], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, float | int | None]:
    """Mean within-problem AUC over problems with mixed samples, with a bootstrap 95% interval
    (problems resampled with replacement)."""
    per = [a for a in (_group_auc(g) for g in groups) if a is not None]
    if not per:
        return {"auc": None, "lo": None, "hi": None, "problems": 0}
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(per, k=len(per))) / len(per) for _ in range(n_boot))
    return {
        "auc": sum(per) / len(per),
        "lo": means[int(0.025 * n_boot)],
        "hi": means[min(n_boot - 1, int(0.975 * n_boot))],
        "problems": len(per),
    }


def pooled_auc(groups: list[Group]) -> float | None:
    pos = [s for g in groups for s, c in zip(g.scores, g.correct) if c]
    neg = [s for g in groups for s, c in zip(g.scores, g.correct) if not c]
    return auc(pos, neg)


def _pick(g: Group, k: int, method: str) -> bool:
    """Whether the sample ``method`` picks among the first k is right."""
    scores, correct, answers = g.scores[:k], g.correct[:k], g.answers[:k]
    if method == "oracle":
        return any(correct)
    if method == "score":
        return correct[max(range(len(scores)), key=lambda i: scores[i])]
    weight: dict[str, float] = defaultdict(float)
    for s, a in zip(scores, answers):
        if a is not None:
            weight[a] += 1.0 if method == "vote" else s
    if not weight:
        return correct[0]  # no sample commits to an answer: the first one stands
    top = max(weight, key=lambda a: weight[a])
    return correct[answers.index(top)]


METHODS = ("score", "vote", "weighted_vote", "oracle")


def best_of(groups: list[Group], k: int, method: str) -> float:
    """Accuracy over problems when choosing among each problem's first k samples."""
    if method not in METHODS:
        raise ColaError(f"method={method!r} must be one of {', '.join(METHODS)}")
    if not groups:
        return 0.0
    return sum(_pick(g, k, method) for g in groups) / len(groups)
