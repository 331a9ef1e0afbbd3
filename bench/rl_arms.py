"""Latent RL, token RL and rejection-sampling fine-tuning at one sample budget: held-out greedy
accuracy against training wall time, the time latent RL needs to reach token RL's best accuracy
(the paper's "half the compute" claim), and the language model's held-out perplexity per arm.

Each arm is a resumable ``train`` run in OUT/<arm> (re-running skips finished arms):
  rl        latent GRPO on the CoLA policy, from --cola (the BC model)
  rft       rejection-sampling fine-tuning of the same policy, same samples per step
  token-rl  GRPO on every weight of the plain LM, from --lm (the base LM)
Accuracy during training is the runs' own ``eval_reward`` (greedy, a fixed held-out set of
--eval-problems, logged every --eval-every steps); wall time excludes those evaluations. At the end
every arm's model is evaluated greedily on --final-problems held-out arith problems.

Run:  python bench/rl_arms.py --cola tiny-arith-bc --lm tiny-arith-base --out runs/rl-arms
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

ARMS = ("rl", "rft", "token-rl")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def curve(rows: list[dict]) -> list[tuple[float, float, int]]:
    """(training seconds without evaluation, held-out accuracy, samples drawn so far) per eval."""
    out, eval_secs, samples = [], 0.0, 0
    for r in rows:
        samples += int(r.get("samples", 0))
        if "eval_reward" in r:
            eval_secs += r.get("eval_seconds", 0.0)
            out.append((r["time"] - eval_secs, r["eval_reward"], samples))
    return out


def time_to(points: list[tuple[float, float, int]], target: float) -> float | None:
    return next((t for t, acc, _ in points if acc >= target), None)


def _arm_config(arm: str, args):
    from train.cli_entry import stage_default

    cfg = stage_default(arm, "tiny")
    rl = replace(
        cfg.rl,
        model=args.lm if arm == "token-rl" else args.cola,
        level="token" if arm == "token-rl" else "latent",
        algorithm="rft" if arm == "rft" else "grpo",
        prompts_per_step=args.prompts,
        group_size=args.group,
        eval_every=args.eval_every,
        eval_problems=args.eval_problems,
        temperature=args.temperature,
    )
    optim = replace(cfg.optim, steps=args.steps)
    if args.tasks:  # train on these tasks (and levels) only; held-out evaluation is unchanged
        n = len(args.tasks)
        data = replace(cfg.data, tasks=tuple(args.tasks), weights=(1.0,) * n)
        cfg = replace(cfg, data=replace(data, levels=tuple(args.levels or ())))
    lr = args.token_lr if arm == "token-rl" else args.latent_lr
    if lr is not None:
        optim = replace(optim, lr=lr)
    return replace(cfg, rl=rl, optim=optim)


def _resolve(name: str) -> str:
    from cola_models.catalog import bundled_models

    return str(bundled_models().get(name, name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cola", required=True, help="CoLA model the latent arms start from (BC)")
    ap.add_argument("--lm", required=True, help="plain LM token RL starts from (base)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-problems", type=int, default=200)
    ap.add_argument("--final-problems", type=int, default=500)
    ap.add_argument("--latent-lr", type=float, default=None, help="default: the preset's")
    ap.add_argument("--token-lr", type=float, default=None, help="default: the preset's")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--tasks", nargs="+", default=None, help="train on these tasks only")
    ap.add_argument("--levels", type=int, nargs="+", default=None, help="with --tasks: levels")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    args = ap.parse_args()
    args.cola, args.lm = _resolve(args.cola), _resolve(args.lm)

    from cola_models.loading import load_model
    from eval.evaluate import evaluate_problems
    from eval.perplexity import lm_perplexity
    from eval.tasks import get_task
    from train.rl import run_rl

    test = get_task("arith").generate(args.final_problems, seed=1, split="test")
    held = get_task("arith").generate(500, seed=2, split="test")
    report = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}, "arms": {}}
    starts = {"cola": load_model(args.cola), "lm": load_model(args.lm)}
    report["start"] = {
        k: {
            "accuracy": evaluate_problems(m, test)["accuracy"],
            "perplexity": lm_perplexity(m, held),
        }
        for k, m in starts.items()
    }
    for arm in args.arms:
        print(f"running {arm}", file=sys.stderr)
        model_dir = run_rl(_arm_config(arm, args), args.out / arm, stage=arm)
        model = load_model(model_dir)
        rows = _rows(args.out / arm / "metrics.jsonl")
        report["arms"][arm] = {
            "final_accuracy": evaluate_problems(model, test)["accuracy"],
            "perplexity": lm_perplexity(model, held),
            "curve": curve(rows),
            "train_seconds": curve(rows)[-1][0],
            "samples": sum(int(r.get("samples", 0)) for r in rows),
            "zero_std_frac": sum(r["zero_std_frac"] for r in rows) / len(rows),
        }
    arms = report["arms"]
    if "rl" in arms and "token-rl" in arms:
        best_token = max(acc for _, acc, _ in arms["token-rl"]["curve"])
        t_token = time_to(arms["token-rl"]["curve"], best_token)
        t_latent = time_to(arms["rl"]["curve"], best_token)
        report["half_compute"] = {
            "token_rl_best_accuracy": best_token,
            "token_rl_seconds": t_token,
            "latent_rl_seconds": t_latent,
            "ratio": None if t_latent is None or not t_token else t_latent / t_token,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rl_arms.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "rl-arms.png")
    print(json.dumps({k: v for k, v in report.items() if k != "arms"}, indent=2))
    for arm, a in arms.items():
        print(arm, {k: v for k, v in a.items() if k != "curve"})


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"rl": "latent RL (GRPO)", "rft": "latent RFT", "token-rl": "token RL (GRPO)"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, a in report["arms"].items():
        xs, ys = [p[0] / 60 for p in a["curve"]], [100 * p[1] for p in a["curve"]]
        ax.plot(xs, ys, marker="o", ms=3, label=labels[arm])
    ax.set_xlabel("training wall time (min, evaluation excluded)")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_title("arith, held-out problems; " + report["machine"].split(",")[0], fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
