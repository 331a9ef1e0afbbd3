"""Search on the vLLM backend gives the torch backend's answers (bundled tiny-arith with an h-only
Q head, fixed seed).

The search algorithms are unchanged: they only see the backend protocol.
"""

import pytest
import torch
from counting_backend import Counting
from vllm_case import NEEDS_VLLM, encode_questions

import cola_models as cm
from latent_search.search import SearchSpec, run_search

pytestmark = NEEDS_VLLM


@pytest.fixture(scope="module")
def model():
    """The bundled model with a seeded Q head over h only: the vLLM model computes that kind
    (the bundled head also reads the LM's surprise, which the torch backend alone computes)."""
    from train.q_model import fresh_q_head

    m = cm.load_model("tiny-arith")
    fresh_q_head(m, 1, "h", seed=0)
    return m


@pytest.fixture(scope="module")
def prompts(model):
    return encode_questions(model)


@pytest.fixture(scope="module")
def vllm_backend(model):
    from latent_search.backends.factory import make_backend

    backend = make_backend("vllm", model)
    yield backend
    backend.close()


@pytest.mark.parametrize(
    "spec",
    [
        SearchSpec(algorithm="greedy", max_new_tokens=64),
        SearchSpec(algorithm="mcts-q", rounds=2, max_new_tokens=64, seed=0, scorer="q"),
        SearchSpec(
            algorithm="beam",
            max_new_tokens=48,
            seed=0,
            scorer="q",
            candidates="first-token",
            beam_width=4,
            expand_k=4,
        ),
    ],
    ids=lambda s: s.algorithm,
)
def test_search_answers_equal_torch(model, vllm_backend, prompts, spec):
    from latent_search.backends.torch_backend import TorchBackend

    want = run_search(TorchBackend(model), prompts, spec)
    got = run_search(vllm_backend, prompts, spec)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert [r.text for r in got] == [r.text for r in want]
    assert all(r.tokens_used > 0 for r in got)


def test_best_of_n_samples_are_seeded(vllm_backend, prompts):
    spec = SearchSpec(algorithm="best-of-n", n=4, max_new_tokens=64, seed=5, scorer="q")
    a = run_search(vllm_backend, prompts, spec)
    b = run_search(vllm_backend, prompts, spec)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert all(len(r.stats["scores"]) == 4 for r in a)


def test_sampled_rollouts_are_seeded_and_use_n(vllm_backend, prompts):
    def run(seed):
        return vllm_backend.rollout(
            # prompts[1]: a question the model is unsure of, so that samples can differ
            [prompts[1]] * 4 + [prompts[0]],
            48,
            sample=True,
            generator=torch.Generator().manual_seed(seed),
        )

    first, again, other = run(0), run(0), run(1)
    assert first == again  # same generator seed, same rollouts
    assert first != other
    assert len({tuple(t) for t in first[:4]}) > 1  # the n=4 samples of one prompt differ
    # The four samples of a prompt are one request: its prompt is paid once.
    assert vllm_backend.last_costs[1:4] == [len(t) - 1 for t in other[1:4]]


@pytest.mark.parametrize(
    "spec",
    [
        SearchSpec(algorithm="best-of-n", n=2, max_new_tokens=32, seed=0, scorer="q"),
        SearchSpec(
            algorithm="beam",
            max_new_tokens=24,
            seed=0,
            scorer="q",
            candidates="first-token",
            beam_width=4,
            expand_k=4,
        ),
        # Gumbel roots sample actions outside the prior's prefetched top 8: paid expansions.
        SearchSpec(
            algorithm="mcts", rounds=3, expand_k=16, gumbel=True, max_new_tokens=24, scorer="q"
        ),
        SearchSpec(algorithm="mcts-q", rounds=2, max_new_tokens=24, seed=0, scorer="q"),
    ],
    ids=lambda s: s.algorithm,
)
def test_per_problem_tokens_add_up_to_all_engine_work(vllm_backend, prompts, spec):
    counting = Counting(vllm_backend)
    before = vllm_backend.usage.tokens
    results = run_search(counting, prompts, spec)
    assert sum(r.tokens_used for r in results) == vllm_backend.usage.tokens - before
    assert sum(r.tokens_used for r in results) == sum(counting.totals.values())
    if spec.gumbel:
        assert counting.totals["expand"] > 0
