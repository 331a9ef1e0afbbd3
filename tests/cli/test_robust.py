"""The CLI as a researcher meets it: each class of bad situation ends in one line on stderr and
exit status 2, before any model work, with nothing already written lost or duplicated."""

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from latent_search_cli.app import app

runner = CliRunner()
UNWRITABLE = "/proc/latent-search-test/out"  # not writable even for root


def _fails(args, *, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert needle in lines[0], lines[0]
    return lines[0]


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_unwritable_or_occupied_outputs_are_refused_up_front(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    solve = ["solve", "1+1=", "--model", "tiny", "--max-new-tokens", "4"]
    _fails([*solve, "--tree-out", str(tmp_path)], needle="is a directory")
    _fails([*solve, "--tree-out", UNWRITABLE + ".json"], needle="cannot write")
    _fails([*solve, "--viz", UNWRITABLE + ".html"], needle="cannot write")
    _fails(["eval", "--limit", "1", "--out", str(a_file)], needle="existing file")
    _fails(["eval", "--limit", "1", "--out", UNWRITABLE], needle="cannot write")
    _fails(["train", "base", "--preset", "smoke", "--out", UNWRITABLE], needle="cannot write")
    _fails(["compare", "--limit", "1", "--out", str(a_file)], needle="existing file")
    assert a_file.read_text() == "keep me"


def test_the_answer_is_printed_even_when_its_tree_cannot_be_saved(tmp_path, monkeypatch):
    from latent_search.tree import Tree

    def broken(self, path, decode=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Tree, "save", broken)
    out = tmp_path / "t.json"
    result = runner.invoke(
        app,
        [
            "solve",
            "1+1=",
            "--model",
            "tiny",
            "--max-new-tokens",
            "4",
            "--json",
            "--tree-out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert "tokens" in got and any("could not write" in w for w in got["warnings"])


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--limit", "2", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "results.jsonl").read_text()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cola_models.atomic import WriterLock\n"
            f"with WriterLock({str(out)!r}, 'latent-search eval'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _fails([*args[:-2], "--limit", "4", "--out", str(out)], needle="is being written by")
        assert f"process {holder.pid}" in line
        assert (out / "results.jsonl").read_text() == before  # nothing duplicated or lost
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: the kernel dropped its lock, and the run continues where it was.
    assert runner.invoke(app, [*args[:-2], "--limit", "4", "--out", str(out)]).exit_code == 0
    ids = [r["id"] for r in _rows(out / "results.jsonl")]
    assert len(ids) == len(set(ids)) == 4 and (out / "results.jsonl").read_text().startswith(before)


def test_a_failed_command_leaves_nothing_that_blocks_its_fix(tmp_path):
    out = tmp_path / "run"
    _fails(
        ["eval", "--task", "math500", "--data", str(tmp_path / "nope.jsonl"), "--out", str(out)],
        needle="nope.jsonl",
    )
    assert not out.exists()
    _fails(
        ["eval", "--model", str(tmp_path / "no-model"), "--limit", "1", "--out", str(out)],
        needle="no model",
    )
    assert not out.exists()
    assert runner.invoke(app, ["eval", "--limit", "1", "--out", str(out)]).exit_code == 0
    train_out = tmp_path / "s2"
    _fails(["train", "stage2", "--out", str(train_out)], needle="needs --model")
    assert not train_out.exists()


def test_a_refusal_names_the_settings_that_differ_and_limit_extends(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["eval", "--limit", "2", "--out", str(out)]).exit_code == 0
    first = (out / "results.jsonl").read_text()
    _fails(["eval", "--limit", "2", "--seed", "3", "--out", str(out)], needle="search.seed: 0 -> 3")
    result = runner.invoke(app, ["eval", "--limit", "3", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 3
    assert (out / "results.jsonl").read_text().startswith(first)  # the finished rows are kept


def test_resume_with_another_models_tree_is_refused(tmp_path):
    tree = tmp_path / "t.json"
    base = ["solve", "3+4=", "--search", "mcts", "--rounds", "2", "--max-new-tokens", "6"]
    grown = runner.invoke(app, [*base, "--model", "tiny-arith-bc", "--tree-out", str(tree)])
    assert grown.exit_code == 0, grown.output
    saved = tree.read_text()
    # Same tokenizer and prompt format, other weights: only the fingerprint tells them apart.
    _fails([*base, "--model", "tiny-arith", "--resume", str(tree)], needle="another model")
    assert tree.read_text() == saved


@pytest.mark.parametrize(
    "field, value",
    [("visits", ["many"]), ("tokens", [[], "abc"]), ("terminal", [0]), ("prompt_tokens", "12")],
)
def test_a_tree_with_wrong_field_types_is_a_one_line_error(tmp_path, field, value):
    from latent_search.tree import Tree

    good = Tree(prompt_tokens=[1, 2])
    good.add_child(0, 3, [3], prior=1.0)
    d = good.to_dict()
    d[field] = value if field == "prompt_tokens" else (value + d[field])[: len(d[field])]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    _fails(["viz", str(bad), "--format", "text"], needle=field)


def test_mcts_q_with_a_budget_spent_before_its_first_round_answers():
    result = runner.invoke(
        app, ["solve", "1+1=", "--model", "tiny", "--search", "mcts-q", "--budget", "20", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stats"]["rounds"] == 0


def test_a_preset_larger_than_memory_is_refused_with_its_size(monkeypatch):
    monkeypatch.setattr("cola_models.build.available_memory", lambda: 2 << 30)
    t0 = time.perf_counter()
    _fails(["solve", "1+1=", "--model", "llama-3.1-8b"], needle="GiB for its weights")
    assert time.perf_counter() - t0 < 60  # refused from the meta-device estimate, not an OOM


def test_version_and_bundled_names_everywhere():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("latent-search ")
    from cola_models.catalog import resolve_name
    from train.cli_entry import run_stage  # noqa: F401 - bundled names resolve in every stage

    assert resolve_name("tiny-arith-base") is not None


def test_train_help_is_per_stage():
    texts = {s: runner.invoke(app, ["train", s, "--help"]).output for s in ("rl", "rft", "stage1")}
    assert len(set(texts.values())) == 3
    assert "latent actions of the correct samples" in " ".join(texts["rft"].split())


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["/usr/bin/latent-search", "eval", "--out", "r"], "latent-search eval --out r"),
        (
            ["/x/latent_search_cli/__main__.py", "train", "base"],
            "python -m latent_search_cli train base",
        ),
        (["-c"], "latent-search eval"),  # a library caller: what it does
    ],
)
def test_the_lock_names_the_holders_command_once(tmp_path, monkeypatch, argv, shown):
    from cola_models.atomic import WriterLock

    monkeypatch.setattr(sys, "argv", argv)
    with WriterLock(tmp_path / "r", "latent-search eval"):
        held = json.loads((tmp_path / "r" / WriterLock.HOLDER).read_text())
    assert held["command"] == shown


def test_an_unknown_viz_format_is_refused_before_the_search(tmp_path, monkeypatch):
    import eval.solve

    def never(*a, **k):
        raise AssertionError("the search ran")

    monkeypatch.setattr(eval.solve, "solve_question", never)
    line = _fails(["solve", "What is 2 + 3?", "--viz", str(tmp_path / "t.xyz")], needle="t.xyz")
    assert "suffix" in line
    assert not (tmp_path / "t.xyz").exists()


def test_viz_into_a_place_that_cannot_be_written_is_one_line(tmp_path):
    from latent_search.tree import ROOT, Tree

    tree = Tree(prompt_tokens=[1, 2])
    tree.add_child(ROOT, 0, [3, 4], prior=1.0, terminal=True)
    tree.save(tmp_path / "t.json")
    for fmt in ("html", "svg", "dot", "graphml"):
        _fails(
            ["viz", str(tmp_path / "t.json"), "--out", f"{UNWRITABLE}.{fmt}"], needle="cannot write"
        )


def test_a_disk_that_fills_during_eval_is_one_line_and_keeps_what_was_written(
    tmp_path, monkeypatch
):
    import errno

    import eval.runner

    real, calls = eval.runner._append, []

    def fills_up(path, records):
        calls.append(len(records))
        if len(calls) == 2:
            with path.open("a") as f:
                f.write('{"id": "torn')  # a half-written line, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, records)

    monkeypatch.setattr(eval.runner, "_append", fills_up)
    out = tmp_path / "run"
    args = [
        "eval",
        "--limit",
        "4",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "32",
        "--out",
        str(out),
    ]
    line = _fails(args, needle="No space left on device")
    assert "the 2 finished record(s) are kept" in line
    kept = (out / "results.jsonl").read_text().splitlines()
    assert len(kept) == 3 and kept[-1] == '{"id": "torn'  # 2 records and the torn line
    monkeypatch.setattr(eval.runner, "_append", real)
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert [json.loads(x)["id"] for x in kept[:2]] == [r["id"] for r in rows[:2]]


def test_a_library_bug_keeps_its_traceback(monkeypatch):
    """Only the project's own error type is a one-line user error: a ValueError from deep
    inside a library (or this one) is a bug and is not dressed up as bad input."""
    import eval.solve

    def bug(*a, **k):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(eval.solve, "solve_question", bug)
    result = runner.invoke(app, ["solve", "What is 2 + 3?"])
    assert result.exit_code != 2
    assert isinstance(result.exception, ValueError)
    assert "error: " not in result.output


def test_unreadable_inputs_are_one_line(tmp_path, monkeypatch):
    import errno

    import eval.datasets

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
        yield  # a generator, as the real reader is

    data = tmp_path / "m.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2"}\n')
    monkeypatch.setattr(eval.datasets, "_jsonl_rows", denied)
    line = _fails(["eval", "--task", "math500", "--data", str(data), "--out", str(tmp_path / "o")],
                  needle="cannot read")  # fmt: skip
    assert "Permission denied" in line and not (tmp_path / "o").exists()
