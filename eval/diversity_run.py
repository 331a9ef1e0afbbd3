"""`latent-search eval --metric diversity`: the semantic-diversity table of one model, saved."""

from __future__ import annotations

import json
from pathlib import Path

from cola_models.errors import ColaError

EMBEDDERS = ("minilm", "ngram")


def run_diversity(
    *,
    model_name: str,
    task: str,
    out: str | Path,
    limit: int | None,
    n: int,
    max_new_tokens: int,
    seed: int,
    embedder: str = "minilm",
    modes: tuple[str, ...] = ("latent", "token", "random"),
    data: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """Prefixes are held-out problems cut mid-solution (benchmarks without worked solutions: the
    bare prompt); ``n`` continuations of each per mode. Writes OUT/diversity.json atomically."""
    import cola_models as cm
    from cola_models.atomic import write_atomic

    from .datasets import get_benchmark
    from .diversity import MODES, MiniLMEmbedder, NgramEmbedder, diversity_report
    from .diversity import prefixes_from_problems as cut

    if embedder not in EMBEDDERS:
        raise ColaError(f"unknown embedder {embedder!r}; choose one of {', '.join(EMBEDDERS)}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ColaError(
            f"unknown diversity mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}"
        )
    if n < 2:
        raise ColaError(f"diversity needs at least 2 continuations per prefix (got --n {n})")
    problems = list(get_benchmark(task, data, limit=limit or 64))
    model = cm.load_model(model_name, device=device, dtype=dtype)
    if model.kind != "cola" and any(m.startswith("latent") for m in modes):
        raise ColaError(f"{model_name} is a plain LM: it has no latent actions to sample")
    embed = MiniLMEmbedder() if embedder == "minilm" else NgramEmbedder()
    report = diversity_report(
        model, cut(problems), embed, n=n, modes=modes, max_new_tokens=max_new_tokens, seed=seed
    )
    report.update({"model": model_name, "task": task, "oracle": False})
    Path(out).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(out) / "diversity.json", json.dumps(report, indent=2))
    return report
