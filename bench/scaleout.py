"""One process against torchrun ranks on this machine, for a training stage and an evaluation,
in one run: wall seconds (median of the repeats, runs alternating), and whether the ranks gave the
one-process result (the stage's losses; the eval's records).

    python bench/scaleout.py --ranks 2 --train-steps 60 --eval-limit 200 --repeats 2

Each configuration gets the same cores: one process with N threads against N ranks of one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = ["-m", "latent_search_cli"]


def launch(ranks: int, threads: int, args: list[str], logs: Path) -> tuple[float, str]:
    """Wall seconds of one command, and its stdout; fails loudly."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    head = [sys.executable] if ranks == 1 else [
        torchrun, "--nproc-per-node", str(ranks), "--log-dir", str(logs)
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(head + CLI + args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def losses(run: Path) -> list[float]:
    rows = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["loss"] for r in rows]


def records(run: Path) -> list[dict]:
    rows = (run / "results.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scaleout-"))
    n = args.ranks
    jobs = {
        "train base": lambda out: [
            "train",
            "base",
            "--preset",
            "tiny",
            "--quiet",
            "--steps",
            str(args.train_steps),
            "--out",
            str(out),
        ],  # fmt: skip
        "eval arith greedy": lambda out: [
            "eval",
            "--task",
            "arith",
            "--limit",
            str(args.eval_limit),
            "--out",
            str(out),
            "--json",
        ],  # fmt: skip
    }
    check = {"train base": losses, "eval arith greedy": records}
    print(f"{n} ranks x 1 thread against 1 process x {n} threads; {args.repeats} repeats")
    for name, make in jobs.items():
        times: dict[str, list[float]] = {"1": [], str(n): []}
        outs = {}
        for rep in range(args.repeats):
            for ranks, threads in ((1, n), (n, 1)):
                out = root / f"{name.replace(' ', '-')}-{ranks}-{rep}"
                seconds, _ = launch(ranks, threads, make(out), root / "logs")
                times[str(ranks)].append(seconds)
                outs[ranks] = out
        one, many = (statistics.median(times[k]) for k in ("1", str(n)))
        a, b = check[name](outs[1]), check[name](outs[n])
        if name.startswith("eval"):
            same = f"records identical: {a == b}"
        else:  # Adam's normalised steps magnify float rounding over the steps
            worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
            same = f"losses of all {len(a)} logged steps within {worst:.1e} relative"
        print(f"{name}: 1 process {one:.1f} s, {n} ranks {many:.1f} s "
              f"(x{one / many:.2f}); {same}")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
