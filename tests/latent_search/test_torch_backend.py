import torch

import cola_models as cm
from cola_models.tokenizer import left_pad
from latent_search.backend import Backend
from latent_search.backends.torch_backend import TorchBackend


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
        spec = SearchSpec(algorithm=algorithm, max_new_tokens=6, n=3, rounds=4)
        results = run_search(be, prompts, spec, answer_fn=lambda t: t[:1])
        assert sum(r.tokens_used for r in results) == be.usage.tokens, algorithm
        assert all(r.tokens_used > 0 for r in results)
    with pytest.raises(ValueError, match="unknown search"):
        SearchSpec(algorithm="dfs")
