import itertools

import pytest
import torch
from toy_world import ToyBackend, target_scorer

from latent_search.beam import BeamConfig, beam_search


def _value_from(scorer):
    return lambda seqs, done, meter=None: scorer(seqs)


def test_full_width_beam_equals_brute_force():
    be = ToyBackend(n_actions=3, horizon=3)
    target = [12, 10, 11]
    scorer = target_scorer(target)
    cfg = BeamConfig(beam_width=27, expand_k=3, max_steps=5, step_tokens=0, max_new_tokens=10)
    (res,) = beam_search(be, [[0]], cfg, _value_from(scorer))
    brute = max(itertools.product([10, 11, 12], repeat=3), key=lambda s: scorer([[0, *s]])[0])
    assert [t for t in res.tokens if t >= 10] == list(brute) == target


def test_narrow_beam_is_greedy_by_value_and_rows_are_independent():
    be = ToyBackend(n_actions=4, horizon=3)
    cfg = BeamConfig(beam_width=1, expand_k=4, max_steps=5, step_tokens=0, max_new_tokens=10)
    targets = {0: [13, 13, 10], 1: [11, 12, 13]}

    def value(seqs, done, meter=None):
        return [target_scorer(targets[s[0]])([s])[0] for s in seqs]

    both = beam_search(be, [[0], [1]], cfg, value)
    for row, res in enumerate(both):
        assert [t for t in res.tokens if t >= 10] == targets[row]
        (alone,) = beam_search(be, [[row]], cfg, value)
        assert alone.tokens == res.tokens and alone.tree.to_dict() == res.tree.to_dict()


def test_beam_config_validation():
    with pytest.raises(ValueError):
        BeamConfig(beam_width=0)


def test_ties_of_the_judge_go_to_the_likelier_steps():
    """A judge that finds nothing wrong scores every text alike: the beam then keeps the policy's
    likeliest texts, not the children of whichever hypothesis came first. Here 11 is the likelier
    first token, but after 12 the policy is sure of 13, so 12 13 is the likeliest text."""

    class Peaked(ToyBackend):
        def prior(self, prefixes):
            out = super().prior(prefixes)
            for row, p in enumerate(prefixes):
                gen = self._gen(p)
                if not gen:
                    out.logits[row] = torch.tensor([0.0, 1.0, 0.5, -1.0])
                elif gen[-1] == 12:
                    out.logits[row] = torch.tensor([-9.0, -9.0, -9.0, 9.0])
                else:
                    out.logits[row] = torch.zeros(4)
            return out

    cfg = BeamConfig(beam_width=2, expand_k=4, max_steps=5, step_tokens=0, max_new_tokens=10)
    (res,) = beam_search(Peaked(4, 2), [[0]], cfg, lambda seqs, done, meter=None: [1.0] * len(seqs))
    assert [t for t in res.tokens if t >= 10] == [12, 13]


def test_token_candidates_are_single_tokens_of_distinct_actions():
    from latent_search.search import SearchSpec, run_search

    be = ToyBackend(n_actions=3, horizon=3)
    spec = SearchSpec("beam", candidates="token", expand_k=3, beam_width=2, max_new_tokens=8)
    value = lambda seqs, done, meter=None: target_scorer([12, 10, 11])(seqs)  # noqa: E731
    (res,) = run_search(be, [[0]], spec, value_fn=value)
    tree = res.tree
    assert all(len(tree.tokens[n]) == 1 for n in range(1, len(tree)))
    assert len(set(tree.children[0].values())) == 3  # every action's token at the root
    assert [t for t in res.tokens if t >= 10] == [12, 10, 11]
