"""Search benchmarks on the bundled model.

  overhead  share of MCTS-Q wall time spent outside model calls, over N problems
  batching  problems/s of lockstep-batched MCTS-Q over N problems vs the same algorithm run one
            problem at a time with one model call per node (the reference's way), same answers?

Run:  python bench/search.py --problems 32 --rounds 16 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def main() -> None:
    import cola_models as cm
    from eval.prompts import format_prompt
    from eval.tasks import get_task
    from latent_search.backends.serial import SerialBackend
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.mcts_q import MCTSQConfig, mcts_q
    from latent_search.scorers import q_value_scorer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument(
        "--serial-problems",
        type=int,
        default=8,
        help="problems for the (slow) one-node-per-call run",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = cm.load_model(args.model)
    problems = get_task("arith").generate(args.problems, seed=5, split="test")
    prompts = cm.tokenizer_encode(model.tokenizer, [format_prompt(p.question) for p in problems])
    cfg = MCTSQConfig(rounds=args.rounds, rollout_tokens=160, max_depth=160)

    be = TorchBackend(model)
    t = time.perf_counter()
    batched = mcts_q(be, prompts, cfg, q_value_scorer(be))
    wall = time.perf_counter() - t
    overhead = 1 - be.usage.seconds / wall

    n = min(args.serial_problems, args.problems)
    serial_answers, serial_wall = [], 0.0
    for p in prompts[:n]:
        sbe = SerialBackend(TorchBackend(model))
        t = time.perf_counter()
        (res,) = mcts_q(sbe, [p], cfg, q_value_scorer(sbe))
        serial_wall += time.perf_counter() - t
        serial_answers.append(res.tokens)
    same = sum(a.tokens == b for a, b in zip(batched[:n], serial_answers))
    report = {
        "machine": machine(),
        "model": args.model,
        "problems": args.problems,
        "rounds": args.rounds,
        "batched_seconds": wall,
        "batched_problems_per_s": args.problems / wall,
        "share_outside_model_calls": overhead,
        "serial_problems": n,
        "serial_problems_per_s": n / serial_wall,
        "speedup": (args.problems / wall) / (n / serial_wall),
        "same_answers": f"{same}/{n}",
        "tokens_per_problem": sum(r.tokens_used for r in batched) / len(batched),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
