"""The vLLM backend serving a plain LM (the bundled tiny-arith-base) against the torch backend.

A plain LM runs on vLLM's own implementation of its architecture; actions are token ids. float32
on CPU: greedy token ids must be identical, and the top of the prior exact.
"""

import pytest
import torch
from vllm_case import NEEDS_VLLM, QUESTIONS, encode_questions

import cola_models as cm
from latent_search.search import SearchSpec, run_search

pytestmark = NEEDS_VLLM


@pytest.fixture(scope="module")
def model():
    return cm.load_model("tiny-arith-base")


@pytest.fixture(scope="module")
def prompts(model):
    more = "Ann reads 9 pages a day for 6 days. How many pages does she read?"
    return encode_questions(model, [*QUESTIONS, more])


@pytest.fixture(scope="module")
def vllm_backend(model):
    from latent_search.backends.factory import make_backend

    backend = make_backend("vllm", model, prior_top=32)
    yield backend
    backend.close()


@pytest.fixture()
def torch_backend(model):
    from latent_search.backends.torch_backend import TorchBackend

    return TorchBackend(model)


def test_token_level_protocol(vllm_backend, model):
    assert vllm_backend.level == "token"
    assert vllm_backend.n_actions == model.backbone.vocab_size
    assert not vllm_backend.has_q


def test_greedy_rollouts_equal_torch(vllm_backend, torch_backend, prompts):
    want = torch_backend.rollout(prompts, 64, sample=False, stop=("\n\n",))
    got = vllm_backend.rollout(prompts, 64, sample=False, stop=("\n\n",))
    assert got == want
    assert all(len(t) > 1 for t in got)
    # Cost: what vLLM computed, prompt (minus cache hits) plus decode steps, per row.
    assert all(c > 0 for c in vllm_backend.last_costs)


def test_prior_top_is_exact_and_the_rest_keeps_its_mass(vllm_backend, torch_backend, prompts):
    want = torch_backend.prior(prompts).logits.float().log_softmax(-1)  # [B, V]
    got = vllm_backend.prior(prompts)
    assert got.q is None and got.logits.shape == want.shape
    top = want.topk(32, dim=-1)
    torch.testing.assert_close(got.logits.gather(-1, top.indices), top.values, atol=1e-4, rtol=0)
    # The other tokens share the remaining probability evenly: each row is still a distribution
    # and no tail token outranks a top one.
    torch.testing.assert_close(
        got.logits.exp().sum(-1), torch.ones(len(prompts)), atol=1e-4, rtol=0
    )
    assert torch.equal(got.logits.topk(5).indices, top.indices[:, :5])


def test_expand_is_the_action_and_costs_nothing(vllm_backend, prompts):
    calls = vllm_backend.usage.calls
    actions = torch.tensor([[5, 7, 9]] * len(prompts))
    assert torch.equal(vllm_backend.expand(prompts, actions), actions)
    assert vllm_backend.last_costs == [0] * len(prompts)
    assert vllm_backend.usage.calls == calls


def test_sampled_rollouts_follow_the_seed(vllm_backend, prompts):
    rows = [prompts[1]] * 4 + [prompts[0]] * 4  # prompts[1]: one the model is unsure of

    def draw(seed):
        return vllm_backend.rollout(
            rows, 24, sample=True, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = draw(3), draw(3), draw(4)
    assert a == b
    assert a != c
    assert len({tuple(t) for t in a[:4]}) > 1  # n > 1 samples of one prompt differ


@pytest.mark.parametrize(
    "spec",
    [
        SearchSpec(algorithm="greedy", max_new_tokens=64),
        SearchSpec(
            algorithm="beam",
            beam_width=2,
            expand_k=2,
            max_new_tokens=48,
            seed=0,
            scorer="q",
            candidates="first-token",
        ),
    ],
    ids=lambda s: s.algorithm,
)
def test_token_search_answers_equal_torch(model, vllm_backend, prompts, spec):
    """Token-level search on vLLM (valued by tiny-arith's Q head on torch) = the same on torch:
    the search expands only top tokens, whose prior vLLM returns exactly."""
    from latent_search.backends.torch_backend import TorchBackend

    value = None
    if spec.algorithm == "beam":
        value = TorchBackend(cm.load_model("tiny-arith"))
    want = run_search(TorchBackend(model), prompts, spec, value_backend=value)
    got = run_search(vllm_backend, prompts, spec, value_backend=value)
    assert [r.text for r in got] == [r.text for r in want]
    assert all(r.tokens_used > 0 for r in got)


def test_seeded_sampling_of_more_prompt_tokens_than_one_step_holds(vllm_backend, model):
    """Regression: on CPU, a seeded sampled batch whose prompts needed several prefill steps
    crashed inside vLLM (a chunked prefill rewinds the request's CPU generator)."""
    texts = [f"Tom has {i} apples. " * 40 for i in range(24)]  # ~200 tokens each, > 4096 in all
    rows = cm.tokenizer_encode(model.tokenizer, texts)
    assert sum(map(len, rows)) > 4096
    out = vllm_backend.rollout(rows, 4, sample=True, generator=torch.Generator().manual_seed(0))
    assert all(1 <= len(t) <= 4 for t in out)  # EOS may end a sample early
