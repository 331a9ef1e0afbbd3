"""--device / --dtype on every command that runs a model: shown in --help, and a device that is
not there (or an unknown dtype) refused in one line, exit 2, before anything is written."""

import pytest
import torch
from typer.testing import CliRunner

from latent_search_cli.app import app

runner = CliRunner()
COMMANDS = {
    "solve": ["solve", "What is 2 + 3?"],
    "eval": ["eval", "--task", "arith", "--limit", "2", "--out", "{out}"],
    "compare": ["compare", "--limit", "2", "--out", "{out}"],
    "train": [
        "train",
        "stage1",
        "--model",
        "tiny-arith-base",
        "--preset",
        "smoke",
        "--out",
        "{out}",
    ],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_model_command_takes_device_and_dtype(command):
    words = COMMANDS[command][:2] if command == "train" else COMMANDS[command][:1]
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0
    assert "--device" in result.output and "--dtype" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA refuses it")
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--device", "cuda"], "error: --device cuda: CUDA is not available on this machine"),
        (["--device", "cuda:1"], "error: --device cuda:1: CUDA is not available"),
        (["--dtype", "int8"], "error: unknown dtype 'int8'"),
        (["--device", "tpu"], "error: unknown device 'tpu'"),
        (["--device", "mps"], "error: device 'mps' is not supported"),
    ],
)
def test_an_unusable_placement_is_one_line_and_writes_nothing(tmp_path, command, flags, needle):
    out = tmp_path / "out"
    args = [a.format(out=out) for a in COMMANDS[command]] + flags
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(needle), lines
    assert not out.exists()
