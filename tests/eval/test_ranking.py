import pytest

from eval.ranking import Group, best_of, pooled_auc, within_problem_auc


def test_a_perfect_ranker_has_within_auc_one_and_picks_right():
    groups = [
        Group([0.9, 0.1, 0.2], [True, False, False], ["7", "6", "5"]),
        Group([0.2, 0.8, 0.1], [False, True, False], ["1", "2", "1"]),
    ]
    r = within_problem_auc(groups)
    assert r["auc"] == 1.0 and r["problems"] == 2 and r["lo"] == 1.0
    assert best_of(groups, 3, "score") == 1.0
    assert best_of(groups, 1, "score") == 0.5  # only the first sample: right once
    assert best_of(groups, 3, "vote") == 0.5  # "1" wins the second problem's vote
    assert best_of(groups, 3, "oracle") == 1.0


def test_difficulty_alone_scores_pooled_but_not_within():
    # Scores equal within a problem, higher for the easy problem: pooled high, within chance.
    easy = Group([0.9] * 4, [True, True, True, False], ["a", "a", "a", "b"])
    hard = Group([0.1] * 4, [True, False, False, False], ["c", "d", "d", "e"])
    assert pooled_auc([easy, hard]) == 0.75
    assert within_problem_auc([easy, hard])["auc"] == 0.5


def test_weighted_vote_uses_scores_and_ci_brackets_the_mean():
    g = Group([0.1, 0.1, 0.9], [False, False, True], ["4", "4", "5"])
    assert best_of([g], 3, "vote") == 0.0 and best_of([g], 3, "weighted_vote") == 1.0
    groups = [Group([i % 3, 1, 2], [True, False, i % 2 == 0], ["a", "b", "c"]) for i in range(30)]
    r = within_problem_auc(groups, n_boot=200)
    assert r["lo"] <= r["auc"] <= r["hi"] and r["lo"] < r["hi"]
    with pytest.raises(ValueError):
        best_of(groups, 2, "nope")
