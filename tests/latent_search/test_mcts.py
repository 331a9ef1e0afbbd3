import pytest
from toy_world import ToyBackend, fault_judge

from latent_search.mcts import MCTSConfig, mcts
from latent_search.tree import ROOT


def _value(targets):
    """Credit for the longest prefix of the generated tokens that matches the problem's target."""

    def value(seqs, done, meter=None):
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


def test_the_valuable_first_step_wins_despite_the_prior():
    be = ToyBackend(n_actions=4, horizon=3, prior_bias=1.0)  # prior prefers action 0 (token 10)
    cfg = MCTSConfig(simulations=60, expand_k=4, step_tokens=0, max_new_tokens=4)
    (res,) = mcts(be, [[0]], cfg, _value({0: [13, 12, 11]}))
    tree = res.tree
    kids = set(tree.children[ROOT].values())
    best = max(kids, key=lambda c: tree.value[c])
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
    value = _value({0: [13, 12, 11]})

    def spend(sims: int, budget: int | None = None):
        cfg = MCTSConfig(simulations=sims, expand_k=4, step_tokens=0, max_new_tokens=4,
                         budget=budget)  # fmt: skip
        (res,) = mcts(ToyBackend(n_actions=4, horizon=3), [[0]], cfg, value)
        return res

    free = spend(40)
    capped = spend(200, budget=10)
    # The budget is checked before every batched expansion: a search stops within one call of
    # its `parallel` walks past it (the toy charges 2 tokens a row: prior and expand).
    assert (
        free.tokens_used > 10
        and 10 <= capped.tokens_used <= 10 + 2 * capped.tree.meta["config"]["parallel"]
    )
    assert capped.tree.visits[ROOT] < free.tree.visits[ROOT]
    with pytest.raises(ValueError):
        MCTSConfig(simulations=0)


def test_considered_visits_is_sequential_halving():
    from latent_search.mcts import considered_visits

    seq = considered_visits(4, 16)
    assert len(seq) == 16
    assert seq[:4] == (0, 0, 0, 0) and seq[4:8] == (1, 1, 1, 1)  # phase 1: all 4, twice each
    assert set(seq[8:]) <= {2, 3, 4, 5}  # later phases: only survivors gain visits
    assert considered_visits(1, 3) == (0, 1, 2)


def test_gumbel_root_finds_the_valuable_action_and_is_seeded():
    import torch

    be = ToyBackend(n_actions=4, horizon=3, prior_bias=1.0)
    cfg = MCTSConfig(simulations=80, expand_k=4, step_tokens=0, max_new_tokens=4, gumbel=True)
    value = _value({0: [13, 12, 11]})
    runs = [
        mcts(be, [[0]], cfg, value, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)
    ]
    assert runs[0][0].tree.to_dict() == runs[1][0].tree.to_dict()  # same seed, same tree
    for (res,) in runs:
        assert [t for t in res.tokens if t >= 10] == [13, 12, 11]
        assert "gumbel" in res.tree.meta


class _Stop(Exception):
    pass


@pytest.mark.parametrize("gumbel", [False, True])
def test_interrupted_search_resumes_from_its_saved_tree(tmp_path, gumbel):
    import torch

    from latent_search.tree import Tree

    value = _value({0: [13, 12, 11]})
    cfg = MCTSConfig(simulations=20, expand_k=4, step_tokens=0, max_new_tokens=4, gumbel=gumbel)
    (full,) = mcts(ToyBackend(), [[0]], cfg, value, generator=torch.Generator().manual_seed(0))

    def checkpoint(trees):  # save every round, then "crash" after the 8th simulation
        trees[0].save(tmp_path / "t.json")
        if trees[0].visits[ROOT] >= 8:  # waves of 8 simulations: 1, 9, ...
            raise _Stop

    with pytest.raises(_Stop):
        mcts(
            ToyBackend(),
            [[0]],
            cfg,
            value,
            generator=torch.Generator().manual_seed(0),
            on_round=checkpoint,
        )
    saved = Tree.load(tmp_path / "t.json")
    (resumed,) = mcts(
        ToyBackend(), [[0]], cfg, value, generator=torch.Generator().manual_seed(9), trees=[saved]
    )
    assert resumed.tokens == full.tokens
    assert resumed.tree.visits == full.tree.visits and resumed.tree.parent == full.tree.parent


