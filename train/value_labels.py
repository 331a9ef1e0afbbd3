"""Labels for value training: which prefixes of a sample are still on track.

Exact step labels (training problems only, gold steps): a prefix is on track while each of its
finished steps ``a op b = r.`` is arithmetically right and reaches one of the gold solution's
intermediate values; a right sample's prefixes all count as on track. Once off track, always
off track (a fault found stays found), which is what lets a min over a path's values find it.

Dense labels spread them over every generated token: a token carries the label of the step it
belongs to (the step-end label at or after it), and the tokens after the last step (the boxed
answer) carry the outcome. Regressed by a value at every state, that label is the probability
that the step in progress ends on track: low before a step whose start already went wrong,
zero from the token that wrote a wrong digit on (the step's end then cannot be on track).
For a task without step labels every token carries the outcome (Cobbe et al. 2021's
token-level verifier labels).
"""

from __future__ import annotations

import bisect
import re

from cola_models.errors import ColaError

_STEP = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.")


def _step_ok(a: int, op: str, b: int, r: int) -> bool:
    exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
    return exact is not None and exact == r


def step_ends(problem, text: str, right: bool) -> list[tuple[int, float]]:
    """(character offset of each step's end, label) for a training problem's sample text.
    Refuses a test-split problem: gold steps must never reach the labels of held-out problems."""
    from eval.tasks import split_of

    if split_of(problem.question) != "train":
        raise ColaError("step labels read gold steps; a held-out problem reached the label code")
    gold = {int(s[3]) for s in (problem.data or {}).get("steps", [])}  # host: JSON data
    answer_at = text.find("\nAnswer:")
    out, on_track = [], True
    for m in _STEP.finditer(text, max(0, answer_at)):
        a, op, b, r = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        on_track = on_track and _step_ok(a, op, b, r) and r in gold
        out.append((m.end(), 1.0 if right or on_track else 0.0))
    return out


def dense_labels(
    ends: list[tuple[int, float]], token_ends: list[int], outcome: float
) -> list[float]:
    """A label per token from its end offset ``token_ends[i]`` (increasing): the label of the
    first step ending at or after it, the outcome after the last step."""
    offsets = [e for e, _ in ends]
    out = []
    for end in token_ends:
        i = bisect.bisect_left(offsets, end)
        out.append(ends[i][1] if i < len(ends) else outcome)
    return out


def token_ends(tokenizer, prompt_text: str, gen_ids: list[int]) -> list[int]:
    """End offset, in ``prompt_text + decode(gen_ids)``, of each generated token. Decoded one
    prefix at a time, so a token whose text depends on its neighbours is placed where the whole
    decode puts it."""
    out, base = [], len(prompt_text)
    for i in range(1, len(gen_ids) + 1):
        out.append(base + len(tokenizer.decode(gen_ids[:i], skip_special_tokens=True)))
    return out


def sample_labels(problem, prompt_text: str, gen_text: str, ends_at: list[int], right: bool):
    """Dense labels of one sample's generated tokens (``ends_at``: their end offsets in
    ``prompt_text + gen_text``). Arith training problems get exact step labels; others the
    outcome at every token."""
    outcome = 1.0 if right else 0.0
    if problem.task != "arith":
        return [outcome] * len(ends_at)
    return dense_labels(step_ends(problem, prompt_text + gen_text, right), ends_at, outcome)


def heldout_report(scores: list[float], rows: list[dict]) -> dict:
    """Within-problem AUC (bootstrap 95% interval) and pooled AUC of ``scores`` on held-out
    sample rows (``p`` the problem, ``reward`` the task's): how a judge ranks a problem's right
    samples above its wrong ones. Shared by the Q stage and the verifier."""
    from eval.ranking import Group, pooled_auc, within_problem_auc

    by: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by.setdefault(row["p"], []).append(i)
    groups = [
        Group([scores[i] for i in ix], [rows[i]["reward"] > 0.5 for i in ix], [None] * len(ix))
        for ix in by.values()
    ]
    w = within_problem_auc(groups)
    return {
        "auc_within": w["auc"],
        "auc_lo": w["lo"],
        "auc_hi": w["hi"],
        "auc_pooled": pooled_auc(groups),
    }
