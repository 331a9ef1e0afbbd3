"""The search engine: batched searches (greedy, sampling, best-of-n, beam, MCTS, MCTS-Q) over a
model's latent actions (or tokens), through a small backend protocol, with every model call
charged to the problem it served.

    from latent_search import SearchSpec, run_search
    from eval.searcher import load_searcher   # the models, backend and prompt format

Names are imported lazily (PEP 562): ``import latent_search`` loads nothing heavy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ALGORITHMS": "search",
    "SCORERS": "search",
    "SearchSpec": "search",
    "run_search": "search",
    "Backend": "types",
    "Prior": "types",
    "SearchResult": "types",
    "Usage": "types",
    "Tree": "tree",
    "Ledger": "ledger",
    "equation_scorer": "equations",
    "equation_value_fn": "equations",
    "equation_score": "equations",
    "q_value_fn": "scorers",
    "q_value_scorer": "scorers",
    "make_backend": "backends.factory",
    "TorchBackend": "backends.torch_backend",
    "likelihood_scorer": "backends.likelihood",
    "likelihood_value_fn": "backends.likelihood",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
