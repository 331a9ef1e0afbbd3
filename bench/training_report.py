"""Summarise a pipeline run directory into the README's training table.

Reads OUT/report.json (greedy held-out accuracy, written by the pipeline), the stage metrics, and
measures the language model's held-out perplexity before and after each RL variant.

Run:  python bench/training_report.py OUT [--json report.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def moving(values: list[float], k: int = 5) -> list[float]:
    return [
        sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1])
        for i in range(len(values))
    ]


def time_to_reward(rows: list[dict], target: float) -> float | None:
    """Training seconds until held-out greedy accuracy (eval_reward) first reaches ``target``."""
    return next((r["time"] for r in rows if r.get("eval_reward", -1) >= target), None)


def main() -> None:
    from cola_models.loading import load_model
    from eval.perplexity import lm_perplexity
    from eval.tasks import get_task

    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--ppl-problems", type=int, default=500)
    args = ap.parse_args()
    out = args.out
    report = json.loads((out / "report.json").read_text())
    held = get_task("arith").generate(args.ppl_problems, seed=2, split="test")
    ppl = {name: lm_perplexity(load_model(out / "models" / name), held) for name in report}
    idm = _rows(out / "stage1" / "idm" / "metrics.jsonl")[-1]
    rl, tok = _rows(out / "rl" / "metrics.jsonl"), _rows(out / "token-rl" / "metrics.jsonl")

    # "Same reward": the lower of the two runs' best held-out greedy accuracy (eval_reward, a
    # fixed test-split set; per-step training reward depends on which problems were drawn).
    def best(rows):
        return max(r["eval_reward"] for r in rows if "eval_reward" in r)

    target = min(best(rl), best(tok))
    summary = {
        "accuracy": {n: {t: r[t]["accuracy"] for t in r} for n, r in report.items()},
        "n": {t: r["n"] for t, r in next(iter(report.values())).items()},
        "perplexity": ppl,
        "stage1": {k: idm[k] for k in ("alive", "usage_ppl", "wm_acc", "backbone_acc")},
        "rl_target_reward": target,
        "seconds_to_target": {
            "latent": time_to_reward(rl, target),
            "token": time_to_reward(tok, target),
        },
        "rl_seconds_total": {"latent": rl[-1]["time"], "token": tok[-1]["time"]},
        "eval_reward": {
            name: [(r["step"], r["time"], r["eval_reward"]) for r in rows if "eval_reward" in r]
            for name, rows in (("latent", rl), ("token", tok))
        },
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
