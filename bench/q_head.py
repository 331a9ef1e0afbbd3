"""What leaving the Q head out of a generation's states saves (``GenerationConfig.values``).

A CoLA model with a Q head ran that head at every decode step, though choosing an action reads
only the policy: greedy evaluation, RL's sampling and searches judged by anything but Q never
look at the values. Greedy decoding of the same held-out arith problems with the Q head run
along (``values=True``, as before) and without (the default now), alternated in one process so
that both meet the same machine; the outputs must be the same tokens.

Run:  python bench/q_head.py --model tiny-arith --problems 200 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def main() -> None:
    import cola_models as cm
    from cola_models.generation import GenerationConfig, generate
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    model = cm.load_model(args.model)
    if getattr(model, "q", None) is None:
        raise SystemExit(f"bench/q_head.py: {args.model} has no Q head")
    problems = get_task("arith").generate(args.problems, seed=1, split="test")
    prompts = [format_prompt(p.question) for p in problems]

    def run(values: bool):
        cfg = GenerationConfig(max_new_tokens=160, action="greedy", values=values)
        t = time.perf_counter()
        out = generate(model, prompts, cfg)
        return time.perf_counter() - t, out.token_ids

    run(False)  # warm-up
    times = {True: [], False: []}
    outputs = {}
    for _ in range(args.repeats):
        for values in (True, False):
            seconds, outputs[values] = run(values)
            times[values].append(seconds)
    ratios = [a / b for a, b in zip(times[True], times[False])]
    report = {
        "machine": machine(),
        "model": args.model,
        "problems": args.problems,
        "seconds_with_q_median": statistics.median(times[True]),
        "seconds_without_q_median": statistics.median(times[False]),
        "speedup_median": statistics.median(ratios),
        "speedup_min_max": [min(ratios), max(ratios)],
        "same_tokens": outputs[True] == outputs[False],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
