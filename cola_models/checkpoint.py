"""CoLA checkpoints on disk: config.json + model.safetensors + tokenizer files, never pickle.

Writes are atomic: a checkpoint directory is built beside its target and swapped in whole, so an
interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ColaError

FORMAT = "latent-search/cola"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def writes_files() -> bool:
    """True but on torch.distributed ranks other than 0: one writer per run directory."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with FSDP shards (DTensors) gathered into full tensors: a
    collective that every rank calls when the module is sharded. Tied tensors stay tied."""
    gathered: dict[int, torch.Tensor] = {}
    out = {}
    for name, t in module.state_dict().items():
        if hasattr(t, "full_tensor"):
            if id(t) not in gathered:
                gathered[id(t)] = t.full_tensor()
            t = gathered[id(t)]
        out[name] = t
    return out


def shard_like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``target``: its dtype and device (a checkpoint written on one device
    loads on another), and this rank's shard of it when ``target`` is a DTensor."""
    if not hasattr(target, "device_mesh"):
        return full.to(device=target.device, dtype=target.dtype)
    from torch.distributed.tensor import distribute_tensor

    # src_data_rank=None: every rank holds the full tensor (read from the same file), so each
    # cuts its own shard without communication.
    local = target.to_local().device
    return distribute_tensor(
        full.to(device=local, dtype=target.dtype),
        target.device_mesh,
        target.placements,
        src_data_rank=None,
    )


def save_state(module: nn.Module, path: Path, dtype: torch.dtype | None = None) -> None:
    """safetensors file of ``module``'s state; tied tensors stored once with an alias table.
    Sharded modules are gathered first (every rank calls this); rank 0 writes."""
    write_state(full_state(module), path, dtype)


def write_state(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None):
    from safetensors.torch import save_file

    if not writes_files():
        return
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous().cpu()
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases)})


def load_state(module: nn.Module, path: Path) -> None:
    """Load a file written by :func:`save_state`, refusing any missing, extra or misshapen tensor."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ColaError(f"checkpoint file {path} is missing")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise ColaError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    expected = module.state_dict()
    for alias, source in aliases.items():
        if source in tensors:
            tensors[alias] = tensors[source]
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise ColaError(
            f"{path} lacks {len(missing)} tensor(s) the config needs, e.g. {missing[0]!r}"
        )
    if extra:
        raise ColaError(f"{path} has {len(extra)} tensor(s) the config does not, e.g. {extra[0]!r}")
    for name, t in expected.items():
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise ColaError(
                f"{path}: tensor {name!r} has shape {list(tensors[name].shape)}, "
                f"the config expects {list(t.shape)}"
            )
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(shard_like(tensors[name], t))


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ColaError(f"{path} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ColaError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ColaError(f"{path} must hold a JSON object")
    return data


def save_model(model: nn.Module, directory: str | Path, *, dtype: str | None = None) -> Path:
    """Write ``model``'s config.json, model.safetensors and tokenizer to ``directory`` atomically.

    ``model`` is any module carrying ``config`` (with ``to_dict``), ``generation_defaults``,
    ``tokenizer`` and ``dtype``, as a ColaModel does."""
    from .devices import torch_dtype

    dt = torch_dtype(dtype) if dtype else None
    state = full_state(model)  # every rank, when sharded
    if not writes_files():
        return Path(directory)
    with atomic_dir(directory) as tmp:
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "cola",
            "dtype": str(dt or model.dtype).removeprefix("torch."),
            "cola": model.config.to_dict(),
            "generation": model.generation_defaults,
        }
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
        write_state(state, tmp / WEIGHTS, dt)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(tmp))
    return Path(directory)
