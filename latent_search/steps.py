"""Reasoning steps as search edges, shared by beam search and MCTS.

Each proposal is a coroutine of model calls (``latent_search.schedule``): a search proposes the
steps of its own problem's nodes, and the scheduler batches the calls of every problem.

Three ways to propose a node's candidate steps:
* ``expand_steps`` ("first-token"): a step starts with one of the top-k actions at the node (all
  k decoded from the node's one backbone step; actions that produce the same token are merged
  into one edge whose prior is their summed probability) and continues greedily up to a step
  boundary. Cheap, but two candidates differ in their first token only.
* ``sample_steps`` ("sampled"): k samples of the whole step from the policy (sampled latent
  actions at every token, as search-and-learn samples step completions), identical ones merged
  (prior = their share of the k). Candidates then differ wherever the policy is uncertain
  within the step, which is where a reading error (a wrong number copied) happens.
* "token": steps of one token, the distinct tokens of a node's top-k actions (the reference's
  per-token expansion, without its macro-steps). A search can then branch at the very token
  where the policy errs: on the bundled arith model most wrong answers start with one wrong
  digit of a result, which some other latent action writes right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from .schedule import Ask, Search

CANDIDATES = ("first-token", "sampled", "token")

STEP_STOP: tuple[str, ...] = (".", "\n")
"""Where a step of beam and mcts ends: at the first of these strings its text writes (the
rollout stops there and keeps the token that wrote it)."""


def split_steps(text: str, stop: tuple[str, ...] = STEP_STOP) -> list[str]:
    """``text`` cut where the search's steps end: after each stop string, the last piece the
    unfinished step. Nothing is lost: ``"".join(split_steps(t)) == t``. A judge that reads steps
    (a process reward model) cuts here, so its steps are the search's own."""
    stops = [s for s in stop if s]
    if not stops:
        return [text] if text else []
    cut = re.compile("|".join(re.escape(s) for s in sorted(stops, key=len, reverse=True)))
    ends = [m.end() for m in cut.finditer(text)]
    bounds = [0, *ends] + ([len(text)] if not ends or ends[-1] < len(text) else [])
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclass
class Step:
    action: int  # the most probable action among those merged into this edge
    tokens: list[int]
    prior: float  # summed policy probability of the merged actions
    terminal: bool
    gumbel: float = 0.0  # the noise that ranked the edge's action (Gumbel root sampling), else 0


@dataclass(frozen=True)
class Proposal:
    """How a search proposes the child steps of its nodes (see the module docstring)."""

    mode: str
    k: int
    step_tokens: int
    stop: tuple[str, ...]
    eos: int | None
    n_actions: int


def expand_steps(
    prefixes: list[list[int]], how: Proposal, room: list[int], noise: Tensor | None = None
) -> Search:
    """Children steps of each prefix; returns them, a list per prefix. ``room[i]``: tokens
    prefix i may still generate. ``noise`` [B, A] is added to the log-policy before taking the
    top k: Gumbel noise there samples k actions without replacement (Gumbel-top-k); zero rows
    keep the plain top k."""
    prior = yield Ask("prior", prefixes)
    k = min(how.k, how.n_actions)
    logp = prior.logits.float().log_softmax(-1)  # [B, A]
    noise = torch.zeros_like(logp) if noise is None else noise.to(logp)
    top = (logp + noise).topk(k, dim=-1).indices  # [B, k]
    probs = logp.gather(-1, top).exp()  # [B, k]
    gumbel = noise.gather(-1, top)  # [B, k]
    first = yield Ask("expand", prefixes, actions=top)  # [B, k]
    # Python lists once per call: indexing tensors element by element costs a dispatch each.
    cols = zip(first.tolist(), top.tolist(), probs.tolist(), gumbel.tolist())
    steps: list[list[Step]] = []
    for firsts, acts, ps, gs in cols:
        by_token: dict[int, Step] = {}
        for t, a, p, gu in zip(firsts, acts, ps, gs):
            if t in by_token:
                by_token[t].prior += p
            else:
                by_token[t] = Step(a, [t], p, t == how.eos, gu)
        steps.append(list(by_token.values()))
    if how.step_tokens > 0:
        yield from _complete(prefixes, steps, how, room)
    return steps


def _complete(prefixes, steps: list[list[Step]], how: Proposal, room: list[int]) -> Search:
    """Each open step continued greedily up to a step boundary (one batched rollout)."""
    grow = [
        (row, s) for row, ss in enumerate(steps) for s in ss if not s.terminal and room[row] > 1
    ]
    if not grow:
        return
    outs = yield Ask(
        "rollout",
        [prefixes[row] + s.tokens for row, s in grow],
        max_new_tokens=min(how.step_tokens, max(room[row] - 1 for row, _ in grow)),
        stop=how.stop,
    )
    for (row, s), out in zip(grow, outs):
        s.tokens += out[: room[row] - 1]
        s.terminal = how.eos in s.tokens


def sample_steps(prefixes: list[list[int]], how: Proposal, room: list[int]) -> Search:
    """k sampled completions of the next step of each prefix (one batched rollout), merged by
    their tokens; an edge's action is the index of its first sample, its prior the share of the
    k samples that wrote it."""
    k = how.k
    rows = [i for i in range(len(prefixes)) for _ in range(k)]
    outs = yield Ask(
        "rollout",
        [prefixes[i] for i in rows],
        max_new_tokens=max(1, min(how.step_tokens or 1, max(room))),
        stop=how.stop,
        sample=True,
    )
    steps: list[dict[tuple[int, ...], Step]] = [{} for _ in prefixes]
    for j, (i, out) in enumerate(zip(rows, outs)):
        toks = tuple(out[: max(1, room[i])])
        if toks in steps[i]:
            steps[i][toks].prior += 1.0 / k
        else:
            steps[i][toks] = Step(j % k, list(toks), 1.0 / k, how.eos in toks)
    return [list(s.values()) for s in steps]


def propose(
    prefixes: list[list[int]], how: Proposal, room: list[int], noise: Tensor | None = None
) -> Search:
    """The candidate steps of each prefix, proposed the ``how.mode`` way (module docstring)."""
    if not prefixes:
        return []
    if how.mode == "sampled":
        return (yield from sample_steps(prefixes, how, room))
    if how.mode == "token":
        how = Proposal("token", how.k, 0, how.stop, how.eos, how.n_actions)
    return (yield from expand_steps(prefixes, how, room, noise))


def branching(tree) -> float:
    """Mean distinct children per expanded node: how different a search's candidates are."""
    kids = [len(set(c.values())) for c in tree.children if c]
    return sum(kids) / len(kids) if kids else 0.0
