import pytest
from toy_world import ToyBackend

from latent_search.mcts import MCTSConfig, mcts
from latent_search.tree import ROOT


def _value(targets):
    """Credit for the longest prefix of the generated tokens that matches the problem's target."""

    def value(seqs, done):
        out = []
        for s in seqs:
            target, gen = targets[s[0]], [t for t in s if t >= 10]
            n = next(
                (i for i, (a, b) in enumerate(zip(gen, target)) if a != b),
                min(len(gen), len(target)),
            )
            out.append(n / len(target))
        return out

    return value


def test_visits_concentrate_on_the_valuable_first_step_despite_the_prior():
    be = ToyBackend(n_actions=4, horizon=3, prior_bias=1.0)  # prior prefers action 0 (token 10)
    cfg = MCTSConfig(simulations=60, expand_k=4, step_tokens=0, max_new_tokens=4)
    (res,) = mcts(be, [[0]], cfg, _value({0: [13, 12, 11]}))
    tree = res.tree
    kids = set(tree.children[ROOT].values())
    best = max(kids, key=lambda c: tree.visits[c])
    assert tree.tokens[best] == [13]
    assert [t for t in res.tokens if t >= 10] == [13, 12, 11]


def test_rows_of_a_batch_do_not_interfere():
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = MCTSConfig(simulations=30, expand_k=4, step_tokens=0, max_new_tokens=4)
    targets = {0: [13, 12, 11], 1: [10, 11, 12]}
    both = mcts(be, [[0], [1]], cfg, _value(targets))
    for row in (0, 1):
        (alone,) = mcts(ToyBackend(n_actions=4, horizon=3), [[row]], cfg, _value(targets))
        assert alone.tree.to_dict() == both[row].tree.to_dict()


def test_budget_and_config_validation():
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = MCTSConfig(simulations=200, expand_k=4, step_tokens=0, max_new_tokens=4, budget=10)
    (res,) = mcts(be, [[0]], cfg, _value({0: [13, 12, 11]}))
    assert res.tree.visits[ROOT] < 200
    with pytest.raises(ValueError):
        MCTSConfig(simulations=0)
