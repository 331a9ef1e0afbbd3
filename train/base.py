"""Stage 0 (tiny default only): a byte-level BPE tokenizer and a small Llama trained from scratch
on generated problems + worked solutions. Real backbones (SmolLM2, Llama) skip this stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cola_models.devices import Placement
from cola_models.errors import ColaError
from cola_models.lm import PlainLM

from . import distributed
from .common import task_generation_defaults
from .data import DataConfig, sample_batch, tokenize, train_problems
from .loop import OptimConfig, RunDir, config_dict, train_loop
from .losses import token_ce
from .precision import place


@dataclass
class BaseConfig:
    vocab_size: int = 512
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    ffn: int = 768
    tokenizer_problems: int = 20_000
    """Problems whose text trains the BPE tokenizer."""
    max_new_tokens: int = 160
    """Generation length saved as the model's default."""

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ColaError(
                f"vocab_size={self.vocab_size} must be >= 300 (bytes + specials + merges)"
            )
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ColaError("hidden_size must divide by num_heads, num_heads by num_kv_heads")


@dataclass
class BaseRun:
    model: BaseConfig = field(default_factory=BaseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(
        # Measured: greedy held-out arith 15% at step 500, 34% at 1,250, 42% at 1,750 of this
        # schedule (the old 700 steps reached 23-30%): the model was under-trained.
        default_factory=lambda: OptimConfig(
            steps=3000, lr=3e-3, warmup_steps=100, checkpoint_every=250
        )
    )
    placement: Placement = field(default_factory=Placement)
    """Device and compute dtype ([placement] device / dtype; --device / --dtype)."""


def _tokenizer(run: RunDir, cfg: BaseRun, problems: list):
    from transformers import PreTrainedTokenizerFast

    from cola_models.checkpoint import atomic_dir
    from cola_models.tokenizer import train_bpe_tokenizer
    from eval.prompts import format_example

    tok_dir = run.path / "tokenizer"

    def build() -> None:  # rank 0 under torchrun; the others wait and read it
        if not (tok_dir / "tokenizer.json").is_file():
            texts = ["".join(format_example(p)) for p in problems[: cfg.model.tokenizer_problems]]
            tok = train_bpe_tokenizer(texts, cfg.model.vocab_size)
            with atomic_dir(tok_dir) as tmp:
                tok.save_pretrained(str(tmp))

    distributed.agree(build)
    return PreTrainedTokenizerFast.from_pretrained(str(tok_dir))


def _new_lm(cfg: BaseConfig, tok, seed: int) -> PlainLM:
    from cola_models.backbone import build_backbone_from_config

    hf = dict(
        model_type="llama",
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PlainLM(build_backbone_from_config(hf), tok)


def run_base(cfg: BaseRun, out: str | Path, *, quiet: bool = False) -> Path:
    """Train the tokenizer and the base LM; returns the HF model directory."""
    run = RunDir(out, "base", config_dict(cfg))
    if run.done:
        return run.model_dir
    problems = train_problems(cfg.data)
    tok = _tokenizer(run, cfg, problems)
    examples = tokenize(tok, problems, cfg.data.max_len)
    lm = _new_lm(cfg.model, tok, cfg.data.seed)
    device, compute = place(lm, cfg.placement)

    def step_fn(step: int, update) -> dict:
        b = sample_batch(examples, cfg.data, step, tok, completion_only=False, device=device)

        def loss_fn():
            logits = lm(b.input_ids, b.attention_mask)[:, :-1]
            return token_ce(logits, b.input_ids[:, 1:], b.target_mask)

        return {"loss": update(loss_fn).item()}

    metrics = train_loop(
        run,
        lm,
        list(lm.parameters()),
        step_fn,
        cfg.optim,
        description="base LM",
        quiet=quiet,
        compute=compute,
    )
    lm.generation_defaults = task_generation_defaults(cfg.model.max_new_tokens)
    lm.save_pretrained(run.model_dir)
    run.finish(
        {
            "final_loss": metrics[-1]["loss"],
            "train_seconds": metrics[-1]["time"],
            "examples": len(examples),
        }
    )
    return run.model_dir
