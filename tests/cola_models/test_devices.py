"""--device / --dtype resolution, random streams on the model's device, checkpoints across
devices. CUDA-marked tests run where a GPU is (tests/conftest.py skips them elsewhere)."""

from types import SimpleNamespace

import pytest
import torch

from cola_models.devices import Placement, make_generator, torch_device, torch_dtype
from cola_models.errors import ColaError

CUDA = torch.cuda.is_available()


def test_auto_is_the_cpu_in_float32_without_a_gpu_and_bf16_on_cuda():
    if not CUDA:
        assert torch_device("auto") == torch.device("cpu")
        assert Placement().resolved() == Placement("cpu", "float32")
    assert torch_dtype("auto", torch.device("cpu")) == torch.float32
    assert torch_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert torch_dtype("bf16") == torch.bfloat16 and torch_dtype("FP16") == torch.float16


@pytest.mark.skipif(CUDA, reason="a machine without CUDA refuses it")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_a_missing_gpu_is_one_line_naming_the_flag(name):
    with pytest.raises(ColaError, match="CUDA is not available") as err:
        torch_device(name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", ""])
def test_unknown_devices_and_dtypes_are_refused(name):
    with pytest.raises(ColaError):
        torch_device(name)
    with pytest.raises(ColaError, match="unknown dtype"):
        Placement("cpu", "int8")


def test_generation_refuses_a_generator_on_another_device(tiny_cola):
    import cola_models as cm

    # A CUDA generator cannot be made without a GPU: a stand-in that says it lives elsewhere.
    elsewhere = SimpleNamespace(device=torch.device("meta"))
    with pytest.raises(ColaError, match="make_generator"):
        cm.generate(tiny_cola, ["1+1="], cm.GenerationConfig(max_new_tokens=2), generator=elsewhere)
    out = cm.generate(
        tiny_cola,
        ["1+1="],
        cm.GenerationConfig(max_new_tokens=2),
        generator=make_generator(0, tiny_cola.device),
    )
    assert len(out.token_ids[0]) == 2


def test_a_bf16_model_saves_and_reloads_in_float32_on_request(tiny_cola, tmp_path):
    import cola_models as cm

    tiny_cola.save_pretrained(tmp_path / "m")
    half = cm.load_model(tmp_path / "m", device="cpu", dtype="bf16")
    assert half.dtype == torch.bfloat16 and half.device.type == "cpu"
    full = cm.load_model(tmp_path / "m", device="cpu", dtype="float32")
    for (k, a), b in zip(tiny_cola.state_dict().items(), full.state_dict().values()):
        assert torch.equal(a, b), k


# ---------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_checkpoint_round_trip_across_devices(tiny_cola, tmp_path):
    import cola_models as cm

    tiny_cola.save_pretrained(tmp_path / "cpu")
    on_gpu = cm.load_model(tmp_path / "cpu", device="cuda", dtype="float32")
    assert on_gpu.device.type == "cuda"
    on_gpu.save_pretrained(tmp_path / "gpu")
    back = cm.load_model(tmp_path / "gpu", device="cpu", dtype="float32")
    for (k, a), b in zip(tiny_cola.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.cuda
def test_greedy_tokens_match_between_cpu_and_cuda_in_float32():
    """64 held-out arith problems, greedy, the bundled model: the same tokens on both devices
    (up to near-ties of the argmax, which float32 kernels may break differently: at most 2)."""
    import cola_models as cm
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    problems = get_task("arith").generate(64, seed=1, split="test")
    prompts = [format_prompt(p.question) for p in problems]
    cfg = cm.GenerationConfig(max_new_tokens=96, action="greedy")
    outs = []
    for device in ("cpu", "cuda"):
        model = cm.load_model("tiny-arith", device=device, dtype="float32")
        outs.append(cm.generate(model, prompts, cfg).token_ids)
    differ = sum(a != b for a, b in zip(*outs))
    assert differ <= 2, differ


def test_cpu_threads_follow_the_flag_then_the_environment_then_the_idle_cores(monkeypatch):
    import os

    from cola_models import devices

    assert devices.cpu_threads(3) == 3
    with pytest.raises(ColaError, match="--threads 0"):
        devices.cpu_threads(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert devices.cpu_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(devices, "busy_cores", lambda: 1.2)
    assert devices.cpu_threads() == 3  # one core busy elsewhere
    monkeypatch.setattr(devices, "busy_cores", lambda: 9.0)
    assert devices.cpu_threads() == 1  # never fewer than one


def test_busy_cores_sees_a_process_spinning_on_a_core():
    import multiprocessing as mp
    import os

    from cola_models import devices

    if not os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat")
    spinner = mp.get_context("spawn").Process(target=_spin, daemon=True)
    spinner.start()
    try:
        import time

        time.sleep(1.0)  # the interpreter has started and spins
        assert devices.busy_cores(0.3) >= 0.7
    finally:
        spinner.terminate()


def _spin():
    while True:
        pass


def test_the_cli_sets_torch_threads_from_the_flag(monkeypatch):
    from typer.testing import CliRunner

    from latent_search_cli.app import app

    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            app, ["solve", "What is 2 + 3?", "--search", "greedy", "--threads", "1", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
