import torch
from toy_world import ToyBackend

from latent_search.ledger import Ledger
from latent_search.schedule import Ask, drive


class Recording(ToyBackend):
    """The toy backend, logging (kind, rows) of every call."""

    def __init__(self) -> None:
        super().__init__(n_actions=4, horizon=3)
        self.calls: list[tuple[str, int]] = []

    def prior(self, prefixes):
        self.calls.append(("prior", len(prefixes)))
        return super().prior(prefixes)

    def expand(self, prefixes, actions):
        self.calls.append(("expand", len(prefixes)))
        return super().expand(prefixes, actions)

    def rollout(self, prefixes, max_new_tokens, **kw):
        self.calls.append((f"rollout{max_new_tokens}", len(prefixes)))
        return super().rollout(prefixes, max_new_tokens, **kw)


def _run(plans, on_round=None):
    """Each plan: the asks one problem makes in order; returns (backend calls, answers seen)."""
    be = Recording()
    seen: dict[int, list] = {i: [] for i in range(len(plans))}

    def search(i, plan):
        for ask in plan:
            seen[i].append((yield ask))

    ledger = Ledger(be, len(plans))
    drive(ledger, {i: search(i, p) for i, p in enumerate(plans)}, on_round=on_round)
    return be.calls, seen, ledger


def _rollout(n=8, rows=1):
    return Ask("rollout", [[0]] * rows, max_new_tokens=n)


def test_one_call_per_kind_and_each_problem_gets_its_own_rows():
    plans = [
        [Ask("prior", [[0], [0, 10]]), Ask("expand", [[0]], actions=torch.tensor([[0, 1, 2]]))],
        [Ask("prior", [[0]]), Ask("expand", [[0, 10]], actions=torch.tensor([[3]]))],
    ]
    calls, seen, ledger = _run(plans)
    assert calls == [("prior", 3), ("expand", 2)]
    assert seen[0][0].logits.shape == (2, 4) and seen[1][0].logits.shape == (1, 4)
    assert seen[0][1].tolist() == [[10, 11, 12]]  # padded to the widest ask, cut back
    assert seen[1][1].tolist() == [[13]]
    assert ledger.spent == [2 + 1, 1 + 1]  # every row charged to its own problem


def test_problems_run_free_and_rollouts_of_different_rounds_share_a_call():
    # Problem 0 needs a rollout every round; problem 1's first two rounds need none.
    busy = [_rollout(), Ask("round"), _rollout(), Ask("round"), _rollout(), Ask("round")]
    idle = [Ask("round"), Ask("round"), _rollout(), Ask("round")]
    free, seen, _ = _run([busy, idle])
    assert [c for c in free if c[0].startswith("rollout")] == [
        ("rollout8", 2),  # problem 1's third round beside problem 0's first
        ("rollout8", 1),
        ("rollout8", 1),
    ]
    assert seen[1][2] == [[10, 10, 10, 1]]
    checkpoints = []
    in_step, _, _ = _run([busy, idle], on_round=lambda: checkpoints.append(1))
    assert len([c for c in in_step if c[0].startswith("rollout")]) == 3
    assert [c[1] for c in in_step] == [1, 1, 2]  # held at each round: the rollouts meet last
    assert len(checkpoints) == 3


def test_the_shortest_rollouts_go_first_so_longer_ones_can_gather():
    plans = [[_rollout(4), _rollout(8)], [_rollout(8)]]
    calls, _, _ = _run(plans)
    assert calls == [("rollout4", 1), ("rollout8", 2)]


def test_mcts_q_trees_do_not_depend_on_the_batch_or_the_schedule(tiny_arith):
    """The bundled model: free-running, rounds in step and one problem at a time build the same
    trees (a problem's calls run in the same order; only its batch neighbours differ)."""
    import cola_models as cm
    from eval.prompts import format_prompt
    from eval.tasks import get_task
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.mcts_q import MCTSQConfig, mcts_q
    from latent_search.scorers import q_value_scorer

    model = tiny_arith
    problems = get_task("arith").generate(3, seed=5, split="test")
    prompts = cm.tokenizer_encode(model.tokenizer, [format_prompt(p.question) for p in problems])
    cfg = MCTSQConfig(rounds=4, rollout_tokens=64, max_depth=64)

    def run(ps, **kw):
        be = TorchBackend(model)
        return mcts_q(be, ps, cfg, q_value_scorer(be), **kw)

    free = run(prompts)
    in_step = run(prompts, on_round=lambda trees: None)
    alone = [run([p])[0] for p in prompts]
    for a, b, c in zip(free, in_step, alone):
        assert a.tokens == b.tokens == c.tokens
        assert a.tree.tokens == b.tree.tokens == c.tree.tokens
        assert a.tree.visits == b.tree.visits == c.tree.visits
        assert a.tokens_used == b.tokens_used == c.tokens_used


def test_value_asks_are_one_call_with_each_rows_finished_flag():
    seen_rows = []

    def value_fn(seqs, done, meter):
        seen_rows.append((len(seqs), list(done), meter.owners))
        return [float(len(s)) for s in seqs]

    def search(rows, done):
        got = yield Ask("value", rows, done=done)
        return got

    ledger = Ledger(Recording(), 2)
    out = drive(
        ledger,
        {0: search([[0, 10], [0]], [True, False]), 1: search([[0, 10, 11]], [False])},
        value_fn=value_fn,
    )
    assert seen_rows == [(3, [True, False, False], [0, 0, 1])]  # one call, rows charged
    assert out == {0: [2.0, 1.0], 1: [3.0]}  # each search returns its own values


def test_rollouts_differing_in_stop_or_sampling_are_not_merged():
    plans = [
        [Ask("rollout", [[0]], max_new_tokens=8, stop=(".",))],
        [Ask("rollout", [[0]], max_new_tokens=8)],
        [Ask("rollout", [[0]], max_new_tokens=8, stop=(".",))],
    ]
    calls, _, _ = _run(plans)
    assert sorted(calls) == [("rollout8", 1), ("rollout8", 2)]
