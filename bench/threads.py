"""CPU threads: the same eval command with --threads 1, 2 and the default, on an idle machine and
with one core held by another process (a busy loop), runs alternating, median wall seconds.

Run:  python bench/threads.py [--limit 64] [--search beam] [--repeats 3]
The default (``cola_models.devices.cpu_threads``): OMP_NUM_THREADS if set, else the cores other
processes are not busy on (the one-minute load average), at least 1.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def _spin() -> None:
    while True:
        pass


def _run(threads: str, args) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "latent_search_cli", "eval", "--task", "arith", "--limit",
               str(args.limit), "--search", args.search, "--out", f"{out}/r", "--json"]  # fmt: skip
        if threads != "default":
            cmd += ["--threads", threads]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--search", default="beam")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--settle", type=float, default=60.0, help="seconds for the load to show")
    args = ap.parse_args()
    print(f"# {machine()}; eval --task arith --limit {args.limit} --search {args.search}")
    print("| machine | --threads 1 | --threads 2 | default |")
    print("| --- | --- | --- | --- |")
    for busy in (False, True):
        spinner = None
        if busy:
            spinner = mp.Process(target=_spin, daemon=True)
            spinner.start()
            time.sleep(args.settle)  # the load average (what the default reads) catches up
        times: dict[str, list[float]] = {"1": [], "2": [], "default": []}
        for _ in range(args.repeats):
            for k in times:
                times[k].append(_run(k, args))
        if spinner is not None:
            spinner.terminate()
        cells = " | ".join(f"{statistics.median(v):.1f} s" for v in times.values())
        print(f"| {'one core busy' if busy else 'idle'} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
