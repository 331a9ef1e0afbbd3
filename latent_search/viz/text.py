"""The terminal view: a rich tree, depth/width-limited.

Labels are built from ``rich.text.Text`` pieces, never from markup strings, so model text such
as ``[bold]`` prints as written; ``view.one_line`` has already neutralised control characters.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text
from rich.tree import Tree as RichTree

from latent_search.tree import ROOT, Tree

from . import view

LABEL_CHARS = 60


def _label(tree: Tree, node: int, on_path: set[int]) -> Text:
    hot = node in on_path
    if node == ROOT:
        label = Text(view.one_line(str(tree.meta.get("question") or "(root)"), 100), "bold")
    else:
        # Quoted so that leading/trailing spaces show; not repr(), which would double backslashes.
        label = Text(f"“{view.one_line(view.edge_text(tree, node), LABEL_CHARS)}”")
        label.stylize("bold dark_orange" if hot else "cyan")
        acts = view.edge_actions(tree, node)
        label.append(f"  a{acts[0]}" + (f" +{len(acts) - 1}" if len(acts) > 1 else ""), "dim")
    label.append("  " + "  ".join(f"{k} {v}" for k, v in view.stats(tree, node)), "dim")
    if tree.terminal[node]:
        label.append("  end", "magenta")
    if node == view.chosen(tree):
        label.append("  ← chosen", "bold dark_orange")
    return label


def build(tree: Tree, max_depth: int | None, max_width: int | None) -> RichTree:
    lim = view.limit(tree, max_depth, max_width)
    on_path = view.chosen_path(tree)
    judge = view.judge_notes(tree)
    title = Text(" · ".join(f"{k} {v}" for k, v in view.header(tree)), "bold")
    top = RichTree(title, guide_style="dim")
    branches = {ROOT: top.add(_label(tree, ROOT, on_path))}
    stack = [ROOT]
    while stack:  # iterative: token-level trees are deep
        node = stack.pop()
        for c in lim.shown[node]:
            label = _label(tree, c, on_path)
            if judge[c] is not None and judge[c] != "nothing found wrong":
                label.append(f"  ✗ {view.one_line(judge[c], 80)}", "red")
            branches[c] = branches[node].add(label)
            stack.append(c)
        if node in lim.hidden:
            branches[node].add(Text(f"… {lim.hidden[node]} more", "dim italic"))
    return top


def chosen_answer(tree: Tree) -> Text | None:
    """The chosen node's whole text and what the judge said of it, as a block below the tree:
    deep in a narrow terminal the tree's own label of it is indented out of sight."""
    node = view.chosen(tree)
    if node is None:
        return None
    said = "  ".join(f"{k} {v}" for k, v in view.stats(tree, node))
    note = view.judge_notes(tree)[node]
    said += f"  judge: {view.clean(note)}" if note else ""
    block = Text(f"chosen answer (node {node}{', ' + said if said else ''}):\n", "bold dark_orange")
    block.append(view.clean("".join(view.edge_text(tree, n) for n in tree.path(node))).strip())
    return block


def _print(console: Console, tree: Tree, max_depth: int | None, max_width: int | None) -> None:
    console.print(build(tree, max_depth, max_width))
    answer = chosen_answer(tree)
    if answer is not None:
        console.print(answer)


def render(
    tree: Tree, max_depth: int | None, max_width: int | None, *, color: bool, width: int = 160
) -> str:
    """The tree as terminal text (ANSI colours when ``color``), the chosen answer below it."""
    buf = io.StringIO()
    console = Console(
        file=buf, width=width, force_terminal=color, color_system="standard" if color else None
    )
    _print(console, tree, max_depth, max_width)
    return buf.getvalue()


def show(tree: Tree, max_depth: int | None, max_width: int | None) -> None:
    _print(Console(), tree, max_depth, max_width)
