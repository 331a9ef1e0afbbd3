"""Solving one question: load a model, format the prompt, run the chosen search, extract the answer.

With ``tree_out`` the tree of an mcts / mcts-q search is saved after every round, so an
interrupted run loses at most a round: ``resume`` continues it from that file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from latent_search.search import RESUMABLE, SearchSpec


@dataclass(frozen=True)
class SolveConfig:
    model: str = "tiny-arith"
    search: SearchSpec = SearchSpec()
    value_model: str | None = None
    """A CoLA model whose Q head values a token-level search of a plain LM (same tokenizer)."""
    backend: str = "torch"


def solve_question(
    question: str,
    cfg: SolveConfig,
    *,
    tree_out: str | None = None,
    resume: str | None = None,
    viz: str | None = None,
) -> dict:
    from latent_search.search import run_search
    from latent_search.tree import Tree

    from .answers import extract_answer
    from .searcher import load_searcher

    spec = cfg.search
    if resume and spec.algorithm not in RESUMABLE:
        raise ValueError(f"--resume continues an {' or '.join(RESUMABLE)} search")
    searcher = load_searcher(cfg.model, spec, value_model=cfg.value_model, backend=cfg.backend)
    (ids,) = searcher.encode([question], spec.max_new_tokens)
    trees = None
    if resume:
        tree = Tree.load(resume)
        if tree.prompt_tokens != ids:
            raise ValueError(f"{resume} is a search of a different question or prompt format")
        if tree.meta.get("algorithm", spec.algorithm) != spec.algorithm:
            raise ValueError(
                f"{resume} is an {tree.meta['algorithm']} search, not {spec.algorithm}"
            )
        trees = [tree]
    checkpoint = None
    if tree_out and spec.algorithm in RESUMABLE:

        def checkpoint(ts: list) -> None:
            ts[0].meta.update({"algorithm": spec.algorithm, "question": question, "done": False})
            ts[0].save(tree_out)

    start = time.perf_counter()
    (res,) = run_search(
        searcher.backend,
        [ids],
        spec,
        answer_fn=extract_answer,
        value_backend=searcher.value_backend,
        trees=trees,
        on_round=checkpoint,
    )
    if res.tree is not None:
        res.tree.meta.update(
            {
                "question": question,
                "model": cfg.model,
                "done": True,
                "seconds": time.perf_counter() - start,
            }
        )
        res.tree.text = res.tree.decoded(searcher.backend.decode)
        if tree_out:
            res.tree.save(tree_out)
        if viz:
            from latent_search.viz import export

            export(res.tree, out=viz)
    return {
        "question": question,
        "answer": extract_answer(res.text),
        "text": res.text,
        "tokens": res.tokens_used,
        "seconds": time.perf_counter() - start,
        "search": spec.algorithm,
        "oracle": False,
        "stats": res.stats,
        "config": {
            "model": cfg.model,
            "value_model": cfg.value_model,
            "backend": cfg.backend,
            **{f.name: getattr(spec, f.name) for f in fields(spec)},
        },
    }
