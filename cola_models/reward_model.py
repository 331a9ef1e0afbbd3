"""Reward models that read text and say how likely it is to be right: the project's own
verifiers and any local Hugging Face sequence-classification reward model, one format for both.

A reward model is an HF ``*ForSequenceClassification`` directory (safetensors, a tokenizer,
``num_labels`` 1 or 2). Its score of a text is P(right) at the text's last token: the sigmoid of
the one logit, or the softmax's second class. The same model scores a partial solution (a step
prefix) as the probability that it will end right, which is how beam and mcts use it between
steps. The project's verifiers (``train verifier``) are saved in exactly this format, so they load
in transformers without this package and a user's own reward model plugs in where they do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ColaError

MARKER = "latent_search.json"
"""Beside config.json: how texts are posed to the model (``prompt_template``) and its origin."""


@dataclass
class RewardModel:
    model: nn.Module
    """An HF ``*ForSequenceClassification``."""
    tokenizer: object
    meta: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def token_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, T] -> [B, T] the right-vs-wrong logit at every position (causal: position t sees
        the text up to t). Training reads every position; scoring reads the last."""
        body = self.model.base_model
        h = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.model.score(h).float()  # [B, T, L]
        if logits.shape[-1] == 1:
            return logits[..., 0]
        return logits[..., 1] - logits[..., 0]  # log-odds of the "right" class

    @torch.no_grad()
    def score_texts(
        self, texts: list[str], *, batch_size: int = 32
    ) -> tuple[list[float], list[int]]:
        """P(right) of each text at its last token, and the tokens each cost the model."""
        from .tokenizer import left_pad, pad_id

        tok = self.tokenizer
        ids = tok(texts, add_special_tokens=True)["input_ids"]
        scores: list[float] = []
        for s in range(0, len(ids), batch_size):
            chunk = ids[s : s + batch_size]
            input_ids, mask = left_pad(chunk, pad_id(tok), self.device)
            logits = self.token_logits(input_ids, mask)[:, -1]  # left padding: last is real
            scores += torch.sigmoid(logits).tolist()
        return scores, [len(x) for x in ids]

    def save_pretrained(self, directory: str | Path) -> Path:
        from .atomic import write_atomic
        from .backbone import quiet_hf
        from .checkpoint import atomic_dir, full_state, writes_files

        quiet_hf()
        state = full_state(self.model)  # every rank, when sharded
        if not writes_files():
            return Path(directory)
        with atomic_dir(directory) as tmp:
            if not any(hasattr(p, "device_mesh") for p in self.model.parameters()):
                state = None  # unsharded: HF's own path
            self.model.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(str(tmp))
            write_atomic(tmp / MARKER, json.dumps(self.meta, indent=2))
        return Path(directory)


def is_reward_model_dir(directory: Path) -> bool:
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and any(
        str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or []
    )


def load_reward_model(
    path: str | Path, *, device: str = "auto", dtype: str = "auto"
) -> RewardModel:
    """A local reward-model directory (safetensors only, no remote code); one-line ColaError for
    anything else (a missing directory, a causal LM, pickled weights). ``device`` / ``dtype``
    as for ``load_model`` (:mod:`cola_models.devices`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .backbone import quiet_hf
    from .devices import torch_device, torch_dtype

    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ColaError(f"reward model {path} is not a directory")
    if not is_reward_model_dir(directory):
        raise ColaError(
            f"{path} is not a sequence-classification reward model (config.json architectures "
            "must name a *ForSequenceClassification)"
        )
    if not any(directory.glob("*.safetensors")):
        raise ColaError(f"{path} has no safetensors weights (pickled weights are not loaded)")
    quiet_hf()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True, trust_remote_code=False
        ).float()  # a checkpoint exported in fp16 is slow and unstable on CPU
        tokenizer = AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as err:
        raise ColaError(f"cannot load reward model {path}: {str(err).splitlines()[0]}") from err
    if model.config.num_labels not in (1, 2):
        raise ColaError(f"{path} has {model.config.num_labels} labels; a reward model has 1 or 2")
    meta = {}
    if (directory / MARKER).is_file():
        meta = json.loads((directory / MARKER).read_text())
    dev = torch_device(device)
    return RewardModel(model.to(device=dev, dtype=torch_dtype(dtype, dev)).eval(), tokenizer, meta)


def reward_model_from_lm(lm_dir: str | Path, *, seed: int = 0) -> RewardModel:
    """A new verifier initialised from a plain LM directory (its own copy of every weight, the
    LM head replaced by a one-logit score head), for ``train verifier``."""
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    from .backbone import quiet_hf

    quiet_hf()
    # The new score head is reported "missing" from the LM's checkpoint: expected, not news.
    report = logging.getLogger("transformers.modeling_utils")
    level = report.level
    report.setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(lm_dir),
                num_labels=1,
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
            ).float()  # the LM may have been exported in fp16: train in fp32
    finally:
        report.setLevel(level)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(lm_dir))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return RewardModel(model, tokenizer, {"kind": "verifier", "initialised_from": str(lm_dir)})
