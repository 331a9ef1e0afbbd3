import torch

import cola_models as cm
from cola_models.tokenizer import left_pad
from latent_search.backends.torch_backend import TorchBackend
from latent_search.types import Backend


def test_backend_caches_states_and_steps_from_a_parent(tiny_cola):
    be = TorchBackend(tiny_cola)
    assert isinstance(be, Backend) and be.level == "latent" and be.n_actions == 16
    root = [1, 40, 41, 42]
    p0 = be.prior([root])
    assert be.usage.prefill_tokens == 4 and be.usage.decode_tokens == 0
    kids = be.expand([root], torch.tensor([[0, 1, 2]]))  # [1, 3]
    assert be.usage.prefill_tokens == 4  # cached: no new model work
    children = [root + [int(t)] for t in kids[0]]
    prior = be.prior(children)
    assert be.usage.decode_tokens == len(set(map(tuple, children)))  # one step per distinct child
    ids, mask = left_pad(children, 0)
    ref = tiny_cola.start(ids, mask)
    assert torch.allclose(prior.logits, ref.policy_logits, atol=1e-4)
    assert torch.allclose(prior.q, ref.q_values, atol=1e-4)
    assert p0.logits.shape == (1, 16)


def test_token_backend_on_a_plain_lm(tiny_cola):
    lm = cm.PlainLM(tiny_cola.backbone.lm, tiny_cola.tokenizer)
    be = TorchBackend(lm)
    assert be.level == "token" and be.n_actions == 259
    pr = be.prior([[1, 50], [1, 60, 61]])
    assert pr.logits.shape == (2, 259) and pr.q is None
    assert torch.equal(be.expand([[1, 50]], torch.tensor([[7, 8]])), torch.tensor([[7, 8]]))
    outs = be.rollout([[1, 50]], 5, sample=False)
    assert len(outs[0]) == 5


def test_per_problem_tokens_add_up_to_all_model_work(tiny_cola):
    import pytest

    from latent_search.search import ALGORITHMS, SearchSpec, run_search

    prompts = [[1, 40, 41], [1, 50, 51, 52]]
    for algorithm in ALGORITHMS:
        be = TorchBackend(tiny_cola)
        spec = SearchSpec(algorithm=algorithm, max_new_tokens=6, n=3, rounds=4, scorer="q")
        results = run_search(be, prompts, spec, answer_fn=lambda t: t[:1])
        assert sum(r.tokens_used for r in results) == be.usage.tokens, algorithm
        assert all(r.tokens_used > 0 for r in results)
    with pytest.raises(ValueError, match="unknown search"):
        SearchSpec(algorithm="dfs")


def test_rollouts_start_from_cached_states_and_keep_their_final_state(tiny_cola):
    from cola_models.generation import GenerationConfig, generate

    be = TorchBackend(tiny_cola)
    root = [1, 40, 41, 42]
    be.prior([root])  # the node's state is now cached
    child = root + [int(be.expand([root], torch.tensor([[3]]))[0, 0])]
    (out,) = be.rollout([child], 6, sample=False)
    fresh = generate(tiny_cola, [child], GenerationConfig(max_new_tokens=6, action="greedy"))
    assert out == fresh.token_ids[0]  # same tokens as a from-scratch generation
    assert be.last_costs == [1 + len(out) - 1]  # one step to the child, then decode: no prefill
    # Valuing the finished text (Q before its last token) reuses the rollout's final state...
    before = be.usage.tokens
    prior = be.prior([child + out[:-1]])
    assert be.usage.tokens == before and be.last_costs == [0]
    # ...and that state equals a fresh prefill of the same prefix.
    ids, mask = left_pad([child + out[:-1]], 0)
    ref = tiny_cola.start(ids, mask)
    assert torch.allclose(prior.logits, ref.policy_logits, atol=1e-4)
    assert torch.allclose(prior.q, ref.q_values, atol=1e-4)


def test_a_prefix_a_few_tokens_past_a_cached_state_is_stepped_to(tiny_cola):
    be = TorchBackend(tiny_cola, max_extend=8)
    root = [1, 40, 41, 42]
    be.prior([root])
    near, far = root + [50, 51, 52, 53, 54], root + list(range(60, 72))  # 5 and 12 tokens past
    prior = be.prior([near, far, near])
    assert be.last_costs == [5, len(far), 0]  # stepped / prefilled / asked twice, paid once
    ids, mask = left_pad([near, far, near], 0)
    ref = tiny_cola.start(ids, mask)
    assert torch.allclose(prior.logits, ref.policy_logits, atol=1e-4)
    assert torch.allclose(prior.q, ref.q_values, atol=1e-4)


def test_state_cache_is_bounded_by_memory(tiny_cola):
    from latent_search.backends.torch_backend import state_bytes_per_token

    per_token = state_bytes_per_token(tiny_cola)
    be = TorchBackend(tiny_cola, cache_bytes=10 * per_token)  # room for about 10 tokens
    be.prior([[1, 40, 41, 42], [1, 50, 51, 52]])
    be.prior([[1, 60, 61, 62]])
    assert be._cached_tokens <= 10 and (1, 60, 61, 62) in be._states
    assert (1, 40, 41, 42) not in be._states  # least recently used went first


def test_eviction_inside_one_call_never_drops_a_state_the_call_needs(tiny_cola):
    be = TorchBackend(tiny_cola, cache_rows=4)
    cached = [[1, 40 + i] for i in range(4)]
    be.prior(cached)  # the cache is full
    fresh = [[1, 60 + i, 61] for i in range(6)]  # remembering these evicts older rows mid-call
    prior = be.prior(cached + fresh)  # needs the 4 cached states and the 6 new ones at once
    assert prior.logits.shape[0] == 10
    alone = TorchBackend(tiny_cola).prior(cached + fresh)
    torch.testing.assert_close(prior.logits, alone.logits)
    assert len(be._states) <= 4


def test_a_batched_rollout_of_mixed_lengths_equals_each_prefix_alone(tiny_arith):
    """Rows are decoded in ascending prefix length and prefilled by length group: the results
    and their costs must still come back in the caller's order, each equal to its row alone."""
    model = tiny_arith
    questions = [
        "Ann has 12 apples and buys 30 more boxes of 4. How many?",
        "What is 7 + 5?",
        "2*3?",
    ]
    prefixes = cm.tokenizer_encode(model.tokenizer, questions)
    prefixes[2] = prefixes[2] * 9  # the longest prompt last, the shortest in the middle
    assert len(prefixes[1]) < len(prefixes[0]) < len(prefixes[2])
    batched = TorchBackend(model)
    got = batched.rollout(prefixes, 24, sample=False)
    costs = list(batched.last_costs)
    for p, toks, cost in zip(prefixes, got, costs):
        alone = TorchBackend(model)
        assert alone.rollout([p], 24, sample=False) == [toks]
        assert alone.last_costs == [cost]
    # Children one token past cached parents: the batch the extension steps is the rollout's
    # own (no second gather), and must continue exactly as each child alone.
    batched.prior(prefixes)
    children = [p + [t[0]] for p, t in zip(prefixes, got)]
    assert batched.rollout(children, 16, sample=False) == [t[1:17] for t in got]
    assert batched.last_costs == [1 + len(t[1:17]) - 1 for t in got]
