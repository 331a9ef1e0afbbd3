"""Rollout and expansion throughput of the torch backend vs the vLLM backend.

  rollout    policy-sampled CoLA rollouts (actions sampled top-k/temperature, tokens greedy) of B
             distinct prompts, up to --new-tokens each: generated tokens per second. For a
             plain LM (e.g. smollm2-135m-lm): tokens sampled at temperature 1.
  expansion  B fresh search nodes, each a child (one new token) of a parent the backend has
             already seen (torch: its per-prefix state cache; vLLM: its prefix cache), expanded
             as search does it: the node's prior (policy + Q), then its k most probable actions
             decoded: children (decoded tokens) per second. For a plain LM the children are the
             k most probable tokens, so this is the cost of the prior alone.

Each repeat uses prompts not seen before (so neither backend reuses a previous repeat's work);
the median of --repeats runs after one warm-up. The torch backend is measured first, before
vLLM starts (vLLM pins the process's CPU threads).

Run (CPU):  python bench/backends.py --model tiny-arith --batches 1 8 64 [--json out.json]
Run (GPU):  python bench/backends.py --model smollm2-135m --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def _rollout(backend, prompts, new_tokens, seed):
    """Generated tokens and seconds of one batch of policy-sampled rollouts."""
    gen = torch.Generator(device=backend.device).manual_seed(seed)  # where the backend samples
    t = time.perf_counter()
    out = backend.rollout(prompts, new_tokens, sample=True, generator=gen)
    return sum(len(o) for o in out), time.perf_counter() - t


def _expansion(backend, prompts, k, space):
    """Children decoded and seconds of expanding fresh nodes, as a search does: the node's prior
    (policy + Q), then its k most probable actions decoded. Each node is a new child (one more
    token) of a parent the backend has already seen (its state / prefix cache holds it)."""
    backend.prior(prompts)  # untimed setup: the parents
    nodes = [p + [space] for p in prompts]
    t = time.perf_counter()
    prior = backend.prior(nodes)
    backend.expand(nodes, prior.logits.topk(k, dim=-1).indices)
    return len(nodes) * k, time.perf_counter() - t


def measure(backend, prompts_for, batches, *, new_tokens: int, k: int, repeats: int, space: int):
    """Median rates per batch size; repeat r uses prompt set r + 1 (set 0 is the warm-up)."""
    rows = []
    for B in batches:
        rates = {"rollout": [], "expansion": []}
        for r in range(repeats + 1):
            n, s = _rollout(backend, prompts_for(B, r), new_tokens, seed=r)
            if r > 0:
                rates["rollout"].append(n / s)
            if rates["expansion"] is None:
                continue
            try:
                m, e = _expansion(backend, prompts_for(B, r), k, space)
            except RuntimeError as err:  # e.g. a backend that cannot expand on this device
                print(f"  expansion failed: {str(err).splitlines()[0]}", flush=True)
                rates["expansion"] = None
                continue
            if r > 0:
                rates["expansion"].append(m / e)
        exp = statistics.median(rates["expansion"]) if rates["expansion"] else float("nan")
        row = {
            "batch": B,
            "rollout_tok_s": statistics.median(rates["rollout"]),
            "expansion_children_s": exp,
        }
        rows.append(row)
        print(
            f"  batch {B:>3}: rollout {row['rollout_tok_s']:9.1f} tok/s   "
            f"expansion {exp:9.1f} children/s",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="tiny-arith", help="bundled name, checkpoint dir or preset")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=8, help="actions per expanded node")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="torch backend's device (cpu or cuda)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--backends", nargs="+", default=["torch", "vllm"], choices=["torch", "vllm"])
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument(
        "--threads",
        type=int,
        help="CPU threads for both backends (vLLM then leaves thread placement to the OS)",
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        import os

        torch.set_num_threads(args.threads)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"

    import cola_models as cm
    from eval.prompts import format_prompt
    from eval.tasks import get_task
    from latent_search.backends.factory import make_backend

    model = cm.load_model(args.model, device=args.device, dtype=args.dtype)
    template = model.generation_defaults.get("prompt_template")
    n_needed = max(args.batches) * (args.repeats + 1)
    problems = get_task("arith").generate(n_needed, seed=11, split="test")
    encoded = cm.tokenizer_encode(
        model.tokenizer, [format_prompt(p.question, template) for p in problems]
    )
    space = cm.tokenizer_encode(model.tokenizer, [" "], add_bos=False)[0][-1]

    def prompts_for(B: int, r: int) -> list[list[int]]:
        return encoded[r * B : (r + 1) * B]

    info = {"machine": machine(), "model": args.model, "dtype": args.dtype, "args": vars(args)}
    print(f"{info['machine']}; model {args.model} ({args.dtype})")
    print(f"{args.new_tokens} new tokens per rollout, k={args.k} children per node")
    results = {}
    for name in args.backends:
        opts = {}
        if name == "vllm":
            opts = {"dtype": args.dtype, "gpu_memory_utilization": args.gpu_memory_utilization}
        backend = make_backend(name, model, **opts)
        if name == "vllm":
            import vllm

            info["vllm"] = vllm.__version__
        print(f"{name}:", flush=True)
        results[name] = measure(
            backend,
            prompts_for,
            args.batches,
            new_tokens=args.new_tokens,
            k=args.k,
            repeats=args.repeats,
            space=space,
        )
        if hasattr(backend, "close"):
            backend.close()
    if "torch" in results and "vllm" in results:
        print("vLLM / torch:")
        for t, v in zip(results["torch"], results["vllm"]):
            roll = v["rollout_tok_s"] / t["rollout_tok_s"]
            exp = v["expansion_children_s"] / t["expansion_children_s"]
            print(f"  batch {t['batch']:>3}: rollout {roll:.2f}x   expansion {exp:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
