"""Solving one question: load a model, format the prompt, run the chosen decoding, extract the answer."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

SEARCHES = ("greedy", "sample")


@dataclass(frozen=True)
class SolveConfig:
    model: str = "tiny-arith"
    search: str = "greedy"
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"unknown search {self.search!r}; choose one of {', '.join(SEARCHES)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")


def solve_question(question: str, cfg: SolveConfig) -> dict:
    import torch

    import cola_models as cm
    from eval.answers import extract_answer

    if not question.strip():
        raise ValueError("the question is empty")
    model = cm.load_model(cfg.model)
    # A trained model knows the prompt format it was trained with; a random preset has none.
    template = model.generation_defaults.get("prompt_template", "{question}")
    prompt = template.replace("{question}", question)
    context = model.backbone.hf_config.max_position_embeddings
    n_prompt = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1
    if n_prompt + cfg.max_new_tokens > context:
        raise ValueError(
            f"the question takes {n_prompt} tokens; with {cfg.max_new_tokens} new tokens that "
            f"exceeds the model's context of {context}"
        )
    start = time.perf_counter()
    out = cm.generate(
        model,
        [prompt],
        cm.GenerationConfig(
            max_new_tokens=cfg.max_new_tokens,
            action="greedy" if cfg.search == "greedy" else "sample",
        ),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    text = out.texts[0]
    return {
        "question": question,
        "answer": extract_answer(text),
        "text": text,
        "tokens": out.forward_tokens,
        "seconds": time.perf_counter() - start,
        "config": asdict(cfg),
    }
