"""MCTS-Q, the reference's search (CoLA paper, section 6 of the reference digest), batched.

Per round, every active problem selects one node (global best-first over expandable nodes by
V + c * p_bar * sqrt(N_parent) / (N + 1)), expands it to b children with the policy's next-best
untried actions, stretches a child into a macro-step when the Q-model is confident (squared TD
error below a threshold), rolls every new child out greedily, scores the rollout, and backs up
q(a) = (R_child - R_node) + gamma * V_child as a visit-weighted mean. All model work of a round
is batched across problems (latent_search.schedule): the reference runs one node per call.
Each problem's search is a coroutine of model calls, so a problem whose round needed no rollout
does not wait for the others' rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cola_models.errors import ColaError

from .ledger import Choice, Ledger
from .schedule import Ask, drive
from .tree import ROOT, Tree
from .types import Backend, Scorer, SearchResult, ValueFn


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
    walk: bool = False
    """False: the reference's children, stretched into macro-steps and rolled out greedily
    outside the tree. True (``--step-candidates token``): each new child is walked greedily
    inside the tree, a node per token, valued by the search's value function at every token (the walk stops when
    that value falls); its positions are nodes a later round can expand, so the search can
    branch at the very token where the policy erred. Deviation: the reference has no walks."""

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
                raise ColaError(msg)


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


def best_finished(tree: Tree) -> int | None:
    """The finished node the judge values best, ties to the likelier path (token walks)."""
    done = [n for n in range(len(tree)) if tree.terminal[n] and tree.reward[n] is not None]

    def logp(n: int) -> float:
        return sum(math.log(max(tree.prior[m], 1e-30)) for m in tree.path(n)[1:])

    return max(done, key=lambda n: (tree.reward[n], logp(n))) if done else None


def _walk_and_score(tree: Tree, nodes: list[int], cfg: MCTSQConfig, eos: int | None):
    """Walk each new node greedily inside the tree (the policy's top action, a node per token)
    until its text ends or the value falls below the node's own; every node of a walk gets the
    walk's last value as its rollout score (its greedy rollout is the rest of the walk). Returns
    the walks' last nodes."""
    values = yield Ask(
        "value", [tree.prefix(n) for n in nodes], done=[tree.terminal[n] for n in nodes]
    )
    start = {n: float(v) for n, v in zip(nodes, values)}
    walks = {n: [n] for n in nodes}
    active = [n for n in nodes if not tree.terminal[n] and tree.depth[n] < cfg.max_depth]
    while active:
        prior = yield Ask("prior", [tree.prefix(walks[n][-1]) for n in active])
        probs = prior.logits.float().softmax(-1)  # [B, A]
        top = probs.argmax(-1, keepdim=True)  # [B, 1]
        toks = yield Ask("expand", [tree.prefix(walks[n][-1]) for n in active], actions=top)
        rows = zip(
            active, top[:, 0].tolist(), probs.gather(-1, top)[:, 0].tolist(), toks[:, 0].tolist()
        )
        new = []
        for n, a, p, t in rows:
            at = walks[n][-1]
            done = t == eos or tree.depth[at] + 1 >= cfg.max_depth
            walks[n].append(tree.add_child(at, a, [t], prior=p, terminal=done))
            new.append(n)
        values = yield Ask(
            "value",
            [tree.prefix(walks[n][-1]) for n in new],
            done=[tree.terminal[walks[n][-1]] for n in new],
        )
        active = []
        for n, v in zip(new, values):
            last = walks[n][-1]
            start[last] = float(v)
            if float(v) >= start[n] and not tree.terminal[last]:
                active.append(n)
    for path in walks.values():
        for m in path:
            tree.reward[m] = start[path[-1]]
            tree.rollout[m] = []
    return [path[-1] for path in walks.values()]


def _rollout_and_score(tree: Tree, nodes: list[int], cfg: MCTSQConfig):
    """Greedy rollouts of new nodes, then the scorer on each."""
    if not nodes:
        return
    todo = [n for n in nodes if not tree.terminal[n]]
    if todo:
        outs = yield Ask(
            "rollout", [tree.prefix(n) for n in todo], max_new_tokens=cfg.rollout_tokens
        )
        for n, out in zip(todo, outs):
            tree.rollout[n] = out
    for n in nodes:
        if tree.rollout[n] is None:
            tree.rollout[n] = []
    scores = yield Ask("score", [tree.prefix(n) + tree.rollout[n] for n in nodes])
    for n, s in zip(nodes, scores):
        tree.reward[n] = float(s)


def _untried(tree: Tree, node: int, order: list[int], m: int) -> list[int]:
    """The policy's next-best m actions not yet tried at ``node``."""
    tried = tree.children[node]
    return [a for a in order if a not in tried][:m]


def _expand(tree: Tree, node: int, cfg: MCTSQConfig, eos: int | None):
    """New children of the selected node: its next-best untried actions, all decoded from the
    node's one state, a child per distinct token up to the node's width. Returns the children."""
    prefix = tree.prefix(node)
    prior = yield Ask("prior", [prefix])
    probs = prior.logits[0].float().softmax(-1).tolist()  # [A]
    order = prior.logits[0].float().argsort(descending=True).tolist()  # [A]
    q_row = None if prior.q is None else prior.q[0].tolist()  # [A]
    cand = _untried(tree, node, order, cfg.candidates)
    # host: the ledger brings priors to the CPU, the backend takes actions to its device.
    toks = yield Ask("expand", [prefix], actions=torch.tensor([cand]))  # [1, m]
    toks = toks[0].tolist()  # [m]
    have = {tuple(tree.tokens[c]): c for c in _distinct_children(tree, node)}
    new = []
    for j, a in enumerate(cand):
        t = toks[j]
        if (t,) in have:  # same token as a sibling: record the action as tried
            tree.children[node][a] = have[(t,)]
            continue
        if len(have) >= _width(cfg, node):
            break
        q = None if q_row is None else q_row[a]
        have[(t,)] = tree.add_child(node, a, [t], prior=probs[a], q=q, terminal=t == eos)
        new.append(have[(t,)])
    return new


def _macro_steps(tree: Tree, new: list[int], cfg: MCTSQConfig, eos: int | None):
    """Stretch each new child whose Q is confident (squared TD error below the threshold) by
    up to ``macro_tokens`` greedy tokens."""
    live = [c for c in new if not tree.terminal[c] and tree.q[c] is not None]
    if not live or cfg.macro_tokens <= 0:
        return
    child_prior = yield Ask("prior", [tree.prefix(c) for c in live])
    q_next = child_prior.q.max(-1).values.tolist()  # [len(live)]
    confident = [
        c
        for k, c in enumerate(live)
        if (tree.q[c] - cfg.gamma * q_next[k]) ** 2 < cfg.td_threshold
        and tree.depth[c] < cfg.max_depth
    ]
    if not confident:
        return
    outs = yield Ask(
        "rollout", [tree.prefix(c) for c in confident], max_new_tokens=cfg.macro_tokens
    )
    for c, ext in zip(confident, outs):
        # Deviation: the chunk's prior stays the first action's probability
        # (the reference averages the policy probability over the chunk).
        tree.tokens[c] += ext
        tree.depth[c] += len(ext)
        tree.terminal[c] = bool(ext) and ext[-1] == eos


def _search(i: int, tree: Tree, cfg: MCTSQConfig, ledger: Ledger, n_actions: int):
    """MCTS-Q on problem i, as a coroutine of model calls (see latent_search.schedule)."""
    eos = ledger.backend.eos_id
    if tree.reward[ROOT] is None:
        yield from _rollout_and_score(tree, [ROOT], cfg)
        backup(tree, ROOT, cfg.gamma)
    for rnd in range(int(tree.meta.get("rounds", 0)), cfg.rounds):
        node = select(tree, cfg, n_actions) if ledger.open(i) else None
        if node is None:
            return
        new = yield from _expand(tree, node, cfg, eos)
        if cfg.walk:
            for end in (yield from _walk_and_score(tree, new, cfg, eos)):
                backup(tree, end, cfg.gamma)
        else:
            yield from _macro_steps(tree, new, cfg, eos)
            yield from _rollout_and_score(tree, new, cfg)
            for c in new:
                backup(tree, c, cfg.gamma)
        tree.meta["rounds"] = rnd + 1
        tree.meta["tokens"] = ledger.spent[i]  # kept so that a saved search resumes
        yield Ask("round")


def mcts_q(
    backend: Backend,
    prompts: list[list[int]],
    cfg: MCTSQConfig,
    scorer: Scorer,
    *,
    value_fn: ValueFn | None = None,
    trees: list[Tree] | None = None,
    on_round: Callable[[list[Tree]], None] | None = None,
) -> list[SearchResult]:
    """Run MCTS-Q on every prompt, model calls batched across problems (see
    latent_search.schedule). ``trees`` resumes saved searches; ``on_round(trees)`` runs whenever
    every problem has finished a round (to checkpoint them: the problems then keep in step)."""
    trees = trees or [Tree(prompt_tokens=list(p)) for p in prompts]
    ledger = Ledger(
        backend,
        len(trees),
        budget=cfg.budget,
        spent=[int(t.meta.get("tokens", 0)) for t in trees],
        prompt_lens=[len(t.prompt_tokens) for t in trees],
    )
    n_actions = backend.n_actions
    searches = {i: _search(i, t, cfg, ledger, n_actions) for i, t in enumerate(trees)}
    if cfg.walk and value_fn is None:
        raise ColaError("mcts-q over token candidates needs a value function of partial texts")
    drive(
        ledger,
        searches,
        scorer=scorer,
        value_fn=value_fn,
        on_round=None if on_round is None else lambda: on_round(trees),
    )
    choices = []
    for tree in trees:
        best = best_finished(tree) if cfg.walk else None
        node, tokens = (best, tree.generated(best)) if best is not None else final_choice(tree)
        stats = {"nodes": len(tree), "rounds": tree.meta.get("rounds", 0)}
        choices.append(Choice(tokens, tree, node, stats))
    return ledger.results(choices, algorithm="mcts-q", config=cfg, scorer=scorer)
