"""Stage run configs: presets per stage, then a TOML file, then CLI overrides (in that order).

A TOML file holds sections named like the run dataclass's fields, e.g.::

    [optim]
    steps = 200
    [data]
    n_train = 10000
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tomllib

from cola_models.errors import ColaError


def _merge(obj: Any, values: dict[str, Any], where: str) -> Any:
    """A copy of dataclass ``obj`` with ``values`` (nested dicts for nested dataclasses) applied."""
    if not isinstance(values, dict):
        raise ColaError(f"{where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise ColaError(
                f"unknown config field {where}.{key}" if where else f"unknown config field {key}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{where}.{key}" if where else key)
            continue
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ColaError(f"{where}.{key} must be true or false")
        if isinstance(current, (int, float)) and not isinstance(current, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ColaError(f"{where}.{key} must be a number, got {value!r}")
            value = (
                type(current)(value)
                if isinstance(current, float) or float(value).is_integer()
                else value
            )
        if isinstance(current, tuple):
            value = tuple(value)
        changes[key] = value
    try:
        return dataclasses.replace(obj, **changes)
    except TypeError as err:
        raise ColaError(f"bad config: {err}") from err


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ColaError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except OSError as err:
        raise ColaError(f"cannot read config file {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ColaError(f"{path} is not UTF-8 text (byte {err.start + 1})") from err
    except tomllib.TOMLDecodeError as err:
        raise ColaError(f"{path} is not valid TOML: {err}") from err


def resolve(default: Any, toml_path: str | Path | None, overrides: dict[str, Any]) -> Any:
    """defaults <- TOML file <- overrides (nested dicts); every layer validated."""
    cfg = default
    if toml_path is not None:
        cfg = _merge(cfg, load_toml(toml_path), "")
    return _merge(cfg, overrides, "")
