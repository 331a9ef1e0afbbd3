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
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .ledger import Choice, Ledger
from .tree import ROOT, Tree
from .types import Backend, Scorer, SearchResult


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


def _rollout_and_score(ledger: Ledger, trees, items, cfg: MCTSQConfig, scorer: Scorer) -> None:
    """Greedy rollouts of new nodes (trees[i], node n), then the scorer on each, in one batch."""
    todo = [(i, n) for i, n in items if not trees[i].terminal[n]]
    outs = ledger.rollout(
        [i for i, _ in todo],
        [trees[i].prefix(n) for i, n in todo],
        cfg.rollout_tokens,
        sample=False,
    )
    for (i, n), out in zip(todo, outs):
        trees[i].rollout[n] = out
    for i, n in items:
        if trees[i].rollout[n] is None:
            trees[i].rollout[n] = []
    seqs = [trees[i].prefix(n) + trees[i].rollout[n] for i, n in items]
    for (i, n), s in zip(items, ledger.score([i for i, _ in items], scorer, seqs)):
        trees[i].reward[n] = float(s)


def _untried(tree: Tree, node: int, order: list[int], m: int) -> list[int]:
    """The policy's next-best m actions not yet tried at ``node``."""
    tried = tree.children[node]
    return [a for a in order if a not in tried][:m]


def _expand(ledger: Ledger, trees, selected, cfg: MCTSQConfig) -> list[tuple[int, int]]:
    """New children of each selected node: its next-best untried actions, all decoded from the
    node's one state, a child per distinct token up to the node's width. Returns (tree, child)."""
    owners = [i for i, _ in selected]
    prefixes = [trees[i].prefix(n) for i, n in selected]
    prior = ledger.prior(owners, prefixes)
    probs = prior.logits.float().softmax(-1)  # [B, A]
    order = prior.logits.float().argsort(-1, descending=True).tolist()  # [B, A]
    cand = [_untried(trees[i], n, order[r], cfg.candidates) for r, (i, n) in enumerate(selected)]
    width = max(len(c) for c in cand)
    acts = torch.tensor([c + [c[-1]] * (width - len(c)) for c in cand])  # [B, m]
    toks = ledger.expand(owners, prefixes, acts)  # [B, m]
    new = []
    for row, (i, n) in enumerate(selected):
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
            eos = t == ledger.backend.eos_id
            have[(t,)] = tree.add_child(n, a, [t], prior=float(probs[row, a]), q=q, terminal=eos)
            new.append((i, have[(t,)]))
    return new


def _macro_steps(ledger: Ledger, trees, new, cfg: MCTSQConfig) -> None:
    """Stretch each new child whose Q is confident (squared TD error below the threshold) by
    up to ``macro_tokens`` greedy tokens."""
    live = [(i, c) for i, c in new if not trees[i].terminal[c] and trees[i].q[c] is not None]
    if not live or cfg.macro_tokens <= 0:
        return
    child_prior = ledger.prior([i for i, _ in live], [trees[i].prefix(c) for i, c in live])
    confident = [
        (i, c)
        for k, (i, c) in enumerate(live)
        if (trees[i].q[c] - cfg.gamma * float(child_prior.q[k].max())) ** 2 < cfg.td_threshold
        and trees[i].depth[c] < cfg.max_depth
    ]
    outs = ledger.rollout(
        [i for i, _ in confident],
        [trees[i].prefix(c) for i, c in confident],
        cfg.macro_tokens,
        sample=False,
    )
    eos = ledger.backend.eos_id
    for (i, c), ext in zip(confident, outs):
        # Deviation: the chunk's prior stays the first action's probability
        # (the reference averages the policy probability over the chunk).
        trees[i].tokens[c] += ext
        trees[i].depth[c] += len(ext)
        trees[i].terminal[c] = bool(ext) and ext[-1] == eos


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
    trees = trees or [Tree(prompt_tokens=list(p)) for p in prompts]
    ledger = Ledger(
        backend,
        len(trees),
        budget=cfg.budget,
        spent=[int(t.meta.get("tokens", 0)) for t in trees],
        prompt_lens=[len(t.prompt_tokens) for t in trees],
    )
    fresh = [(i, ROOT) for i, t in enumerate(trees) if t.reward[ROOT] is None]
    if fresh:
        _rollout_and_score(ledger, trees, fresh, cfg, scorer)
        for i, _ in fresh:
            backup(trees[i], ROOT, cfg.gamma)
    start_round = min(int(t.meta.get("rounds", 0)) for t in trees)
    for rnd in range(start_round, cfg.rounds):
        selected = [(i, select(trees[i], cfg, backend.n_actions)) for i in ledger.open_problems()]
        selected = [(i, n) for i, n in selected if n is not None]
        if not selected:
            break
        new = _expand(ledger, trees, selected, cfg)
        _macro_steps(ledger, trees, new, cfg)
        _rollout_and_score(ledger, trees, new, cfg, scorer)
        for i, c in new:
            backup(trees[i], c, cfg.gamma)
        for i, t in enumerate(trees):
            t.meta["rounds"] = rnd + 1
            t.meta["tokens"] = ledger.spent[i]  # kept so that a saved search resumes
        if on_round is not None:
            on_round(trees)
    choices = []
    for tree in trees:
        node, tokens = final_choice(tree)
        stats = {"nodes": len(tree), "rounds": tree.meta.get("rounds", 0)}
        choices.append(Choice(tokens, tree, node, stats))
    return ledger.results(choices, algorithm="mcts-q", config=cfg, scorer=scorer)
