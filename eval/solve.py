"""Solving one question: load a model, format the prompt, run the chosen search, extract the answer.

Every search returns a tree (greedy / sample: one path; best-of-n: the root and its samples), so
``tree_out`` and ``viz`` always write something. The tree of an mcts / mcts-q search is saved
after every round, so an interrupted run loses at most a round: ``resume`` continues it from that
file, and only with the model that grew it (trees carry the model's fingerprint). A tree that
cannot be saved is a warning: the answer is returned either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from cola_models.errors import ColaError
from latent_search.search import RESUMABLE, SearchSpec


@dataclass(frozen=True)
class SolveConfig:
    model: str = "tiny-arith"
    search: SearchSpec = SearchSpec()
    value_model: str | None = None
    """A CoLA model whose Q head values a token-level search of a plain LM (same tokenizer)."""
    verifier: str | None = None
    """A reward-model directory for --scorer verifier / weighted-vote."""
    judge: dict = field(default_factory=dict)
    """How to read ``verifier`` (``cola_models.prm.OPTIONS``: format, step separator or tag,
    aggregation); empty: what its directory says."""
    backend: str = "torch"
    device: str = "auto"
    """auto (CUDA when present) | cpu | cuda | cuda:N (``cola_models.devices``)."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on the CPU) | float32 | bfloat16 | float16."""


def _resumed_tree(path: str, ids: list[int], spec: SearchSpec, fingerprint: str):
    from latent_search.tree import Tree

    tree = Tree.load(path)
    held = tree.meta.get("model_fingerprint")
    if held is not None and held != fingerprint:
        raise ColaError(
            f"{path} was searched with another model ({tree.meta.get('model')!r}, fingerprint "
            f"{str(held)[:12]}); resume it with that model"
        )
    if tree.prompt_tokens != ids:
        raise ColaError(f"{path} is a search of a different question or prompt format")
    if tree.meta.get("algorithm", spec.algorithm) != spec.algorithm:
        raise ColaError(f"{path} is an {tree.meta['algorithm']} search, not {spec.algorithm}")
    return tree


def _save(tree, tree_out: str | None, viz: str | None, warnings: list[str]) -> None:
    """Write the tree and its rendering; a failure becomes a warning, never a lost answer."""
    for path, write in ((tree_out, lambda p: tree.save(p)), (viz, lambda p: _render(tree, p))):
        if not path:
            continue
        try:
            write(path)
        except (OSError, ValueError) as err:
            warnings.append(f"could not write {path}: {err}")


def _render(tree, path: str) -> None:
    from latent_search.viz import export

    export(tree, out=path)


def solve_question(
    question: str,
    cfg: SolveConfig,
    *,
    tree_out: str | None = None,
    resume: str | None = None,
    viz: str | None = None,
    on_call: Callable[[str, list[int]], None] | None = None,
) -> dict:
    """``on_call(method, per-row costs)`` runs after every model call (live progress)."""
    from latent_search.backends.watch import Watched
    from latent_search.search import run_search

    from .answers import extract_answer
    from .searcher import load_searcher

    spec = cfg.search
    if resume and spec.algorithm not in RESUMABLE:
        raise ColaError(f"--resume continues an {' or '.join(RESUMABLE)} search")
    searcher = load_searcher(
        cfg.model,
        spec,
        value_model=cfg.value_model,
        backend=cfg.backend,
        verifier=cfg.verifier,
        judge=cfg.judge,
        device=cfg.device,
        dtype=cfg.dtype,
    )
    (ids,) = searcher.encode([question], spec.max_new_tokens)
    identity = {"model": cfg.model, "model_fingerprint": searcher.fingerprint}
    trees = [_resumed_tree(resume, ids, spec, searcher.fingerprint)] if resume else None
    warnings: list[str] = []
    checkpoint = None
    if tree_out and spec.algorithm in RESUMABLE:

        def checkpoint(ts: list) -> None:
            ts[0].meta.update({"algorithm": spec.algorithm, "question": question, "done": False})
            ts[0].meta.update(identity)
            _save(ts[0], tree_out, None, warnings)

    backend = searcher.backend if on_call is None else Watched(searcher.backend, on_call)
    start = time.perf_counter()
    (res,) = run_search(
        backend,
        [ids],
        spec,
        answer_fn=extract_answer,
        trees=trees,
        **searcher.search_args(),
        on_round=checkpoint,
    )
    seconds = time.perf_counter() - start
    res.tree.meta.update({"question": question, "done": True, "seconds": seconds, **identity})
    res.tree.text = res.tree.decoded(searcher.backend.decode)
    _save(res.tree, tree_out, viz, warnings)
    return {
        "question": question,
        "answer": extract_answer(res.text),
        "text": res.text,
        "tokens": res.tokens_used,
        "seconds": seconds,
        "search": spec.algorithm,
        "oracle": res.oracle,
        "stats": res.stats,
        "warnings": list(dict.fromkeys(warnings)),
        "config": {
            "model": cfg.model,
            "value_model": cfg.value_model,
            "verifier": cfg.verifier,
            "judge": cfg.judge,
            "backend": cfg.backend,
            **{f.name: getattr(spec, f.name) for f in fields(spec)},
        },
    }
