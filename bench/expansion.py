"""Cost of expanding k children of a search node, and batched generation throughput.

For a node whose prefix is already cached, expanding k children means reading the node's last
token (one backbone step, plus one step of the policy/Q stacks) and decoding k latent actions:
  shared   - one backbone step, then the world-model head on all k actions at once (CoLA's way);
  separate - k full single-action steps, one per child (the reference's one-call-per-node way);
  floor    - the arithmetic floor, measured piecewise: one step + one k-wide head call.

Run:  python bench/expansion.py --preset tiny --preset smollm2-135m [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, timeit  # noqa: E402


def node_state(model, prefix_len: int):
    ids = torch.randint(
        3, model.backbone.vocab_size, (1, prefix_len), generator=torch.Generator().manual_seed(0)
    )
    return model.start(ids, torch.ones_like(ids))


def expansion(model, k: int, prefix_len: int) -> dict:
    parent = node_state(model, prefix_len)
    token = torch.tensor([5])
    actions = torch.arange(k)[None] % model.n_actions  # [1, k]

    def shared():
        s = model.advance(parent, token)
        return model.next_token_logits(s.h, actions).argmax(-1)

    def separate():
        out = []
        for j in range(k):
            s = model.advance(parent, token)
            out.append(model.next_token_logits(s.h, actions[:, j : j + 1]).argmax(-1))
        return out

    stepped = model.advance(parent, token)
    t_step = timeit(lambda: model.advance(parent, token))
    t_heads = timeit(lambda: model.next_token_logits(stepped.h, actions).argmax(-1))
    t_shared, t_separate = timeit(shared), timeit(separate)
    floor = t_step + t_heads
    return {
        "k": k,
        "prefix_len": prefix_len,
        "shared_ms": 1e3 * t_shared,
        "separate_ms": 1e3 * t_separate,
        "floor_ms": 1e3 * floor,
        "shared_over_floor": t_shared / floor,
        "separate_over_shared": t_separate / t_shared,
    }


def generation(model, batch: int, new_tokens: int, prompt_len: int) -> dict:
    import cola_models as cm

    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, model.backbone.vocab_size, (batch, prompt_len), generator=g).tolist()
    cfg = cm.GenerationConfig(max_new_tokens=new_tokens, action="sample", stop_at_eos=False)
    t = timeit(
        lambda: cm.generate(model, prompts, cfg, generator=torch.Generator().manual_seed(1)),
        repeats=3,
        warmup=1,
    )
    return {"batch": batch, "new_tokens": new_tokens, "tokens_per_s": batch * new_tokens / t}


def main() -> None:
    import cola_models as cm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", default=None)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--prefix-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    report = {"machine": machine(), "results": []}
    print(report["machine"])
    for preset in args.preset or ["tiny", "smollm2-135m"]:
        model = cm.build_model(preset)
        exp = expansion(model, args.k, args.prefix_len)
        print(
            f"[{preset}] expand k={args.k}: shared {exp['shared_ms']:.2f} ms | "
            f"separate {exp['separate_ms']:.2f} ms ({exp['separate_over_shared']:.2f}x) | "
            f"floor {exp['floor_ms']:.2f} ms (shared/floor {exp['shared_over_floor']:.2f})"
        )
        gens = [generation(model, int(b), args.new_tokens, 32) for b in args.batches.split(",")]
        for g in gens:
            print(f"[{preset}] generation batch {g['batch']:>3}: {g['tokens_per_s']:8.1f} tokens/s")
        report["results"].append({"preset": preset, "expansion": exp, "generation": gens})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
