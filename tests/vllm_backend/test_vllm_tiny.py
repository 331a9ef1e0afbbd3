"""The vLLM backend against the torch backend on the tiny preset (one engine for the module).

float32 on CPU: with greedy actions the token ids must be identical, not just close.
"""

import pytest
import torch
from vllm_case import NEEDS_VLLM

import cola_models as cm
from cola_models.tokenizer import encode

pytestmark = NEEDS_VLLM

TEXTS = ["12+7=", "Tom has 3 apples and buys 4 more.", "a", "The answer is"]


@pytest.fixture(scope="module")
def model():
    m = cm.build_model("tiny", seed=0)
    # Freshly initialised merge layers barely move h, so every action would give the same token;
    # a larger codebook makes the token depend on the action, so these tests check that path.
    with torch.no_grad():
        m.world.codebook.weight.mul_(10)
    return m


@pytest.fixture(scope="module")
def vllm_backend(model):
    from latent_search.backends.factory import make_backend

    backend = make_backend("vllm", model)
    yield backend
    backend.close()


@pytest.fixture()
def torch_backend(model):
    from latent_search.backends.torch_backend import TorchBackend

    return TorchBackend(model)


@pytest.fixture(scope="module")
def prompts(model):
    return encode(model.tokenizer, TEXTS)


def test_greedy_rollouts_equal_torch_token_for_token(vllm_backend, torch_backend, prompts):
    want = torch_backend.rollout(prompts, 40, sample=False)
    got = vllm_backend.rollout(prompts, 40, sample=False)
    assert got == want
    assert all(len(t) > 0 for t in got)


def test_greedy_rollouts_stop_where_torch_stops(vllm_backend, torch_backend, prompts):
    stop = ("e", "\n", "ab")  # "ab" can only span two byte tokens: caught by the exact cut
    want = torch_backend.rollout(prompts, 40, sample=False, stop=stop)
    got = vllm_backend.rollout(prompts, 40, sample=False, stop=stop)
    assert got == want


def test_forced_expansions_give_the_same_children(vllm_backend, torch_backend, prompts, model):
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(model.n_actions, (len(prompts), 6), generator=g)
    actions[:, -1] = actions[:, 0]  # a repeated action in a row
    want = torch_backend.expand(prompts, actions)
    got = vllm_backend.expand(prompts, actions)
    assert got.shape == want.shape and torch.equal(got, want)
    # One backbone step per prefix: costs are the prompt tokens vLLM computed, at most the prompt.
    assert all(0 < c <= len(p) for c, p in zip(vllm_backend.last_costs, prompts))


def test_prior_matches_torch(vllm_backend, torch_backend, prompts):
    want, got = torch_backend.prior(prompts), vllm_backend.prior(prompts)
    assert got.logits.shape == want.logits.shape and got.q.shape == want.q.shape
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.q, want.q, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.logits.argmax(-1), want.logits.argmax(-1))


def test_children_decoded_with_the_prior_need_no_engine_call(vllm_backend, torch_backend, prompts):
    prefixes = [p + [40] for p in prompts]  # nodes not seen before
    prior = vllm_backend.prior(prefixes)
    top = prior.logits.topk(3, dim=-1).indices  # within the 8 prefetched actions
    calls = vllm_backend.usage.calls
    got = vllm_backend.expand(prefixes, top)
    assert vllm_backend.usage.calls == calls and vllm_backend.last_costs == [0] * len(prefixes)
    assert torch.equal(got, torch_backend.expand(prefixes, top))
    # Actions outside the prefetched ones go to the engine, and agree too.
    bottom = prior.logits.topk(3, dim=-1, largest=False).indices
    assert torch.equal(
        vllm_backend.expand(prefixes, bottom), torch_backend.expand(prefixes, bottom)
    )
    assert vllm_backend.usage.calls == calls + 1


def test_prior_of_a_rolled_out_prefix_is_served_from_the_prefix_cache(vllm_backend, prompts):
    out = vllm_backend.rollout(prompts[:1], 80, sample=False)
    before = vllm_backend.usage.cached_tokens
    vllm_backend.prior([prompts[0] + out[0]])
    # Everything but the last partial KV block (32 tokens on CPU) comes from the cache.
    assert vllm_backend.usage.cached_tokens - before >= len(prompts[0]) + len(out[0]) - 32
    assert vllm_backend.last_costs[0] <= 32


def test_top_k_1_action_sampling_is_the_greedy_policy(vllm_backend, prompts):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    greedy = vllm_backend.rollout(prompts, 16, sample=False)
    params = SamplingParams(
        temperature=0.0,
        max_tokens=16,
        seed=3,
        stop_token_ids=[vllm_backend.eos_id],
        detokenize=False,
        extra_args={"cola": {"mode": "generate", "action": "sample", "top_k": 1}},
    )
    outs = vllm_backend.llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
    )
    assert [list(o.outputs[0].token_ids) for o in outs] == greedy


def test_hashed_gumbel_sampling_follows_the_policy_with_top_k():
    from latent_search.backends.vllm_model import choose_actions

    n, K = 20000, 5
    policy = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0]).expand(n, K)
    ones = torch.ones(n)

    def draw(top_k, temperature=1.0, greedy=False):
        return choose_actions(
            policy,
            torch.full((n,), greedy),
            torch.full((n,), -1),
            ones * temperature,
            torch.full((n,), top_k),
            torch.arange(n),  # one seed per row
            torch.full((n,), 7),
        )

    freq = torch.bincount(draw(0), minlength=K) / n
    torch.testing.assert_close(freq, policy[0].softmax(-1), atol=0.015, rtol=0)
    top2 = torch.bincount(draw(2, temperature=2.0), minlength=K) / n
    torch.testing.assert_close(top2[:2], (policy[0, :2] / 2).softmax(-1), atol=0.015, rtol=0)
    assert top2[2:].sum() == 0
    assert (draw(0, greedy=True) == 0).all()
    assert torch.equal(draw(3), draw(3))  # a pure function of (seed, step)
