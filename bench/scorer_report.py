"""Can a scorer tell right from wrong solutions of the same problem? The report to read before
any search number (a scorer that cannot will only make search worse).

For each held-out arith problem, k policy samples (one batch), then for each gold-free scorer:
  within-problem AUC (bootstrap 95% interval over problems), pooled AUC, and best-of-{1,4,8,...}
  accuracy choosing by the score and by score-weighted vote;
beside majority vote and ORACLE pass@k (any sample right: reads the gold answer, the ceiling of
any selection). Scorers: the Q head's V(s) = sum_a pi(a|s) Q(s,a) before the last token (what the
searches rank by today), the LM's mean per-token probability of the sample (untrained), the
equation check (no model: ``latent_search.equations``), and any reward model given with
--verifier (e.g. OUT/verifier/model of the pipeline).

Run:  python bench/scorer_report.py --model tiny-arith --problems 200 --k 32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROWS = 4096  # samples generated per batch


def _samples(model, problems, k: int, temperature: float, seed: int):
    import torch

    import cola_models as cm
    from cola_models.generation import GenerationConfig, generate
    from eval.prompts import format_prompt

    prompts = cm.tokenizer_encode(model.tokenizer, [format_prompt(p.question) for p in problems])
    flat = [p for p in prompts for _ in range(k)]
    cfg = GenerationConfig(max_new_tokens=256, action="sample", action_temperature=temperature)
    g = torch.Generator().manual_seed(seed)
    texts, token_ids = [], []
    for s in range(0, len(flat), ROWS):  # one batch of every sample ran out of memory at 16k rows
        out = generate(model, flat[s : s + ROWS], cfg, generator=g)
        texts += out.texts
        token_ids += out.token_ids
    return flat, SimpleNamespace(texts=texts, token_ids=token_ids)


def main() -> None:
    import cola_models as cm
    from eval.answers import extract_answer
    from eval.ranking import Group, best_of, pooled_auc, within_problem_auc
    from eval.tasks import get_task
    from latent_search.backends.likelihood import mean_token_probs
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.equations import equation_score
    from latent_search.scorers import state_values

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verifier", type=Path, action="append", default=[], help="reward-model dir")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = cm.load_model(args.model)
    task = get_task("arith")
    problems = task.generate(args.problems, seed=1, split="test")
    flat, out = _samples(model, problems, args.k, args.temperature, args.seed)
    right = [task.reward(problems[i // args.k], t) > 0.5 for i, t in enumerate(out.texts)]
    answers = [extract_answer(t) for t in out.texts]
    seqs = [p + o for p, o in zip(flat, out.token_ids)]
    scores: dict[str, list[float]] = {
        "lm_mean_prob": mean_token_probs(model, seqs, [len(p) for p in flat])[0],
        "equations": [
            equation_score(problems[i // args.k].question, t) for i, t in enumerate(out.texts)
        ],
    }
    if getattr(model, "q", None) is not None:
        be = TorchBackend(model)
        scores["q_value"] = []
        for s in range(0, len(seqs), 256):
            scores["q_value"] += state_values(
                be.prior([q[:-1] for q in seqs[s : s + 256]])
            ).tolist()
    for path in args.verifier:  # reward models read the decoded text, as in search
        from cola_models.reward_model import load_reward_model

        rm = load_reward_model(path)
        texts = [model.tokenizer.decode(s, skip_special_tokens=True) for s in seqs]
        scores[f"verifier:{path.name if path.name != 'model' else path.parent.name}"] = (
            rm.score_texts(texts)[0]
        )
    ks = [k for k in (1, 4, 8, 16, 32, 64) if k <= args.k]

    def groups(vals):
        k = args.k
        return [
            Group(
                vals[i * k : (i + 1) * k], right[i * k : (i + 1) * k], answers[i * k : (i + 1) * k]
            )
            for i in range(len(problems))
        ]

    plain = groups([0.0] * len(seqs))
    report = {
        "machine": machine(),
        "model": args.model,
        "problems": len(problems),
        "k": args.k,
        "temperature": args.temperature,
        "sample_accuracy": sum(right) / len(right),
        "vote": {k: best_of(plain, k, "vote") for k in ks},
        "pass@k_ORACLE": {k: best_of(plain, k, "oracle") for k in ks},
        "scorers": {
            name: {
                "within_problem_auc": within_problem_auc(groups(v)),
                "pooled_auc": pooled_auc(groups(v)),
                "best_of": {k: best_of(groups(v), k, "score") for k in ks},
                "weighted_vote": {k: best_of(groups(v), k, "weighted_vote") for k in ks},
            }
            for name, v in scores.items()
        },
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
