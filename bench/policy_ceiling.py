"""How far can training the policy alone (the backbone frozen, as in latent RL) move greedy
accuracy when it is handed the right tokens instead of a reward? An upper-bound probe for latent RL.

Two sources of labelled states, both on training problems (the train split), never the
held-out ones:
  - ``calculator``: the policy's own samples (temperature 1); at every result of their
    equations (``latent_search.equations``) the calculator says which token is right, up to and
    including the first wrong one (the states after it are off the path the label assumes).
    Dense and exact: every arithmetic decision of 8,000 samples, judged, no gold answer read.
  - ``search``: the per-token beam (width 8, every latent action, the equation check as judge)
    solves training problems; the solutions the task grades right are labelled at every token
    (expert iteration with the search as the expert).
The policy is then trained to write the labelled token: at each labelled state, the log of the
probability of the actions whose decoded token is right (summed over those actions; several
actions write the same token). Only the policy head trains; the language model is untouched.
Greedy accuracy on the usual 500 held-out arith problems (test split, seed 1) before and after.

Run:  python bench/policy_ceiling.py --source calculator --out runs/ceiling-calc
      python bench/policy_ceiling.py --source search --problems 3000 --out runs/ceiling-search
The search source writes its solutions to OUT/search.jsonl as it goes (resumable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

Label = tuple[int, list[int]]  # (generated-token index, token ids that are right there)


def calculator_labels(pieces: list[str], question: str, text: str, vocab: list[str]):
    """Labels at the results of ``text``'s equations: each result token up to and including the
    first wrong one. ``pieces``: the decoded string of each generated token."""
    from latent_search.equations import check_each, find_equations

    starts, c = {}, 0
    for j, s in enumerate(pieces):
        starts[c] = j
        c += len(s)
    labels: list[Label] = []
    for ch in check_each(question, find_equations(text)):
        j = starts.get(ch.match.start(4))  # the result must begin on a token boundary
        if ch.right is None or ch.right.denominator != 1 or j is None:
            continue
        rest = str(ch.right.numerator)
        while rest and j < len(pieces):
            labels.append((j, [t for t, v in enumerate(vocab) if v and rest.startswith(v)]))
            if not (pieces[j] and rest.startswith(pieces[j])):
                break  # the first wrong token: labelled, and the label's path ends here
            rest, j = rest[len(pieces[j]) :], j + 1
    return labels


def from_calculator(model, n: int, seed: int) -> list:
    from cola_models.generation import GenerationConfig, generate
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    tok = model.tokenizer
    vocab = [tok.decode([i]) for i in range(len(tok))]
    problems = get_task("arith").generate(n, seed=seed, split="train")
    prompts = [format_prompt(p.question) for p in problems]
    cfg = GenerationConfig(max_new_tokens=128, action="sample", action_temperature=1.0)
    out = generate(model, prompts, cfg, generator=torch.Generator().manual_seed(seed))
    items = []
    for p, ids, text in zip(problems, out.token_ids, out.texts):
        labels = calculator_labels([vocab[t] for t in ids], p.question, text, vocab)
        if labels:
            items.append((p.question, ids, labels))
    return items


def from_search(model_name: str, model, n: int, seed: int, out: Path) -> list:
    """Per-token beam solutions of ``n`` training problems, kept where the task grades them
    right; OUT/search.jsonl holds every solution (a rerun continues it)."""
    from cola_models.tokenizer import encode
    from eval.answers import extract_answer
    from eval.searcher import load_searcher
    from eval.tasks import get_task
    from latent_search.search import SearchSpec, run_search

    path = out / "search.jsonl"
    done = {json.loads(x)["id"]: json.loads(x) for x in path.open()} if path.exists() else {}
    task = get_task("arith")
    problems = task.generate(n, seed=seed, split="train")
    spec = SearchSpec(
        algorithm="beam",
        candidates="token",
        beam_width=8,
        expand_k=64,
        scorer="equations",
        max_new_tokens=128,
        budget=944,
    )
    searcher = load_searcher(model_name, spec)  # the model's own prompt format
    todo = [p for p in problems if p.id not in done]
    for i in range(0, len(todo), 32):
        batch = todo[i : i + 32]
        ids = searcher.encode([p.question for p in batch], spec.max_new_tokens)
        res = run_search(
            searcher.backend, ids, spec, answer_fn=extract_answer, **searcher.search_args()
        )
        rows = [
            {"id": p.id, "question": p.question, "text": r.text, "correct": task.reward(p, r.text)}
            for p, r in zip(batch, res)
        ]
        with path.open("a") as f:  # appended batch by batch: a killed run loses one batch
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        done.update({r["id"]: r for r in rows})
        print(f"searched {sum(p.id in done for p in problems)} / {n}", flush=True)
    eos, items = model.tokenizer.eos_token_id, []
    for r in (done[p.id] for p in problems):
        if r["correct"] > 0.5:
            ids = encode(model.tokenizer, [r["text"]], add_bos=False)[0] + [eos]
            items.append((r["question"], ids, [(j, [t]) for j, t in enumerate(ids)]))
    return items


def writes_label(model, h: torch.Tensor, goods: list[list[int]]) -> torch.Tensor:
    """h [P, D] at labelled states -> [P, K]: whether action k's decoded token is right there."""
    K = model.n_actions
    acts = torch.arange(K).expand(h.shape[0], K)  # [P, K]
    toks = model.world_logits(h[:, None, :].expand(-1, K, -1), acts).argmax(-1)  # [P, K]
    V = max(int(toks.max()), max(max(g) for g in goods)) + 1
    right = torch.zeros(h.shape[0], V, dtype=torch.bool)  # [P, V]
    for q, g in enumerate(goods):
        right[q, g] = True
    return right.gather(1, toks)


