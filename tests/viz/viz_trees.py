"""Synthetic search trees whose model text carries markup for every output format."""

import random

from latent_search.tree import Tree

# Model text is untrusted: one entry per kind of markup an output format could interpret.
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    "[bold]x[/bold]",
    "\x1b[31mred",
    "\"quote' &amp;",
    "\\l\\N{}",
    "\n",
]
VOCAB = [" a", "b", " 1", "+", "=", "2", "."] + HOSTILE


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i % len(VOCAB)] for i in ids)


def synthetic_tree(n: int, seed: int = 0, text: bool = True) -> Tree:
    """A random tree of ``n`` nodes that looks like a search's: several actions may share a child,
    edges are one to three tokens, and meta names a chosen node."""
    rng = random.Random(seed)
    tree = Tree(prompt_tokens=[0, 1, 2])
    tree.visits[0] = n
    while len(tree) < n:
        # Prefer recent nodes, so the tree has depth as well as width.
        node = rng.randrange(max(0, len(tree) - 20), len(tree)) if rng.random() < 0.7 else 0
        free = [a for a in range(64) if a not in tree.children[node]]
        if not free:
            continue
        a = rng.choice(free)
        toks = [rng.randrange(len(VOCAB)) for _ in range(rng.randint(1, 3))]
        child = tree.add_child(node, a, toks, prior=rng.random(), q=rng.random())
        if free[1:] and rng.random() < 0.3:
            tree.children[node][rng.choice([x for x in free if x != a])] = child
        tree.visits[child] = rng.randint(1, 50)
        tree.value[child] = rng.random()
        tree.reward[child] = rng.random()
        tree.rollout[child] = [rng.randrange(len(VOCAB)) for _ in range(4)]
    tree.terminal[-1] = True
    tree.meta.update(
        algorithm="mcts-q",
        tokens=1234,
        seconds=1.5,
        chosen=n - 1,
        question="What is <b>1+1</b>? [red]hi[/red]",
        model="synthetic",
        config={"rounds": 8, "budget": None},
    )
    if text:
        tree.text = tree.decoded(decode)
    return tree
