"""The import structure stays one-way: cola_models <- latent_search <- eval <- train, with the
CLI (latent_search_cli) on top; inside the engine only ``backends/`` touches the model family;
no module imports itself back through others. Every import counts, lazy ones inside functions
included (they run too); imports only for type checkers do not."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"cola_models": 0, "latent_search": 1, "eval": 2, "train": 3, "latent_search_cli": 4}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for pkg in LAYERS:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(
        node.test
    )


def _import_nodes(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(node)


def _targets(module: str, is_pkg: bool, node, known: set[str]) -> set[str]:
    """The project modules an import statement loads (the most specific known name)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_pkg else module.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join(here + ([base] if base else []))
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def _graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _import_nodes(tree):
            for target in _targets(name, path.name == "__init__.py", node, set(mods)):
                if target != name:
                    g.add_edge(name, target)
    return g


def test_no_import_runs_up_a_layer():
    up = [(a, b) for a, b in _graph().edges if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]]
    assert up == [], f"imports that run up: {up}"


def test_only_the_engines_backends_import_the_model_family():
    # The engine speaks the backend protocol; the torch-free atomic writer and the one error
    # type users see (a user error is one line at the CLI) are the shared utils.
    bad = [
        (a, b)
        for a, b in _graph().edges
        if a.startswith("latent_search.")
        and not a.startswith("latent_search.backends")
        and b.startswith("cola_models")
        and b not in ("cola_models.atomic", "cola_models.errors")
    ]
    assert bad == [], f"engine modules importing cola_models: {bad}"


def test_no_import_circle():
    g = _graph()
    # A package's __init__ re-exporting its own modules is not a circle of modules.
    g.remove_edges_from(
        [(a, b) for a, b in g.edges if b.startswith(a + ".") or a.startswith(b + ".")]
    )
    cycles = list(nx.simple_cycles(g))
    assert cycles == [], f"import circles: {cycles[:5]}"


def test_the_walk_sees_imports():
    # Guards the test itself: a walk that found nothing would pass every rule above.
    g = _graph()
    assert ("latent_search.mcts", "latent_search.ledger") in g.edges
    assert ("eval.runner", "eval.searcher") in g.edges  # a lazy import inside a function
    assert ("latent_search.backends.torch_backend", "cola_models.generation") in g.edges
