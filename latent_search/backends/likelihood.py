"""The searched model's own language model as a gold-free scorer: exp(mean log p) of the tokens
after the prompt, under the LM head (a CoLA model's frozen backbone, or a plain LM).

Nothing is trained and no answer is read. Measured before it drives a search (docs/search.md, "Measured:
the verifier report"): on the bundled model's samples it ranks a problem's right samples above
its wrong ones at within-problem AUC 0.70 [0.65, 0.76], where the Q head (0.49) and the trained
verifier (0.56) are at or near chance.
Its forward tokens are charged to each row's problem through the meter: a prompt shared by
several rows is run (and charged) once.
"""

from __future__ import annotations

import torch

from ..types import Meter, Scorer, ValueFn

CHUNK = 64  # rows per forward pass


def mean_token_probs(model, seqs: list[list[int]], starts: list[int]) -> tuple[list, list]:
    """(exp(mean log p(token | prefix)) over positions starts[r]..end of each sequence, in
    (0, 1], 1.0 where nothing follows the prompt; the tokens each row's work took).

    Rows with the same prompt (a best-of-n group, a node's children) share one pass over it: the
    prompt is run once, its cache copied to each of its rows, and only their own tokens run after
    it. A shared prompt's tokens are charged to the first of its rows."""
    out: list[float] = []
    costs: list[int] = []
    with torch.no_grad():
        for s in range(0, len(seqs), CHUNK):
            scores, cost = _chunk(model, seqs[s : s + CHUNK], starts[s : s + CHUNK])
            out += scores
            costs += cost
    return out, costs


def _chunk(model, rows: list[list[int]], first: list[int]) -> tuple[list[float], list[int]]:
    from cola_models.blocks import positions_from_mask
    from cola_models.tokenizer import left_pad, pad_id

    pad, dev = pad_id(model.tokenizer), model.device
    prompts: dict[tuple[int, ...], int] = {}
    which = [prompts.setdefault(tuple(seq[:n]), len(prompts)) for seq, n in zip(rows, first)]
    gens = [seq[n:] for seq, n in zip(rows, first)]
    p_ids, p_mask = left_pad([list(p) for p in prompts], pad, dev)  # [U, P]
    h_p, cache = model.backbone(p_ids, p_mask.bool(), positions_from_mask(p_mask))  # [U, P, D]
    first_logp = model.backbone.token_logits(h_p[:, -1]).float().log_softmax(-1)  # [U, V]
    G = max(len(g) for g in gens)
    costs = [len(g) for g in gens]
    for u, p in enumerate(prompts):  # each prompt's pass, charged to its first row
        costs[which.index(u)] += len(p)
    if G == 0:
        return [1.0] * len(rows), costs
    # Built on the host, sent once: [B] prompt of each row, [B, G] right-padded tokens and mask.
    idx = torch.tensor(which, device=dev)
    g_ids = torch.tensor([g + [pad] * (G - len(g)) for g in gens], device=dev)
    g_mask = torch.tensor([[1] * len(g) + [0] * (G - len(g)) for g in gens], device=dev)
    key_mask = torch.cat([p_mask[idx], g_mask], dim=1).bool()  # [B, P + G]
    offsets = torch.arange(G, device=dev)
    positions = p_mask.sum(-1)[idx][:, None] + offsets  # [B, G]: after each prompt
    h_g, _ = model.backbone(g_ids, key_mask, positions, cache.select(idx, room=G))  # [B, G, D]
    rest = model.backbone.token_logits(h_g[:, :-1]).float().log_softmax(-1)  # [B, G-1, V]
    tok = torch.cat(
        [
            first_logp[idx].gather(-1, g_ids[:, :1]),  # [B, 1]: from the prompt's last state
            rest.gather(-1, g_ids[:, 1:, None])[..., 0],  # [B, G-1]
        ],
        dim=1,
    )  # [B, G] log p of each generated token
    mean = (tok * g_mask).sum(-1) / g_mask.sum(-1).clamp(min=1)  # [B]
    probs = mean.exp().tolist()  # one device-to-host copy
    return [p if len(g) else 1.0 for p, g in zip(probs, gens)], costs


def likelihood_scorer(model) -> Scorer:
    """Score of finished sequences (prompt + answer) by the model's mean token probability."""

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        starts = meter.starts
        if starts is None:
            raise ValueError("the likelihood scorer needs to know where each prompt ends")
        scores, costs = mean_token_probs(model, seqs, starts)
        meter.charge(costs)
        return scores

    score.oracle = False
    return score


def likelihood_value_fn(model) -> ValueFn:
    """Value of a partial sequence (beam and mcts at step ends): the same score of the text
    written so far."""
    score = likelihood_scorer(model)

    def value(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        return score(seqs, meter)

    return value
