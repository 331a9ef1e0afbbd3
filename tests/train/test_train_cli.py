import json

from typer.testing import CliRunner

from latent_search_cli.app import app

runner = CliRunner()


def _one_line_error(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    return lines[0]


def test_train_bad_input_gives_one_line_errors(tmp_path):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[optim\nsteps = 3")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[optim]\nsteps_typo = 3\n")
    out_of_range = tmp_path / "range.toml"
    out_of_range.write_text("[optim]\nlr = -1.0\n")
    wrong_type = tmp_path / "type.toml"
    wrong_type.write_text("[optim]\nsteps = 'many'\n")
    out = str(tmp_path / "run")
    assert "No such command 'stage9'" in _one_line_error(["train", "stage9", "--out", out])
    assert "unknown pipeline preset" in _one_line_error(
        ["train", "base", "--preset", "huge", "--out", out]
    )
    assert "not valid TOML" in _one_line_error(
        ["train", "base", "--config", str(bad_toml), "--out", out]
    )
    assert "unknown config field optim.steps_typo" in _one_line_error(
        ["train", "base", "--config", str(unknown), "--out", out]
    )
    assert "lr=-1.0 must be > 0" in _one_line_error(
        ["train", "base", "--config", str(out_of_range), "--out", out]
    )
    assert "must be a number" in _one_line_error(
        ["train", "base", "--config", str(wrong_type), "--out", out]
    )
    assert "needs --model" in _one_line_error(["train", "stage2", "--out", out])
    assert "does not exist" in _one_line_error(
        ["train", "base", "--config", str(tmp_path / "no.toml"), "--out", out]
    )


def test_train_base_runs_and_refuses_a_different_run_in_the_same_dir(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        "[data]\nn_train = 200\nbatch_size = 4\n[model]\nvocab_size = 320\nhidden_size = 64\n"
        "num_heads = 1\nnum_kv_heads = 1\nnum_layers = 1\nffn = 64\ntokenizer_problems = 200\n"
    )
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "base", "--config", str(cfg), "--steps", "2", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["stage"] == "base" and (out / "model" / "config.json").is_file()
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [
        0,
        1,
    ]
    assert "holds a base run with other settings (config.optim.steps: 2 -> 3)" in _one_line_error(
        ["train", "base", "--config", str(cfg), "--steps", "3", "--out", str(out)]
    )
