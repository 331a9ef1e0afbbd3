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
    value_model: str | None = None
    """A CoLA model whose Q head values a token-level search of a plain LM (same tokenizer)."""

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
    value_backend = None
    if cfg.value_model:
        value = cm.load_model(cfg.value_model)
        if getattr(value, "q", None) is None:
            raise ValueError(f"--value-model {cfg.value_model} has no Q head")
        if value.tokenizer.get_vocab() != model.tokenizer.get_vocab():
            raise ValueError("--value-model must share the searched model's tokenizer")
        value_backend = TorchBackend(value)
    elif (
        model.kind == "lm"
        and cfg.search in ("beam", "mcts", "mcts-q")
        or (model.kind == "lm" and cfg.search == "best-of-n" and cfg.scorer == "q")
    ):
        raise ValueError(
            f"token-level {cfg.search} of a plain LM needs --value-model (a CoLA model with a Q head)"
            " or, for best-of-n, --scorer vote"
        )
    (res,) = run_search(
        TorchBackend(model), [ids], spec, answer_fn=extract_answer, value_backend=value_backend
    )
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
