"""Named model presets and ``build_model``: tiny (tests), smollm2-135m (CPU), llama-3.1-8b (paper)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backbone import smollm2_gguf_spec
from .build import model_from_config
from .catalog import PRESET_DESCRIPTIONS
from .config import BackboneSpec, ColaConfig
from .errors import ColaError
from .model import ColaModel
from .tokenizer import byte_tokenizer

# Byte tokenizer ids: <|pad|>=0, <|bos|>=1, <|eos|>=2, then 256 bytes.
_TINY_BACKBONE = dict(
    model_type="llama",
    vocab_size=259,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# SmolLM2-135M-Instruct, as its GGUF describes it (kept so meta-device builds need no file).
_SMOLLM2_BACKBONE = dict(
    model_type="llama",
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
)

# Llama-3.1-8B (the paper's backbone).
_LLAMA31_8B_BACKBONE = dict(
    model_type="llama",
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    rope_parameters=dict(
        rope_type="llama3",
        rope_theta=500000.0,
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    ),
    bos_token_id=128000,
    eos_token_id=128001,
)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: Callable[[str | None], ColaConfig]  # backbone_path -> config


def _tiny(_: str | None) -> ColaConfig:
    return ColaConfig(
        backbone=BackboneSpec(source="random", hf_config=dict(_TINY_BACKBONE)),
        n_actions=16,
        idm_layers=1,
        policy_layers=1,
        merge_layers=2,
        merge_ffn=128,
        head_ffn=128,
        q_head=True,
        q_layers=1,
        output_mode="plain",
        action_top_k=8,
    )


def _smollm2(path: str | None) -> ColaConfig:
    spec = smollm2_gguf_spec() if path is None else BackboneSpec(source="local", path=path)
    spec.hf_config = spec.hf_config or dict(_SMOLLM2_BACKBONE)
    # Fewer head blocks than the paper's 4/8: at 135M on a 2-core CPU, 2 blocks each trained
    # well in the tiny experiment and keep the heads a third of the backbone's size.
    return ColaConfig(
        backbone=spec,
        n_actions=64,
        idm_layers=2,
        policy_layers=2,
        merge_layers=2,
        q_head=True,
        q_layers=1,
        output_mode="plain",
    )


def _llama31_8b(path: str | None) -> ColaConfig:
    spec = (
        BackboneSpec(source="random", hf_config=dict(_LLAMA31_8B_BACKBONE))
        if path is None
        else BackboneSpec(source="local", path=path, hf_config=dict(_LLAMA31_8B_BACKBONE))
    )
    return ColaConfig(
        backbone=spec,
        n_actions=64,
        idm_layers=4,
        policy_layers=8,
        merge_layers=2,
        q_head=False,
        output_mode="reference",  # the paper's sizes and output formula
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", PRESET_DESCRIPTIONS["tiny"], _tiny),
        Preset("smollm2-135m", PRESET_DESCRIPTIONS["smollm2-135m"], _smollm2),
        Preset("llama-3.1-8b", PRESET_DESCRIPTIONS["llama-3.1-8b"], _llama31_8b),
    ]
}


def preset_config(name: str, backbone_path: str | None = None) -> ColaConfig:
    if name not in PRESETS:
        raise ColaError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].config(backbone_path)


def build_model(
    preset: str,
    *,
    device: str = "cpu",
    seed: int = 0,
    dtype: str = "float32",
    backbone_path: str | None = None,
    allow_download: bool = False,
    **overrides: Any,
) -> ColaModel:
    """A fresh CoLA model of a named preset (heads random; backbone pretrained where it has one).

    ``overrides`` replace ColaConfig fields, e.g. ``build_model("tiny", n_actions=8)``.
    """
    config = preset_config(preset, backbone_path)
    if overrides:
        data = config.to_dict()
        data.update(overrides)
        config = ColaConfig.from_dict(data)
    tokenizer = byte_tokenizer() if preset == "tiny" else None
    return model_from_config(
        config,
        device=device,
        seed=seed,
        dtype=dtype,
        allow_download=allow_download,
        tokenizer=tokenizer,
    )
