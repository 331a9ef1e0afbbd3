"""The equation check as a gold-free judge: what it finds wrong, that partial texts are judged
on what they have written, and that best-of-n selects by it without reading a gold answer."""

import pytest

from cola_models.errors import ColaError
from latent_search.equations import equation_checks, equation_score, equation_scorer
from latent_search.scorers import tie_broken
from latent_search.search import SearchSpec, run_search
from latent_search.types import Usage

QUESTION = "Ravi buys 7 books at 12 dollars each. He also buys 6 games at 4 dollars each. He gets 20 dollars off. How many dollars does Ravi spend?"  # noqa: E501
RIGHT = " 7*12=84. 6*4=24. 84+24=108. 108-20=88. \\boxed{88}"


def test_a_consistent_solution_passes_every_check():
    # 4 equations x 3, the answer, 5 numbers of the question used, 3 results used later
    assert equation_checks(QUESTION, RIGHT) == (21, 21)
    assert equation_score(QUESTION, RIGHT) == 1.0


@pytest.mark.parametrize(
    "wrong, failed",
    [
        (" 7*12=84. 6*4=24. 84+24=100. 100-20=80. \\boxed{80}", 1),  # the calculator
        (" 7*12=84. 6*3=18. 84+18=102. 102-20=82. \\boxed{82}", 2),  # 3 misread: 4 unused
        (" 7*12=84. 6*4=24. 84+24=108. 108-20=88. \\boxed{86}", 1),  # not the last result
        (" 7*12=84. 6*4=24. 84+24=108. 108-21=87. \\boxed{87}", 2),  # misread 20, unused
        (" 7*12=84. 6*4=24. 84+25=108. 108-20=88. \\boxed{88}", 3),  # 25: misread, wrong sum,
        # and 24 never used
        (" 7*12=84. 84-20=64. \\boxed{64}", 2),  # a step left out: 6 and 4 never used
    ],
)
def test_each_kind_of_error_fails_a_check(wrong, failed):
    passed, made = equation_checks(QUESTION, wrong)
    assert made - passed == failed
    assert equation_score(QUESTION, wrong) < 1.0


def test_a_finished_text_must_use_every_number_and_every_result():
    from latent_search.equations import failed_checks

    skipped = " 7*12=84. 6*4=24. 84-20=64. \\boxed{64}"  # the games' 24 never added
    assert failed_checks(QUESTION, skipped) == ["6*4=24: its result is never used"]
    # A partial text is not asked for completeness: its later steps may use them.
    assert equation_score(QUESTION, " 7*12=84. 6*4=24. ", finished=False) == 1.0


def test_a_partial_text_is_judged_on_what_it_has_written():
    assert equation_score(QUESTION, " 7*12=84. 6*4=", finished=False) == 1.0
    assert equation_score(QUESTION, " 7*12=", finished=False) == 1.0  # nothing to check yet
    assert equation_score(QUESTION, " 7*12=85.", finished=False) == pytest.approx(2 / 3)
    assert equation_score(QUESTION, " The answer is 88.") == 0.0  # finished, nothing checkable


def test_a_result_still_being_written_waits_and_a_malformed_one_fails():
    # "84" is written digit by digit: "8" is not judged until something follows it
    assert equation_score(QUESTION, " 7*12=8", finished=False) == 1.0
    assert equation_score(QUESTION, " 7*12=8.", finished=False) == pytest.approx(2 / 3)
    assert equation_score(QUESTION, " 7*12=x.", finished=False) == 0.0  # no number: fails
    assert equation_score(QUESTION, " 7*12=85") < 1.0  # a finished text's last result counts


@pytest.mark.parametrize(
    "gamed",
    [
        " 7*12=84. 6*4=24. 84+24 108-20=88. \\boxed{88}",  # a step without its result
        " 7*12=84. 6*4=24. 84+24. \\boxed{24}",  # the wrong step broken off, a checked result boxed
        " 7*12=84. 6*4=24. 84+ \\boxed{24}",  # an operator left dangling
        " 7*12=84. 6*4=24. 84+24 is 108. 108-20=88. \\boxed{88}",  # arithmetic in words
    ],
)
def test_a_text_reaches_full_marks_only_when_every_step_is_a_checked_equation(gamed):
    """The judge is a search's adversary: leaving out, or breaking off, the equation that would
    have been wrong must not score full marks."""
    passed, made = equation_checks(QUESTION, gamed)
    assert passed < made and equation_score(QUESTION, gamed) < 1.0


def test_a_growing_tail_is_not_yet_unchecked_arithmetic():
    assert equation_score(QUESTION, " 7*12=84. 84+2", finished=False) == 1.0  # "4=108" may come
    assert equation_score(QUESTION, " 7*12=84. 84+", finished=False) == 1.0
    assert equation_score(QUESTION, " 7*12=84. 84+24 dollars. 1", finished=False) < 1.0


class ScriptedBackend:
    """Characters as tokens; each sample of a prompt is the next of ``texts``."""

    level, n_actions, eos_id = "token", 128, 0

    def __init__(self, texts):
        self.texts, self.at = texts, 0
        self.usage, self.last_costs = Usage(), []

    def rollout(self, prefixes, max_new_tokens, *, sample, generator=None, stop=()):
        outs = []
        for _ in prefixes:
            outs.append([ord(c) for c in self.texts[self.at % len(self.texts)]] + [0])
            self.at += 1
        self.last_costs = [len(o) for o in outs]
        return outs

    def decode(self, tokens):
        return "".join(chr(t) for t in tokens if t)


