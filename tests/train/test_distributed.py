"""Training under torchrun: two ranks (gloo, FSDP2) train as one process does on the same global
batch, and checkpoints cross world sizes (one writer, full safetensors state)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cola_models.loading import load_model

HERE = Path(__file__).parent
TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
pytestmark = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="needs torchrun")
CONFIG = """
[idm_optim]
steps = 4
checkpoint_every = 1
[bc_optim]
steps = 3
"""


def _job(
    out: Path, ranks: int, crash_at: int | None = None, dtype: str = "float32"
) -> subprocess.CompletedProcess:
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / "stage1.toml"
    config.write_text(CONFIG)
    launch = [sys.executable] if ranks == 1 else [
        TORCHRUN, "--nproc-per-node", str(ranks), "--log-dir", str(out.parent / "logs")
    ]  # fmt: skip
    args = [str(HERE / "dist_job.py"), str(out), str(config)]
    args += [] if crash_at is None else [str(crash_at)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    env["DIST_JOB_DTYPE"] = dtype
    return subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=600)


def _run(out: Path, ranks: int, crash_at: int | None = None) -> Path:
    done = _job(out, ranks, crash_at)
    if crash_at is None:
        assert done.returncode == 0, done.stderr[-3000:]
    else:  # died before step crash_at, after its checkpoint: mark it to see the resume read it
        assert done.returncode != 0
        trainer = out / "idm" / "checkpoint" / "trainer.json"
        state = json.loads(trainer.read_text())
        assert state["step"] == crash_at
        trainer.write_text(json.dumps({**state, "elapsed": 1000.0}))
    return out


def _losses(out: Path) -> list[float]:
    rows = []
    for phase in ("idm", "bc"):
        rows += [json.loads(x) for x in (out / phase / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_model(out / "model").state_dict()  # one process loads what the ranks saved


def _assert_same_weights(a: dict, b: dict) -> None:
    _assert_close_weights(a, b, tol=1e-4)  # Adam magnifies rounding


def _assert_close_weights(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("one") / "run", 1)


def test_two_ranks_give_the_one_process_losses_and_weights(one, tmp_path):
    two = _run(tmp_path / "run", 2)
    assert len(_losses(two)) == len(_losses(one)) == 7
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)
    _assert_same_weights(_weights(two), _weights(one))


def test_bf16_on_two_ranks_follows_one_bf16_process_with_float32_master_weights(tmp_path):
    """FSDP2's mixed-precision policy (bf16 gathers, float32 gradient reduction) against
    autocast in one process: the same steps up to bf16 rounding; checkpoints in float32."""
    from safetensors.torch import load_file

    runs = {}
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}" / "run"
        done = _job(out, ranks, dtype="bf16")
        assert done.returncode == 0, done.stderr[-3000:]
        runs[ranks] = out
    assert _losses(runs[2]) == pytest.approx(_losses(runs[1]), rel=2e-2)
    saved = load_file(str(runs[2] / "idm" / "checkpoint" / "model" / "weights.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())
    _assert_close_weights(_weights(runs[2]), _weights(runs[1]), tol=2e-2)


def test_checkpoints_resume_across_world_sizes(one, tmp_path):
    a = _run(tmp_path / "a" / "run", 1, crash_at=2)  # one process dies after step 2's checkpoint
    _run(a, 2)  # two ranks finish it
    b = _run(tmp_path / "b" / "run", 2, crash_at=2)  # and the other way round
    _run(b, 1)
    for out in (a, b):
        idm = [json.loads(x) for x in (out / "idm" / "metrics.jsonl").read_text().splitlines()]
        assert [r["time"] >= 1000 for r in idm] == [False, False, True, True]  # resumed at 2
        assert _losses(out) == pytest.approx(_losses(one), rel=1e-5)
        _assert_same_weights(_weights(out), _weights(one))


def test_every_stage_runs_on_two_ranks(tmp_path):
    """The smoke pipeline (base, stage 1, stage 2, latent RL, Q, token RL, verifier, export,
    evaluation) under torchrun; rank 0 alone reports and the exported models load."""
    out = tmp_path / "pipeline"
    cmd = [TORCHRUN, "--nproc-per-node", "2", "--log-dir", str(tmp_path / "logs"), "-m",
           "latent_search_cli", "train", "pipeline", "--preset", "smoke", "--out", str(out),
           "--json"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 1  # one report, from rank 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"tiny-arith", "tiny-arith-bc", "tiny-arith-base", "tiny-arith-token-rl"}
    for stage in ("base", "stage1", "stage2", "rl", "q", "token-rl", "verifier"):
        assert (out / stage / "done.json").is_file(), stage
    for name in report:
        load_model(out / "models" / name)