def train_policy(model, items: list, steps: int, lr: float, batch: int, seed: int) -> list:
    from cola_models.tokenizer import encode
    from eval.prompts import format_prompt
    from train.common import freeze_all_but
    from train.rollouts import make_rollouts
    from train.stage1 import features

    tok = model.tokenizer
    prompts = encode(tok, [format_prompt(q) for q, _, _ in items])
    opt = torch.optim.AdamW(freeze_all_but(model, model.policy), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    log = []
    for step in range(1, steps + 1):
        idx = torch.randint(len(items), (batch,), generator=g).tolist()
        gens = [items[i][1] for i in idx]
        zeros = [[0] * len(x) for x in gens]  # actions are not read: the labels are tokens
        r = make_rollouts(tok, [prompts[i] for i in idx], gens, zeros, torch.zeros(batch))
        h, positions, key_mask = features(model, r.input_ids, r.attention_mask)  # [B, T, D]
        rows = [
            (k, int(r.act_pos[k, j]), good) for k, i in enumerate(idx) for j, good in items[i][2]
        ]
        b, t = [x[0] for x in rows], [x[1] for x in rows]
        with torch.no_grad():
            ok = writes_label(model, h[b, t], [x[2] for x in rows])  # [P, K]
        logits = model.policy(h, positions, key_mask)[0][b, t].float()  # [P, K]
        reach = ok.any(-1)  # a state where no action writes the label teaches nothing
        right = torch.logsumexp(logits.masked_fill(~ok, -torch.inf), -1)
        loss = -(right - torch.logsumexp(logits, -1))[reach].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            greedy_right = ok.gather(1, logits.argmax(-1, keepdim=True))[reach].float().mean()
            log.append({"step": step, "loss": loss.item(), "greedy_right": greedy_right.item()})
            print(json.dumps(log[-1]), flush=True)
    return log


def main() -> None:
    import cola_models as cm
    from eval.evaluate import evaluate_problems, wilson_interval
    from eval.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith-bc")
    ap.add_argument("--source", choices=["calculator", "search"], required=True)
    ap.add_argument("--problems", type=int, default=8000, help="training problems labelled")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    model = cm.load_model(args.model)
    if model.kind != "cola":
        raise SystemExit("bench/policy_ceiling.py: --model must be a CoLA model")
    held = get_task("arith").generate(500, seed=1, split="test")

    def accuracy() -> float:
        model.eval()
        acc = evaluate_problems(model, held, max_new_tokens=128)["accuracy"]
        model.train()
        return acc

    before = accuracy()
    t0 = time.perf_counter()
    if args.source == "calculator":
        items = from_calculator(model, args.problems, args.seed)
    else:
        items = from_search(args.model, model, args.problems, args.seed, args.out)
    log = train_policy(model, items, args.steps, args.lr, args.batch, args.seed)
    after = accuracy()
    n = len(held)
    report = {
        "machine": machine(),
        "model": args.model,
        "source": args.source,
        "problems": args.problems,
        "labelled_samples": len(items),
        "labelled_states": sum(len(x[2]) for x in items),
        "steps": args.steps,
        "lr": args.lr,
        "greedy_before": before,
        "greedy_after": after,
        "greedy_after_ci95": wilson_interval(round(after * n), n),
        "seconds": time.perf_counter() - t0,
        "log": log,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "log"}, indent=2))
    (args.out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
