"""vLLM plugin entry point (group ``vllm.general_plugins``): registers the CoLA architecture.

vLLM calls :func:`register` in every process it starts (driver, engine core, workers), which is
the only way a custom architecture reaches spawned workers. The model class is registered as a
lazy ``module:Class`` string so that loading the plugin imports neither torch kernels nor CUDA.
"""

from __future__ import annotations

ARCHITECTURE = "ColaVLLMForCausalLM"


def register() -> None:
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            ARCHITECTURE, "latent_search.backends.vllm_model:ColaVLLMForCausalLM"
        )
