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
