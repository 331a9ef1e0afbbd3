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
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .backend import Backend
from .result import SearchResult
from .scorers import ValueFn, model_costs
from .steps import expand_steps
from .tree import ROOT, Tree


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

    def __post_init__(self) -> None:
        if self.simulations < 1 or self.expand_k < 1:
            raise ValueError("simulations and expand_k must be >= 1")
        if self.c_puct < 0 or self.step_tokens < 0 or self.max_new_tokens < 1:
            raise ValueError("c_puct, step_tokens must be >= 0 and max_new_tokens >= 1")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget={self.budget} must be >= 1")


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
    t0 = time.perf_counter()
    if trees is None:
        trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    elif len(trees) != len(prompts):
        raise ValueError(f"{len(trees)} trees given for {len(prompts)} prompts")
    spent = [int(t.meta.get("tokens", 0)) for t in trees]
    gumbels: list[dict[int, float] | None] = [
        {int(c): g for c, g in t.meta.get("gumbel", {}).items()} if cfg.gumbel else None
        for t in trees
    ]
    done_sims = min(t.visits[ROOT] for t in trees)
    for _ in range(max(0, cfg.simulations - done_sims)):
        active = [i for i in range(len(trees)) if cfg.budget is None or spent[i] < cfg.budget]
        if not active:
            break
        leaves = []
        for i in active:
            node = ROOT
            while trees[i].children[node] and not trees[i].terminal[node]:
                g = gumbels[i]
                node = (
                    gumbel_root_child(trees[i], g, cfg)
                    if node == ROOT and g is not None
                    else puct_child(trees[i], node, cfg.c_puct)
                )
            leaves.append((i, node))
        grow = [
            (i, n)
            for i, n in leaves
            if not trees[i].terminal[n] and trees[i].depth[n] < cfg.max_new_tokens
        ]
        if grow:
            noise = None
            if cfg.gumbel:  # Gumbel(0, 1) noise on root rows only: Gumbel-top-k sampling
                noise = torch.zeros(len(grow), backend.n_actions)
                for r, (_, n) in enumerate(grow):
                    if n == ROOT:
                        u = torch.rand(backend.n_actions, generator=generator)
                        noise[r] = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
            steps, costs, _ = expand_steps(
                backend,
                [trees[i].prefix(n) for i, n in grow],
                k=cfg.expand_k,
                step_tokens=cfg.step_tokens,
                stop=cfg.step_stop,
                room=[cfg.max_new_tokens - trees[i].depth[n] for i, n in grow],
                noise=noise,
            )
            for (i, n), row_steps, c in zip(grow, steps, costs):
                spent[i] += c
                for st in row_steps:
                    child = trees[i].add_child(
                        n, st.action, st.tokens, prior=st.prior, terminal=st.terminal
                    )
                    if n == ROOT and gumbels[i] is not None:
                        gumbels[i][child] = st.gumbel
        done = [trees[i].terminal[n] or trees[i].depth[n] >= cfg.max_new_tokens for i, n in leaves]
        values = value_fn([trees[i].prefix(n) for i, n in leaves], done)
        for (i, _), c in zip(leaves, model_costs(value_fn, len(leaves))):
            spent[i] += c
        for (i, n), v in zip(leaves, values):
            for m in trees[i].path(n):
                trees[i].visits[m] += 1
                trees[i].value[m] += (float(v) - trees[i].value[m]) / trees[i].visits[m]
        for i, _ in leaves:  # kept in the tree so that a saved search resumes exactly
            trees[i].meta["tokens"] = spent[i]
            if gumbels[i] is not None:
                trees[i].meta["gumbel"] = {str(c): g for c, g in gumbels[i].items()}
        if on_round is not None:
            on_round(trees)

    results = []
    secs = (time.perf_counter() - t0) / max(1, len(prompts))
    finish = []
    for i, tree in enumerate(trees):
        node = ROOT
        while tree.children[node]:
            node = _final_child(tree, node, gumbels[i], cfg)
        finish.append((i, node))
    todo = [
        (i, n)
        for i, n in finish
        if not trees[i].terminal[n] and trees[i].depth[n] < cfg.max_new_tokens
    ]
    tails = {}
    if todo:
        outs = backend.rollout(
            [trees[i].prefix(n) for i, n in todo],
            cfg.max_new_tokens - min(trees[i].depth[n] for i, n in todo),
            sample=False,
        )
        for (i, n), out, c in zip(todo, outs, backend.last_costs):
            tails[i] = out[: cfg.max_new_tokens - trees[i].depth[n]]
            spent[i] += c
    for (i, node), tree in zip(finish, trees):
        tokens = tree.generated(node) + tails.get(i, [])
        tree.meta.update(
            {
                "algorithm": "mcts",
                "tokens": spent[i],
                "chosen": node,
                "config": dict(cfg.__dict__),
            }
        )
        results.append(
            SearchResult(
                tokens=tokens,
                text=backend.decode(tokens),
                tree=tree,
                tokens_used=spent[i],
                seconds=secs,
                stats={"nodes": len(tree), "simulations": tree.visits[ROOT]},
            )
        )
    return results
