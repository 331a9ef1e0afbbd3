"""The search tree: token-prefix nodes in index-addressed arrays, with JSON round trip.

Node 0 is the root (the prompt). Edge i -> child is labelled by the action taken (a latent
action id, or a token id for token-level search) and the tokens it produced (one token, or a
macro-step of several). Search state lives here and nowhere else, so a saved tree is a resumable
search.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cola_models.errors import ColaError

ROOT = 0
FORMAT = "latent-search/tree"
FORMAT_VERSION = 1


class TreeFormatError(ColaError):
    """A tree file that cannot be read; the message names what is wrong."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_ids(x) -> bool:
    return isinstance(x, list) and all(_is_int(t) for t in x)


# What every entry of each per-node field must be.
_ENTRY = {
    "action": _is_int,
    "tokens": _is_ids,
    "visits": _is_int,
    "value": _is_num,
    "prior": _is_num,
    "q": lambda x: x is None or _is_num(x),
    "reward": lambda x: x is None or _is_num(x),
    "rollout": lambda x: x is None or _is_ids(x),
    "terminal": lambda x: isinstance(x, bool),
    "depth": _is_int,
}


def _check_types(d: dict) -> None:
    """A one-line TreeFormatError naming the first field whose entries have the wrong type."""
    if not _is_ids(d["prompt_tokens"]):
        raise TreeFormatError("tree field prompt_tokens must be a list of token ids")
    if d.get("meta") is not None and not isinstance(d["meta"], dict):
        raise TreeFormatError("tree field meta must be an object")
    for name, ok in _ENTRY.items():
        bad = next((i for i, x in enumerate(d[name]) if not ok(x)), None)
        if bad is not None:
            raise TreeFormatError(
                f"tree field {name} has a wrong type at node {bad}: {d[name][bad]!r}"
            )