def test_token_children_walks_and_path_min_find_the_one_right_text():
    be = ToyBackend(n_actions=4, horizon=3, prior_bias=1.0)
    cfg = MCTSConfig(simulations=64, candidates="token", expand_k=4, max_new_tokens=4,
                     aggregate="min", parallel=4)  # fmt: skip
    (res,) = mcts(be, [[0]], cfg, fault_judge([11, 13, 12]))
    tree = res.tree
    assert [t for t in res.tokens if t >= 10] == [11, 13, 12]
    # Path min: a node below a faulted one is worth no more than it.
    for n in range(1, len(tree)):
        assert tree.reward[n] <= tree.reward[tree.parent[n]]
    assert tree.reward[tree.meta["chosen"]] == 1.0


def test_forced_tokens_collapse_into_one_edge():
    be = ToyBackend(n_actions=1, horizon=3)  # one action: every token is forced
    cfg = MCTSConfig(simulations=4, candidates="token", expand_k=1, max_new_tokens=8)
    (res,) = mcts(be, [[0]], cfg, fault_judge([10, 10, 10]))
    tree = res.tree
    assert len(tree) == 2 and tree.tokens[1] == [10, 10, 10, 1]  # the root's child holds them
    assert res.stats["chains"] == 1 and tree.terminal[1]


def test_parallel_simulations_spread_by_virtual_loss():
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = MCTSConfig(simulations=9, candidates="token", expand_k=4, max_new_tokens=4, parallel=8,
                     walk=False)  # fmt: skip
    (res,) = mcts(be, [[0]], cfg, fault_judge([10, 10, 10]))
    kids = set(res.tree.children[ROOT].values())
    # The root's wave of one, then 8 simulations at once: virtual loss sends them to different
    # leaves, not 8 times down the likeliest path.
    assert sum(res.tree.visits[c] >= 1 for c in kids) >= 3


def test_a_collapsed_chain_shows_as_one_edge_in_the_viewer():
    from latent_search.viz import htmlview, text

    be = ToyBackend(n_actions=1, horizon=3)
    cfg = MCTSConfig(simulations=2, candidates="token", expand_k=1, max_new_tokens=8)
    (res,) = mcts(be, [[0]], cfg, fault_judge([10, 10, 10]))
    tree = res.tree
    tree.text = tree.decoded(be.decode)
    shown = text.render(tree, None, None, color=False)
    assert "“10 10 10 1”" in shown and "tokens 4" in shown  # one edge, four tokens
    assert htmlview.payload(tree)  # the HTML viewer takes it too


def test_under_the_path_min_only_a_fault_closes_a_node_not_a_tie_breakers_wobble():
    """A judge whose ties are broken by another (equations-likelihood, equations-q) moves by
    ~1e-6 from node to node: that must not close the node as a fault."""
    from latent_search.mcts import MCTSConfig, _dead
    from latent_search.tree import Tree

    tree = Tree([5, 6])
    a = tree.add_child(0, 1, [1], prior=0.5)
    b = tree.add_child(a, 2, [2], prior=0.5)
    c = tree.add_child(a, 3, [3], prior=0.5)
    tree.reward[0], tree.reward[a] = 1.0 + 3e-7, 1.0 + 2e-7
    tree.reward[b], tree.reward[c] = 1.0 + 1e-7, 12 / 13
    cfg = MCTSConfig(aggregate="min")
    assert not _dead(tree, b, cfg) and _dead(tree, c, cfg)
    assert not _dead(tree, c, MCTSConfig(aggregate="last"))
