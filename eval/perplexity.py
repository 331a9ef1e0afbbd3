"""Held-out perplexity of a model's *language model* (for CoLA: the backbone with its own LM
head, which latent RL must leave intact) on worked solutions of test-split problems."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def lm_perplexity(model, problems: list, *, batch_size: int = 64) -> float:
    from cola_models.blocks import positions_from_mask
    from cola_models.tokenizer import left_pad, pad_id
    from eval.prompts import format_example

    tok = model.tokenizer
    backbone = model.backbone
    total_nll, total_tokens = 0.0, 0
    for i in range(0, len(problems), batch_size):
        texts = ["".join(format_example(p)) for p in problems[i : i + batch_size]]
        ids = [
            [tok.bos_token_id, *x, tok.eos_token_id]
            for x in tok(texts, add_special_tokens=False)["input_ids"]
        ]
        input_ids, mask = left_pad(ids, pad_id(tok))
        h, _ = backbone(input_ids, mask.bool(), positions_from_mask(mask))
        logp = backbone.token_logits(h[:, :-1]).float().log_softmax(-1)
        nll = -logp.gather(-1, input_ids[:, 1:, None])[..., 0]
        m = mask[:, 1:].bool()
        total_nll += float(nll[m].sum())
        total_tokens += int(m.sum())
    return math.exp(total_nll / max(total_tokens, 1))
