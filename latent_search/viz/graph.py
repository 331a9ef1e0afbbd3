"""Graph exports: a networkx graph of the tree, written as GraphML (whole tree, for graph tools)
or as DOT and rendered by graphviz's ``dot`` to SVG/PNG (depth/width-limited, for reading).

DOT labels are HTML-like labels with every piece of model text ``html.escape``-d, so graphviz
neither reads markup nor interprets backslash escapes in it; its SVG escapes the text again.
"""

from __future__ import annotations

import html
import io
import math
import shutil
import subprocess

import networkx as nx

from cola_models.errors import ColaError
from latent_search.tree import ROOT, Tree

from . import view

LABEL_CHARS = 40
"""Edge text longer than this is cut in DOT labels (the full text is in GraphML / HTML)."""


def _num(x: float | None) -> float | None:
    return x if isinstance(x, int | float) and math.isfinite(x) else None


def to_networkx(tree: Tree, max_depth: int | None = None, max_width: int | None = None):
    """A DiGraph of the (limited) tree. Nodes keep their tree index; a node with left-out
    descendants gets a child ``"more<index>"`` with ``hidden`` = their count. Attributes that
    have no value (None) are left out, which GraphML requires."""
    lim = view.limit(tree, max_depth, max_width)
    on_path = view.chosen_path(tree)
    g = nx.DiGraph()
    g.graph.update({k: v for k, v in view.header(tree)})
    g.graph["question"] = view.clean(str(tree.meta.get("question", "")))
    if tree.text is not None:
        g.graph["prompt"] = view.clean(tree.text["prompt"])
    for node, kids in lim.shown.items():
        attrs = {
            "text": view.clean(view.edge_text(tree, node)),
            "actions": ",".join(map(str, view.edge_actions(tree, node))),
            "tokens": " ".join(map(str, tree.tokens[node])),
            "visits": tree.visits[node],
            "value": _num(tree.value[node]),
            "q": _num(tree.q[node]),
            "prior": _num(tree.prior[node]),
            "reward": _num(tree.reward[node]),
            "terminal": bool(tree.terminal[node]),
            "depth": tree.depth[node],
            "chosen_path": node in on_path,
        }
        g.add_node(node, **{k: v for k, v in attrs.items() if v is not None})
        for c in kids:
            g.add_edge(node, c, chosen_path=c in on_path)
        if node in lim.hidden:
            g.add_node(f"more{node}", hidden=lim.hidden[node])
            g.add_edge(node, f"more{node}", chosen_path=False)
    return g


def graphml(tree: Tree) -> bytes:
    buf = io.BytesIO()
    nx.write_graphml(to_networkx(tree), buf)
    return buf.getvalue()


def _label(tree: Tree, g, node) -> str:
    a = g.nodes[node]
    if "hidden" in a:
        return f"<<I>+{a['hidden']} more</I>>"
    if node == ROOT:
        title = view.one_line(str(tree.meta.get("question") or "(root)"), LABEL_CHARS)
    else:
        title = view.one_line(a["text"], LABEL_CHARS) or "∅"
    acts = view.edge_actions(tree, node)
    line = [f"a{acts[0]}" + (f" +{len(acts) - 1}" if len(acts) > 1 else "")] if acts else []
    line += [f"{k} {v}" for k, v in view.stats(tree, node)]
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
        f'<TR><TD ALIGN="LEFT"><FONT FACE="monospace">{html.escape(title)}</FONT></TD></TR>'
        f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="9">{html.escape(" · ".join(line))}</FONT></TD></TR>'
        "</TABLE>>"
    )


def to_dot(tree: Tree, max_depth: int | None, max_width: int | None) -> str:
    g = to_networkx(tree, max_depth, max_width)
    stats = " · ".join(f"{k} {v}" for k, v in view.header(tree))
    out = [
        "digraph tree {",
        f"  graph [rankdir=LR, labelloc=t, fontsize=12, label=<{html.escape(stats)}>];",
        '  node [shape=box, style="rounded,filled", fillcolor="#f6f7f9", color="#9aa0a8",'
        " fontsize=11];",
        '  edge [color="#9aa0a8", arrowsize=0.6];',
    ]
    for node, a in g.nodes(data=True):
        extra = ""
        if "hidden" in a:
            extra = ', shape=plaintext, style="", fontcolor="#6b7079"'
        elif a.get("chosen_path"):
            extra = ', color="#c24d00", fillcolor="#fff3e8", penwidth=2'
        out.append(f"  n{node} [label={_label(tree, g, node)}{extra}];")
    for u, v, a in g.edges(data=True):
        style = ' [color="#c24d00", penwidth=2.5]' if a["chosen_path"] else ""
        if str(v).startswith("more"):
            style = " [style=dashed]"
        out.append(f"  n{u} -> n{v}{style};")
    out.append("}")
    return "\n".join(out) + "\n"


def render_dot(dot: str, fmt: str) -> bytes:
    """``dot -T<fmt>``; a one-line error when graphviz is missing or fails."""
    exe = shutil.which("dot")
    if exe is None:
        raise ColaError(f"{fmt} export needs graphviz's `dot`: apt-get install graphviz")
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}"], input=dot.encode("utf-8"), capture_output=True, timeout=300
        )
    except subprocess.TimeoutExpired as err:
        raise ColaError(
            f"graphviz took over {err.timeout:.0f}s; lower --max-depth/--max-width"
        ) from err
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ColaError(f"graphviz failed: {msg[0] if msg else f'exit {proc.returncode}'}")
    return proc.stdout
