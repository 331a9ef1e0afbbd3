import itertools

import pytest
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
