"""Published process reward models (PRMs) as judges: the formats the field ships, read from a
local directory without running its code.

A PRM reads the question, then each step of a solution followed by a mark (a separator or a tag),
and says at each mark how likely the solution is right so far. Three formats:

* ``token``: TRL's ``PRMTrainer`` models, an HF ``*ForTokenClassification`` (2 labels). A row is
  tokenized as TRL trains it: BOS (when the tokenizer has one), the prompt, then each step's ids
  followed by the separator's ids (``"\\n\\n"`` by TRL default); P(LABEL_1) is read at the
  separator's last token.
* ``qwen``: Qwen2.5-Math-PRM, architecture ``Qwen2ForProcessRewardModel``, whose class lives in
  remote code that is never run. Its base model loads as the stock ``AutoModel`` of its
  ``model_type`` and its score head is rebuilt here from the ``score.*`` tensors: Linear(H, H),
  ReLU, Linear(H, 2), the layout of Qwen's ``modeling_qwen2_rm.py`` as vLLM and SGLang port it.
  The text is the chat prompt then each step followed by ``<extra_0>``; P(class 1) at each.
* ``tag``: Math-Shepherd style, a ``*ForCausalLM`` with a step tag (``" ки"``) after every step
  (steps joined by a newline); the score is P(good) / (P(good) + P(bad)) of the next token at the
  tag, good and bad being two single tokens (``+`` / ``-``).

``qwen`` and ``tag`` rows are tokenized as one string, as their model cards do; the read position
is the token that holds the mark's last character. A mark of several tokens is read at its last.
Settings come from ``latent_search.json`` beside config.json (``prm_format``, ``step_separator``,
``step_tag``, ``good_token``, ``bad_token``, ``prm_aggregate``, ``prompt_template``,
``step_joiner``), flags on top. Safetensors only, no remote code, local files only.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ColaError
from .reward_model import MARKER

FORMATS = ("auto", "outcome", "token", "qwen", "tag")
AGGREGATES = ("min", "last", "prod")
QWEN_TEMPLATE = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within "
    "\\boxed{}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)
"""Qwen2.5-Math-PRM's chat format up to the answer (its model card's system prompt). Text after
the last step's mark is left out: a causal model's scores at the marks cannot see it."""

OPTIONS = ("format", "step_separator", "step_tag", "good_token", "bad_token", "aggregate")
"""What a caller (the CLI's flags) may set; each overrides the directory's marker."""
_MARKER_KEYS = {
    "prm_format": "format",
    "step_separator": "step_separator",
    "step_tag": "step_tag",
    "good_token": "good_token",
    "bad_token": "bad_token",
    "prm_aggregate": "aggregate",
    "prompt_template": "prompt_template",
    "step_joiner": "step_joiner",
}


@dataclass(frozen=True)
class PRMSettings:
    format: str
    """token | qwen | tag."""
    mark: str
    """What follows each step: the separator (token, qwen) or the step tag (tag)."""
    prompt_template: str
    """The text before the first step, holding ``{question}`` (filled with str.replace)."""
    step_joiner: str = ""
    """Between one step's mark and the next step (tag: a newline, as Math-Shepherd writes)."""
    good_token: str = "+"
    bad_token: str = "-"
    aggregate: str = "min"


_DEFAULTS = {
    "token": PRMSettings("token", "\n\n", "{question}"),
    "qwen": PRMSettings("qwen", "<extra_0>", QWEN_TEMPLATE),
    "tag": PRMSettings("tag", " ки", "{question} ", step_joiner="\n"),
}


def aggregate_steps(probs: list[float], how: str) -> float:
    """One score from a text's per-step scores: the weakest step (min, the field's choice for
    search: one wrong step sinks a solution), the last step, or their product."""
    if how == "min":
        return min(probs)
    if how == "last":
        return probs[-1]
    out = 1.0
    for p in probs:
        out *= p
    return out


@dataclass
class ProcessRewardModel:
    model: nn.Module
    """token: the ``*ForTokenClassification``; qwen: the base model; tag: the ``*ForCausalLM``."""
    head: nn.Module | None
    """qwen: the score head rebuilt from the weights; else None."""
    tokenizer: object
    settings: PRMSettings
    good_bad: tuple[int, int] | None = None
    """tag: the token ids of good and bad."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def row(self, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """Token ids of a question and its steps, and the position of each step's mark."""
        s = self.settings
        prompt = s.prompt_template.replace("{question}", question)
        if s.format == "token":
            return self._row_pieces(prompt, steps)
        return self._row_whole(prompt, steps)

    def _row_pieces(self, prompt: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """TRL's ``PRMTrainer.tokenize_row``: each piece tokenized on its own, then joined."""
        tok = self.tokenizer
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        mark = tok(self.settings.mark, add_special_tokens=False)["input_ids"]
        at = []
        for st in steps:
            ids = ids + tok(st, add_special_tokens=False)["input_ids"] + mark
            at.append(len(ids) - 1)
        return ids, at

    def _row_whole(self, prompt: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """One string, as the qwen and tag model cards tokenize it; each mark read at the token
        that holds its last character."""
        s = self.settings
        text, last_chars = prompt, []
        for i, st in enumerate(steps):
            text += (s.step_joiner if i else "") + st + s.mark
            last_chars.append(len(text) - 1)
        enc = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        # Tokens of the text (added BOS/EOS span nothing) by where they start, in text order.
        spans = [(a, t) for t, (a, b) in enumerate(enc["offset_mapping"]) if b > a]
        starts = [a for a, _ in spans]
        # The last token starting at or before the mark's last character: the one that holds it
        # (the last byte's token where a character takes several bytes).
        return enc["input_ids"], [spans[bisect_right(starts, c) - 1][1] for c in last_chars]

    def step_probs(self, input_ids: Tensor, mask: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """input_ids, mask [B, T] (right-padded); rows, cols [N] the marks -> [N] P(right)."""
        fmt = self.settings.format
        if fmt == "token":
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits  # [B, T, L]
            return _p_right(logits[rows, cols].float())
        body = self.model if fmt == "qwen" else self.model.base_model
        h = body(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, T, H]
        h = h[rows, cols]  # [N, H]: only the marks go through a head
        if fmt == "qwen":
            return _p_right(self.head(h).float())
        # tag: the LM head at the marks only (no [B, T, V] logits), then its two candidates. A
        # model that rescales logits after its head (Gemma 2's softcap) is not handled.
        logits = self.model.get_output_embeddings()(h).float()  # [N, V]
        good, bad = self.good_bad
        return torch.softmax(logits[:, [good, bad]], dim=-1)[:, 0]

    @torch.no_grad()
    def score_steps(
        self, items: list[tuple[str, list[str]]], *, batch_size: int = 16
    ) -> tuple[list[list[float]], list[int]]:
        """P(right) at each step of each (question, steps), and the tokens each row cost the
        model (0 for a row with no step: it is not run)."""
        from .tokenizer import pad_id

        built = [self.row(q, steps) if steps else ([], []) for q, steps in items]
        scores: list[list[float]] = [[] for _ in items]
        todo = [i for i, (ids, _) in enumerate(built) if ids]
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            dev = self.device
            seqs = [built[i][0] for i in chunk]
            input_ids, mask = _right_pad(seqs, pad_id(self.tokenizer), dev)
            rows = torch.tensor([b for b, i in enumerate(chunk) for _ in built[i][1]], device=dev)
            cols = torch.tensor([c for i in chunk for c in built[i][1]], device=dev)
            probs = self.step_probs(input_ids, mask, rows, cols).tolist()  # one read per batch
            k = 0
            for i in chunk:
                n = len(built[i][1])
                scores[i], k = probs[k : k + n], k + n
        return scores, [len(ids) for ids, _ in built]


def _p_right(logits: Tensor) -> Tensor:
    """[N, L] -> [N]: the second class's softmax (L = 2) or the one logit's sigmoid (L = 1)."""
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=-1)[:, 1]


def _right_pad(seqs: list[list[int]], pad: int, device) -> tuple[Tensor, Tensor]:
    """[B, T] ids and mask on ``device``, padded on the right: the marks keep their positions
    (and a causal row never attends to its padding)."""
    T = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (T - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs], device=device)
    return ids, mask


# ----------------------------------------------------------------------------------- loading


def _config(directory: Path, path) -> dict:
    if not directory.is_dir():
        raise ColaError(f"reward model {path} is not a directory")
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        cfg = {}
    return cfg if isinstance(cfg, dict) else {}


def _marker(directory: Path) -> dict:
    try:
        meta = json.loads((directory / MARKER).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


_NEEDS = {
    "outcome": "*ForSequenceClassification",
    "token": "*ForTokenClassification",
    "qwen": "*ForProcessRewardModel",
    "tag": "*ForCausalLM",
}


def _format_of(archs: list[str], want: str, tag_set: bool, path) -> str:
    """The format the directory holds: ``want`` checked against its architectures, or read
    from them ("auto")."""
    kinds = {
        "outcome": any(a.endswith("ForSequenceClassification") for a in archs),
        "token": any(a.endswith("ForTokenClassification") for a in archs),
        "qwen": any(a.endswith("ProcessRewardModel") for a in archs),
        "tag": any(a.endswith("ForCausalLM") for a in archs),
    }
    if want == "auto":
        want = next((k for k in ("outcome", "token", "qwen") if kinds[k]), None)
        if want is None and kinds["tag"] and tag_set:
            want = "tag"
    named = ", ".join(archs) or "none"
    if want is None:
        raise ColaError(
            f"{path} is not a sequence-classification reward model or a process reward model "
            f"(config.json architectures: {named}; a causal LM is read as a tag PRM only with a "
            "step tag: --step-tag)"
        )
    if not kinds[want]:
        raise ColaError(
            f"--verifier-format {want} needs a {_NEEDS[want]}; {path} holds architectures {named}"
        )
    return want


def judge_settings(path: str | Path, options: dict | None = None) -> tuple[str, PRMSettings]:
    """The judge format of a directory (outcome | token | qwen | tag) and, for a PRM, its
    settings: defaults of the format, then the marker's, then ``options`` (flags)."""
    # "auto" from a flag is no choice: the marker's format, else the architectures, decide.
    options = {
        k: v for k, v in (options or {}).items() if v is not None and (k, v) != ("format", "auto")
    }
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ColaError(f"unknown reward-model option(s): {', '.join(sorted(unknown))}")
    directory = Path(path).expanduser()
    archs = [str(a) for a in _config(directory, path).get("architectures") or []]
    marker = {_MARKER_KEYS[k]: v for k, v in _marker(directory).items() if k in _MARKER_KEYS}
    given = marker | options
    want = given.get("format", "auto")
    if want not in FORMATS:
        raise ColaError(f"--verifier-format {want!r} must be one of {', '.join(FORMATS)}")
    fmt = _format_of(archs, want, "step_tag" in given, path)
    if fmt == "outcome":
        if set(options) - {"format"}:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(set(options) - {"format"}))
            raise ColaError(f"{flags}: for process reward models; {path} is an outcome one")
        return fmt, None
    return fmt, _settings(fmt, given, options)


def _settings(fmt: str, given: dict, options: dict) -> PRMSettings:
    wrong = "step_tag" if fmt != "tag" else "step_separator"
    if wrong in options:
        right = "--step-tag" if fmt == "tag" else "--step-separator"
        raise ColaError(f"--{wrong.replace('_', '-')} is not read by a {fmt} PRM (use {right})")
    if fmt != "tag" and ({"good_token", "bad_token"} & set(options)):
        raise ColaError("--good-token / --bad-token are read by tag PRMs only")
    s = _DEFAULTS[fmt]
    mark = given.get("step_tag" if fmt == "tag" else "step_separator", s.mark)
    keys = ("prompt_template", "step_joiner", "good_token", "bad_token", "aggregate")
    s = replace(s, mark=mark, **{k: given[k] for k in keys if given.get(k) is not None})
    if s.aggregate not in AGGREGATES:
        raise ColaError(f"--prm-aggregate {s.aggregate!r} must be one of {', '.join(AGGREGATES)}")
    if not isinstance(s.mark, str) or not s.mark:
        raise ColaError(f"the step {'tag' if fmt == 'tag' else 'separator'} must not be empty")
    if "{question}" not in s.prompt_template:
        raise ColaError(f"prompt_template {s.prompt_template!r} must hold {{question}}")
    return s


def load_judge(
    path: str | Path, options: dict | None = None, *, device: str = "auto", dtype: str = "auto"
):
    """The judge a ``--verifier`` directory holds: a ``RewardModel`` (outcome) or a
    ``ProcessRewardModel``; one-line ColaError for anything else."""
    fmt, settings = judge_settings(path, options)
    if fmt == "outcome":
        from .reward_model import load_reward_model

        return load_reward_model(path, device=device, dtype=dtype)
    from .devices import torch_device, torch_dtype

    directory = Path(path).expanduser()
    if not any(directory.glob("*.safetensors")):
        raise ColaError(f"{path} has no safetensors weights (pickled weights are not loaded)")
    model, head, tokenizer = _load_parts(directory, fmt, path)
    prm = ProcessRewardModel(model, head, tokenizer, settings)
    _check_tokens(prm, path)
    dev = torch_device(device)
    dt = torch_dtype(dtype, dev)
    prm.model = model.to(device=dev, dtype=dt).eval()
    if head is not None:
        prm.head = head.to(device=dev, dtype=dt).eval()
    return prm


_LOAD_REPORTS = ("modeling_utils", "distributed.tensor_parallel")


def _load_parts(directory: Path, fmt: str, path):
    """(model, head or None, tokenizer) of a PRM directory, in float32 (an fp16 export is slow
    and unstable on the CPU)."""
    import transformers as tf

    from .backbone import quiet_hf

    quiet_hf()
    local = {"local_files_only": True, "trust_remote_code": False}
    auto = {
        "token": tf.AutoModelForTokenClassification,
        "qwen": tf.AutoModel,
        "tag": tf.AutoModelForCausalLM,
    }[fmt]
    # The qwen checkpoint's score.* tensors are "unexpected" for the base model: expected. (A
    # quiet modeling_utils makes transformers check a tensor-parallel plan: quiet that too.)
    reports = [logging.getLogger(f"transformers.{m}") for m in _LOAD_REPORTS]
    levels = [r.level for r in reports]
    for r in reports:
        r.setLevel(logging.ERROR)
    try:
        # A Qwen PRM's config.json names its remote classes (auto_map): the stock config and
        # model class of its model_type load instead, and nothing from the directory runs.
        config = tf.AutoConfig.from_pretrained(str(directory), **local)
        model, info = auto.from_pretrained(
            str(directory), config=config, use_safetensors=True, output_loading_info=True, **local
        )
        tokenizer = tf.AutoTokenizer.from_pretrained(str(directory), **local)
    except (OSError, ValueError, KeyError) as err:
        raise ColaError(f"cannot load reward model {path}: {str(err).splitlines()[0]}") from err
    finally:
        for r, level in zip(reports, levels):
            r.setLevel(level)
    if info.get("missing_keys"):
        raise ColaError(
            f"{path}: {len(info['missing_keys'])} weights of the {fmt} PRM are missing "
            f"(e.g. {sorted(info['missing_keys'])[0]})"
        )
    if fmt == "token" and model.config.num_labels not in (1, 2):
        raise ColaError(f"{path} has {model.config.num_labels} labels; a token PRM has 1 or 2")
    head = _score_head(directory, model.config.hidden_size, path) if fmt == "qwen" else None
    return model.float(), head, tokenizer


def _score_head(directory: Path, hidden: int, path) -> nn.Sequential:
    """The ``score.*`` MLP of a ``*ForProcessRewardModel`` from its safetensors: Linear layers
    by index with a ReLU between (Qwen's published layout: score.0 Linear(H, H), score.1 ReLU,
    score.2 Linear(H, 2))."""
    from safetensors import safe_open

    tensors: dict[str, Tensor] = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            tensors |= {k: st.get_tensor(k) for k in st.keys() if k.startswith("score.")}
    names = [k.split(".")[1] for k in tensors]
    layers = sorted({int(n) for n in names if n.isdigit()})  # host: key names, not tensors
    if not layers or any(f"score.{i}.weight" not in tensors for i in layers):
        raise ColaError(f"{path} holds no score.N.weight tensors (a process reward model's head)")
    mlp: list[nn.Module] = []
    for j, i in enumerate(layers):
        w, b = tensors[f"score.{i}.weight"], tensors.get(f"score.{i}.bias")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
        mlp += [lin] if j == 0 else [nn.ReLU(), lin]
    first, last = mlp[0], mlp[-1]
    if first.in_features != hidden or last.out_features not in (1, 2):
        raise ColaError(
            f"{path}: score head {first.in_features} -> {last.out_features}; a PRM head reads "
            f"the hidden size {hidden} and gives 1 or 2 classes"
        )
    return nn.Sequential(*mlp).float()


def _one_token(tok, text: str, what: str, path) -> int:
    """The id of ``text`` as one token: its encoding, or the vocabulary entry of that name."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return ids[0]
    vocab = tok.get_vocab()
    if text in vocab:
        return vocab[text]
    raise ColaError(f"{path}: {what} {text!r} is {len(ids)} tokens of its tokenizer, not one")


def _check_tokens(prm: ProcessRewardModel, path) -> None:
    """Refuse a PRM its settings cannot be read with: a mark its tokenizer cannot encode, a
    slow tokenizer where offsets are needed, good/bad tokens that are not single tokens."""
    s, tok = prm.settings, prm.tokenizer
    if not tok(s.mark, add_special_tokens=False)["input_ids"]:
        raise ColaError(f"{path}: the tokenizer encodes the step mark {s.mark!r} as no token")
    if s.format != "token" and not getattr(tok, "is_fast", False):
        raise ColaError(f"{path}: a {s.format} PRM needs a fast tokenizer (tokenizer.json)")
    if s.format == "tag":
        good = _one_token(tok, s.good_token, "--good-token", path)
        bad = _one_token(tok, s.bad_token, "--bad-token", path)
        if good == bad:
            raise ColaError(f"{path}: --good-token and --bad-token are the same token")
        prm.good_bad = (good, bad)
