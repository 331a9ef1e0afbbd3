"""What every renderer shows of a tree: display-safe text, per-node statistics, the chosen path,
and the depth/width-limited subtree the static renderers (graphviz, terminal) draw.

Everything the model wrote is untrusted. ``clean`` removes what could act on a terminal or fool
a reader (control characters, bidirectional overrides); each renderer still escapes for its own
syntax (HTML, DOT, rich markup).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from latent_search.tree import ROOT, Tree

# C0 controls except tab and newline, DEL, C1 controls, the bidirectional embedding/override
# /isolate characters ("Trojan source"), lone surrogates (a JSON file may hold them; UTF-8 cannot)
# and the XML non-characters U+FFFE/U+FFFF: shown as \xNN / \uNNNN instead of acting (or of
# making an output file unwritable or unreadable).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)


def clean(s: str) -> str:
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)


def one_line(s: str, limit: int | None = None) -> str:
    """``clean`` text for a one-line label: newline and tab made visible, long text cut."""
    s = clean(s).replace("\n", "⏎").replace("\t", "⇥")
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def edge_text(tree: Tree, node: int) -> str:
    """What the edge into ``node`` added; its token ids when the tree was saved without text."""
    if node == ROOT:
        return ""
    if tree.text is not None:
        return tree.text["edges"][node]
    return "⟨" + " ".join(map(str, tree.tokens[node])) + "⟩"


def edge_actions(tree: Tree, node: int) -> list[int]:
    """Every latent action of the parent that leads to ``node`` (several actions can decode to
    the same token and share a child); the one recorded on the edge first."""
    if node == ROOT:
        return []
    same = [a for a, c in tree.children[tree.parent[node]].items() if c == node]
    return [tree.action[node]] + sorted(a for a in same if a != tree.action[node])


def chosen(tree: Tree) -> int | None:
    c = tree.meta.get("chosen")
    return c if isinstance(c, int) and 0 <= c < len(tree) else None


def chosen_path(tree: Tree) -> set[int]:
    c = chosen(tree)
    return set(tree.path(c)) if c is not None else set()


def ordered_children(tree: Tree) -> list[list[int]]:
    """Distinct children of every node, most visited first (ties: creation order)."""
    kids: list[list[int]] = [[] for _ in range(len(tree))]
    for n in range(1, len(tree)):
        kids[tree.parent[n]].append(n)
    for k in kids:
        k.sort(key=lambda c: (-tree.visits[c], c))
    return kids


def fmt_num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def stats(tree: Tree, node: int) -> list[tuple[str, str]]:
    """(short name, value) pairs shown beside a node."""
    out = [("N", str(tree.visits[node])), ("V", fmt_num(tree.value[node]))]
    if node != ROOT:
        out += [("Q", fmt_num(tree.q[node])), ("P", fmt_num(tree.prior[node]))]
    out.append(("R", fmt_num(tree.reward[node])))
    if len(tree.tokens[node]) > 1:  # a collapsed chain (mcts) or a step: one edge, many tokens
        out.append(("tokens", str(len(tree.tokens[node]))))
    return out


def judge_notes(tree: Tree) -> list[str | None]:
    """What the search's judge said at each node, where the viewer can say it again: the
    equation check reads only the text, so each node's failed checks are recomputed from its
    path ("nothing found wrong" where none failed). None for other judges (their score is the
    node's V) and for trees saved without text."""
    judge = str(tree.meta.get("judge", ""))
    if not judge.startswith("equations") or tree.text is None:
        return [None] * len(tree)
    from latent_search.equations import failed_checks

    question = tree.text.get("prompt") or str(tree.meta.get("question", ""))
    edges = tree.text["edges"]
    notes: list[str | None] = [None]
    for node in range(1, len(tree)):
        text = "".join(edges[n] for n in tree.path(node) if n != ROOT)
        failed = failed_checks(question, text, finished=tree.terminal[node])
        notes.append("; ".join(failed) if failed else "nothing found wrong")
    return notes


def header(tree: Tree) -> list[tuple[str, str]]:
    """Search statistics (name, value) for a title line."""
    m = tree.meta
    rows = [
        ("algorithm", str(m.get("algorithm", "?"))),
        ("model", str(m.get("model", "?"))),
        ("nodes", str(len(tree))),
        ("tokens", str(m.get("tokens", "?"))),
    ]
    if isinstance(m.get("seconds"), int | float):
        rows.append(("time", f"{m['seconds']:.2f}s"))
    budget = m.get("budget", (m.get("config") or {}).get("budget"))
    rows.append(("budget", "unlimited" if budget is None else str(budget)))
    if m.get("judge"):
        rows.append(("judge", str(m["judge"])))
    if "rounds" in m:
        rows.append(("rounds", str(m["rounds"])))
    if m.get("oracle"):
        rows.append(("ORACLE", "scored with the gold answer"))
    return [(k, one_line(v, 80)) for k, v in rows]


@dataclass
class Limited:
    """The part of a tree a static renderer draws."""

    shown: dict[int, list[int]]
    """Drawn node -> its drawn children."""
    hidden: dict[int, int]
    """Drawn node -> how many nodes below it are left out (its hidden subtrees)."""


def limit(tree: Tree, max_depth: int | None, max_width: int | None) -> Limited:
    """At most ``max_width`` children per node (most visited; the chosen path always stays) and
    ``max_depth`` levels below the root, past which only the chosen path continues. A limit of
    None or below 1 means none."""
    kids = ordered_children(tree)
    on_path = chosen_path(tree)
    size = [1] * len(tree)
    for n in range(len(tree) - 1, 0, -1):  # children have larger indices than parents
        size[tree.parent[n]] += size[n]
    shown: dict[int, list[int]] = {}
    hidden: dict[int, int] = {}
    stack = [(ROOT, 0)]
    while stack:
        node, level = stack.pop()
        deep = max_depth and max_depth >= 1 and level >= max_depth
        # Past the depth limit only the chosen path goes on: the answer is always shown whole.
        cs = [c for c in kids[node] if c in on_path] if deep else kids[node]
        if max_width and max_width >= 1 and len(cs) > max_width:
            keep = cs[:max_width]
            keep += [c for c in cs[max_width:] if c in on_path]
            cs = sorted(keep, key=kids[node].index)
        shown[node] = cs
        left = size[node] - 1 - sum(size[c] for c in cs)
        if left:
            hidden[node] = left
        stack.extend((c, level + 1) for c in reversed(cs))
    return Limited(shown, hidden)
