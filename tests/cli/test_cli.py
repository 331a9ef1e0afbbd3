import json
import subprocess
import sys

from typer.testing import CliRunner

from latent_search_cli.app import app

runner = CliRunner()


def test_help_lists_commands_and_does_not_import_torch():
    code = "import sys; from latent_search_cli.app import app; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "False"
    )
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "solve" in result.output and "models" in result.output


def test_models_json_lists_presets():
    result = runner.invoke(app, ["models", "--json"])
    rows = json.loads(result.output)
    assert {"tiny", "smollm2-135m", "llama-3.1-8b"} <= {r["name"] for r in rows}
    assert all({"name", "kind"} <= set(r) for r in rows)


def test_solve_json_has_contract_fields():
    result = runner.invoke(
        app,
        [
            "solve",
            "1+1=",
            "--model",
            "tiny",
            "--search",
            "greedy",
            "--max-new-tokens",
            "5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {"answer", "text", "tokens", "seconds"} <= set(out)
    assert out["tokens"] == 5 + 4  # prefill (bos + 4 bytes) + 4 decode steps after the first token


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    cases = [
        ["solve", "", "--model", "tiny"],
        ["solve", "x", "--model", "no-such-model"],
        ["solve", "x", "--model", "tiny", "--search", "nope"],
        ["solve", "x", "--model", "tiny", "--max-new-tokens", "0"],
        ["solve", "x", "--model", str(tmp_path)],
        ["models", "--dir", str(tmp_path / "missing")],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)


def test_solve_mcts_q_writes_a_loadable_tree(tmp_path):
    from latent_search.tree import Tree

    out = tmp_path / "tree.json"
    result = runner.invoke(
        app,
        [
            "solve",
            "2+2=",
            "--model",
            "tiny",
            "--search",
            "mcts-q",
            "--max-new-tokens",
            "6",
            "--tree-out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    tree = Tree.load(out)
    assert tree.meta["algorithm"] == "mcts-q" and tree.meta["oracle"] is False
    assert summary["tokens"] == tree.meta["tokens"] > 0 and len(tree) > 1
    assert summary["oracle"] is False


def test_solve_budget_and_search_errors():
    for args in (
        ["--search", "nope"],
        ["--budget", "0"],
        ["--search", "greedy", "--budget", "400"],  # one decode: nothing for a budget to bind
        ["--search", "sample", "--budget", "400"],
        ["--search", "mcts-q", "--scorer", "vote"],
        ["--search", "beam", "--gumbel"],
        ["--search", "beam", "--beam-width", "0"],
        ["--search", "beam", "--resume", "missing.json"],
        ["--search", "mcts", "--resume", "missing.json"],
    ):
        result = runner.invoke(
            app, ["solve", "1+1=", "--model", "tiny", "--max-new-tokens", "4", *args]
        )
        assert result.exit_code == 2 and result.output.startswith("error: "), (args, result.output)


def test_every_search_runs_from_the_cli(tmp_path):
    for search in ("greedy", "sample", "best-of-n", "beam", "mcts", "mcts-q"):
        out = tmp_path / f"{search}.json"
        budget = [] if search in ("greedy", "sample") else ["--budget", "400"]
        result = runner.invoke(
            app,
            [
                "solve",
                "3+4=",
                "--model",
                "tiny",
                "--search",
                search,
                "--max-new-tokens",
                "6",
                *budget,
                "--json",
                "--tree-out",
                str(out),
            ],
        )
        assert result.exit_code == 0, (search, result.output)
        summary = json.loads(result.output)
        assert summary["search"] == search and summary["tokens"] > 0
        # Every search writes its tree: one path for greedy/sample, the samples for best-of-n.
        from latent_search.tree import ROOT, Tree

        tree = Tree.load(out)
        assert tree.meta["algorithm"] == search and tree.meta["model"] == "tiny"
        assert tree.meta["model_fingerprint"] and tree.meta["chosen"] is not None
        if search in ("greedy", "sample"):
            assert len(tree) == 2 and tree.generated(1) == tree.generated(tree.meta["chosen"])
        if search == "best-of-n":
            assert len(tree.children[ROOT]) == 8 and len(tree) == 9


def test_solve_resumes_an_interrupted_search_from_its_tree(tmp_path):
    """A tree saved after round 3 of 5 and resumed reaches the uninterrupted run's tree (mcts
    runs waves of 2 simulations after the root's: 1 + 2 + 2, saved after 1 + 2)."""
    from latent_search.tree import Tree

    args = ["solve", "3+4=", "--model", "tiny", "--max-new-tokens", "6", "--json"]
    for search in ("mcts", "mcts-q"):
        waves = ["--parallel", "2"] if search == "mcts" else []
        full, part, done = (tmp_path / f"{search}-{x}.json" for x in ("full", "part", "done"))
        for rounds, out, extra in (
            (5, full, waves),
            (3, part, waves),
            (5, done, [*waves, "--resume", str(part)]),
        ):
            result = runner.invoke(
                app,
                [
                    *args,
                    "--search",
                    search,
                    "--rounds",
                    str(rounds),
                    "--tree-out",
                    str(out),
                    *extra,
                ],
            )
            assert result.exit_code == 0, (search, result.output)
        a, b = Tree.load(full), Tree.load(done)
        assert a.parent == b.parent and a.visits == b.visits and a.tokens == b.tokens
        assert b.meta["done"] and b.text is not None and len(b.text["edges"]) == len(b)
    other = runner.invoke(
        app,
        [
            "solve",
            "9+9=",
            "--model",
            "tiny",
            "--max-new-tokens",
            "6",
            "--search",
            "mcts",
            "--resume",
            str(part),
        ],
    )
    assert other.exit_code == 2 and "different question" in other.output
