"""Search benchmarks on the bundled model.

  overhead  share of MCTS-Q wall time spent outside model calls, over N problems
  batching  problems/s of batched MCTS-Q over N problems vs the same algorithm run one problem
            at a time with one model call per node (the reference's way), same answers? Two
            batched runs: "batched", problems running free (latent_search.schedule: a problem
            whose round needed no rollout goes on at once), and "rounds_in_step", every problem
            waiting for all at each round's end (how a checkpointing caller runs it).
  occupancy what bounds that ratio: rollout rows served per decode step of the batched run;
            the longest problem's chain of rollout steps (its rounds run one after another: a
            selection needs the last backup), which no scheduler can shorten; and the speed-up
            if every problem ran on its own clock (continuous batching) at the batched run's
            seconds per decode step, with the time outside rollouts unchanged: an upper bound.

Run:  python bench/search.py --problems 32 --rounds 16 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
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

    runs = {}
    # "batched": problems run free (latent_search.schedule); "rounds_in_step": every problem
    # waits for all at each round's end (a checkpointing caller's way, and this engine's before).
    for name, barrier in (("batched", None), ("rounds_in_step", lambda trees: None)):
        be = TorchBackend(model)
        calls: list[tuple[int, int, float]] = []  # (row-steps, decode steps, seconds) per call
        chains = [0] * len(prompts)  # per problem: decode steps its own rollouts ran, call by call
        t = time.perf_counter()
        with _logged_rollouts(calls, chains):
            results = mcts_q(be, prompts, cfg, q_value_scorer(be), on_round=barrier)
        runs[name] = (results, time.perf_counter() - t, be, calls, chains)

    n = min(args.serial_problems, args.problems)
    serial_answers, serial_wall = [], 0.0
    for p in prompts[:n]:
        sbe = SerialBackend(TorchBackend(model))
        t = time.perf_counter()
        (res,) = mcts_q(sbe, [p], cfg, q_value_scorer(sbe))
        serial_wall += time.perf_counter() - t
        serial_answers.append(res.tokens)
    serial_rate = n / serial_wall
    report = {
        "machine": machine(),
        "model": args.model,
        "problems": args.problems,
        "rounds": args.rounds,
        "serial_problems": n,
        "serial_problems_per_s": serial_rate,
    }
    for name, (results, wall, be, _, _) in runs.items():
        same = sum(a.tokens == b for a, b in zip(results[:n], serial_answers))
        report[name] = {
            "seconds": wall,
            "problems_per_s": args.problems / wall,
            "speedup": args.problems / wall / serial_rate,
            "share_outside_model_calls": 1 - be.usage.seconds / wall,
            "same_answers": f"{same}/{n}",
            "tokens_per_problem": sum(r.tokens_used for r in results) / len(results),
        }
    results, wall, be, calls, chains = runs["batched"]
    row_steps, steps, rollout_s = (sum(c[k] for c in calls) for k in range(3))
    step_s = rollout_s / max(1, steps)
    best_wall = max(chains) * step_s + wall - rollout_s  # the longest chain, nothing waiting
    report["batched"].update(
        {
            "rollout_calls": len(calls),
            "rollout_seconds": rollout_s,
            "rollout_row_steps": row_steps,
            "rollout_decode_steps": steps,
            "rows_per_decode_step": row_steps / max(1, steps),
            "longest_rollout_chain": max(chains),
            "rows_per_step_bound": row_steps / max(1, max(chains)),
            "speedup_bound_continuous_batching": (args.problems / best_wall) / serial_rate,
        }
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


@contextmanager
def _logged_rollouts(calls: list[tuple[int, int, float]], chains: list[int]):
    """Log every rollout call of a search: (row-steps, decode steps, seconds) in ``calls`` (a call
    runs as many steps as its longest row), and in ``chains[i]`` the steps problem i waited for,
    its longest row of each call: its rounds run one after another, its rows of a call together."""
    from latent_search.ledger import Ledger

    rollout = Ledger.rollout

    def logged(self, owners, prefixes, max_new_tokens, **kw):
        t = time.perf_counter()
        out = rollout(self, owners, prefixes, max_new_tokens, **kw)
        if out:
            calls.append((sum(map(len, out)), max(map(len, out)), time.perf_counter() - t))
            longest: dict[int, int] = {}
            for i, toks in zip(owners, out):
                longest[i] = max(longest.get(i, 0), len(toks))
            for i, n in longest.items():
                chains[i] += n
        return out

    Ledger.rollout = logged
    try:
        yield
    finally:
        Ledger.rollout = rollout


if __name__ == "__main__":
    main()
