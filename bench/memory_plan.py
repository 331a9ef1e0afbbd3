"""Memory per GPU of every training stage of a preset under FSDP2 on N GPUs: an estimate
computed from the model built on the meta device (nothing is allocated), not a measurement.

    python bench/memory_plan.py --preset llama-3.1-8b --gpus 8 --seq-len 1024 --micro-batch 1

What is counted, per GPU, as the code runs (``train/distributed.py``, ``train/loop.py``,
``train/precision.py``; ``--dtype bf16``, the default on CUDA):
- weights: every parameter sharded over the N ranks, frozen ones included, in float32 (the
  master weights: the model is placed in float32 and computes in bf16);
- gradients and AdamW's two moments: the trainable parameters, sharded, float32 (FSDP2 reduces
  gradients in float32);
- gathered units: the root unit (embeddings, output layers, norms: gathered for the whole
  loss) and one block at a time, with the next prefetched (2 x the largest), in the compute
  dtype (FSDP2's ``MixedPrecisionPolicy(param_dtype=bf16)``);
- unsharded copies a stage keeps, in float32: latent RL's reference policy, token RL's
  reference LM;
- rollouts: RL generates on the whole model gathered (``full_weights``) in the compute dtype,
  every rank at once;
- activations per sequence: for each block on the gradient path, the inputs and outputs of its
  linear layers (sum of in + out features per token; attention scores are not stored by SDPA),
  or the block input alone with activation checkpointing (plus one block recomputed); and the
  float32 vocabulary logits where a loss reads them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

GiB = 2**30


@dataclass(frozen=True)
class Stage:
    name: str
    trained: tuple[str, ...]  # top-level modules whose parameters train
    on_path: tuple[str, ...]  # modules the gradient flows through (activations kept)
    vocab_logits: bool  # the loss reads [L, V] float32 logits
    copies: tuple[str, ...] = ()  # unsharded frozen copies the stage keeps
    rollouts: bool = False
    parts: tuple[str, ...] = ("backbone", "idm", "world", "policy")  # the model it trains


LM = ("backbone",)  # token RL trains the plain LM, the verifier an LM with a score head


STAGES = (
    Stage("stage 1 IDM + world model", ("idm", "world"), ("idm", "world"), True),
    Stage("stage 1/2 BC policy", ("policy",), ("policy",), False),
    Stage("stage 2 world model (FTA-I)", ("backbone",), ("backbone", "world"), True),
    Stage("latent RL (GRPO)", ("policy",), ("policy",), False, ("policy",), True),
    Stage("token RL (GRPO)", LM, LM, True, LM, True, LM),
    Stage("verifier (LM + score head)", LM, LM, False, parts=LM),
)


def build(preset: str) -> nn.Module:
    from cola_models.backbone import Backbone, build_backbone_from_config
    from cola_models.model import ColaModel
    from cola_models.presets import preset_config

    cfg = preset_config(preset)
    with torch.device("meta"):
        return ColaModel(cfg, Backbone(build_backbone_from_config(cfg.backbone.hf_config)))


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_acts(block: nn.Module) -> int:
    """Elements per token a block keeps for backward: in + out features of its linear layers."""
    return sum(m.in_features + m.out_features for m in block.modules() if isinstance(m, nn.Linear))


def blocks_of(module: nn.Module) -> list[nn.Module]:
    from train.distributed import blocks

    return blocks(module)


def plan(model: nn.Module, stage: Stage, args) -> dict[str, float]:
    part = dict(model.named_children())
    b, m = args.bytes, args.master_bytes  # compute dtype, master weights / optimizer state
    total = sum(params(part[n]) for n in stage.parts)
    trained = sum(params(part[n]) for n in stage.trained)
    units = [u for n in stage.parts for u in blocks_of(part[n])]
    root = total - sum(params(u) for u in units)  # embeddings, heads, norms: one root unit
    tokens = args.seq_len * args.micro_batch
    path_blocks = [blk for n in stage.on_path for blk in blocks_of(part[n])]
    if args.checkpointing:  # block inputs, plus one block recomputed at a time
        hidden = [next(m for m in blk.modules() if isinstance(m, nn.Linear)).in_features
                  for blk in path_blocks]  # fmt: skip
        acts = (sum(hidden) + max(block_acts(blk) for blk in path_blocks)) * tokens * b
    else:
        acts = sum(block_acts(blk) for blk in path_blocks) * tokens * b
    vocab = model.backbone.lm_head.out_features
    row = {
        "weights": total * m / args.gpus,
        "grads + AdamW": 3 * trained * m / args.gpus,
        "gathered units": (root + 2 * max(params(u) for u in units)) * b,
        "copies": sum(params(part[n]) for n in stage.copies) * m,
        "rollouts": total * b if stage.rollouts else 0.0,
        "activations": acts,
        "logits": tokens * vocab * 4 if stage.vocab_logits else 0.0,
    }
    row["peak (train step)"] = sum(v for k, v in row.items() if k != "rollouts")
    row["trained (B)"] = trained / 1e9
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-3.1-8b")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--dtype-bytes", dest="bytes", type=int, default=2, help="compute: 2 (bf16)")
    ap.add_argument(
        "--master-bytes", type=int, default=4, help="weights, gradients, AdamW state: 4 (fp32)"
    )
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing on")
    args = ap.parse_args()
    model = build(args.preset)
    parts = ", ".join(f"{n} {params(m) / 1e9:.2f}B" for n, m in model.named_children())
    print(f"{args.preset}: {parts}; {args.gpus} GPUs, {args.master_bytes}-byte master weights, "
          f"{args.bytes}-byte compute, "
          f"{args.micro_batch} x {args.seq_len} tokens per GPU, "
          f"activation checkpointing {'on' if args.checkpointing else 'off'} (GiB per GPU)\n")  # fmt: skip
    cols = ["trained (B)", "weights", "grads + AdamW", "gathered units", "copies",
            "activations", "logits", "peak (train step)", "rollouts"]  # fmt: skip
    print("| stage | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for stage in STAGES:
        row = plan(model, stage, args)
        cells = [f"{row[c]:.2f}" if c == "trained (B)" else f"{row[c] / GiB:.1f}" for c in cols]
        print(f"| {stage.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
