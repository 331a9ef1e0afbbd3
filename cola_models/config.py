"""Validated configuration of a CoLA model: backbone reference plus the sizes of the new heads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ColaError

BackboneSource = Literal["random", "local", "gguf", "hub"]
OutputMode = Literal["reference", "plain"]

_SOURCES = ("random", "local", "gguf", "hub")
_OUTPUT_MODES = ("reference", "plain")
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


@dataclass
class BackboneSpec:
    """Where the pretrained causal LM comes from.

    ``hf_config`` is always filled once a model is built, so a saved CoLA checkpoint can rebuild
    its backbone without the original source (the weights live in the checkpoint).
    """

    source: str = "random"
    """"random": built from ``hf_config`` with fresh weights; "local": an HF checkpoint directory;
    "gguf": a GGUF file (dequantized by transformers); "hub": a hub id, only with explicit consent."""
    path: str | None = None
    """Directory (local, gguf) or hub id (hub)."""
    gguf_file: str | None = None
    """File name inside ``path`` for source "gguf"."""
    hf_config: dict[str, Any] = field(default_factory=dict)
    """The backbone's Hugging Face config as a dict (``model_type`` included)."""

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ColaError(f"backbone source {self.source!r} is not one of {', '.join(_SOURCES)}")
        if self.source in ("local", "gguf", "hub") and not self.path:
            raise ColaError(f"backbone source {self.source!r} needs a path")
        if self.source == "gguf" and not self.gguf_file:
            raise ColaError("backbone source 'gguf' needs gguf_file")
        if self.source == "random" and not self.hf_config:
            raise ColaError("backbone source 'random' needs hf_config (the HF config dict)")
        mt = self.hf_config.get("model_type")
        if mt is not None and mt not in SUPPORTED_MODEL_TYPES:
            raise ColaError(
                f"backbone model_type {mt!r} is not supported; use one of "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )


@dataclass
class ColaConfig:
    """Sizes and defaults of the CoLA heads around a backbone (reference code defaults noted)."""

    backbone: BackboneSpec
    n_actions: int = 64
    """K, the number of discrete latent actions (reference: code_num=64)."""
    idm_layers: int = 4
    """Transformer blocks of the inverse dynamics model (reference: 4, backbone-shaped)."""
    policy_layers: int = 8
    """Transformer blocks of the policy (reference: 8, backbone-shaped)."""
    merge_layers: int = 2
    """SwiGLU merge MLPs applied residually to [s, e_a] (reference: 2)."""
    merge_ffn: int | None = None
    """Hidden width of each merge MLP; None means the backbone's FFN width (reference)."""
    head_ffn: int | None = None
    """FFN width of IDM/policy/Q blocks; None means the backbone's (reference)."""
    q_head: bool = False
    """Add a Q head (K values per state) for MCTS-Q. The reference uses a separate 8B Q-model;
    here it is a head on the shared backbone features (deviation, see q_layers)."""
    q_layers: int = 2
    """Transformer blocks of the Q head, when ``q_head`` is on."""
    q_features: str = "h"
    """What the Q head reads: "h", the backbone features (the reference's Q-model reads its own
    backbone's); "h+lm", plus what the LM knows about each token written: its log-probability
    under the backbone's LM head, the best log-probability at that position and their gap,
    projected into h (deviation: a value that sees how likely each written digit was)."""
    output_mode: str = "reference"
    """"reference": logits = lm_head(final_norm(s) - h), as in the official code;
    "plain": logits = lm_head(final_norm(s)). Small backbones only train with "plain"."""
    action_temperature: float = 1.0
    """Default temperature for sampling actions from the policy (reference module constant: 1.0)."""
    action_top_k: int = 40
    """Default top-k for sampling actions; 0 means all K (reference module constant: 40)."""

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = BackboneSpec(**self.backbone)
        checks = [
            (self.n_actions >= 2, f"n_actions={self.n_actions} must be >= 2"),
            (self.idm_layers >= 1, f"idm_layers={self.idm_layers} must be >= 1"),
            (self.policy_layers >= 1, f"policy_layers={self.policy_layers} must be >= 1"),
            (self.merge_layers >= 1, f"merge_layers={self.merge_layers} must be >= 1"),
            (self.q_layers >= 0, f"q_layers={self.q_layers} must be >= 0"),
            (
                self.q_features in ("h", "h+lm"),
                f"q_features={self.q_features!r} must be 'h' or 'h+lm'",
            ),
            (
                self.merge_ffn is None or self.merge_ffn >= 1,
                f"merge_ffn={self.merge_ffn} must be >= 1",
            ),
            (self.head_ffn is None or self.head_ffn >= 1, f"head_ffn={self.head_ffn} must be >= 1"),
            (
                self.output_mode in _OUTPUT_MODES,
                f"output_mode={self.output_mode!r} must be one of {', '.join(_OUTPUT_MODES)}",
            ),
            (
                self.action_temperature > 0,
                f"action_temperature={self.action_temperature} must be > 0",
            ),
            (self.action_top_k >= 0, f"action_top_k={self.action_top_k} must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ColaError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ColaError(f"unknown ColaConfig field(s): {', '.join(unknown)}")
        if "backbone" not in data:
            raise ColaError("ColaConfig needs a 'backbone' entry")
        return cls(**data)
