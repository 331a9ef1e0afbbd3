"""Reasoning steps as search edges, shared by beam search and PUCT-MCTS.

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

from dataclasses import dataclass

import torch
from torch import Tensor

from .ledger import Ledger
from .types import Prior

CANDIDATES = ("first-token", "sampled", "token")


@dataclass
class Step:
    action: int  # the most probable action among those merged into this edge
    tokens: list[int]
    prior: float  # summed policy probability of the merged actions
    terminal: bool
    gumbel: float = 0.0  # the noise that ranked the edge's action (Gumbel root sampling), else 0


def expand_steps(
    ledger: Ledger,
    owners: list[int],
    prefixes: list[list[int]],
    *,
    k: int,
    step_tokens: int,
    stop: tuple[str, ...],
    room: list[int],
    noise: Tensor | None = None,
) -> tuple[list[list[Step]], Prior]:
    """Children steps of each prefix. ``room[i]``: tokens prefix i may still generate.
    ``noise`` [B, A] is added to the log-policy before taking the top k: Gumbel noise there
    samples k actions without replacement (Gumbel-top-k); zero rows keep the plain top k.

    ``owners[i]``: the problem prefix i belongs to (its model work is charged there).

    Returns (steps per prefix, the prior of each prefix).
    """
    backend = ledger.backend
    eos = backend.eos_id
    prior = ledger.prior(owners, prefixes)
    k = min(k, backend.n_actions)
    logp = prior.logits.float().log_softmax(-1)  # [B, A]
    noise = torch.zeros_like(logp) if noise is None else noise.to(logp)
    top = (logp + noise).topk(k, dim=-1).indices  # [B, k]
    probs = logp.gather(-1, top).exp()  # [B, k]
    gumbel = noise.gather(-1, top)  # [B, k]
    first = ledger.expand(owners, prefixes, top)  # [B, k]
    # Python lists once per call: indexing tensors element by element costs a dispatch each.
    cols = zip(first.tolist(), top.tolist(), probs.tolist(), gumbel.tolist())
    steps: list[list[Step]] = []
    for firsts, acts, ps, gs in cols:
        by_token: dict[int, Step] = {}
        for t, a, p, gu in zip(firsts, acts, ps, gs):
            if t in by_token:
                by_token[t].prior += p
            else:
                by_token[t] = Step(a, [t], p, t == eos, gu)
        steps.append(list(by_token.values()))
    grow = [
        (row, s)
        for row, ss in enumerate(steps)
        for s in ss
        if step_tokens > 0 and not s.terminal and room[row] > 1
    ]
    if grow:
        outs = ledger.rollout(
            [owners[row] for row, _ in grow],
            [prefixes[row] + s.tokens for row, s in grow],
            min(step_tokens, max(room[row] - 1 for row, _ in grow)),
            sample=False,
            stop=stop,
        )
        for (row, s), out in zip(grow, outs):
            s.tokens += out[: room[row] - 1]
            s.terminal = eos in s.tokens
    return steps, prior


def sample_steps(
    ledger: Ledger,
    owners: list[int],
    prefixes: list[list[int]],
    *,
    k: int,
    step_tokens: int,
    stop: tuple[str, ...],
    room: list[int],
    generator: torch.Generator | None,
) -> list[list[Step]]:
    """k sampled completions of the next step of each prefix (one batched rollout), merged by
    their tokens; an edge's action is the index of its first sample, its prior the share of the
    k samples that wrote it."""
    eos = ledger.backend.eos_id
    rows = [i for i in range(len(prefixes)) for _ in range(k)]
    outs = ledger.rollout(
        [owners[i] for i in rows],
        [prefixes[i] for i in rows],
        max(1, min(step_tokens or 1, max(room))),
        sample=True,
        generator=generator,
        stop=stop,
    )
    steps: list[dict[tuple[int, ...], Step]] = [{} for _ in prefixes]
    for j, (i, out) in enumerate(zip(rows, outs)):
        toks = tuple(out[: max(1, room[i])])
        if toks in steps[i]:
            steps[i][toks].prior += 1.0 / k
        else:
            steps[i][toks] = Step(j % k, list(toks), 1.0 / k, eos in toks)
    return [list(s.values()) for s in steps]


def candidate_steps(
    ledger: Ledger,
    owners: list[int],
    prefixes: list[list[int]],
    *,
    mode: str,
    k: int,
    step_tokens: int,
    stop: tuple[str, ...],
    room: list[int],
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[list[Step]]:
    """The candidate steps of each prefix, proposed the ``mode`` way (see the module docstring)."""
    if mode == "token":
        step_tokens = 0
    if mode == "sampled":
        return sample_steps(
            ledger, owners, prefixes, k=k, step_tokens=step_tokens, stop=stop, room=room,
            generator=generator,
        )  # fmt: skip
    steps, _ = expand_steps(
        ledger, owners, prefixes, k=k, step_tokens=step_tokens, stop=stop, room=room, noise=noise
    )
    return steps


def branching(tree) -> float:
    """Mean distinct children per expanded node: how different a search's candidates are."""
    kids = [len(set(c.values())) for c in tree.children if c]
    return sum(kids) / len(kids) if kids else 0.0
