"""``make_backend``: the one place that turns ``--backend torch|vllm`` into a backend object."""

from __future__ import annotations

from cola_models.errors import ColaError

BACKENDS = ("torch", "vllm")


def make_backend(name: str, model, **opts):
    """A TorchBackend or a VLLMBackend over ``model``; ``opts`` go to the backend's constructor.

    vLLM is imported only when asked for, so the torch backend works without it installed; asking
    for it without vLLM raises ValueError with a one-line message naming what to install.
    """
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, **opts)
    if name == "vllm":
        from .vllm_backend import _NOT_INSTALLED, VLLMBackend, vllm_available

        if not vllm_available():
            raise ColaError(_NOT_INSTALLED)
        return VLLMBackend(model, **opts)
    raise ColaError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
