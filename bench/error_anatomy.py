"""Where a CoLA policy's greedy answers go wrong, and whether another latent action would have
written the right token there.

For each held-out arith problem the greedy solution is read with the equation check's parts
(``latent_search.equations``): its first equation that misreads the question (an operand that
is neither a number of the question nor an earlier result) or miscalculates (``a op b != r``).
For a miscalculation, at the state just before the first wrong character of the result, every
latent action's token is decoded: the right digit is *reachable* when some action writes it,
and the policy's probability of those actions says how often sampling would. Reads the gold
answer only to sort right from wrong (an analysis, not a search).

Run:  python bench/error_anatomy.py --model tiny-arith-bc --problems 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402


def first_error(question: str, text: str):
    """("reading" | "calculator", the equation's check) of the first equation that fails, or
    None when every equation checks."""
    from latent_search.equations import check_each, find_equations

    for c in check_each(question, find_equations(text)):
        if c.read < 2:
            return "reading", c
        if not c.computed:
            return "calculator", c
    return None


def reach(model, prompt: list[int], ids: list[int], text: str, m, right: Fraction):
    """At the state before the first wrong character of equation ``m``'s result (a regex
    match): whether some action writes the right token, the policy's probability of those
    actions, and whether the frozen backbone's own LM head ranks a right token first (the
    knowledge a policy over that backbone's features has to draw on)."""
    import torch

    from cola_models.tokenizer import left_pad

    tok = model.tokenizer
    written, want = m.group(4), str(right)
    differ = next((i for i, (x, y) in enumerate(zip(written, want)) if x != y), None)
    div = m.start(4) + (min(len(written), len(want)) if differ is None else differ)
    k = 0  # generated tokens written before the divergence
    while k < len(ids) and len(tok.decode(ids[: k + 1], skip_special_tokens=True)) <= div:
        k += 1
    rest = (text[: m.start(4)] + want)[len(tok.decode(ids[:k], skip_special_tokens=True)) :]
    x, mask = left_pad([prompt + ids[:k]], 0, model.device)
    with torch.no_grad():
        state = model.start(x, mask)
        acts = torch.arange(model.n_actions, device=model.device)[None]  # [1, K]
        toks = model.next_token_logits(state.h, acts)[0].argmax(-1)  # [K]
        probs = state.policy_logits[0].float().softmax(-1)  # [K]
        lm_top = int(model.backbone.token_logits(state.h)[0].argmax())
    good = [a for a in range(model.n_actions) if _writes(tok.decode([int(toks[a])]), rest)]
    lm_right = _writes(tok.decode([lm_top]), rest)
    return bool(good), float(probs[good].sum()) if good else 0.0, lm_right


def _writes(piece: str, rest: str) -> bool:
    return bool(piece) and rest.startswith(piece)


def main() -> None:
    import cola_models as cm
    from cola_models.generation import GenerationConfig, generate
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-arith-bc")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = cm.load_model(args.model)
    if model.kind != "cola":
        raise SystemExit("bench/error_anatomy.py: --model must be a CoLA model (latent actions)")
    task = get_task("arith")
    problems = task.generate(args.problems, seed=1, split="test")
    prompts = cm.tokenizer_encode(model.tokenizer, [format_prompt(p.question) for p in problems])
    out = generate(model, prompts, GenerationConfig(max_new_tokens=160, action="greedy"))
    kinds: Counter = Counter()
    examined, reachable, lm_right, mass = 0, 0, 0, []
    for p, prompt, ids, text in zip(problems, prompts, out.token_ids, out.texts):
        if task.reward(p, text) > 0.5:
            kinds["right"] += 1
            continue
        err = first_error(p.question, text)
        kinds[err[0] if err else "wrong, every equation checks"] += 1
        if err and err[0] == "calculator" and err[1].right and err[1].right.denominator == 1:
            ok, m, lm_ok = reach(model, prompt, ids, text, err[1].match, err[1].right)
            examined += 1
            reachable += ok
            lm_right += lm_ok
            mass += [m] if ok else []
    report = {
        "machine": machine(),
        "model": args.model,
        "problems": args.problems,
        "greedy": dict(kinds),
        "calculator_errors_examined": examined,
        "calculator_errors_right_token_reachable": reachable,
        "calculator_errors_backbone_lm_head_right": lm_right,
        "policy_probability_of_right_actions_median": statistics.median(mass) if mass else None,
        "policy_probability_of_right_actions_mean": statistics.mean(mass) if mass else None,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
