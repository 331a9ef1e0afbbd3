"""AlphaZero-style PUCT MCTS over reasoning steps, with policy priors and the Q-model's value.

Edges are steps (see steps.py). Each simulation walks down by PUCT, expands the leaf (its children
come from one backbone step plus batched greedy step completions), evaluates the leaf with the
value function (policy-weighted Q), and backs the value up as a running mean. One simulation per
problem per round; all leaves of all problems share each model call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

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


def mcts(
    backend: Backend, prompts: list[list[int]], cfg: MCTSConfig, value_fn: ValueFn
) -> list[SearchResult]:
    t0 = time.perf_counter()
    trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    spent = [0] * len(prompts)
    for _ in range(cfg.simulations):
        active = [i for i in range(len(trees)) if cfg.budget is None or spent[i] < cfg.budget]
        if not active:
            break
        leaves = []
        for i in active:
            node = ROOT
            while trees[i].children[node] and not trees[i].terminal[node]:
                node = puct_child(trees[i], node, cfg.c_puct)
            leaves.append((i, node))
        grow = [
            (i, n)
            for i, n in leaves
            if not trees[i].terminal[n] and trees[i].depth[n] < cfg.max_new_tokens
        ]
        if grow:
            steps, costs, _ = expand_steps(
                backend,
                [trees[i].prefix(n) for i, n in grow],
                k=cfg.expand_k,
                step_tokens=cfg.step_tokens,
                stop=cfg.step_stop,
                room=[cfg.max_new_tokens - trees[i].depth[n] for i, n in grow],
            )
            for (i, n), row_steps, c in zip(grow, steps, costs):
                spent[i] += c
                for st in row_steps:
                    trees[i].add_child(
                        n, st.action, st.tokens, prior=st.prior, terminal=st.terminal
                    )
        done = [trees[i].terminal[n] or trees[i].depth[n] >= cfg.max_new_tokens for i, n in leaves]
        values = value_fn([trees[i].prefix(n) for i, n in leaves], done)
        for (i, _), c in zip(leaves, model_costs(value_fn, len(leaves))):
            spent[i] += c
        for (i, n), v in zip(leaves, values):
            for m in trees[i].path(n):
                trees[i].visits[m] += 1
                trees[i].value[m] += (float(v) - trees[i].value[m]) / trees[i].visits[m]

    results = []
    secs = (time.perf_counter() - t0) / max(1, len(prompts))
    finish = []
    for i, tree in enumerate(trees):
        node = ROOT
        while tree.children[node]:
            node = max(
                set(tree.children[node].values()), key=lambda c: (tree.visits[c], tree.value[c])
            )
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
            {"algorithm": "mcts", "tokens": spent[i], "chosen": node, "config": dict(cfg.__dict__)}
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
