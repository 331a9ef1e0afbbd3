"""Reasoning steps as search edges, shared by beam search and PUCT-MCTS.

A step starts with one of the top-k actions at a node (all k decoded from the node's one
backbone step; actions that produce the same token are merged into one edge whose prior is
their summed probability) and continues greedily up to a step boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend


@dataclass
class Step:
    action: int  # the most probable action among those merged into this edge
    tokens: list[int]
    prior: float  # summed policy probability of the merged actions
    terminal: bool


def expand_steps(
    backend: Backend,
    prefixes: list[list[int]],
    *,
    k: int,
    step_tokens: int,
    stop: tuple[str, ...],
    room: list[int],
) -> tuple[list[list[Step]], list[int], list]:
    """Children steps of each prefix. ``room[i]``: tokens prefix i may still generate.

    Returns (steps per prefix, model tokens spent per prefix, the prior of each prefix).
    """
    eos = backend.eos_id
    prior = backend.prior(prefixes)
    cost = list(backend.last_costs)
    k = min(k, backend.n_actions)
    probs = prior.logits.float().softmax(-1)  # [B, A]
    top = probs.topk(k, dim=-1)  # [B, k]
    first = backend.expand(prefixes, top.indices)  # [B, k]
    steps: list[list[Step]] = []
    for row in range(len(prefixes)):
        by_token: dict[int, Step] = {}
        for j in range(k):
            t, a, p = int(first[row, j]), int(top.indices[row, j]), float(top.values[row, j])
            if t in by_token:
                by_token[t].prior += p
            else:
                by_token[t] = Step(a, [t], p, t == eos)
        steps.append(list(by_token.values()))
    grow = [
        (row, s)
        for row, ss in enumerate(steps)
        for s in ss
        if step_tokens > 0 and not s.terminal and room[row] > 1
    ]
    if grow:
        outs = backend.rollout(
            [prefixes[row] + s.tokens for row, s in grow],
            min(step_tokens, max(room[row] - 1 for row, _ in grow)),
            sample=False,
            stop=stop,
        )
        for (row, s), out, c in zip(grow, outs, backend.last_costs):
            s.tokens += out[: room[row] - 1]
            s.terminal = eos in s.tokens
            cost[row] += c
    return steps, cost, prior
