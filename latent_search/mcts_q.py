"""MCTS-Q, the reference's search (CoLA paper, section 6 of the reference digest), batched.

Per round, every active problem selects one node (global best-first over expandable nodes by
V + c * p_bar * sqrt(N_parent) / (N + 1)), expands it to b children with the policy's next-best
untried actions, stretches a child into a macro-step when the Q-model is confident (squared TD
error below a threshold), rolls every new child out greedily, scores the rollout, and backs up
q(a) = (R_child - R_node) + gamma * V_child as a visit-weighted mean. All model work of a round
is one batched backend call per phase across problems: the reference runs one node per call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .backend import Backend
from .result import Scorer, SearchResult, is_oracle
from .scorers import model_costs
from .tree import ROOT, Tree


@dataclass(frozen=True)
class MCTSQConfig:
    rounds: int = 128
    """Selection rounds T (reference math script: 128)."""
    c_puct: float = 0.7
    gamma: float = 0.99
    b_root: int = 4
    """Children of the root (reference math script: 4)."""
    b_other: int = 2
    """Children of other nodes (reference math script: 2)."""
    max_depth: int = 256
    """Depth D in generated tokens."""
    td_threshold: float = 0.01
    macro_tokens: int = 64
    rollout_tokens: int = 1024
    candidates: int = 8
    """Actions decoded at once when looking for b children with distinct tokens. Deviation: the
    reference takes actions one by one and keeps duplicates (64 actions map to a few tokens)."""
    budget: int | None = None
    """Model tokens per problem; a problem stops searching once it has spent this many."""

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, f"rounds={self.rounds} must be >= 1"),
            (self.c_puct >= 0, f"c_puct={self.c_puct} must be >= 0"),
            (0 < self.gamma <= 1, f"gamma={self.gamma} must be in (0, 1]"),
            (self.b_root >= 1 and self.b_other >= 1, "b_root and b_other must be >= 1"),
            (self.max_depth >= 1, f"max_depth={self.max_depth} must be >= 1"),
            (self.rollout_tokens >= 1, f"rollout_tokens={self.rollout_tokens} must be >= 1"),
            (self.candidates >= 1, f"candidates={self.candidates} must be >= 1"),
            (self.budget is None or self.budget >= 1, f"budget={self.budget} must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


def _width(cfg: MCTSQConfig, node: int) -> int:
    return cfg.b_root if node == ROOT else cfg.b_other


def _distinct_children(tree: Tree, node: int) -> list[int]:
    return sorted(set(tree.children[node].values()))


def _expandable(tree: Tree, node: int, cfg: MCTSQConfig, n_actions: int) -> bool:
    return (
        not tree.terminal[node]
        and tree.depth[node] < cfg.max_depth
        and len(_distinct_children(tree, node)) < _width(cfg, node)
        and len(tree.children[node]) < n_actions
    )


def select(tree: Tree, cfg: MCTSQConfig, n_actions: int) -> int | None:
    """Best-first over all expandable nodes (reference's global PUCT-like rule)."""
    best, best_score = None, -math.inf
    for n in range(len(tree)):
        if not _expandable(tree, n, cfg, n_actions):
            continue
        parent_visits = tree.visits[tree.parent[n]] if n != ROOT else tree.visits[n]
        score = tree.value[n] + cfg.c_puct * tree.prior[n] * math.sqrt(parent_visits) / (
            tree.visits[n] + 1
        )
        if score > best_score:
            best, best_score = n, score
    return best


def backup(tree: Tree, leaf: int, gamma: float) -> None:
    """Visits +1 along the path; internal values = visit-weighted mean of (R_c - R_n) + gamma V_c."""
    tree.value[leaf] = tree.reward[leaf] or 0.0
    for n in reversed(tree.path(leaf)):
        tree.visits[n] += 1
        kids = _distinct_children(tree, n)
        if not kids:
            continue
        weights = [tree.visits[c] for c in kids]
        if sum(weights) == 0:
            continue
        r_n = tree.reward[n] or 0.0
        qs = [((tree.reward[c] or 0.0) - r_n) + gamma * tree.value[c] for c in kids]
        tree.value[n] = sum(w * q for w, q in zip(weights, qs)) / sum(weights)


def final_choice(tree: Tree) -> tuple[int, list[int]]:
    """Reference rule: the best-valued terminal node if its value >= the best rollout reward,
    else the best-reward rollout. Returns (node, generated tokens)."""
    scored = [n for n in range(len(tree)) if tree.reward[n] is not None]
    best_roll = max(scored, key=lambda n: tree.reward[n])
    terminals = [n for n in range(len(tree)) if tree.terminal[n]]
    if terminals:
        best_term = max(terminals, key=lambda n: tree.value[n])
        if tree.value[best_term] >= tree.reward[best_roll]:
            return best_term, tree.generated(best_term)
    return best_roll, tree.generated(best_roll) + (tree.rollout[best_roll] or [])


def mcts_q(
    backend: Backend,
    prompts: list[list[int]],
    cfg: MCTSQConfig,
    scorer: Scorer,
    *,
    trees: list[Tree] | None = None,
    on_round: Callable[[list[Tree]], None] | None = None,
) -> list[SearchResult]:
    """Run MCTS-Q on every prompt in lockstep. ``trees`` resumes saved searches;
    ``on_round(trees)`` runs after every round (to checkpoint them)."""
    t0 = time.perf_counter()
    trees = trees or [Tree(prompt_tokens=list(p)) for p in prompts]
    spent = [int(t.meta.get("tokens", 0)) for t in trees]
    eos = backend.eos_id

    def rollout_and_score(items: list[tuple[int, int]]) -> None:
        """Greedy rollouts for new nodes (trees[i], node n), scored in one batch."""
        todo = [(i, n) for i, n in items if not trees[i].terminal[n]]
        if todo:
            prefixes = [trees[i].prefix(n) for i, n in todo]
            limits = [cfg.rollout_tokens for _ in todo]
            outs = backend.rollout(prefixes, max(limits), sample=False)
            for (i, n), out, c in zip(todo, outs, backend.last_costs):
                trees[i].rollout[n] = out
                spent[i] += c
        for i, n in items:
            if trees[i].rollout[n] is None:
                trees[i].rollout[n] = []
        scores = scorer([trees[i].prefix(n) + trees[i].rollout[n] for i, n in items])
        for (i, _), c in zip(items, model_costs(scorer, len(items))):
            spent[i] += c
        for (i, n), s in zip(items, scores):
            trees[i].reward[n] = float(s)

    fresh = [(i, ROOT) for i, t in enumerate(trees) if t.reward[ROOT] is None]
    if fresh:
        rollout_and_score(fresh)
        for i, _ in fresh:
            backup(trees[i], ROOT, cfg.gamma)

    start_round = min(int(t.meta.get("rounds", 0)) for t in trees)
    for rnd in range(start_round, cfg.rounds):
        active = [
            (i, select(trees[i], cfg, backend.n_actions))
            for i in range(len(trees))
            if cfg.budget is None or spent[i] < cfg.budget
        ]
        active = [(i, n) for i, n in active if n is not None]
        if not active:
            break
        # -- expansion: next-best untried actions of each selected node, from one state each
        prior = backend.prior([trees[i].prefix(n) for i, n in active])
        for (i, _), c in zip(active, backend.last_costs):
            spent[i] += c
        probs = prior.logits.float().softmax(-1)  # [B, A]
        order = prior.logits.float().argsort(-1, descending=True)  # [B, A]
        cand = []
        for row, (i, n) in enumerate(active):
            tried = trees[i].children[n]
            cand.append([int(a) for a in order[row] if int(a) not in tried][: cfg.candidates])
        width = max(len(c) for c in cand)
        acts = torch.tensor([c + [c[-1]] * (width - len(c)) for c in cand])  # [B, m]
        toks = backend.expand([trees[i].prefix(n) for i, n in active], acts)  # [B, m]
        new: list[tuple[int, int, int]] = []  # (tree, child, row)
        for row, (i, n) in enumerate(active):
            tree = trees[i]
            have = {tuple(tree.tokens[c]): c for c in _distinct_children(tree, n)}
            for j, a in enumerate(cand[row]):
                t = int(toks[row, j])
                if (t,) in have:  # same token as a sibling: record the action as tried
                    tree.children[n][a] = have[(t,)]
                    continue
                if len(have) >= _width(cfg, n):
                    break
                q = None if prior.q is None else float(prior.q[row, a])
                child = tree.add_child(
                    n, a, [t], prior=float(probs[row, a]), q=q, terminal=t == eos
                )
                have[(t,)] = child
                new.append((i, child, row))
        # -- macro-steps where the Q-model is confident about the new state
        if new and prior.q is not None and cfg.macro_tokens > 0:
            live = [(i, c) for i, c, _ in new if not trees[i].terminal[c]]
            if live:
                child_prior = backend.prior([trees[i].prefix(c) for i, c in live])
                for (i, _), cost in zip(live, backend.last_costs):
                    spent[i] += cost
                confident = []
                for k, (i, c) in enumerate(live):
                    td = (trees[i].q[c] - cfg.gamma * float(child_prior.q[k].max())) ** 2
                    if td < cfg.td_threshold and trees[i].depth[c] < cfg.max_depth:
                        confident.append((i, c))
                if confident:
                    outs = backend.rollout(
                        [trees[i].prefix(c) for i, c in confident], cfg.macro_tokens, sample=False
                    )
                    for (i, c), ext, cost in zip(confident, outs, backend.last_costs):
                        spent[i] += cost
                        # Deviation: the chunk's prior stays the first action's probability
                        # (the reference averages the policy probability over the chunk).
                        trees[i].tokens[c] += ext
                        trees[i].depth[c] += len(ext)
                        trees[i].terminal[c] = bool(ext) and ext[-1] == eos
        # -- rollouts, scores, backup
        rollout_and_score([(i, c) for i, c, _ in new])
        for i, c, _ in new:
            backup(trees[i], c, cfg.gamma)
        for t in trees:
            t.meta["rounds"] = rnd + 1
        if on_round is not None:
            on_round(trees)

    results = []
    seconds = time.perf_counter() - t0
    for i, tree in enumerate(trees):
        node, tokens = final_choice(tree)
        tree.meta.update(
            {
                "algorithm": "mcts-q",
                "tokens": spent[i],
                "oracle": is_oracle(scorer),
                "chosen": node,
                "config": cfg.__dict__,
            }
        )
        results.append(
            SearchResult(
                tokens=tokens,
                text=backend.decode(tokens),
                tree=tree,
                tokens_used=spent[i],
                seconds=seconds / len(trees),
                stats={"nodes": len(tree), "rounds": tree.meta["rounds"]},
            )
        )
    return results