@dataclass
class Tree:
    prompt_tokens: list[int]
    parent: list[int] = field(default_factory=lambda: [-1])
    action: list[int] = field(default_factory=lambda: [-1])
    tokens: list[list[int]] = field(default_factory=lambda: [[]])
    """Tokens the edge into each node produced (root: none)."""
    children: list[dict[int, int]] = field(default_factory=lambda: [{}])
    """action -> child index."""
    visits: list[int] = field(default_factory=lambda: [0])
    value: list[float] = field(default_factory=lambda: [0.0])
    prior: list[float] = field(default_factory=lambda: [1.0])
    """Policy probability of the edge (mean over a macro-step's tokens, as the reference)."""
    q: list[float | None] = field(default_factory=lambda: [None])
    """Q(s_parent, a) of the edge when a Q head gave one."""
    reward: list[float | None] = field(default_factory=lambda: [None])
    """Score of the node's rollout, once evaluated."""
    rollout: list[list[int] | None] = field(default_factory=lambda: [None])
    """Tokens of the node's rollout continuation (after the node's prefix)."""
    terminal: list[bool] = field(default_factory=lambda: [False])
    depth: list[int] = field(default_factory=lambda: [0])
    """Generated tokens from the root to the node."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Algorithm, budget, token counts, timings, whether scoring was an oracle."""
    text: dict[str, Any] | None = None
    """Decoded text for viewers, from ``save(..., decode=)``: "prompt", and per node "edges" (what
    its edge added) and "rollouts"; display only, search never reads it."""

    def __len__(self) -> int:
        return len(self.parent)

    def add_child(
        self,
        node: int,
        action: int,
        tokens: list[int],
        *,
        prior: float,
        q: float | None = None,
        terminal: bool = False,
    ) -> int:
        child = len(self.parent)
        self.parent.append(node)
        self.action.append(action)
        self.tokens.append(list(tokens))
        self.children.append({})
        self.visits.append(0)
        self.value.append(0.0)
        self.prior.append(prior)
        self.q.append(q)
        self.reward.append(None)
        self.rollout.append(None)
        self.terminal.append(terminal)
        self.depth.append(self.depth[node] + len(tokens))
        self.children[node][action] = child
        return child

    def path(self, node: int) -> list[int]:
        """Root ... node."""
        out = [node]
        while self.parent[out[-1]] >= 0:
            out.append(self.parent[out[-1]])
        return out[::-1]

    def generated(self, node: int) -> list[int]:
        """Tokens generated from the root down to ``node``."""
        return [t for n in self.path(node)[1:] for t in self.tokens[n]]

    def prefix(self, node: int) -> list[int]:
        """Prompt + generated tokens: the exact token prefix of the node."""
        return self.prompt_tokens + self.generated(node)

    def decoded(self, decode: Callable[[list[int]], str]) -> dict[str, Any]:
        """Prompt, edge and rollout text. An edge's text is its slice of the decoded prefix, not
        ``decode(edge tokens)``: tokenizers that merge across tokens (leading spaces, multi-byte
        characters) then read the same in a viewer as in the full answer."""
        whole = [""]  # decoded generated text of each node; parents precede children
        edges = [""]
        for n in range(1, len(self)):
            whole.append(decode(self.generated(n)))
            edges.append(_tail(whole[-1], whole[self.parent[n]], self.tokens[n], decode))
        rollouts = [
            None if r is None else _tail(decode(self.generated(n) + r), whole[n], r, decode)
            for n, r in enumerate(self.rollout)
        ]
        return {"prompt": decode(self.prompt_tokens), "edges": edges, "rollouts": rollouts}

    # ---------------------------------------------------------------- JSON
    _LISTS = (
        "parent",
        "action",
        "tokens",
        "children",
        "visits",
        "value",
        "prior",
        "q",
        "reward",
        "rollout",
        "terminal",
        "depth",
    )

    def to_dict(self, decode: Callable[[list[int]], str] | None = None) -> dict[str, Any]:
        d = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "prompt_tokens": self.prompt_tokens,
            "meta": self.meta,
        }
        for name in self._LISTS:
            d[name] = getattr(self, name)
        d["children"] = [{str(a): c for a, c in ch.items()} for ch in self.children]
        text = self.decoded(decode) if decode is not None else self.text
        if text is not None and len(text["edges"]) == len(self):  # a resumed search's is stale
            d["text"] = text
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Tree:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TreeFormatError("not a latent-search tree (missing format marker)")
        missing = [k for k in ("prompt_tokens", *cls._LISTS) if k not in d]
        if missing:
            raise TreeFormatError(f"tree lacks field(s): {', '.join(missing)}")
        n = len(d["parent"])
        bad = [k for k in cls._LISTS if not isinstance(d[k], list) or len(d[k]) != n]
        if n == 0 or bad:
            raise TreeFormatError(
                f"tree field(s) {', '.join(bad) or 'parent'} do not have {n} entries"
            )
        try:
            children = [{int(a): int(c) for a, c in ch.items()} for ch in d["children"]]
        except (AttributeError, TypeError, ValueError) as err:
            raise TreeFormatError(f"tree children are malformed: {err}") from err
        for i, p in enumerate(d["parent"]):
            if i == 0 and p != -1 or i > 0 and not (isinstance(p, int) and 0 <= p < i):
                raise TreeFormatError(f"node {i} has an invalid parent {p!r}")
        if any(not (0 < c < n) for ch in children for c in ch.values()):
            raise TreeFormatError("a child index is out of range")
        _check_types(d)
        kwargs = {k: d[k] for k in cls._LISTS}
        kwargs["children"] = children
        text = d.get("text")
        if text is not None and not _valid_text(text, n):
            raise TreeFormatError("tree text is malformed (want a prompt, edges and rollouts)")
        return cls(
            prompt_tokens=list(d["prompt_tokens"]),
            meta=dict(d.get("meta") or {}),
            text=text,
            **kwargs,
        )

    def save(self, path: str | Path, decode: Callable[[list[int]], str] | None = None) -> None:
        """``decode`` (token ids -> text) stores the decoded text for viewers."""
        from cola_models.atomic import write_atomic

        write_atomic(path, json.dumps(self.to_dict(decode)))

    @classmethod
    def load(cls, path: str | Path) -> Tree:
        path = Path(path)
        if not path.is_file():
            raise TreeFormatError(f"tree file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TreeFormatError(f"{path} is not valid JSON (truncated?): {err}") from err
        except OSError as err:  # unreadable (permissions, a directory's race)
            raise TreeFormatError(f"cannot read {path}: {err.strerror or err}") from err
        return cls.from_dict(data)


def _tail(whole: str, before: str, tokens: list[int], decode: Callable[[list[int]], str]) -> str:
    """What ``whole`` adds after ``before``; the tokens' own decoding if it does not extend it."""
    return whole[len(before) :] if whole.startswith(before) else decode(tokens)


def _valid_text(text: Any, n: int) -> bool:
    def strs(xs: Any, none_ok: bool) -> bool:
        return (
            isinstance(xs, list)
            and len(xs) == n
            and all(isinstance(x, str) or (none_ok and x is None) for x in xs)
        )

    return (
        isinstance(text, dict)
        and isinstance(text.get("prompt"), str)
        and strs(text.get("edges"), False)
        and strs(text.get("rollouts"), True)
    )
