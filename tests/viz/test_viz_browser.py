"""The HTML viewer in a real headless Chromium (driven by Playwright, pointed at the system
browser: Playwright's own browser download is not used). Skips without a browser, unless
LATENT_SEARCH_REQUIRE_BROWSER is set (CI sets it, so there a missing browser fails)."""

import os
import shutil
import time

import pytest
from viz_trees import synthetic_tree

from latent_search import viz
from latent_search.viz.view import clean

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for name in (os.environ.get("LATENT_SEARCH_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _skip(reason: str) -> None:
    if os.environ.get("LATENT_SEARCH_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, but LATENT_SEARCH_REQUIRE_BROWSER is set")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = _chromium()
    if exe is None:
        _skip("no chromium binary (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("playwright is not installed (pip install -e '.[dev]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        # A persistent context is the way to give Chromium a fresh --user-data-dir of our own.
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=exe,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    # Self-contained: any request other than the file itself is a failure.
    page.on("request", lambda r: r.url.startswith("file://") or problems.append(r.url))
    page.problems = problems
    yield page
    page.close()


def _open(page, tree, tmp_path):
    out = viz.export_tree(tree, tmp_path / "tree.html")
    page.goto(out.as_uri())
    page.wait_for_selector("html[data-rendered]", timeout=30_000)


def test_viewer_renders_every_node_toggles_and_escapes(page, tmp_path):
    tree = synthetic_tree(60)
    _open(page, tree, tmp_path)
    assert page.locator(".node").count() == len(tree)
    assert page.get_attribute("html", "data-rendered") == str(len(tree))

    # Expand / collapse an inner node (not the root) through its toggle button.
    inner = next(n for n in range(1, len(tree)) if tree.children[n])
    child = min(tree.children[inner].values())
    toggle = page.locator(f'.node[data-id="{inner}"] > .tog')
    kid = page.locator(f'.node[data-id="{child}"]')
    page.locator(f'.node[data-id="{inner}"]').scroll_into_view_if_needed()
    was_open = kid.is_visible()
    toggle.click()
    assert kid.is_visible() != was_open
    toggle.click()
    assert kid.is_visible() == was_open

    # Selecting a node shows its full prefix: prompt text plus every edge on its path.
    node = len(tree) - 1
    page.locator(f'.node[data-id="{node}"] > .txt').click()
    prefix = page.locator("#detail pre.text").first.text_content()
    expected = tree.text["prompt"] + "".join(tree.text["edges"][m] for m in tree.path(node)[1:])
    assert prefix == clean(expected)

    # Model markup is shown as text: no element it describes exists, no script of it ran.
    body = page.locator("#tree").text_content() + page.locator("#detail").text_content()
    assert "<img src=x onerror=alert(1)>" in body
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2
    assert page.locator(".txt *, pre.text span *, #question *").count() == 0
    assert page.title().startswith("What is <b>1+1</b>")
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert (tmp_path / "viewer.png").stat().st_size > 1000
    assert page.problems == []


def test_viewer_stays_responsive_with_3000_nodes(page, tmp_path):
    tree = synthetic_tree(3000, seed=2)
    start = time.perf_counter()
    _open(page, tree, tmp_path)
    loaded = time.perf_counter() - start
    assert page.locator(".node").count() == 3000
    start = time.perf_counter()
    page.click("#expand-all")
    page.locator(f'.node[data-id="{len(tree) - 1}"]').wait_for(state="visible")
    page.click("#collapse-all")
    page.click("#show-chosen")
    toggled = time.perf_counter() - start
    # Generous bounds for a shared 2-core machine; the real numbers are well under a second.
    assert loaded < 15 and toggled < 10, (loaded, toggled)
    assert page.locator(".node.selected").get_attribute("data-id") == str(len(tree) - 1)
    page.screenshot(path=str(tmp_path / "viewer-3000.png"))
    assert page.problems == []
