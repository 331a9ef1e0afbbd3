"""`latent-search eval` / `compare`: per-problem results written as they go, resumable runs,
settings guarded, summaries and comparison outputs complete."""

import json

import pytest
from typer.testing import CliRunner

from eval.compare import Method, run_compare
from eval.runner import EvalConfig, run_eval
from latent_search.search import SearchSpec
from latent_search_cli.app import app

runner = CliRunner()


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_eval_writes_results_and_resumes_after_a_torn_line(tmp_path):
    cfg = EvalConfig(task="arith", model="tiny-arith", limit=6, batch_size=4)
    first = run_eval(cfg, tmp_path)
    recs = _lines(tmp_path / "results.jsonl")
    assert len(recs) == 6 and first["n"] == 6 and first["of"] == 6
    assert first["accuracy"] == sum(r["correct"] for r in recs) / 6
    assert not first["oracle"] and first["tokens_per_problem"] > 0
    assert set(first["by"]["level"]) <= {"1", "2", "3", "4"}
    # A crash mid-write: drop the last two records and leave half a line behind.
    text = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(text[:4]) + "\n" + text[4][:20])
    again = run_eval(cfg, tmp_path)
    recs2 = _lines(tmp_path / "results.jsonl")
    assert [r["id"] for r in recs2][:4] == [r["id"] for r in recs][:4]
    assert sorted(r["id"] for r in recs2) == sorted(r["id"] for r in recs)
    assert again["accuracy"] == first["accuracy"]  # greedy: the redone problems agree
    # Finished: a third run does no work and changes nothing.
    assert run_eval(cfg, tmp_path) == again


def test_a_tree_search_reports_how_different_its_candidates_were(tmp_path):
    spec = SearchSpec("beam", candidates="token", expand_k=64, beam_width=2, scorer="equations")
    cfg = EvalConfig(task="arith", model="tiny-arith", limit=3, batch_size=3, search=spec)
    summary = run_eval(cfg, tmp_path)
    recs = _lines(tmp_path / "results.jsonl")
    assert all(r["branching"] >= 1.0 for r in recs)
    assert summary["branching"] == pytest.approx(sum(r["branching"] for r in recs) / 3)
    greedy = run_eval(EvalConfig(task="arith", model="tiny-arith", limit=3), tmp_path / "g")
    assert "branching" not in greedy


