"""AlphaZero-style PUCT MCTS over reasoning steps, with policy priors and the Q-model's value.

Edges are steps (see steps.py). Each simulation walks down by PUCT, expands the leaf (its children
come from one backbone step plus batched greedy step completions), evaluates the leaf with the
value function (policy-weighted Q), and backs the value up as a running mean. One simulation per
problem per round; all leaves of all problems share each model call.

``gumbel=True`` switches the root to Gumbel selection (Danihelka et al., ICLR 2022): the root's
children are k actions sampled without replacement by Gumbel-top-k, simulations are spread over
them by sequential halving on g(a) + log pi(a) + sigma(q(a)), and the answer follows the surviving
child with the highest such score. Below the root, selection stays PUCT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cola_models.errors import ColaError

from .ledger import Choice, Ledger
from .steps import CANDIDATES, branching, candidate_steps
from .tree import ROOT, Tree
from .types import Backend, SearchResult, ValueFn


@dataclass(frozen=True)
class MCTSConfig:
    simulations: int = 32
    c_puct: float = 1.0
    expand_k: int = 4
    step_tokens: int = 48
    step_stop: tuple[str, ...] = (".", "\n")
    max_new_tokens: int = 256
    budget: int | None = None
    gumbel: bool = False
    """Gumbel root selection (sequential halving) instead of PUCT at the root."""
    c_visit: float = 50.0
    c_scale: float = 0.1
    """sigma(q) = (c_visit + max_b N(b)) * c_scale * q, the Gumbel paper's monotone transform."""
    candidates: str = "first-token"
    """How a node's child steps are proposed: "first-token" or "sampled" (see steps.py)."""

    def __post_init__(self) -> None:
        if self.simulations < 1 or self.expand_k < 1:
            raise ColaError("simulations and expand_k must be >= 1")
        if self.c_puct < 0 or self.step_tokens < 0 or self.max_new_tokens < 1:
            raise ColaError("c_puct, step_tokens must be >= 0 and max_new_tokens >= 1")
        if self.budget is not None and self.budget < 1:
            raise ColaError(f"budget={self.budget} must be >= 1")
        if self.candidates not in CANDIDATES:
            raise ColaError(
                f"candidates={self.candidates!r} must be one of {', '.join(CANDIDATES)}"
            )
        if self.gumbel and self.candidates != "first-token":
            raise ColaError("Gumbel root selection samples actions; use first-token candidates")


def puct_child(tree: Tree, node: int, c_puct: float) -> int:
    """argmax_c Q(c) + c_puct * P(c) * sqrt(N(node)) / (1 + N(c)); unvisited children take the
    parent's value (first-play urgency)."""
    kids = sorted(set(tree.children[node].values()))
    total = sum(tree.prior[c] for c in kids) or 1.0
    sqrt_n = math.sqrt(max(1, tree.visits[node]))

    def score(c: int) -> float:
        q = tree.value[c] if tree.visits[c] > 0 else tree.value[node]
        return q + c_puct * (tree.prior[c] / total) * sqrt_n / (1 + tree.visits[c])

    return max(kids, key=score)


