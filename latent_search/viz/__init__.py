"""Search-tree visualisation: ``latent-search viz`` and ``solve --viz``.

- html: a self-contained interactive viewer (``htmlview``)
- svg / png / dot: graphviz drawings of a depth/width-limited tree (``graph``)
- graphml: the whole tree for graph tools (``graph``)
- text: a rich tree in the terminal (``text``)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cola_models.atomic import write_atomic
from cola_models.errors import ColaError
from latent_search.tree import Tree

FORMATS = ("html", "svg", "png", "dot", "graphml", "text")
_SUFFIX = {
    ".html": "html",
    ".htm": "html",
    ".svg": "svg",
    ".png": "png",
    ".dot": "dot",
    ".gv": "dot",
    ".graphml": "graphml",
    ".txt": "text",
}


def resolve_format(out: str | Path | None, fmt: str | None) -> str:
    """``fmt`` if given, else from the suffix of ``out``, else text (to the terminal)."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ColaError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    if out is None:
        return "text"
    suffix = Path(out).suffix.lower()
    if suffix not in _SUFFIX:
        raise ColaError(
            f"cannot tell the format from {str(out)!r}; use a suffix "
            f"({', '.join(sorted(_SUFFIX))}) or --format"
        )
    return _SUFFIX[suffix]


def export(
    tree: str | Path | Tree,
    out: str | Path | None = None,
    fmt: str | None = None,
    max_depth: int | None = 12,
    max_width: int | None = 8,
) -> Path | None:
    """Render a tree file (or an in-memory ``Tree``); returns the written path, or None when
    text went to the terminal. A missing or malformed tree file raises ``TreeFormatError`` (a
    ValueError). Without ``out``, a file format writes beside the tree file."""
    fmt = resolve_format(out, fmt)  # before loading: a bad format needs no tree
    if isinstance(tree, Tree):
        return export_tree(tree, out, fmt, max_depth=max_depth, max_width=max_width)
    return export_tree(
        Tree.load(tree), out, fmt, max_depth=max_depth, max_width=max_width, default_out=Path(tree)
    )


def export_tree(
    tree: Tree,
    out: str | Path | None = None,
    fmt: str | None = None,
    *,
    decode: Callable[[list[int]], str] | None = None,
    max_depth: int | None = 12,
    max_width: int | None = 8,
    default_out: Path | None = None,
) -> Path | None:
    """Render an in-memory tree (``solve --viz``). ``decode`` (token ids -> text) fills in the
    text of a tree that has none; ``default_out`` with its suffix swapped names the file when
    ``out`` is None and the format is not text."""
    fmt = resolve_format(out, fmt)
    if decode is not None and tree.text is None:
        tree.text = tree.decoded(decode)
    if fmt == "text" and out is None:
        from . import text

        text.show(tree, max_depth, max_width)
        return None
    if out is None:
        if default_out is None:
            raise ColaError(f"{fmt} output needs an output path")
        out = default_out.with_suffix("." + fmt)
    out = Path(out)
    data: str | bytes
    if fmt == "html":
        from . import htmlview

        data = htmlview.render(tree)
    elif fmt == "text":
        from . import text

        data = text.render(tree, max_depth, max_width, color=False)
    elif fmt == "graphml":
        from . import graph

        data = graph.graphml(tree)
    else:
        from . import graph

        dot = graph.to_dot(tree, max_depth, max_width)
        data = dot if fmt == "dot" else graph.render_dot(dot, fmt)
    write_atomic(out, data)
    return out
