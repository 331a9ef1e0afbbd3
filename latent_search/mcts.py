"""AlphaZero-style PUCT MCTS over reasoning steps or single tokens, valued by the search's judge.

One simulation, for one problem:
1. Selection: walk down from the root by PUCT, argmax_c Q(c) + c_puct P(c) sqrt(N) / (1 + N(c)),
   to a node not yet expanded (or a finished one). P is the edge's policy probability (the
   summed probability of the actions merged into it), Q the mean value backed up through the
   child; a child no simulation has passed yet is worth its parent's mean, or the judge's
   value of its own text when that is lower (the judge values every child when it is made).
2. Expansion and walk: the leaf is expanded (its child steps proposed as in steps.py, every
   child valued by the judge), then the walk goes on into its likeliest child and expands that,
   and so on, until the text is finished (EOS or the length cap), or the judge's value falls
   below the value where the walk started (an error has just shown: no use writing on). The
   walk is the reference's greedy rollout, kept in the tree: every position it passes keeps its
   other children, so a later simulation can branch at the very token where the policy erred.
   Deviation: the reference rolls out outside the tree and keeps only the rollout's score.
3. Evaluation and backup: the judge's value of the walk's last node (a finished text is judged
   as finished) is added to the running mean of every node from the root to there. With a
   fault-finding judge (``aggregate="min"``: the equation check) a node's value is the lowest
   the judge gave its text on the way from the root, and a faulted node is closed, as is a
   finished one once visited: nothing below them can score better, so selection skips them,
   and a search whose every node is closed ends before its budget.

A node whose expansion proposes a single child (every action wrote the same token: a forced
token) is not given a child: its own edge grows by that token (chain collapsing), so the tree
holds the points where the policy hesitates, not a node per token, and the viewer shows a chain
as one edge.

Simulations run ``parallel`` at a time per problem (virtual loss: a node on an earlier pick's
path counts as visited and worthless until the wave is backed up), so one model call holds that
many rows per problem; every problem runs free on the scheduler (latent_search.schedule). The
answer is the finished text with the best judge's value, ties to the likelier (as the beam's
pool); with no finished text, the most visited path finished greedily.

``gumbel=True`` switches the root to Gumbel selection (Danihelka et al., ICLR 2022): the root's
children are k actions sampled without replacement by Gumbel-top-k, simulations are spread over
them by sequential halving on g(a) + log pi(a) + sigma(q(a)). Below the root, selection stays PUCT.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cola_models.errors import ColaError

from .ledger import Choice, Ledger
from .schedule import Ask, drive
from .steps import CANDIDATES, STEP_STOP, Proposal, branching, propose
from .tree import ROOT, Tree
from .types import Backend, SearchResult, ValueFn

AGGREGATES = ("last", "min")


@dataclass(frozen=True)
class MCTSConfig:
    simulations: int = 32
    c_puct: float = 1.0
    expand_k: int = 4
    step_tokens: int = 48
    step_stop: tuple[str, ...] = STEP_STOP
    max_new_tokens: int = 256
    budget: int | None = None
    gumbel: bool = False
    """Gumbel root selection (sequential halving) instead of PUCT at the root."""
    c_visit: float = 50.0
    c_scale: float = 0.1
    """sigma(q) = (c_visit + max_b N(b)) * c_scale * q, the Gumbel paper's monotone transform."""
    candidates: str = "first-token"
    """How a node's child steps are proposed: "first-token", "sampled" or "token" (steps.py)."""
    parallel: int = 8
    """Simulations in flight per problem (virtual loss), so each model call batches them."""
    walk: bool = True
    """Go on from an expanded leaf into its likeliest child until the text ends or the judge's
    value falls (False: AlphaZero's one expansion per simulation, the leaf's own value)."""
    collapse: bool = True
    """A forced token (a node's only child) extends the node's edge instead of adding a node."""
    aggregate: str = "last"
    """A node's value from the judge's values along its path: "last" (its own text's value: a
    value estimate, as Q or a verifier) or "min" (the lowest on the way: a judge that finds
    faults, as the equation check, whose partial texts score 1 until a fault shows; a fault
    once found stays found, as process rewards are aggregated by their min over steps)."""

    def __post_init__(self) -> None:
        checks = [
            (self.simulations >= 1 and self.expand_k >= 1, "simulations and expand_k must be >= 1"),
            (self.parallel >= 1, f"parallel={self.parallel} must be >= 1"),
            (self.aggregate in AGGREGATES, f"aggregate must be one of {', '.join(AGGREGATES)}"),
            (self.c_puct >= 0 and self.step_tokens >= 0, "c_puct and step_tokens must be >= 0"),
            (self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens} must be >= 1"),
            (self.budget is None or self.budget >= 1, f"budget={self.budget} must be >= 1"),
            (
                self.candidates in CANDIDATES,
                f"candidates={self.candidates!r} must be one of {', '.join(CANDIDATES)}",
            ),
            (
                not (self.gumbel and self.candidates == "sampled"),
                "Gumbel root selection samples actions; use first-token or token candidates",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ColaError(msg)


# ---------------------------------------------------------------------------- selection
class _Wave:
    """Visits of the simulations picked so far in this wave (virtual losses: worth 0), and the
    closed nodes: nothing is left to learn below them."""

    def __init__(self, tree: Tree, closed: set[int]) -> None:
        self.tree = tree
        self.loss: dict[int, int] = defaultdict(int)
        self.closed = closed

    def n(self, node: int) -> int:
        return self.tree.visits[node] + self.loss[node]

    def q(self, node: int) -> float:
        """Backed-up mean (virtual losses count 0). An unvisited node is worth its parent's
        mean (first-play urgency), or its own judged value when that is lower: a partial text
        the judge finds nothing wrong with is not yet right (its error may come later), but one
        it faults is already wrong."""
        t = self.tree
        if self.n(node) == 0:
            parent = t.value[t.parent[node]]
            return parent if t.reward[node] is None else min(t.reward[node], parent)
        return t.value[node] * t.visits[node] / self.n(node)


def _kids(tree: Tree, node: int) -> list[int]:
    return sorted(set(tree.children[node].values()))


def puct_child(wave: _Wave, node: int, c_puct: float) -> int:
    """argmax_c Q(c) + c_puct * P(c) * sqrt(N(node)) / (1 + N(c)) over the open children, P
    normalised over all the children (a node's top-k actions need not hold all the
    probability)."""
    tree, everyone = wave.tree, _kids(wave.tree, node)
    kids = [c for c in everyone if c not in wave.closed]
    total = sum(tree.prior[c] for c in everyone) or 1.0
    sqrt_n = math.sqrt(max(1, wave.n(node)))

    def score(c: int) -> float:
        return wave.q(c) + c_puct * (tree.prior[c] / total) * sqrt_n / (1 + wave.n(c))

    return max(kids, key=score)


@functools.lru_cache(maxsize=64)
def considered_visits(m: int, n: int) -> tuple[int, ...]:
    """Sequential halving schedule: the visit count the root child chosen at simulation i must
    have. m children start; each phase gives every surviving child the same share of the n
    simulations, then halves the survivors (at least 2), as in Gumbel MuZero."""
    if m <= 1:
        return tuple(range(n))
    phases = max(1, math.ceil(math.log2(m)))
    seq: list[int] = []
    visits = [0] * m
    alive = m
    while len(seq) < n:
        for _ in range(max(1, n // (phases * alive))):
            seq += visits[:alive]
            visits[:alive] = [v + 1 for v in visits[:alive]]
        alive = max(2, alive // 2)
    return tuple(seq[:n])


def gumbel_scores(wave: _Wave, gumbel: dict[int, float], cfg: MCTSConfig) -> dict[int, float]:
    """g(a) + log pi(a) + sigma(q(a)) for the root's children; an unvisited child's q is its
    judged value (deviation: mctx completes it with a prior-weighted mix)."""
    tree = wave.tree
    kids = [c for c in _kids(tree, ROOT) if c not in wave.closed]
    scale = (cfg.c_visit + max(wave.n(c) for c in kids)) * cfg.c_scale
    q = {c: wave.q(c) for c in kids}
    lo, hi = min(q.values()), max(q.values())
    span = hi - lo if hi - lo > 1e-8 else 1.0  # min-max rescaled to [0, 1], as mctx does
    return {
        c: gumbel.get(c, 0.0) + math.log(max(tree.prior[c], 1e-12)) + scale * (q[c] - lo) / span
        for c in kids
    }


def gumbel_root_child(wave: _Wave, gumbel: dict[int, float], cfg: MCTSConfig) -> int:
    """The child sequential halving visits next: the best-scored child among those whose visit
    count equals the schedule's target."""
    scores = gumbel_scores(wave, gumbel, cfg)
    kids = list(scores)
    # The first simulation expands the root, so n - 1 selections follow.
    schedule = considered_visits(len(kids), max(1, cfg.simulations - 1))
    done = wave.n(ROOT)
    target = schedule[min(done - 1, len(schedule) - 1)] if done else 0
    pool = [c for c in kids if wave.n(c) == target] or kids
    return max(pool, key=lambda c: scores[c])


def _descend(wave: _Wave, gumbel: dict[int, float] | None, cfg: MCTSConfig) -> int | None:
    """From the root by PUCT (Gumbel's schedule at the root) to a leaf: a node not expanded yet,
    or a finished one not yet visited. None: every node is closed."""
    tree, node = wave.tree, ROOT
    while tree.children[node] and not tree.terminal[node]:
        if all(c in wave.closed for c in tree.children[node].values()):
            return None  # (close() keeps this from happening below the root)
        if node == ROOT and gumbel is not None:
            node = gumbel_root_child(wave, gumbel, cfg)
        else:
            node = puct_child(wave, node, cfg.c_puct)
    return None if node in wave.closed else node


FAULT_DROP = 1e-3
"""A fall in value that marks a fault under "min": far above a tie-breaking judge's weight
(``scorers.TIE_WEIGHT``), far below the smallest fall the equation check makes (one check of a
few dozen failing), so a judge whose ties are broken by another still closes only on faults."""


def _dead(tree: Tree, node: int, cfg: MCTSConfig) -> bool:
    """Nothing is left to learn below ``node``: a finished text already visited (its judge is
    deterministic, so a revisit only repeats its value; deviation: AlphaZero revisits terminal
    states), or, when a fault found stays found ("min"), a text where the judge's value fell:
    every text below it is worth no more, so the fault is pruned."""
    if tree.terminal[node] and tree.visits[node]:
        return True
    up = tree.parent[node]
    return (
        cfg.aggregate == "min"
        and up >= 0
        and tree.reward[node] is not None
        and tree.reward[up] is not None
        and tree.reward[node] < tree.reward[up] - FAULT_DROP
    )


def close(tree: Tree, closed: set[int], nodes: list[int], cfg: MCTSConfig) -> None:
    """Close the dead ones of ``nodes``, then every ancestor whose children are all closed."""
    for node in nodes:
        if not _dead(tree, node, cfg):
            continue
        while node >= 0 and node not in closed:
            kids = tree.children[node].values()
            if not (_dead(tree, node, cfg) or (kids and all(c in closed for c in kids))):
                break
            closed.add(node)
            node = tree.parent[node]


def closed_nodes(tree: Tree, cfg: MCTSConfig) -> set[int]:
    """The closed nodes of a (saved) tree: children come after their parents."""
    closed: set[int] = set()
    for n in reversed(range(len(tree))):
        kids = tree.children[n].values()
        if _dead(tree, n, cfg) or (kids and all(c in closed for c in kids)):
            closed.add(n)
    return closed


def select_wave(tree: Tree, gumbel, cfg: MCTSConfig, n: int, closed: set[int]) -> list[int]:
    """Up to n distinct leaves for this wave's simulations, each picked with the earlier picks'
    paths counted as visited and worthless (virtual loss). A leaf picked again adds its loss
    and the pick is tried again (2n tries in all): the tree may offer fewer than n leaves."""
    wave, leaves = _Wave(tree, set(closed)), []
    for _ in range(2 * n):
        leaf = _descend(wave, gumbel, cfg)
        if leaf is None or len(leaves) == n:
            break
        if leaf not in leaves:
            leaves.append(leaf)
        if tree.terminal[leaf]:  # within the wave, a finished leaf is closed once picked
            wave.closed.add(leaf)
        for m in tree.path(leaf):
            wave.loss[m] += 1
    return leaves


# ---------------------------------------------------------------------------- expansion
def _open(tree: Tree, node: int, cfg: MCTSConfig) -> bool:
    return not tree.terminal[node] and tree.depth[node] < cfg.max_new_tokens


def _root_noise(nodes: list[int], n_actions: int, generator) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, A] on the root's row only (Gumbel-top-k sampling); zero elsewhere."""
    dev = generator.device if generator is not None else "cpu"
    noise = torch.zeros(len(nodes), n_actions)  # host: added to the host prior
    for r, n in enumerate(nodes):
        if n == ROOT:
            u = torch.rand(n_actions, generator=generator, device=dev).cpu()  # sync: once a tree
            noise[r] = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    return noise


def _expand(tree: Tree, nodes: list[int], cfg: MCTSConfig, how: Proposal, gumbel, generator):
    """Expand every node (one batch of proposals), judge each new text; returns, per node, the
    node its walk goes on from: its likeliest child, or itself when a forced token extended it."""
    noise = _root_noise(nodes, how.n_actions, generator) if gumbel is not None else None
    room = [cfg.max_new_tokens - tree.depth[n] for n in nodes]
    steps = yield from propose([tree.prefix(n) for n in nodes], how, room, noise)
    judged, onward = [], []
    for n, row in zip(nodes, steps):
        if cfg.collapse and n != ROOT and len(row) == 1:  # a forced token: the edge grows
            tree.tokens[n] += row[0].tokens
            tree.depth[n] += len(row[0].tokens)
            tree.terminal[n] = row[0].terminal or tree.depth[n] >= cfg.max_new_tokens
            judged.append(n)
            onward.append(n)
            continue
        kids = []
        for st in row:
            done = st.terminal or tree.depth[n] + len(st.tokens) >= cfg.max_new_tokens
            kids.append(tree.add_child(n, st.action, st.tokens, prior=st.prior, terminal=done))
            if n == ROOT and gumbel is not None:
                gumbel[kids[-1]] = st.gumbel
        judged += kids
        onward.append(max(kids, key=lambda c: tree.prior[c]) if kids else n)
    values = yield Ask(
        "value", [tree.prefix(m) for m in judged], done=[tree.terminal[m] for m in judged]
    )
    for m, v in zip(judged, values):
        above = tree.reward[m] if tree.reward[m] is not None else tree.reward[tree.parent[m]]
        low = cfg.aggregate == "min" and above is not None
        tree.reward[m] = min(float(v), above) if low else float(v)
    return onward


def _walk(i: int, tree: Tree, leaves: list[int], cfg: MCTSConfig, ledger: Ledger, how, gumbel,
          generator):  # fmt: skip
    """Expand the wave's leaves and walk on (see the module docstring); returns the node each
    simulation ended at."""
    ends = [n for n in leaves if not _open(tree, n, cfg)]  # finished: valued already
    active = [(n, tree.reward[n]) for n in leaves if _open(tree, n, cfg)]  # (node, start value)
    while active:
        if not ledger.open(i):  # the budget is spent: each simulation ends where it stands
            return ends + [n for n, _ in active]
        onward = yield from _expand(tree, [n for n, _ in active], cfg, how, gumbel, generator)
        going = []
        for (n, start), c in zip(active, onward):
            if not cfg.walk:  # AlphaZero: the expanded leaf's own value
                ends.append(n)
            elif tree.reward[c] < start or not _open(tree, c, cfg):
                ends.append(c)  # an error has shown, or the text is finished
            else:
                going.append((c, start))
        active = going
    return ends


def _new_below(tree: Tree, leaf: int) -> list[int]:
    """The children a wave's expansions made below ``leaf`` (to close the faulted ones)."""
    out, todo = [], [leaf]
    while todo:
        kids = tree.children[todo.pop()].values()
        out += kids
        todo += [c for c in kids if tree.visits[c]]
    return out


def _backup(tree: Tree, end: int, value: float) -> None:
    """Visits +1 and the value's running mean along the root-to-end path."""
    for m in tree.path(end):
        tree.visits[m] += 1
        tree.value[m] += (value - tree.value[m]) / tree.visits[m]


# ---------------------------------------------------------------------------- the answer
def _logp(tree: Tree, node: int) -> float:
    return sum(math.log(max(tree.prior[m], 1e-30)) for m in tree.path(node)[1:])


def _answer(tree: Tree, cfg: MCTSConfig):
    """The finished text the judge values best, ties to the likelier; with none, the most
    visited path finished greedily. Returns (node, generated tokens)."""
    finished = [n for n in range(len(tree)) if tree.terminal[n] and tree.reward[n] is not None]
    if finished:
        best = max(finished, key=lambda n: (tree.reward[n], _logp(tree, n)))
        return best, tree.generated(best)
    node = ROOT
    while tree.children[node]:
        node = max(_kids(tree, node), key=lambda c: (tree.visits[c], tree.value[c]))
    tail: list[int] = []
    if _open(tree, node, cfg):
        (tail,) = yield Ask(
            "rollout", [tree.prefix(node)], max_new_tokens=cfg.max_new_tokens - tree.depth[node]
        )
    return node, tree.generated(node) + tail


def _search(i: int, tree: Tree, gumbel, cfg: MCTSConfig, ledger: Ledger, how, generator):
    """MCTS on problem i, as a coroutine of model calls (see latent_search.schedule)."""
    if tree.reward[ROOT] is None:
        (v,) = yield Ask("value", [tree.prefix(ROOT)], done=[False])
        tree.reward[ROOT] = float(v)
    closed = closed_nodes(tree, cfg)
    while tree.visits[ROOT] < cfg.simulations and ledger.open(i):
        want = min(cfg.parallel, cfg.simulations - tree.visits[ROOT])
        leaves = select_wave(tree, gumbel, cfg, want, closed)
        if not leaves:  # every finished text has been visited: nothing is left to search
            break
        ends = yield from _walk(i, tree, leaves, cfg, ledger, how, gumbel, generator)
        for end in ends:
            _backup(tree, end, tree.reward[end])
        close(tree, closed, [m for leaf in leaves for m in _new_below(tree, leaf)] + ends, cfg)
        tree.meta["tokens"] = ledger.spent[i]  # kept so that a saved search resumes
        if gumbel is not None:
            tree.meta["gumbel"] = {str(c): g for c, g in gumbel.items()}
        yield Ask("round")
    node, tokens = yield from _answer(tree, cfg)
    chains = sum(len(t) > 1 for t in tree.tokens)
    stats = {"nodes": len(tree), "simulations": tree.visits[ROOT], "branching": branching(tree),
             "chains": chains}  # fmt: skip
    return Choice(tokens, tree, node, stats)


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
    ``generator`` draws the root's Gumbel noise (``cfg.gumbel``) and sampled steps.
    ``on_round(trees)`` runs after every wave of simulations (to checkpoint the trees: a saved
    tree is a resumable search; the problems then keep in step)."""
    if trees is None:
        trees = [Tree(prompt_tokens=list(p)) for p in prompts]
    elif len(trees) != len(prompts):
        raise ColaError(f"{len(trees)} trees given for {len(prompts)} prompts")
    spent = [int(t.meta.get("tokens", 0)) for t in trees]
    lens = [len(t.prompt_tokens) for t in trees]
    ledger = Ledger(backend, len(trees), budget=cfg.budget, spent=spent, prompt_lens=lens)
    how = Proposal(
        cfg.candidates, cfg.expand_k, cfg.step_tokens, cfg.step_stop, backend.eos_id,
        backend.n_actions,
    )  # fmt: skip
    gumbels = [
        {int(c): g for c, g in t.meta.get("gumbel", {}).items()} if cfg.gumbel else None
        for t in trees
    ]
    searches = {
        i: _search(i, t, gumbels[i], cfg, ledger, how, generator) for i, t in enumerate(trees)
    }
    choices = drive(
        ledger,
        searches,
        value_fn=value_fn,
        generator=generator,
        on_round=None if on_round is None else lambda: on_round(trees),
    )
    return ledger.results([choices[i] for i in range(len(trees))], algorithm="mcts", config=cfg)
