"""What every run directory (eval, compare, train) shares: which run it holds, and a refusal
that names the settings that differ when asked to hold another."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cola_models.errors import ColaError


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(have: dict, want: dict) -> list[str]:
    """``key: held -> asked`` for every (nested, dotted) setting that differs."""
    a, b = _flat(have), _flat(json.loads(json.dumps(want)))
    return [
        f"{k}: {json.dumps(a.get(k, '(unset)'))} -> {json.dumps(b.get(k, '(unset)'))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(unset)") != b.get(k, "(unset)")
    ]


def held_config(path: Path) -> dict | None:
    """The settings a run directory's config file holds, or None when it holds no run."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ColaError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ColaError(f"{path} must hold a JSON object")
    return data


def refuse_other_run(directory: Path, have: dict | None, want: dict, what: str) -> None:
    """A one-line ValueError when ``directory`` holds a run with other settings than ``want``."""
    if have is None:
        return
    from cola_models.errors import ColaError

    diff = differences(have, want)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise ColaError(
            f"{directory} holds {what} with other settings ({shown}); use another --out"
        )