def test_eval_refuses_to_mix_settings(tmp_path):
    run_eval(EvalConfig(limit=2, model="tiny-arith"), tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        run_eval(EvalConfig(limit=2, model="tiny-arith-bc"), tmp_path)


def test_samples_give_maj_and_pass_at_k(tmp_path):
    cfg = EvalConfig(model="tiny-arith", limit=4, samples=3, search=SearchSpec(algorithm="sample"))
    s = run_eval(cfg, tmp_path)
    assert {"maj@3", "pass@3"} <= set(s)
    assert s["pass@3"] >= s["accuracy"] and s["pass@3"] >= s["maj@3"]
    rec = _lines(tmp_path / "results.jsonl")[0]
    assert len(rec["samples"]) == 3


def test_compare_writes_table_and_plot(tmp_path):
    methods = [
        Method("greedy", "tiny-arith"),
        Method("best-of-2 (vote)", "tiny-arith", SearchSpec("best-of-n", n=2, scorer="vote")),
    ]
    rows = run_compare(methods, task="arith", out=tmp_path, limit=3)
    assert [r["method"] for r in rows] == ["greedy", "best-of-2 (vote)"]
    assert rows[1]["tokens_per_problem"] > rows[0]["tokens_per_problem"]
    table = (tmp_path / "compare.md").read_text()
    assert table.count("\n") == 4 and "best-of-2 (vote)" in table
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_and_its_errors(tmp_path):
    ok = runner.invoke(app, ["eval", "--out", str(tmp_path / "r"), "--limit", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["n"] == 2
    for args in (
        ["--task", "nope"],
        ["--limit", "0"],
        ["--search", "nope"],
        ["--samples", "0"],
        ["--task", "math500", "--data", str(tmp_path / "missing.jsonl")],
    ):
        bad = runner.invoke(app, ["eval", "--out", str(tmp_path / "b"), *args])
        assert bad.exit_code == 2, (args, bad.output)
        assert bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1


def test_default_comparison_matches_budgets():
    from eval.compare import default_methods

    methods = default_methods(960, 60.0)
    names = [m.name for m in methods]
    assert len(set(names)) == len(names)
    searches = [m for m in methods if m.search.algorithm in ("beam", "mcts", "mcts-q")]
    assert {m.search.algorithm for m in searches} == {"beam", "mcts", "mcts-q"}
    assert all(m.search.budget == 960 for m in searches)
    assert any(m.level == "token" and m.value_model == "tiny-arith" for m in searches)
    bon = [m for m in methods if m.search.algorithm == "best-of-n"]
    assert bon and all(m.search.n == 16 for m in bon)  # 960 / 60 samples


def test_eval_diversity_cli(tmp_path):
    res = runner.invoke(
        app,
        ["eval", "--metric", "diversity", "--out", str(tmp_path), "--limit", "3", "--n", "3",
         "--max-new-tokens", "8", "--embedder", "ngram", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert set(report["modes"]) == {"latent", "token", "random"}
    assert json.loads((tmp_path / "diversity.json").read_text()) == report
    for args in (["--embedder", "nope"], ["--n", "1"], ["--model", "tiny-arith-base"]):
        bad = runner.invoke(
            app, ["eval", "--metric", "diversity", "--out", str(tmp_path / "b"), "--limit", "2",
                  *args],
        )  # fmt: skip
        assert bad.exit_code == 2 and bad.output.startswith("error: "), (args, bad.output)


def test_a_prompt_longer_than_the_context_is_recorded_not_fatal(tmp_path):
    long_template = "x " * 1100 + "{question}"  # past tiny-arith's 1024-token context
    s = run_eval(EvalConfig(limit=2, model="tiny-arith", template=long_template), tmp_path / "a")
    recs = _lines(tmp_path / "a" / "results.jsonl")
    assert s["n"] == 2 and s["unanswered_too_long"] == 2 and s["accuracy"] == 0.0
    assert all("exceeds the model's context of 1024" in r["error"] for r in recs)
    # The same problems in the model's own format fit and are answered.
    ok = run_eval(EvalConfig(limit=2, model="tiny-arith"), tmp_path / "b")
    assert ok["unanswered_too_long"] == 0
    assert all(
        "error" not in r and r["tokens"] > 0 for r in _lines(tmp_path / "b" / "results.jsonl")
    )


@pytest.mark.parametrize(
    "algorithm, scorer, wants_q",
    [
        ("greedy", "q", False),
        ("beam", "equations", False),
        ("best-of-n", "vote", False),
        ("beam", "q", True),
        ("mcts-q", "equations", True),  # its macro-steps read Q whatever the judge
    ],
)
def test_the_torch_backend_runs_the_q_head_only_for_searches_that_read_it(
    algorithm, scorer, wants_q
):
    from eval.searcher import load_searcher
    from latent_search.search import SearchSpec

    s = load_searcher("tiny-arith", SearchSpec(algorithm=algorithm, scorer=scorer))
    prior = s.backend.prior([[1, 40, 41]])
    assert (prior.q is not None) == wants_q


def test_compare_runs_on_another_model(tmp_path):
    from typer.testing import CliRunner

    from eval.compare import methods_for
    from latent_search_cli.app import app

    bundled = {m.model for m in methods_for("tiny-arith", 100, 50.0)}
    assert {"tiny-arith", "tiny-arith-bc", "tiny-arith-token-rl", "tiny-arith-base"} <= bundled
    mine = methods_for("runs/mine", 100, 50.0, has_q=False)
    assert {m.model for m in mine} == {"runs/mine"} and mine[0].name == "greedy"
    assert all(m.search.scorer != "q" or m.search.algorithm in ("greedy", "sample") for m in mine)
    runner = CliRunner()
    bad = runner.invoke(
        app, ["compare", "--model", "tiny-arith-base", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "is not a CoLA model" in bad.output
    args = ["compare", "--model", "tiny-arith-bc", "--limit", "1", "--budget-x", "2", "--out",
            str(tmp_path / "c"), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output.strip().splitlines()[-1])
    assert {r["model"] for r in rows} == {"tiny-arith-bc"} and len(rows) >= 5


def test_compare_plot_draws_no_two_methods_alike():
    from eval.compare import default_methods, styles

    rows = [{"method": m.name, "level": m.level} for m in default_methods(1000, 60.0)]
    looks = styles(rows)
    assert len(rows) == 20 and len(set(looks)) == len(rows)
    fam = {r["method"]: s[0] for r, s in zip(rows, looks)}
    assert fam["mcts"] == fam["token mcts"] != fam["mcts-q"]  # a family shares its colour
