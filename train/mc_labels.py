"""Monte Carlo step labels (Math-Shepherd): a step's label is the share of the policy's own
rollouts from the end of that step that reach the right answer.

They need no gold steps, only the training problem's gold answer (as the task's reward reads
it), so they label any task the toolkit grades, where the exact step labels of
``train/value_labels.py`` exist for arith only. Steps end where the search's steps end
(``latent_search.steps.STEP_STOP``). Rollouts sample actions as the policy does; they are run in
large batches (decoding cost is per step, not per row, on a CPU).
"""

from __future__ import annotations

import torch

ROWS = 512  # rollouts per generation call


def step_end_tokens(tokenizer, gen: list[int]) -> list[int]:
    """Indices j of the generated tokens after which a step has ended (not the last token: from
    there nothing is left to roll out)."""
    from latent_search.steps import STEP_STOP

    out = []
    for j in range(len(gen) - 1):
        piece = tokenizer.decode(gen[j : j + 1], skip_special_tokens=True)
        if any(s in piece for s in STEP_STOP):
            out.append(j)
    return out


def dense_from_steps(ends: list[tuple[int, float]], n: int, outcome: float) -> list[float]:
    """A label per generated token (``n`` of them): that of the first step ending at or after
    it (``ends``: (token index, label), increasing), the outcome after the last step."""
    out, k = [], 0
    for j in range(n):
        while k < len(ends) and ends[k][0] < j:
            k += 1
        out.append(ends[k][1] if k < len(ends) else outcome)
    return out


def mc_labels(model, samples: list, rollouts: int, max_new_tokens: int, g: torch.Generator):
    """Dense MC labels for each sample ``(problem, prompt ids, generated ids, reward)``: every
    step end's label is the share of ``rollouts`` continuations from it that the task grades
    right."""
    from cola_models.generation import GenerationConfig, generate
    from eval.tasks import get_task

    tok = model.tokenizer
    ends = [step_end_tokens(tok, gen) for _, _, gen, _ in samples]
    rows = [(i, j) for i, e in enumerate(ends) for j in e for _ in range(rollouts)]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, action="sample", token="greedy")
    texts: list[str] = []
    for s in range(0, len(rows), ROWS):
        part = rows[s : s + ROWS]
        prompts = [samples[i][1] + samples[i][2][: j + 1] for i, j in part]
        texts += generate(model, prompts, cfg, generator=g).texts
    right: dict[tuple[int, int], list[float]] = {}
    for (i, j), cont in zip(rows, texts):
        problem, _, gen, _ = samples[i]
        done = tok.decode(gen[: j + 1], skip_special_tokens=True) + cont
        right.setdefault((i, j), []).append(float(get_task(problem.task).reward(problem, done)))
    return [
        dense_from_steps(
            [(j, sum(right[i, j]) / len(right[i, j])) for j in e], len(gen), float(reward > 0.5)
        )
        for i, (e, (_, _, gen, reward)) in enumerate(zip(ends, samples))
    ]
