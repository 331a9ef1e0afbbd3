"""Solving one question: load a model, format the prompt, run the chosen decoding, extract the answer."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .search import ALGORITHMS as SEARCHES


@dataclass(frozen=True)
class SolveConfig:
    model: str = "tiny-arith"
    search: str = "greedy"
    max_new_tokens: int = 256
    seed: int = 0
    budget: int | None = None
    scorer: str = "q"

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"unknown search {self.search!r}; choose one of {', '.join(SEARCHES)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget={self.budget} must be >= 1")


def solve_question(question: str, cfg: SolveConfig, *, tree_out: str | None = None) -> dict:
    import cola_models as cm
    from eval.answers import extract_answer

    from .backends.torch_backend import TorchBackend
    from .search import SearchSpec, run_search

    if not question.strip():
        raise ValueError("the question is empty")
    model = cm.load_model(cfg.model)
    # A trained model knows the prompt format it was trained with; a random preset has none.
    template = model.generation_defaults.get("prompt_template", "{question}")
    prompt = template.replace("{question}", question)
    context = model.backbone.hf_config.max_position_embeddings
    ids = cm.tokenizer_encode(model.tokenizer, [prompt])[0]
    if len(ids) + cfg.max_new_tokens > context:
        raise ValueError(
            f"the question takes {len(ids)} tokens; with {cfg.max_new_tokens} new tokens that "
            f"exceeds the model's context of {context}"
        )
    spec = SearchSpec(
        algorithm=cfg.search,
        budget=cfg.budget,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        scorer=cfg.scorer,
    )
    start = time.perf_counter()
    (res,) = run_search(TorchBackend(model), [ids], spec, answer_fn=extract_answer)
    if tree_out and res.tree is not None:
        res.tree.meta["question"] = question
        res.tree.save(tree_out)
    return {
        "question": question,
        "answer": extract_answer(res.text),
        "text": res.text,
        "tokens": res.tokens_used,
        "seconds": time.perf_counter() - start,
        "search": cfg.search,
        "oracle": False,
        "stats": res.stats,
        "config": asdict(cfg),
    }
