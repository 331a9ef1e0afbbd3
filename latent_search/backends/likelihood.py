"""The searched model's own language model as a gold-free scorer: exp(mean log p) of the tokens
after the prompt, under the LM head (a CoLA model's frozen backbone, or a plain LM).

Nothing is trained and no answer is read. Measured before it drives a search (README, "Search
that pays"): on the stronger tiny preset's samples it ranks a problem's right samples above its
wrong ones at within-problem AUC 0.73, where the Q head and the trained verifiers are at chance.
Its forward tokens are charged to each row's problem through the meter.
"""

from __future__ import annotations

import torch

from ..types import Meter, Scorer, ValueFn

CHUNK = 64  # rows per forward pass


def mean_token_probs(model, seqs: list[list[int]], starts: list[int]) -> list[float]:
    """exp(mean log p(token | prefix)) over positions starts[r]..end of each sequence, in (0, 1]
    (1.0 where nothing follows the prompt yet)."""
    from cola_models.blocks import positions_from_mask
    from cola_models.tokenizer import left_pad, pad_id

    out: list[float] = []
    with torch.no_grad():
        for s in range(0, len(seqs), CHUNK):
            rows, first = seqs[s : s + CHUNK], starts[s : s + CHUNK]
            ids, mask = left_pad(rows, pad_id(model.tokenizer))  # [B, T]
            h, _ = model.backbone(ids, mask.bool(), positions_from_mask(mask))  # [B, T, D]
            logp = model.backbone.token_logits(h[:, :-1]).float().log_softmax(-1)  # [B, T-1, V]
            tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # [B, T-1]: log p of token t+1
            T = ids.shape[1]
            for r, (seq, n) in enumerate(zip(rows, first)):
                begin = T - len(seq) + n - 1  # target index of the first generated token
                gen = tok[r, begin:]
                out.append(float(gen.mean().exp()) if gen.numel() else 1.0)
    return out


def likelihood_scorer(model) -> Scorer:
    """Score of finished sequences (prompt + answer) by the model's mean token probability."""

    def score(seqs: list[list[int]], meter: Meter) -> list[float]:
        starts = meter.starts
        if starts is None:
            raise ValueError("the likelihood scorer needs to know where each prompt ends")
        meter.charge([len(s) for s in seqs])  # one forward pass over each whole sequence
        return mean_token_probs(model, seqs, starts)

    score.oracle = False
    return score


def likelihood_value_fn(model) -> ValueFn:
    """Value of a partial sequence (beam and mcts at step ends): the same score of the text
    written so far."""
    score = likelihood_scorer(model)

    def value(seqs: list[list[int]], done: list[bool], meter: Meter) -> list[float]:
        return score(seqs, meter)

    return value
