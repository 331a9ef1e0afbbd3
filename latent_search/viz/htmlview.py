"""The interactive viewer: one self-contained HTML file (inline script and style, no requests).

The tree travels as a JSON block that the page's script reads and renders through textContent,
so model text is never parsed as markup. Named ``htmlview`` so that it does not shadow the
standard library's ``html``.
"""

from __future__ import annotations

import html
import json
import math
import re
from importlib.resources import files

from latent_search.tree import Tree

from . import view

_ASSETS = files("latent_search.viz") / "assets"


def payload(tree: Tree) -> dict:
    """Everything the page shows, as plain JSON (all model text ``view.clean``-ed)."""
    text = tree.text
    n = len(tree)
    return {
        "title": view.clean(str(tree.meta.get("question", ""))),
        "header": view.header(tree),
        "config": view.clean(json.dumps(tree.meta.get("config", {}), indent=1, default=str)),
        "chosen": view.chosen(tree),
        "prompt": view.clean(text["prompt"])
        if text
        else "⟨" + " ".join(map(str, tree.prompt_tokens)) + "⟩",
        "parent": tree.parent,
        "kids": view.ordered_children(tree),
        "actions": [view.edge_actions(tree, i) for i in range(n)],
        "tokens": tree.tokens,
        "text": [view.clean(view.edge_text(tree, i)) for i in range(n)],
        "rollout": [
            None if r is None else view.clean(text["rollouts"][i]) if text else f"⟨{len(r)} tokens⟩"
            for i, r in enumerate(tree.rollout)
        ],
        "visits": tree.visits,
        "value": _finite(tree.value),
        "prior": _finite(tree.prior),
        "q": _finite(tree.q),
        "reward": _finite(tree.reward),
        "terminal": tree.terminal,
        "depth": tree.depth,
        "judge": [None if j is None else view.clean(j) for j in view.judge_notes(tree)],
    }


def _finite(xs: list) -> list:
    """NaN and infinities (which Python's JSON reads and writes) as null: JSON.parse rejects them."""
    return [x if isinstance(x, int | float) and math.isfinite(x) else None for x in xs]


def script_json(obj: object) -> str:
    """JSON that is safe inside <script>: no "<" (so no "</script>" or "<!--"), no raw U+2028."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(tree: Tree) -> str:
    """The viewer page for ``tree``."""
    parts = {
        "TITLE": html.escape(view.one_line(str(tree.meta.get("question") or "search tree"), 80)),
        "STYLE": (_ASSETS / "viewer.css").read_text(encoding="utf-8"),
        "SCRIPT": (_ASSETS / "viewer.js").read_text(encoding="utf-8"),
        "DATA": script_json(payload(tree)),
    }
    template = (_ASSETS / "viewer.html").read_text(encoding="utf-8")
    # One pass, so that nothing substituted is itself searched for placeholders.
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], template)
