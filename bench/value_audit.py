"""Why do learned judges rank a problem's solutions at chance where the LM's likelihood does not,
and what bounds them? The audit behind issue 30, in numbers.

On the policy's own samples (actions sampled at temperature 1, as the Q stage and the verifier
sample them):
1. contrast: the share of training problems whose k samples disagree (the only ones a
   within-problem objective learns from) and of held-out ones (the only ones AUC is measured on);
2. label noise of the exact step labels: right samples with an off-track step (right by luck),
   wrong samples whose every step is arithmetically right (the right arithmetic on the wrong
   numbers: nothing in a step shows the error);
3. what the errors are: wrong samples of mixed held-out problems with a false ``a op b = r``;
4. what the LM knows: within-problem AUC of its per-token log-probabilities (sum, mean, min,
   tokens it would not have written), untrained;
5. the bound: AUC of a judge that knows arithmetic exactly (1 if every step is right, else 0)
   and of the equation check (arithmetic plus the question's numbers), no model;
6. a linear probe: logistic regression on the frozen backbone features h (plus the token's
   log-probability) at step ends, trained on training-problem samples with the exact step labels,
   scored on held-out samples by its minimum over step ends: whether the features see the
   written digits at all.
Any model given with --q-model (a CoLA model with a Q head, e.g. a ``train q`` run) is scored by
its final V beside them, and by the equation check with its ties broken by that V (``--scorer equations-q``).

Run:  python bench/value_audit.py --problems 200 --k 16 --train-problems 500 --json runs/value_audit.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

_STEP = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)")


def _arith_ok(text: str) -> bool:
    """Every ``a op b = r`` of the answer is exact (no model: the bound's judge)."""
    from train.value_labels import _step_ok

    body = text[text.rfind("Answer:") + 1 :]  # the whole text when it is the answer alone
    return all(_step_ok(int(a), o, int(b), int(r)) for a, o, b, r in _STEP.findall(body))


def _sample(model, problems, k, seed):
    from scorer_report import _samples

    from eval.tasks import get_task

    flat, out = _samples(model, problems, k, 1.0, seed)
    task = get_task("arith")
    right = [task.reward(problems[i // k], t) > 0.5 for i, t in enumerate(out.texts)]
    return flat, out, right


def _groups(values, right, k):
    from eval.ranking import Group

    n = len(values) // k
    return [
        Group(values[i * k : (i + 1) * k], right[i * k : (i + 1) * k], [None] * k) for i in range(n)
    ]


def _auc(values, right, k) -> dict:
    from eval.ranking import within_problem_auc

    w = within_problem_auc(_groups(values, right, k))
    return {key: (round(v, 3) if isinstance(v, float) else v) for key, v in w.items()}


def _mixed(right, k) -> float:
    groups = [right[i : i + k] for i in range(0, len(right), k)]
    return sum(any(g) and not all(g) for g in groups) / len(groups)


def _token_stats(model, seqs, starts):
    """Per sample: backbone features h [n, D] and log p of each generated token, its argmax."""
    import torch

    from cola_models.blocks import positions_from_mask
    from cola_models.tokenizer import left_pad, pad_id

    out = []
    with torch.no_grad():
        for s in range(0, len(seqs), 128):
            chunk, first = seqs[s : s + 128], starts[s : s + 128]
            ids, mask = left_pad(chunk, pad_id(model.tokenizer), model.device)
            h, _ = model.backbone(ids, mask.bool(), positions_from_mask(mask))  # [B, T, D]
            logp = model.backbone.token_logits(h).float().log_softmax(-1)  # [B, T, V]
            T = ids.shape[1]
            for b, (seq, n0) in enumerate(zip(chunk, first)):
                pos = torch.arange(T - (len(seq) - n0), T, device=ids.device)  # generated
                lp = logp[b, pos - 1].gather(-1, ids[b, pos][:, None])[:, 0]
                best = logp[b, pos - 1].max(-1).values
                # the statistics and the probe run on the host: one copy per sample
                out.append({"h": h[b, pos].float().cpu(), "lp": lp.cpu(), "best": best.cpu()})
    return out


def _lm_scores(stats) -> dict[str, list[float]]:
    return {
        "LM log p, sum": [s["lp"].sum().item() for s in stats],
        "LM log p, mean": [s["lp"].mean().item() for s in stats],
        "LM log p, min": [s["lp"].min().item() for s in stats],
        "tokens the LM would not write (fewer is better)": [
            -float((s["lp"] < s["best"] - 1e-4).sum()) for s in stats
        ],
    }


def _probe(model, problems, flat, out, right, held_stats, held_out) -> list[float]:
    """Logistic regression on [h, log p] at the step ends of training samples (exact labels);
    held-out score = its minimum over a sample's step ends and last token."""
    import torch

    from train.value_labels import sample_labels, token_ends

    tok = model.tokenizer
    k = len(flat) // len(problems)
    stats = _token_stats(
        model, [p + o for p, o in zip(flat, out.token_ids)], [len(p) for p in flat]
    )
    xs, ys = [], []
    for i, (s, gen, text) in enumerate(zip(stats, out.token_ids, out.texts)):
        prompt = tok.decode(flat[i], skip_special_tokens=True)
        labels = sample_labels(
            problems[i // k], prompt, text, token_ends(tok, prompt, gen), right[i]
        )
        feats = torch.cat([s["h"], s["lp"][:, None]], -1)  # [n, D + 1]
        xs.append(feats)
        ys.append(torch.tensor(labels))
    x, y = torch.cat(xs), torch.cat(ys)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits((x - mu) / sd @ w + b, y)
        loss = loss + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return [
            torch.sigmoid((torch.cat([s["h"], s["lp"][:, None]], -1) - mu) / sd @ w + b)
            .min()
            .item()
            for s in held_stats
        ]


def _q_final(path: str, seqs) -> list[float]:
    import cola_models as cm
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.scorers import state_values

    be = TorchBackend(cm.load_model(path))
    vals: list[float] = []
    for s in range(0, len(seqs), 256):
        vals += state_values(be.prior([q[:-1] for q in seqs[s : s + 256]])).tolist()
    return vals


def main() -> None:
    import cola_models as cm
    from eval.tasks import get_task
    from latent_search.equations import equation_score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--train-problems", type=int, default=500)
    ap.add_argument("--train-k", type=int, default=8)
    ap.add_argument("--q-model", action="append", default=[], help="CoLA model with a Q head")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = cm.load_model(args.model)
    task = get_task("arith")
    held = task.generate(args.problems, seed=1, split="test")
    train = task.generate(args.train_problems, seed=5, split="train")
    h_flat, h_out, h_right = _sample(model, held, args.k, 0)
    t_flat, t_out, t_right = _sample(model, train, args.train_k, 1)
    h_seqs = [p + o for p, o in zip(h_flat, h_out.token_ids)]
    stats = _token_stats(model, h_seqs, [len(p) for p in h_flat])

    k = args.k
    mixed_ix = {
        i // k for i in range(len(h_right)) if _mixed(h_right[(i // k) * k : (i // k + 1) * k], k)
    }
    wrong_mixed = [i for i in range(len(h_right)) if i // k in mixed_ix and not h_right[i]]
    t_arith = [_arith_ok(t) for t in t_out.texts]
    scores = {
        **_lm_scores(stats),
        "exact arithmetic, no model (bound)": [float(_arith_ok(t)) for t in h_out.texts],
        "equation check, no model": [
            equation_score(held[i // k].question, t) for i, t in enumerate(h_out.texts)
        ],
        "linear probe on [h, log p], min over the answer": _probe(
            model, train, t_flat, t_out, t_right, stats, h_out
        ),
    }
    check = scores["equation check, no model"]
    heads = ([args.model] if model.q is not None else []) + args.q_model
    for path in heads:
        v = _q_final(path, h_seqs)
        scores[f"Q head of {path}, final V"] = v
        # --scorer equations-q: the check first, its ties broken by V
        scores[f"equation check, ties broken by V of {path}"] = [
            c + 1e-6 * x for c, x in zip(check, v)
        ]
    report = {
        "machine": machine(),
        "model": args.model,
        "held_out": {
            "problems": args.problems,
            "k": k,
            "sample_accuracy": sum(h_right) / len(h_right),
        },
        "contrast": {
            "train_problems_with_mixed_samples": _mixed(t_right, args.train_k),
            "train_k": args.train_k,
            "held_out_problems_with_mixed_samples": _mixed(h_right, k),
        },
        "label_noise": {
            "right_samples_with_a_false_step": sum(r and not a for r, a in zip(t_right, t_arith))
            / max(1, sum(t_right)),
            "wrong_samples_with_every_step_exact": sum(
                not r and a for r, a in zip(t_right, t_arith)
            )
            / max(1, len(t_right) - sum(t_right)),
        },
        "errors": {
            "wrong_samples_of_mixed_problems": len(wrong_mixed),
            "with_a_false_step": sum(not _arith_ok(h_out.texts[i]) for i in wrong_mixed)
            / max(1, len(wrong_mixed)),
        },
        "within_problem_auc": {name: _auc(v, h_right, k) for name, v in scores.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
