"""Step candidates: the first-token way and the policy's own sampled steps."""

import pytest
import torch

import cola_models as cm
from latent_search.backends.torch_backend import TorchBackend
from latent_search.ledger import Ledger
from latent_search.schedule import drive
from latent_search.search import SearchSpec, run_search
from latent_search.steps import Proposal, branching, sample_steps


@pytest.fixture(scope="module")
def backend():
    return TorchBackend(cm.build_model("tiny", seed=0))


def test_sampled_steps_are_distinct_policy_samples_with_shares_as_priors(backend):
    ledger = Ledger(backend, 2)
    prefixes = [[1, 40, 41, 42], [1, 50]]
    how = Proposal("sampled", 8, 6, (".",), backend.eos_id, backend.n_actions)
    got = drive(
        ledger,
        {i: sample_steps([p], how, [20]) for i, p in enumerate(prefixes)},
        generator=torch.Generator().manual_seed(0),
    )
    steps = [got[0][0], got[1][0]]
    for row in steps:
        assert sum(s.prior for s in row) == pytest.approx(1.0)
        assert len({tuple(s.tokens) for s in row}) == len(row) >= 2  # merged, and they differ
        assert len({s.action for s in row}) == len(row)  # distinct edge labels
    assert all(c > 0 for c in ledger.spent)
    # Sampled steps differ beyond their first token, which first-token candidates never do: a
    # row holds candidates that share a first token (the random tiny model writes one there).
    for row in steps:
        assert len({s.tokens[0] for s in row}) < len(row), [s.tokens for s in row]


def test_sampled_candidates_search_end_to_end(backend):
    for algorithm in ("beam", "mcts"):
        spec = SearchSpec(algorithm, rounds=6, max_new_tokens=12, expand_k=4, candidates="sampled")
        (res,) = run_search(backend, [[1, 40, 41]], spec)
        assert res.tree is not None and res.stats["branching"] >= 1.0 and res.tokens_used > 0
    assert branching(res.tree) == res.stats["branching"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(algorithm="greedy", candidates="sampled"),
        dict(algorithm="mcts", candidates="sampled", gumbel=True),
        dict(algorithm="beam", candidates="nope"),
    ],
)
def test_candidate_settings_are_validated(kw):
    with pytest.raises(ValueError):
        SearchSpec(**kw)
