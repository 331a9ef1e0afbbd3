"""The plain baselines: greedy, one sample, and best-of-N (by value or by majority vote)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cola_models.errors import ColaError

from .ledger import Choice, Ledger
from .scorers import vote_scores
from .tree import ROOT, Tree
from .types import Backend, Scorer, SearchResult


@dataclass(frozen=True)
class BestOfNConfig:
    n: int = 8
    max_new_tokens: int = 256
    select: str = "value"
    """"value" (the scorer's score: the Q-model, a verifier), "vote" (majority over final
    answers) or "weighted_vote" (answers weighted by the scorer's scores)."""
    budget: int | None = None
    """Model tokens per problem: samples are then drawn one per problem per round until n or the
    budget is reached (a sample already started is finished)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ColaError(f"n={self.n} must be >= 1")
        if self.select not in ("value", "vote", "weighted_vote"):
            raise ColaError(f"select={self.select!r} must be value, vote or weighted_vote")
        if self.budget is not None and self.budget < 1:
            raise ColaError(f"budget={self.budget} must be >= 1")


def decode_once(
    backend: Backend, prompts: list[list[int]], max_new_tokens: int, *, sample: bool, generator=None
) -> list[SearchResult]:
    """Greedy decoding or one sample per prompt: one batched rollout."""
    ledger = Ledger(backend, len(prompts))
    owners = list(range(len(prompts)))
    outs = ledger.rollout(owners, prompts, max_new_tokens, sample=sample, generator=generator)
    choices = []
    for p, o in zip(prompts, outs):  # the tree of one decode: a single path
        tree = Tree(prompt_tokens=list(p))
        node = tree.add_child(ROOT, 0, o, prior=1.0, terminal=backend.eos_id in o)
        choices.append(Choice(o, tree, node))
    algorithm = "sample" if sample else "greedy"
    config = {"max_new_tokens": max_new_tokens}
    return ledger.results(choices, algorithm=algorithm, config=config)


def _draw(
    ledger: Ledger, prompts, cfg: BestOfNConfig, generator, judge
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Samples of each prompt and the judge's score of each (``judge(owners, seqs)``; None:
    no judge runs a model, e.g. a vote). Without a budget all n at once (one batch of P * n
    rows, one judge call); with one, in rounds of one sample per problem still under budget,
    each judged in its round, so that the judge's tokens count before the next round starts:
    a problem's spend passes its budget by at most one sample and its judge pass."""
    samples: list[list[list[int]]] = [[] for _ in prompts]
    scores: list[list[float]] = [[] for _ in prompts]
    rounds = 1 if cfg.budget is None else cfg.n
    per_round = cfg.n if cfg.budget is None else 1
    for _ in range(rounds):
        owners = [i for i in ledger.open_problems() if len(samples[i]) < cfg.n]
        rows = [i for i in owners for _ in range(per_round)]
        outs = ledger.rollout(
            rows, [prompts[i] for i in rows], cfg.max_new_tokens, sample=True, generator=generator
        )
        judged = judge(rows, [prompts[i] + o for i, o in zip(rows, outs)]) if judge else None
        for r, (i, o) in enumerate(zip(rows, outs)):
            samples[i].append(o)
            if judged is not None:
                scores[i].append(judged[r])
    return samples, scores


def _sample_tree(prompt, outs, scores, eos) -> tuple[Tree, list[int]]:
    """The root and one child per sample (the edge's action is the sample's index), valued by
    its score."""
    tree = Tree(prompt_tokens=list(prompt))
    kids = []
    for j, (o, s) in enumerate(zip(outs, scores)):
        c = tree.add_child(ROOT, j, o, prior=1.0 / len(outs), terminal=eos in o)
        tree.visits[c], tree.value[c], tree.reward[c] = 1, float(s), float(s)
        kids.append(c)
    tree.visits[ROOT] = len(outs)
    return tree, kids


def best_of_n(
    backend: Backend,
    prompts: list[list[int]],
    cfg: BestOfNConfig,
    *,
    generator=None,
    scorer: Scorer | None = None,
    answer_fn: Callable[[str], str | None] | None = None,
) -> list[SearchResult]:
    """Up to N policy samples per prompt, batched across prompts; keep the best by value or vote."""
    if cfg.select != "value" and answer_fn is None:
        raise ValueError("vote selection needs an answer extractor")
    if cfg.select != "vote" and scorer is None:
        raise ValueError(f"{cfg.select} selection needs a scorer")
    ledger = Ledger(backend, len(prompts), budget=cfg.budget, prompt_lens=[len(p) for p in prompts])
    judge = None if cfg.select == "vote" else (lambda rows, seqs: ledger.score(rows, scorer, seqs))
    samples, judged = _draw(ledger, prompts, cfg, generator, judge)
    if cfg.select == "vote":
        scores = []
        for outs in samples:
            scores += vote_scores([answer_fn(backend.decode(o)) for o in outs])
    else:
        scores = [s for per in judged for s in per]
    if cfg.select == "weighted_vote":  # each sample's score becomes its answer's total weight
        at, weighted = 0, []
        for outs in samples:
            answers = [answer_fn(backend.decode(o)) for o in outs]
            weighted += vote_scores(answers, scores[at : at + len(outs)])
            at += len(outs)
        scores = weighted
    choices, at = [], 0
    for p, outs in zip(prompts, samples):
        mine = scores[at : at + len(outs)]
        at += len(outs)
        tree, kids = _sample_tree(p, outs, mine, backend.eos_id)
        best = max(range(len(outs)), key=lambda r: mine[r])
        stats = {"scores": mine, "select": cfg.select}
        choices.append(Choice(outs[best], tree, kids[best], stats))
    return ledger.results(
        choices, algorithm="best-of-n", config=cfg, scorer=scorer if cfg.select != "vote" else None
    )
