import json
import re
import shutil
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
from typer.testing import CliRunner
from viz_trees import decode, synthetic_tree

from cola_models.errors import ColaError
from latent_search import viz
from latent_search.tree import Tree, TreeFormatError
from latent_search.viz import graph, htmlview, text, view
from latent_search_cli.app import app

runner = CliRunner()
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")


def test_format_comes_from_flag_or_suffix():
    assert viz.resolve_format("t.HTML", None) == "html"
    assert viz.resolve_format("t.graphml", None) == "graphml"
    assert viz.resolve_format("t.svg", "png") == "png"
    assert viz.resolve_format(None, None) == "text"
    for out, fmt in (("t.pdf", None), ("t.html", "pdf")):
        with pytest.raises(ValueError, match="format"):
            viz.resolve_format(out, fmt)


def test_bad_tree_files_give_one_line_errors(tmp_path, hostile_tree_path):
    good = json.loads(hostile_tree_path.read_text())
    cases = {
        "missing.json": None,
        "truncated.json": hostile_tree_path.read_text()[:500],
        "other.json": json.dumps({"hello": 1}),
        "short.json": json.dumps({**good, "visits": good["visits"][:-1]}),
        "badtext.json": json.dumps({**good, "text": {"prompt": "p", "edges": [1]}}),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(TreeFormatError) as err:
            viz.export(path, out=tmp_path / "x.html")
        assert "\n" not in str(err.value), name
        result = runner.invoke(app, ["viz", str(path), "--out", str(tmp_path / "x.html")])
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert result.output.count("\n") == 1, result.output
    assert not (tmp_path / "x.html").exists()
    result = runner.invoke(app, ["viz", str(hostile_tree_path), "--out", "t.pdf"])
    assert result.exit_code == 2 and "format" in result.output


def test_html_is_self_contained_and_escapes_model_text(tmp_path, hostile_tree_path):
    out = viz.export(hostile_tree_path, out=tmp_path / "tree.html")
    page = out.read_text()
    # No network: no external src/href/url(), and a CSP that forbids fetching anything.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, re.I)
    assert "default-src 'none'" in page
    assert page.count("<script") == 2  # the JSON block and the inline viewer, nothing loaded
    # Model text appears only escaped; it cannot open a tag or close the script block.
    for bad in ("<img src=x onerror=alert(1)>", "</script><script>alert(2)", "<b>1+1</b>"):
        assert bad not in page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page
    data = json.loads(re.search(r'id="tree-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["parent"]) == 60
    joined = "".join(data["text"])
    assert "<img src=x onerror=alert(1)>" in joined  # intact once parsed, as text
    assert "\x1b" not in joined and "\\x1b[31m" in joined  # terminal escapes neutralised


def test_html_title_is_escaped(tmp_path):
    tree = synthetic_tree(5)
    page = htmlview.render(tree)
    assert "<title>What is &lt;b&gt;1+1&lt;/b&gt;? [red]hi[/red]</title>" in page


def test_html_tolerates_non_finite_numbers_and_trees_without_text():
    tree = synthetic_tree(10, text=False)
    tree.q[3] = float("nan")
    tree.value[2] = float("inf")
    data = htmlview.payload(tree)
    assert data["q"][3] is None and data["value"][2] is None
    assert data["text"][1].startswith("⟨") and data["prompt"] == "⟨0 1 2⟩"
    json.loads(htmlview.script_json(data))


@needs_dot
def test_svg_escapes_model_text(tmp_path, hostile_tree_path):
    out = viz.export(hostile_tree_path, out=tmp_path / "tree.svg", max_depth=50, max_width=50)
    svg = out.read_text()
    root = ET.fromstring(svg)  # well-formed
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("img", "script")]
    assert "<img" not in svg and "&lt;img src=x onerror=alert(1)&gt;" in svg
    assert "\x1b" not in svg


@needs_dot
def test_png_export(tmp_path, hostile_tree_path):
    out = viz.export(hostile_tree_path, out=tmp_path / "tree.png", max_depth=3, max_width=2)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_missing_dot_is_a_one_line_error(tmp_path, hostile_tree_path, monkeypatch):
    monkeypatch.setattr(graph.shutil, "which", lambda _: None)
    with pytest.raises(ColaError, match="apt-get install graphviz"):
        viz.export(hostile_tree_path, out=tmp_path / "tree.svg")
    result = runner.invoke(app, ["viz", str(hostile_tree_path), "--out", str(tmp_path / "t.png")])
    assert result.exit_code == 2 and result.output.startswith("error: png export needs graphviz")
    # DOT itself needs no graphviz.
    dot = viz.export(hostile_tree_path, out=tmp_path / "tree.dot").read_text()
    assert "<img" not in dot and "&lt;img" in dot and "digraph" in dot


def test_graphml_holds_the_whole_tree(tmp_path, hostile_tree_path):
    out = viz.export(hostile_tree_path, out=tmp_path / "tree.graphml", max_depth=1, max_width=1)
    g = nx.read_graphml(out)
    tree = Tree.load(hostile_tree_path)
    assert g.number_of_nodes() == len(tree) and g.number_of_edges() == len(tree) - 1
    n = str(len(tree) - 1)
    assert g.nodes[n]["text"] == view.clean(tree.text["edges"][-1])
    assert g.nodes[n]["chosen_path"] is True and g.nodes[n]["visits"] == tree.visits[-1]


def test_limits_keep_the_chosen_path_and_count_what_they_hide():
    tree = synthetic_tree(300, seed=3)
    lim = view.limit(tree, max_depth=3, max_width=2)
    shown = set(lim.shown)
    assert len(shown) + sum(lim.hidden.values()) == len(tree)
    assert all(len(kids) <= 3 for kids in lim.shown.values())  # 2 + the chosen path's child
    path = tree.path(tree.meta["chosen"])
    # The chosen path is shown whole, past the depth limit too, and nothing else is down there.
    assert set(path) <= shown
    deep = {n for n in shown if len(tree.path(n)) > 4}
    assert deep and deep <= set(path)
    full = view.limit(tree, None, None)
    assert len(full.shown) == len(tree) and not full.hidden
    g = graph.to_networkx(tree, 3, 2)
    assert sum(1 for n in g if str(n).startswith("more")) == len(lim.hidden)


def test_text_view_prints_model_text_literally(tmp_path, hostile_tree_path):
    tree = Tree.load(hostile_tree_path)
    out = text.render(tree, 50, 50, color=False)
    assert "[bold]x[/bold]" in out and "[red]hi[/red]" in out  # not taken as markup
    assert "\x1b" not in out and "\\x1b[31m" in out
    coloured = text.render(tree, 50, 50, color=True)
    assert "[bold]x[/bold]" in re.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert "\x1b[31mred" not in coloured
    written = viz.export(hostile_tree_path, out=tmp_path / "tree.txt", max_depth=2)
    assert "chosen" in written.read_text() or "more" in written.read_text()
    result = runner.invoke(app, ["viz", str(hostile_tree_path), "--format", "text"])
    assert result.exit_code == 0 and "[bold]x[/bold]" in result.output


def test_decoded_text_slices_the_prefix_and_survives_save(tmp_path):
    # A decoder that drops a leading space, like SentencePiece: decoding each edge alone would
    # lose the spaces between edges.
    def sp_decode(ids):
        return decode(ids).lstrip(" ")

    tree = synthetic_tree(40, seed=1, text=False)
    tree.save(tmp_path / "t.json", decode=sp_decode)
    loaded = Tree.load(tmp_path / "t.json")
    for node in (5, 17, 39):
        path = tree.path(node)[1:]
        assert "".join(loaded.text["edges"][m] for m in path) == sp_decode(tree.generated(node))
        assert (
            loaded.text["rollouts"][node]
            == sp_decode(tree.generated(node) + tree.rollout[node])[
                len(sp_decode(tree.generated(node))) :
            ]
        )
    # Text of a tree that grew after it was decoded is stale: left out rather than wrong.
    loaded.add_child(0, 63, [1], prior=0.5)
    assert "text" not in loaded.to_dict()
    assert Tree.from_dict(loaded.to_dict()).text is None


def test_solve_tree_out_and_viz_render_end_to_end(tmp_path):
    tree_path = tmp_path / "tree.json"
    result = runner.invoke(
        app,
        ["solve", "2+2=", "--model", "tiny", "--search", "mcts-q", "--max-new-tokens", "6"]
        + ["--tree-out", str(tree_path), "--viz", str(tmp_path / "solve.html"), "--json"],
    )
    assert result.exit_code == 0, result.output
    tree = Tree.load(tree_path)
    assert tree.text is not None and tree.meta["model"] == "tiny" and "seconds" in tree.meta
    result = runner.invoke(app, ["viz", str(tree_path), "--out", str(tmp_path / "t.html")])
    assert result.exit_code == 0 and result.output.startswith("wrote "), result.output
    page = (tmp_path / "t.html").read_text()
    assert "mcts-q" in page and (tmp_path / "solve.html").read_text() == page


def test_export_tree_decodes_an_in_memory_tree(tmp_path):
    tree = synthetic_tree(12, text=False)
    assert viz.export(synthetic_tree(5), tmp_path / "t.graphml") == tmp_path / "t.graphml"
    out = viz.export_tree(tree, tmp_path / "v.html", decode=decode)
    assert out == tmp_path / "v.html" and tree.text is not None
    page = out.read_text()
    data = json.loads(re.search(r'id="tree-data">(.*?)</script>', page, re.S).group(1))
    assert data["text"] == [view.clean(t) for t in tree.text["edges"]]
    assert data["prompt"] == view.clean(decode(tree.prompt_tokens))


def test_the_terminal_view_shows_the_chosen_answer_whole_at_80_columns():
    """A per-token search's tree is deep: at 80 columns the chosen leaf's own label is indented
    out of sight, so the chosen answer is printed whole below the tree, with what the judge
    said of it."""
    from latent_search.tree import ROOT
    from latent_search.viz import text

    words = [f" w{i}" for i in range(60)]  # one token per edge, 60 deep
    tree = Tree(prompt_tokens=[1])
    node = ROOT
    for i, _ in enumerate(words):
        node = tree.add_child(node, 0, [i + 2], prior=0.9, terminal=i == len(words) - 1)
    tree.value[node], tree.visits[node] = 0.75, 1
    tree.meta["chosen"] = node
    tree.text = {"edges": [""] + words}
    out = text.render(tree, None, None, color=False, width=80)
    below = out.split("chosen answer", 1)[1]
    assert f"(node {node}, N 1  V 0.750" in below
    assert " ".join(below.split()).endswith(" ".join(w.strip() for w in words))  # all 60, whole


def test_the_viewer_shows_what_the_equation_check_said_at_each_node():
    from latent_search.tree import ROOT
    from latent_search.viz import htmlview, text

    tree = Tree(prompt_tokens=[1])
    good = tree.add_child(ROOT, 0, [2], prior=0.5)
    bad = tree.add_child(ROOT, 1, [3], prior=0.5, terminal=True)
    tree.text = {
        "prompt": "Ann has 7 bags of 12 pens.",
        "edges": ["", " 7*12=84.", " 7*12=85. \\boxed{85}"],
    }
    tree.meta.update({"judge": "equations", "chosen": good})
    notes = view.judge_notes(tree)
    assert notes[good] == "nothing found wrong"
    assert notes[bad] == "7*12=85: the calculator says 84"
    out = text.render(tree, None, None, color=False, width=200)
    assert "✗ 7*12=85: the calculator says 84" in out and "judge equations" in out
    assert htmlview.payload(tree)["judge"] == [None, "nothing found wrong", notes[bad]]
    tree.meta["judge"] = "q"  # another judge's word is its score, V
    assert view.judge_notes(tree) == [None, None, None]


def test_a_search_records_its_judge_in_the_tree():
    import cola_models as cm
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.search import SearchSpec, run_search

    model = cm.load_model("tiny-arith")
    ids = cm.tokenizer_encode(model.tokenizer, ["What is 12 + 30?"])
    spec = SearchSpec("beam", beam_width=2, expand_k=4, max_new_tokens=8)
    (res,) = run_search(TorchBackend(model, values=False), ids, spec)
    assert res.tree.meta["judge"] == "equations"
