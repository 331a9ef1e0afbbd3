"""Tokenizer helpers: a byte-level tokenizer for random presets, a BPE trainer, batch encoding."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>"
    )


def byte_tokenizer():
    """Byte-level BPE with no merges: 256 byte tokens + pad/bos/eos (vocab 259). Needs no training."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``texts`` (seconds for a few MB on 2 cores)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def encode(tokenizer, texts: list[str], add_bos: bool = True) -> list[list[int]]:
    """Token ids of each text; BOS prepended when the tokenizer has one and ``add_bos``."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if add_bos and bos is not None:
        ids = [[bos, *x] for x in ids]
    return ids


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


def left_pad(seqs: list[list[int]], pad: int, device="cpu") -> tuple[Tensor, Tensor]:
    """Left-pad id lists into (input_ids [B, T], attention_mask [B, T])."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, T - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, T - len(s) :] = 1
    return ids.to(device), mask.to(device)


tokenizer_encode = encode  # public alias exported by cola_models
