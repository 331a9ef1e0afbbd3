"""Training on the run's device and dtype: bf16 compute (autocast) with float32 master weights and
optimizer state, full-precision checkpoints, the device flag refused in one line where it is not.
The CUDA-marked test runs where a GPU is."""

import json

import pytest
import torch
from torch import nn

from cola_models.devices import Placement
from train.loop import OptimConfig, RunDir, train_loop


def _loop(tmp_path, compute):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    seen = []

    def step_fn(step, update):
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(step))

        def loss_fn():
            y = model(x)
            seen.append(y.dtype)
            return (y.float() ** 2).mean()

        return {"loss": update(loss_fn).item()}

    run = RunDir(tmp_path / str(compute), "test", {"x": 1})
    cfg = OptimConfig(steps=3, warmup_steps=1, checkpoint_every=1, log_every=1)
    rows = train_loop(run, model, list(model.parameters()), step_fn, cfg, description="t",
                      quiet=True, compute=compute)  # fmt: skip
    return model, run, rows, seen


def test_bf16_steps_compute_in_bf16_and_keep_float32_weights_and_state(tmp_path):
    from safetensors.torch import load_file

    model, run, rows, seen = _loop(tmp_path, torch.bfloat16)
    assert set(seen) == {torch.bfloat16}  # the forward ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    optim = load_file(str(run.checkpoint / "optimizer.safetensors"))
    assert optim and all(t.dtype == torch.float32 for t in optim.values())
    weights = load_file(str(run.checkpoint / "model" / "weights.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    _, _, rows32, seen32 = _loop(tmp_path, torch.float32)
    assert set(seen32) == {torch.float32}
    assert [r["loss"] for r in rows] != [r["loss"] for r in rows32]  # not silently fp32


def test_a_bf16_stage_trains_saves_float32_and_resumes_on_its_device(tmp_path):
    from cola_models.loading import load_model
    from train.cli_entry import run_stage

    out = tmp_path / "s1"
    kw = dict(preset="smoke", config=None, out=out, model="tiny-arith-base", steps=2, quiet=True)
    run_stage("stage1", dtype="bf16", **kw)
    model = load_model(out / "model", device="cpu", dtype="float32")
    assert json.loads((out / "model" / "config.json").read_text())["dtype"] == "float32"
    losses = [
        json.loads(x)["loss"] for x in (out / "idm" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 2 and all(x == x for x in losses)
    # placement is not part of a run's identity: the same run continues in float32
    again = run_stage("stage1", dtype="float32", **kw)
    assert again["model"] == str(out / "model")
    assert model.policy is not None


def test_placement_comes_from_flags_or_the_config(tmp_path):
    from train import configs
    from train.cli_entry import flag_overrides, stage_default

    toml = tmp_path / "run.toml"
    toml.write_text('[placement]\ndevice = "cpu"\ndtype = "bf16"\n')
    cfg = configs.resolve(stage_default("base", "smoke"), toml, {})
    assert cfg.placement == Placement("cpu", "bf16")
    over = flag_overrides("base", model=None, steps=None, seed=None, dtype="float16")
    cfg = configs.resolve(stage_default("base", "smoke"), toml, over)
    assert cfg.placement == Placement("cpu", "float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA refuses it")
@pytest.mark.parametrize("stage", ["base", "stage1", "rl", "pipeline"])
def test_train_on_a_missing_gpu_is_one_line_and_writes_nothing(tmp_path, stage):
    from typer.testing import CliRunner

    from latent_search_cli.app import app

    args = ["train", stage, "--preset", "smoke", "--device", "cuda", "--out", str(tmp_path / "o")]
    if stage in ("stage1", "rl"):
        args += ["--model", "tiny-arith-base" if stage == "stage1" else "tiny-arith-bc"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --device cuda: CUDA is not available on this machine"
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.cuda
def test_a_training_stage_runs_on_cuda_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    from cola_models.loading import load_model
    from train.cli_entry import run_stage

    out = tmp_path / "s1"
    run_stage("stage1", preset="smoke", config=None, out=out, model="tiny-arith-base", steps=2,
              quiet=True, device="cuda")  # fmt: skip
    model = load_model(out / "model", device="cpu", dtype="float32")
    assert model.device.type == "cpu" and model.dtype == torch.float32
