"""The GPU smoke check: what a lent GPU must show, in one script, in a few minutes, no network.

  train     the smoke pipeline (every stage, a few steps) on the GPU in bf16, its models reloaded
            on the GPU and on the CPU; training steps/s of stage 1 on the GPU and on the CPU
  searches  every search algorithm (and every scorer that needs no extra files) on the GPU in
            bf16 on the bundled model; a batch of problems each
  parity    greedy answers of N held-out arith problems, CPU float32 against CUDA float32
  speed     decode tokens/s (greedy, batch 64), batched mcts-q and per-token beam problems/s,
            on the GPU (bf16) and on the CPU (float32) in the same run
  vllm      only when vLLM imports: one greedy eval through the vLLM backend in bf16
  tests     only when pytest imports: the CUDA-marked tests (``pytest -m cuda``)

Run (the package installed from the checkout: ``pip install --no-deps -e .``):
    python bench/gpu_smoke.py [--device cuda] [--problems 64] [--json out.json]
``--device cpu`` runs the same script without a GPU (a dry run of the script itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def _problems(n: int):
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    problems = get_task("arith").generate(n, seed=1, split="test")
    return problems, [format_prompt(p.question) for p in problems]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_part(device: str, work: Path) -> dict:
    """The smoke pipeline on ``device`` (bf16 there unless it is the CPU), reloads, steps/s."""
    from cola_models.devices import Placement
    from cola_models.loading import load_model
    from train.cli_entry import run_stage
    from train.pipeline import run_pipeline, smoke_config

    cfg = smoke_config()
    cfg.placement = Placement(device, "auto")
    t = time.perf_counter()
    run_pipeline(cfg, work / "pipeline", quiet=True)
    out = {"pipeline_seconds": round(time.perf_counter() - t, 2)}
    for where in sorted({device, "cpu"}):
        model = load_model(work / "pipeline" / "models" / "tiny-arith", device=where)
        out[f"reload_{where.split(':')[0]}"] = f"{model.device.type}/{model.dtype}"
    for where in sorted({device, "cpu"}):
        steps = 20
        t = time.perf_counter()
        run_stage("stage1", preset="smoke", config=None, out=work / f"s1-{where}",
                  model="tiny-arith-base", steps=steps, quiet=True, device=where)  # fmt: skip
        _sync(where)
        # both phases (IDM + BC) run ``steps`` steps; model build and save are included
        out[f"train_steps_per_s_{where.split(':')[0]}"] = round(
            2 * steps / (time.perf_counter() - t), 2
        )
    return out


SEARCHES = [
    ("greedy", {}),
    ("sample", {}),
    ("best-of-n", dict(n=4, scorer="equations-likelihood")),
    ("best-of-n", dict(n=4, scorer="q")),
    ("beam", dict(candidates="token", beam_width=8, expand_k=64, scorer="equations")),
    ("beam", dict(candidates="sampled", beam_width=2, expand_k=3, scorer="likelihood")),
    ("mcts", dict(rounds=8, scorer="equations")),
    ("mcts", dict(rounds=8, gumbel=True, scorer="q")),
    ("mcts-q", dict(rounds=8, scorer="q")),
]


def searches_part(device: str, n: int) -> dict:
    from eval.searcher import load_searcher
    from eval.tasks import get_task
    from latent_search.search import SearchSpec, run_search

    problems, _ = _problems(n)
    out = {}
    for algorithm, extra in SEARCHES:
        spec = SearchSpec(algorithm=algorithm, max_new_tokens=128, **extra)
        s = load_searcher("tiny-arith", spec, device=device)
        ids = s.encode([p.question for p in problems], spec.max_new_tokens)
        t = time.perf_counter()
        results = run_search(s.backend, ids, spec, **s.search_args())
        _sync(device)
        right = sum(get_task(p.task).reward(p, r.text) for p, r in zip(problems, results))
        name = f"{algorithm}/{extra.get('scorer', '-')}/{extra.get('candidates', '')}"
        out[name] = {
            "accuracy": round(right / n, 3),
            "problems_per_s": round(n / (time.perf_counter() - t), 2),
            "dtype": str(s.model.dtype).removeprefix("torch."),
        }
    return out


def parity_part(device: str, n: int) -> dict:
    """Greedy tokens, float32 on both devices."""
    import cola_models as cm

    _, prompts = _problems(n)
    cfg = cm.GenerationConfig(max_new_tokens=128, action="greedy")
    outs = {}
    for where in ("cpu", device):
        model = cm.load_model("tiny-arith", device=where, dtype="float32")
        outs[where] = cm.generate(model, prompts, cfg).texts
    differ = [i for i, (a, b) in enumerate(zip(outs["cpu"], outs[device])) if a != b]
    return {"problems": n, "same_text": n - len(differ), "differ_at": differ[:8]}


def speed_part(device: str, n: int) -> dict:
    """decode tokens/s and batched search problems/s: the GPU in bf16, the CPU in float32."""
    import cola_models as cm
    from eval.searcher import load_searcher
    from latent_search.search import SearchSpec, run_search

    problems, prompts = _problems(n)
    out = {}
    for where, dtype in sorted({(device, "auto"), ("cpu", "float32")}):
        key = where.split(":")[0]
        model = cm.load_model("tiny-arith", device=where, dtype=dtype)
        cfg = cm.GenerationConfig(max_new_tokens=128, action="greedy")
        cm.generate(model, prompts[:8], cfg)  # warm-up (kernels, allocator)
        _sync(where)
        t = time.perf_counter()
        gen = cm.generate(model, prompts, cfg)
        _sync(where)
        out[f"decode_tokens_per_s_{key}"] = round(gen.decode_tokens / (time.perf_counter() - t))
        for name, spec in (
            ("mcts_q", SearchSpec(algorithm="mcts-q", rounds=16, max_new_tokens=128)),
            ("token_beam", SearchSpec(algorithm="beam", candidates="token", beam_width=8,
                                      expand_k=64, scorer="equations", max_new_tokens=128)),
        ):  # fmt: skip
            s = load_searcher("tiny-arith", spec, device=where, dtype=dtype)
            ids = s.encode([p.question for p in problems], spec.max_new_tokens)
            t = time.perf_counter()
            run_search(s.backend, ids, spec, **s.search_args())
            _sync(where)
            out[f"{name}_problems_per_s_{key}"] = round(n / (time.perf_counter() - t), 2)
    return out


def vllm_part(device: str, n: int) -> dict:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vLLM is not installed"}
    from eval.searcher import load_searcher
    from latent_search.search import SearchSpec, run_search

    problems, _ = _problems(n)
    spec = SearchSpec(algorithm="greedy", max_new_tokens=128)
    s = load_searcher("tiny-arith", spec, backend="vllm", device=device)
    ids = s.encode([p.question for p in problems], spec.max_new_tokens)
    t = time.perf_counter()
    results = run_search(s.backend, ids, spec)
    return {"problems_per_s": round(n / (time.perf_counter() - t), 2), "n": len(results)}


def tests_part() -> dict:
    import importlib.util
    import subprocess

    if importlib.util.find_spec("pytest") is None:
        return {"skipped": "pytest is not installed"}
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    return {"exit": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--search-problems", type=int, default=16)
    ap.add_argument("--parts", default="train,searches,parity,speed,tests,vllm")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = {"machine": machine(), "device": args.device}
    print(f"# {report['machine']}", flush=True)
    parts = {
        "train": lambda: train_part(args.device, Path(tempfile.mkdtemp(prefix="gpu-smoke-"))),
        "searches": lambda: searches_part(args.device, args.search_problems),
        "parity": lambda: parity_part(args.device, args.problems),
        "speed": lambda: speed_part(args.device, args.problems),
        "vllm": lambda: vllm_part(args.device, args.search_problems),
        "tests": tests_part,
    }
    failed = False
    for name in args.parts.split(","):
        t = time.perf_counter()
        try:
            report[name] = parts[name]()
        except Exception as err:  # report every part, then fail
            failed = True
            report[name] = {"error": f"{type(err).__name__}: {err}"}
            traceback.print_exc()
        report[name]["seconds"] = round(time.perf_counter() - t, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
