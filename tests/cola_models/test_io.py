import json

import pytest
import torch

import cola_models as cm


def test_save_load_round_trip_gives_identical_outputs(tiny_cola, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_SEARCH_PACKED_LINEAR", "0")  # bitwise: both on F.linear
    tiny_cola.save_pretrained(tmp_path / "m")
    loaded = cm.load_model(tmp_path / "m")
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    mask = torch.ones_like(ids)
    a = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        x, y = tiny_cola(ids, mask, a), loaded(ids, mask, a)
    assert torch.equal(x.token_logits, y.token_logits)
    assert torch.equal(x.policy_logits, y.policy_logits)
    assert torch.equal(x.q_values, y.q_values)
    assert loaded.tokenizer.decode([40, 41]) == tiny_cola.tokenizer.decode([40, 41])
    assert loaded.config == tiny_cola.config


def test_fp16_save_is_half_the_size(tiny_cola, tmp_path):
    tiny_cola.save_pretrained(tmp_path / "a")
    tiny_cola.save_pretrained(tmp_path / "b", dtype="float16")
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "b") < 0.6 * size(tmp_path / "a")
    assert cm.load_model(tmp_path / "b").dtype == torch.float32


def test_corrupted_checkpoint_gives_clear_error(tiny_cola, tmp_path):
    d = tiny_cola.save_pretrained(tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(cm.ColaError, match="cannot read"):
        cm.load_model(d)


def test_mismatched_checkpoint_gives_clear_error(tiny_cola, tmp_path):
    d = tiny_cola.save_pretrained(tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    meta["cola"]["n_actions"] = 32
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        cm.ColaError, match=r"has shape \[16, 128\], the config expects \[32, 128\]"
    ):
        cm.load_model(d)


def test_missing_files_give_clear_errors(tiny_cola, tmp_path):
    d = tiny_cola.save_pretrained(tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(cm.ColaError, match="missing"):
        cm.load_model(d)
    with pytest.raises(cm.ColaError, match="no model"):
        cm.load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cm.ColaError, match="config.json is missing"):
        cm.load_model(tmp_path / "empty")


def test_interrupted_save_keeps_previous_checkpoint(tiny_cola, tmp_path, monkeypatch):
    d = tiny_cola.save_pretrained(tmp_path / "m")
    before = (d / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("cola_models.checkpoint.write_state", boom)
    with pytest.raises(KeyboardInterrupt):
        tiny_cola.save_pretrained(d)
    assert (d / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_run_directory_given_as_a_model_points_to_its_models(tmp_path, tiny_cola):
    import pytest

    from cola_models.errors import ColaError
    from cola_models.loading import load_model

    tiny_cola.save_pretrained(tmp_path / "pipe" / "models" / "tiny-arith")
    with pytest.raises(ColaError, match=r"pipeline run; its models are .*models/\{tiny-arith\}"):
        load_model(tmp_path / "pipe")
    tiny_cola.save_pretrained(tmp_path / "stage" / "model")
    with pytest.raises(ColaError, match=r"training run; its model is .*stage/model"):
        load_model(tmp_path / "stage")
