"""What limits search on the bundled model: how good are the samples, and can the value tell them
apart? For each held-out arith problem, k policy samples (one batch); then

  sample accuracy     the share of samples that are right
  pass@k (ORACLE)     some sample is right: the ceiling of any selection among the k (gold used)
  Q-select / vote     accuracy when choosing by V(s) = sum_a pi(a|s) Q(s,a) before the last
                      token (what best-of-n, beam and mcts rank by), or by majority answer
  AUC within / pooled how often a right sample outscores a wrong one under V, among samples of
                      the same problem (what selection needs) / across all problems (which also
                      rewards knowing which problems are easy)

Run:  python bench/value_quality.py --problems 200 --k 16 --temperatures 1.0 0.7
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def auc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main() -> None:
    import torch

    import cola_models as cm
    from cola_models.generation import GenerationConfig, generate
    from eval.answers import extract_answer
    from eval.prompts import format_prompt
    from eval.tasks import get_task
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.scorers import state_values

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = cm.load_model(args.model)
    task = get_task("arith")
    problems = task.generate(args.problems, seed=1, split="test")
    prompts = cm.tokenizer_encode(model.tokenizer, [format_prompt(p.question) for p in problems])
    greedy = generate(model, prompts, GenerationConfig(max_new_tokens=256, action="greedy"))
    greedy_acc = sum(task.reward(p, t) for p, t in zip(problems, greedy.texts)) / len(problems)
    print(json.dumps({"machine": machine(), "model": args.model, "problems": len(problems),
                      "greedy": greedy_acc}), flush=True)  # fmt: skip
    k = args.k
    for temp in args.temperatures:
        be = TorchBackend(model)
        flat = [p for p in prompts for _ in range(k)]
        out = generate(
            model,
            flat,
            GenerationConfig(max_new_tokens=256, action="sample", action_temperature=temp),
            generator=torch.Generator().manual_seed(args.seed),
        )
        right = [task.reward(problems[i // k], t) > 0.5 for i, t in enumerate(out.texts)]
        seqs = [p + o for p, o in zip(flat, out.token_ids)]
        values: list[float] = []
        for s in range(0, len(seqs), 256):
            values += state_values(be.prior([q[:-1] for q in seqs[s : s + 256]])).tolist()
        q_pick = vote_pick = any_right = 0
        within = []
        for i in range(len(problems)):
            rows = list(range(i * k, (i + 1) * k))
            q_pick += right[max(rows, key=lambda r: values[r])]
            answers = [extract_answer(out.texts[r]) for r in rows]
            counts = Counter(a for a in answers if a is not None)
            if counts:
                vote_pick += right[rows[answers.index(counts.most_common(1)[0][0])]]
            any_right += any(right[r] for r in rows)
            a = auc(
                [values[r] for r in rows if right[r]], [values[r] for r in rows if not right[r]]
            )
            if a is not None:
                within.append(a)
        n = len(problems)
        pooled = auc(
            [v for v, c in zip(values, right) if c], [v for v, c in zip(values, right) if not c]
        )
        print(json.dumps({
            "temperature": temp,
            "k": k,
            "sample_accuracy": sum(right) / len(right),
            "pass@k_ORACLE": any_right / n,
            "q_select": q_pick / n,
            "vote": vote_pick / n,
            "auc_within_problem": sum(within) / len(within) if within else None,
            "problems_with_mixed_samples": len(within),
            "auc_pooled": pooled,
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
