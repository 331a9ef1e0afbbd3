import pytest
from toy_world import ToyBackend, fault_judge, target_scorer

from latent_search.mcts_q import MCTSQConfig, mcts_q
from latent_search.tree import ROOT, Tree


def _run(targets, rounds=40, **kw):
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = MCTSQConfig(rounds=rounds, b_root=4, b_other=4, rollout_tokens=8, macro_tokens=0, **kw)
    scorers = [target_scorer(t) for t in targets]

    def scorer(seqs, meter=None):  # each prompt carries its problem index as its only token
        return [scorers[s[0]](seqs[i : i + 1])[0] for i, s in enumerate(seqs)]

    return mcts_q(be, [[i] for i in range(len(targets))], cfg, scorer)


def test_search_finds_the_rewarded_sequence_against_the_prior():
    (res,) = _run([[13, 12, 13]])
    assert res.tokens[:3] == [13, 12, 13]
    tree = res.tree
    best_root_child = tree.children[ROOT][3]
    assert tree.visits[best_root_child] == max(tree.visits[c] for c in tree.children[ROOT].values())


def test_batch_rows_do_not_interfere():
    together = _run([[13, 12, 13], [11, 11, 12]])
    alone = [_run([[13, 12, 13]])[0], _run([[11, 11, 12]])[0]]
    for a, b in zip(together, alone):
        assert a.tokens == b.tokens
        assert a.tree.visits == b.tree.visits and a.tree.value == pytest.approx(b.tree.value)


def test_tree_json_round_trip_and_resume(tmp_path):
    (full,) = _run([[13, 12, 13]], rounds=12)
    (half,) = _run([[13, 12, 13]], rounds=6)
    half.tree.save(tmp_path / "t.json")
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = MCTSQConfig(rounds=12, b_root=4, b_other=4, rollout_tokens=8, macro_tokens=0)
    (resumed,) = mcts_q(
        be, [[0]], cfg, target_scorer([13, 12, 13]), trees=[Tree.load(tmp_path / "t.json")]
    )
    assert resumed.tree.to_dict()["visits"] == full.tree.to_dict()["visits"]
    assert resumed.tokens == full.tokens


def test_budget_caps_tokens():
    (capped,) = _run([[13, 12, 13]], rounds=200, budget=30)
    (free,) = _run([[13, 12, 13]], rounds=200)
    assert capped.tokens_used < free.tokens_used
    assert capped.tokens_used <= 30 + 3 * 8  # one round may overshoot by its own cost


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(gamma=0.0), dict(budget=0), dict(b_root=0)])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        MCTSQConfig(**bad)


def test_token_walks_keep_every_position_as_a_node_and_find_the_target():
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = MCTSQConfig(rounds=120, b_root=4, b_other=4, max_depth=4, walk=True)
    target = [13, 12, 13]
    (res,) = mcts_q(be, [[0]], cfg, target_scorer(target), value_fn=fault_judge(target))
    tree = res.tree
    assert [t for t in res.tokens if t >= 10] == target
    assert all(len(t) <= 1 for t in tree.tokens)  # a node per token: any position can branch
    assert all(r == [] for r in tree.rollout[1:])  # rollouts live in the tree


def test_token_walks_need_a_value_function():
    from cola_models.errors import ColaError

    with pytest.raises(ColaError, match="value function"):
        mcts_q(ToyBackend(), [[0]], MCTSQConfig(rounds=2, walk=True), target_scorer([10]))
