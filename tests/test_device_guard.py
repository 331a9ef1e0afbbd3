"""A lint that keeps GPU readiness from rotting between GPU runs: in the modules that run on a
model's device (the model family's batched code, the search engine and its torch backends, the
training stages), a tensor factory or a random stream without ``device=`` is a CPU tensor in
disguise, and ``int(t[i])`` / ``float(t[i])`` / ``.item()`` inside a loop is a host sync per
element. Each is refused unless its line says why it is meant: a ``# host:`` comment (data built
on the host on purpose, to be moved once), or ``# sync:`` (one read per step, not per element).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOT = [
    "cola_models/generation.py",
    "cola_models/sampling.py",
    "cola_models/model.py",
    "cola_models/state.py",
    "cola_models/blocks.py",
    "cola_models/attention.py",
    "cola_models/lm.py",
    "cola_models/reward_model.py",
    "cola_models/prm.py",
    *[str(p.relative_to(ROOT)) for p in sorted((ROOT / "latent_search").glob("*.py"))],
    "latent_search/backends/torch_backend.py",
    "latent_search/backends/likelihood.py",
    "latent_search/backends/reward.py",
    *[str(p.relative_to(ROOT)) for p in sorted((ROOT / "train").glob("*.py"))],
]
FACTORIES = {"tensor", "zeros", "ones", "full", "empty", "arange", "rand", "randn", "randint",
             "randperm", "linspace", "Generator", "as_tensor"}  # fmt: skip
MARKERS = ("# host:", "# sync:")


def _is_torch_factory(call: ast.Call) -> bool:
    f = call.func
    return (
        isinstance(f, ast.Attribute)
        and f.attr in FACTORIES
        and isinstance(f.value, ast.Name)
        and f.value.id == "torch"
    )


def _element_read(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr == "item":
        return True
    return (
        isinstance(f, ast.Name)
        and f.id in ("int", "float", "bool")
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Subscript)
    )


def _looped(tree: ast.AST) -> set[int]:
    """ids of the nodes that run once per item: loop bodies and comprehension elements."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.While)):
            parts = node.body
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            parts = [node]
        else:
            continue
        for part in parts:
            out.update(id(n) for n in ast.walk(part))
    return out


def _statements(tree: ast.AST) -> dict[int, ast.stmt]:
    """The innermost statement holding each node (a comment marks a whole statement)."""
    owner: dict[int, ast.stmt] = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt):
            for n in ast.walk(stmt):
                owner[id(n)] = stmt  # inner statements are walked later and win
    return owner


def _findings(path: Path) -> list[str]:
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    in_loop, owner = _looped(tree), _statements(tree)
    out = []
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)), key=lambda n: n.lineno)
    for node in calls:
        stmt = owner.get(id(node), node)
        first = stmt.lineno - 1
        if first > 0 and lines[first - 1].strip().startswith("#"):
            first -= 1  # a comment line just above the statement speaks for it
        span = lines[first : (node.end_lineno or node.lineno)]
        if any(m in line for line in span for m in MARKERS):
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if _is_torch_factory(node) and not any(k.arg == "device" for k in node.keywords):
            if not any(isinstance(a, ast.Starred) for a in node.args):
                out.append(f"{where}: torch.{node.func.attr}(...) without device=")
        elif _element_read(node) and id(node) in in_loop:
            out.append(f"{where}: a host read per element inside a loop")
    return out


@pytest.mark.parametrize("module", HOT)
def test_hot_paths_make_tensors_on_the_model_device_and_read_the_host_once(module):
    assert _findings(ROOT / module) == []


def test_the_guard_finds_what_it_guards_against(tmp_path):
    bad = ROOT / "tests" / "_guard_probe.py"
    bad.write_text(
        "import torch\n"
        "def f(x, ids):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    a = torch.tensor(ids)\n"
        "    b = torch.tensor(ids, device=x.device)\n"
        "    c = torch.zeros(3)  # host: built once, moved with the batch\n"
        "    return [int(x[i]) for i in range(3)] + [x.sum().item()]\n"
    )
    try:
        found = _findings(bad)
    finally:
        bad.unlink()
    assert [f.split(": ", 1)[1] for f in found] == [
        "torch.Generator(...) without device=",
        "torch.tensor(...) without device=",
        "a host read per element inside a loop",
    ], found