def test_best_of_n_keeps_the_sample_whose_equations_hold(monkeypatch):
    from eval.tasks import ArithTask

    def no_gold(*args, **kwargs):
        raise AssertionError("a scorer read the gold answer")

    monkeypatch.setattr(ArithTask, "reward", no_gold)
    wrong = [
        " 7*12=84. 6*4=24. 84+24=100. 100-20=80. \\boxed{80}",
        " 7*12=84. 6*3=18. 84+18=102. 102-20=82. \\boxed{82}",
    ]
    backend = ScriptedBackend([wrong[0], RIGHT, wrong[1], wrong[0]])
    prompt = [ord(c) for c in "Question: " + QUESTION + "\nAnswer:"]
    spec = SearchSpec("best-of-n", n=4, max_new_tokens=64, scorer="equations")
    (res,) = run_search(backend, [prompt], spec)
    assert backend.decode(res.tokens) == RIGHT
    assert res.stats["scores"][1] == 1.0 and max(res.stats["scores"][::2]) < 1.0
    assert not res.oracle
    assert res.tokens_used == sum(len(t) + 1 for t in backend.texts)  # the check costs nothing


def test_the_scorer_needs_to_know_where_the_prompt_ends():
    class NoStarts:
        starts = None

    with pytest.raises(ValueError, match="where each prompt ends"):
        equation_scorer(ScriptedBackend([RIGHT]))([[65, 66]], NoStarts())


def test_tie_broken_ranks_by_the_first_judge_and_breaks_its_ties_by_the_second():
    first = lambda seqs, meter: [1.0, 1.0, 12 / 13, 0.0, 0.0]  # noqa: E731
    second = lambda seqs, meter: [0.2, 0.9, 1.0, 0.3, 0.1]  # noqa: E731
    scores = tie_broken(first, second)([[]] * 5, None)
    assert sorted(range(5), key=lambda i: -scores[i]) == [1, 0, 2, 3, 4]


def test_solve_defaults_to_per_token_mcts_judged_by_equations():
    import json

    from typer.testing import CliRunner

    from latent_search_cli.app import app

    args = ["solve", "1+1=", "--model", "tiny", "--max-new-tokens", "4", "--json"]

    def config(*extra):
        got = CliRunner().invoke(app, [*args, *extra])
        assert got.exit_code == 0, got.output
        return json.loads(got.stdout)["config"]

    default = config()
    assert (default["algorithm"], default["candidates"], default["scorer"]) == (
        "mcts",
        "token",
        "equations",
    )
    assert (default["rounds"], default["expand_k"], default["parallel"]) == (32, 64, 8)
    beam = config("--search", "beam")
    assert (beam["beam_width"], beam["expand_k"], beam["candidates"]) == (8, 64, "token")
    assert config("--search", "best-of-n")["scorer"] == "equations-likelihood"
    mcts = config("--search", "mcts", "--rounds", "2")
    assert (mcts["candidates"], mcts["expand_k"], mcts["scorer"]) == ("token", 64, "equations")
    assert config("--search", "beam", "--beam-width", "2", "--expand-k", "3")["expand_k"] == 3


@pytest.mark.parametrize("algorithm", ["greedy", "sample", "best-of-n", "beam", "mcts", "mcts-q"])
def test_the_library_and_the_cli_share_one_set_of_defaults(algorithm):
    """`SearchSpec(algorithm)` is what the CLI runs for `--search algorithm` with no other flag:
    the CLI passes its flags through, None where unset, and SearchSpec fills them."""
    from dataclasses import asdict

    from latent_search_cli.app import search_spec

    unset = dict(budget=None, scorer=None, beam_width=None, expand_k=None, step_candidates=None)
    cli = search_spec(search=algorithm, max_new_tokens=256, seed=0, rounds=32, n=8, gumbel=False,
                      **unset)  # fmt: skip
    assert asdict(cli) == asdict(SearchSpec(algorithm))
    beam = SearchSpec("beam")
    assert (beam.scorer, beam.beam_width, beam.expand_k, beam.candidates) == (
        "equations",
        8,
        64,
        "token",
    )


def test_the_path_min_is_the_default_of_the_fault_finding_judges_only():
    assert SearchSpec("mcts").aggregate == "min"
    assert SearchSpec("mcts", scorer="equations-q").aggregate == "min"
    assert SearchSpec("mcts", scorer="q").aggregate == "last"
    assert SearchSpec("mcts", scorer="q", aggregate="min").aggregate == "min"
    with pytest.raises(ColaError, match="aggregate"):
        SearchSpec("mcts", aggregate="mean")


def test_the_check_weighed_by_q_searches_end_to_end():
    import json

    from typer.testing import CliRunner

    from latent_search_cli.app import app

    args = ["solve", "1+1=", "--model", "tiny", "--max-new-tokens", "4", "--json"]
    got = CliRunner().invoke(app, [*args, "--scorer", "equations-q", "--rounds", "4"])
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["config"]["scorer"] == "equations-q" and out["config"]["aggregate"] == "min"