def considered_visits(m: int, n: int) -> list[int]:
    """Sequential halving schedule: the visit count the root child chosen at simulation i must
    have. m children start; each phase gives every surviving child the same share of the n
    simulations, then halves the survivors (at least 2), as in Gumbel MuZero."""
    if m <= 1:
        return list(range(n))
    phases = max(1, math.ceil(math.log2(m)))
    seq: list[int] = []
    visits = [0] * m
    alive = m
    while len(seq) < n:
        for _ in range(max(1, n // (phases * alive))):
            seq += visits[:alive]
            visits[:alive] = [v + 1 for v in visits[:alive]]
        alive = max(2, alive // 2)
    return seq[:n]


def gumbel_scores(tree: Tree, gumbel: dict[int, float], cfg: MCTSConfig) -> dict[int, float]:
    """g(a) + log pi(a) + sigma(q(a)) for the root's children; an unvisited child's q is
    completed with the root's value (deviation: mctx completes with a prior-weighted mix)."""
    kids = sorted(set(tree.children[ROOT].values()))
    max_n = max(tree.visits[c] for c in kids)
    scale = (cfg.c_visit + max_n) * cfg.c_scale
    q = {c: tree.value[c] if tree.visits[c] else tree.value[ROOT] for c in kids}
    lo, hi = min(q.values()), max(q.values())
    span = hi - lo if hi - lo > 1e-8 else 1.0  # min-max rescaled to [0, 1], as mctx does
    return {
        c: gumbel.get(c, 0.0) + math.log(max(tree.prior[c], 1e-12)) + scale * (q[c] - lo) / span
        for c in kids
    }


def gumbel_root_child(tree: Tree, gumbel: dict[int, float], cfg: MCTSConfig) -> int:
    """The child sequential halving visits next: the best-scored child among those whose visit
    count equals the schedule's target."""
    scores = gumbel_scores(tree, gumbel, cfg)
    kids = list(scores)
    # The first simulation expands the root, so n - 1 selections follow.
    schedule = considered_visits(len(kids), max(1, cfg.simulations - 1))
    target = schedule[min(tree.visits[ROOT] - 1, len(schedule) - 1)] if tree.visits[ROOT] else 0
    pool = [c for c in kids if tree.visits[c] == target] or kids
    return max(pool, key=lambda c: scores[c])


def _final_child(tree: Tree, node: int, gumbel: dict[int, float] | None, cfg: MCTSConfig) -> int:
    kids = set(tree.children[node].values())
    if node == ROOT and gumbel is not None:
        scores = gumbel_scores(tree, gumbel, cfg)
        # The survivors of the last halving phase; a phase cut short by the simulation count
        # leaves them one visit apart, so max - 1 still counts as surviving.
        most = max(tree.visits[c] for c in kids)
        return max((c for c in kids if tree.visits[c] >= most - 1), key=lambda c: scores[c])
    return max(kids, key=lambda c: (tree.visits[c], tree.value[c]))


def _select_leaf(tree: Tree, gumbel: dict[int, float] | None, cfg: MCTSConfig) -> int:
    """Walk down from the root by PUCT (Gumbel's schedule at the root) to a leaf."""
    node = ROOT
    while tree.children[node] and not tree.terminal[node]:
        if node == ROOT and gumbel is not None:
            node = gumbel_root_child(tree, gumbel, cfg)
        else:
            node = puct_child(tree, node, cfg.c_puct)
    return node


def _open(tree: Tree, node: int, cfg: MCTSConfig) -> bool:
    return not tree.terminal[node] and tree.depth[node] < cfg.max_new_tokens


def _root_noise(grow, n_actions: int, generator) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, A] on root rows only (Gumbel-top-k sampling); zero elsewhere."""
    noise = torch.zeros(len(grow), n_actions)  # host: tree code's noise
    for r, (_, n) in enumerate(grow):
        if n == ROOT:
            u = torch.rand(n_actions, generator=generator)  # host: the search's stream
            noise[r] = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    return noise


def _expand(ledger: Ledger, trees, gumbels, leaves, cfg: MCTSConfig, generator) -> None:
    """Children (steps) of every open leaf, all problems in one batch."""
    grow = [(i, n) for i, n in leaves if _open(trees[i], n, cfg)]
    if not grow:
        return
    noise = _root_noise(grow, ledger.backend.n_actions, generator) if cfg.gumbel else None
    steps = candidate_steps(
        ledger,
        [i for i, _ in grow],
        [trees[i].prefix(n) for i, n in grow],
        mode=cfg.candidates,
        k=cfg.expand_k,
        step_tokens=cfg.step_tokens,
        stop=cfg.step_stop,
        room=[cfg.max_new_tokens - trees[i].depth[n] for i, n in grow],
        noise=noise,
        generator=generator,
    )
    for (i, n), row_steps in zip(grow, steps):
        for st in row_steps:
            child = trees[i].add_child(
                n, st.action, st.tokens, prior=st.prior, terminal=st.terminal
            )
            if n == ROOT and gumbels[i] is not None:
                gumbels[i][child] = st.gumbel


def _backup(tree: Tree, leaf: int, value: float) -> None:
    """Visits +1 and the value's running mean along the root-to-leaf path."""
    for m in tree.path(leaf):
        tree.visits[m] += 1
        tree.value[m] += (value - tree.value[m]) / tree.visits[m]


def _answer(ledger: Ledger, trees, gumbels, cfg: MCTSConfig) -> list[Choice]:
    """Follow the most visited children to a leaf; an open leaf is finished greedily."""
    finish = []
    for tree, g in zip(trees, gumbels):
        node = ROOT
        while tree.children[node]:
            node = _final_child(tree, node, g, cfg)
        finish.append(node)
    todo = [(i, n) for i, n in enumerate(finish) if _open(trees[i], n, cfg)]
    tails: dict[int, list[int]] = {}
    if todo:
        outs = ledger.rollout(
            [i for i, _ in todo],
            [trees[i].prefix(n) for i, n in todo],
            cfg.max_new_tokens - min(trees[i].depth[n] for i, n in todo),
            sample=False,
        )
        for (i, n), out in zip(todo, outs):
            tails[i] = out[: cfg.max_new_tokens - trees[i].depth[n]]
    return [
        Choice(
            tree.generated(n) + tails.get(i, []),
            tree,
            n,
            {"nodes": len(tree), "simulations": tree.visits[ROOT], "branching": branching(tree)},
        )
        for i, (tree, n) in enumerate(zip(trees, finish))
    ]


def mcts(
    backend: Backend,
    prompts: list[list[int]],
    cfg: MCTSConfig,
    value_fn: ValueFn,
    *,
    generator: torch.Generator | None = None,
    trees: list[Tree] | None = None,
    on_round: Callable[[list[Tree]], None] | None = None,
) -> list[SearchResult]:
    """``trees``: resume these (saved) searches instead of starting from the prompts.
    ``generator`` draws the root's Gumbel noise (``cfg.gumbel``). ``on_round(trees)`` runs after
    every simulation round (to checkpoint the trees: a saved tree is a resumable search)."""
    if trees is None:
        trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    elif len(trees) != len(prompts):
        raise ValueError(f"{len(trees)} trees given for {len(prompts)} prompts")
    spent = [int(t.meta.get("tokens", 0)) for t in trees]
    lens = [len(t.prompt_tokens) for t in trees]
    ledger = Ledger(backend, len(trees), budget=cfg.budget, spent=spent, prompt_lens=lens)
    gumbels: list[dict[int, float] | None] = [
        {int(c): g for c, g in t.meta.get("gumbel", {}).items()} if cfg.gumbel else None
        for t in trees
    ]
    done_sims = min(t.visits[ROOT] for t in trees)
    for _ in range(max(0, cfg.simulations - done_sims)):
        active = ledger.open_problems()
        if not active:
            break
        leaves = [(i, _select_leaf(trees[i], gumbels[i], cfg)) for i in active]
        _expand(ledger, trees, gumbels, leaves, cfg, generator)
        values = ledger.value(
            active,
            value_fn,
            [trees[i].prefix(n) for i, n in leaves],
            [not _open(trees[i], n, cfg) for i, n in leaves],
        )
        for (i, n), v in zip(leaves, values):
            _backup(trees[i], n, float(v))
            trees[i].meta["tokens"] = ledger.spent[i]  # kept so that a saved search resumes
            if gumbels[i] is not None:
                trees[i].meta["gumbel"] = {str(c): g for c, g in gumbels[i].items()}
        if on_round is not None:
            on_round(trees)
    return ledger.results(_answer(ledger, trees, gumbels, cfg), algorithm="mcts", config=cfg)
