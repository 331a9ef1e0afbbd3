"""Batched greedy (or sampled) evaluation of a model on task problems: accuracy and token counts."""

from __future__ import annotations

import math
import time

import torch


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    w = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - w), min(1.0, c + w))


def evaluate_problems(
    model,
    problems: list,
    *,
    action: str = "greedy",
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> dict:
    """Accuracy of ``model`` (CoLA or plain LM) on ``problems`` with one sample each."""
    from cola_models.generation import GenerationConfig, generate
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    max_new = max_new_tokens or model.generation_defaults.get("max_new_tokens", 160)
    cfg = GenerationConfig(max_new_tokens=max_new, action=action)
    g = torch.Generator(device=model.device).manual_seed(seed)
    rewards, tokens, t0 = [], 0, time.perf_counter()
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        out = generate(model, [format_prompt(p.question) for p in chunk], cfg, generator=g)
        rewards += [get_task(p.task).reward(p, t) for p, t in zip(chunk, out.texts)]
        tokens += out.forward_tokens
    k, n = int(sum(rewards)), len(rewards)
    lo, hi = wilson_interval(k, n)
    return {
        "accuracy": k / max(n, 1),
        "ci95": [lo, hi],
        "n": n,
        "tokens_per_problem": tokens / max(n, 1),
        "seconds_per_problem": (time.perf_counter() - t0) / max(n, 1),
    }
