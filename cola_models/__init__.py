"""The CoLA model family: a pretrained causal LM plus a compact latent action space.

Names are imported lazily (PEP 562) so that ``import cola_models`` does not load torch or
transformers until a model is actually used (``latent-search --help`` stays instant).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Backbone": "backbone",
    "BackboneSpec": "config",
    "ColaConfig": "config",
    "ColaError": "errors",
    "ColaModel": "model",
    "ColaOutput": "model",
    "ColaState": "state",
    "GenerationConfig": "generation",
    "GenerationOutput": "generation",
    "generate": "generation",
    "PRESETS": "presets",
    "build_model": "presets",
    "preset_config": "presets",
    "bundled_models": "loading",
    "load_model": "loading",
    "save_model": "checkpoint",
    "tokenizer_encode": "tokenizer",
    "PlainLM": "lm",
    "LMState": "lm",
    "load_lm": "lm",
    "Placement": "devices",
    "make_generator": "devices",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .backbone import Backbone
    from .checkpoint import save_model
    from .config import BackboneSpec, ColaConfig
    from .errors import ColaError
    from .generation import GenerationConfig, GenerationOutput, generate
    from .lm import LMState, PlainLM, load_lm
    from .loading import bundled_models, load_model
    from .model import ColaModel, ColaOutput
    from .presets import PRESETS, build_model, preset_config
    from .state import ColaState
