"""A plain causal LM (the base model and the token-level RL baseline) behind the same incremental
interface as ColaModel, so generation, RL and search treat tokens as the actions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbone import Backbone
from .blocks import StackCache, positions_from_mask, shared_padding
from .devices import torch_device, torch_dtype
from .errors import ColaError


@dataclass
class LMState:
    """B prefixes after their last token: next-token logits and a plain-tensor KV cache."""

    key_mask: Tensor  # [B, S] bool
    next_pos: Tensor  # [B]
    logits: Tensor  # [B, V]
    cache: StackCache

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]

    @staticmethod
    def cat(states: list[LMState], room: int = 0) -> LMState:
        """Concatenate along the batch, left-padding shorter caches (masked keys), with ``room``
        free cache slots after (a single state is returned as it is)."""
        import torch.nn.functional as F

        if len(states) == 1:
            return states[0]
        S = max(s.key_mask.shape[1] for s in states)
        pads = [S - s.key_mask.shape[1] for s in states]
        return LMState(
            torch.cat([F.pad(s.key_mask, (n, 0), value=False) for s, n in zip(states, pads)]),
            torch.cat([s.next_pos for s in states]),
            torch.cat([s.logits for s in states]),
            StackCache.cat([s.cache for s in states], room),
        )

    def select(self, index: Tensor | list[int], room: int = 0) -> LMState:
        index = torch.as_tensor(index, dtype=torch.long, device=self.logits.device)
        key_mask = self.key_mask[index]
        start = shared_padding(key_mask)  # RoPE positions live in next_pos, not in slots
        return LMState(
            key_mask[:, start:],
            self.next_pos[index],
            self.logits[index],
            self.cache.select(index, room, start),
        )

    def compacted(self, keep: list[int]) -> LMState:
        """Rows ``keep`` (ascending) in this cache's own buffers (see StackCache.compacted)."""
        index = torch.as_tensor(keep, dtype=torch.long, device=self.logits.device)
        return LMState(
            self.key_mask[index],
            self.next_pos[index],
            self.logits[index],
            self.cache.compacted(keep),
        )

    def reserved(self, n_new: int) -> LMState:
        """The same state with cache room for ``n_new`` more tokens (see StackCache.reserved)."""
        return LMState(self.key_mask, self.next_pos, self.logits, self.cache.reserved(n_new))


class PlainLM(nn.Module):
    """An HF causal LM with its tokenizer; ``start``/``advance`` mirror ColaModel's."""

    kind = "lm"

    def __init__(self, lm: nn.Module, tokenizer=None) -> None:
        super().__init__()
        self.backbone = Backbone(lm)
        self.tokenizer = tokenizer
        self.generation_defaults: dict = {}

    @property
    def device(self) -> torch.device:
        return self.backbone.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.lm_head.weight.dtype

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Teacher-forced next-token logits [B, T, V] for left-padded [B, T] inputs."""
        h, _ = self.backbone(input_ids, attention_mask.bool(), positions_from_mask(attention_mask))
        return self.backbone.token_logits(h)

    @torch.no_grad()
    def start(self, input_ids: Tensor, attention_mask: Tensor) -> LMState:
        key_mask = attention_mask.bool()
        positions = positions_from_mask(attention_mask)
        h, cache = self.backbone(input_ids, key_mask, positions)
        return LMState(key_mask, positions[:, -1] + 1, self.backbone.token_logits(h[:, -1]), cache)

    @torch.no_grad()
    def advance(self, state: LMState, tokens: Tensor) -> LMState:
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(state.batch_size, 1)], dim=1)
        h, cache = self.backbone(tokens[:, None], key_mask, state.next_pos[:, None], state.cache)
        return LMState(key_mask, state.next_pos + 1, self.backbone.token_logits(h[:, -1]), cache)

    def save_pretrained(self, directory: str | Path, *, dtype: str | None = None) -> Path:
        """A standard HF directory (safetensors), loadable by transformers itself."""
        import json

        from .atomic import write_atomic
        from .backbone import quiet_hf
        from .checkpoint import atomic_dir, full_state, writes_files

        quiet_hf()
        lm = self.backbone.lm
        state = full_state(lm)  # every rank, when sharded
        if not writes_files():
            return Path(directory)
        if not any(hasattr(p, "device_mesh") for p in lm.parameters()):
            state = None  # unsharded: HF's own path (tied weights, dtype copy)
        with atomic_dir(directory) as tmp:
            if dtype:
                lm, state = _copy_to_dtype(lm, torch_dtype(dtype)), None  # export: unsharded
            lm.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            if self.generation_defaults:
                write_atomic(
                    tmp / "latent_search.json", json.dumps(self.generation_defaults, indent=2)
                )
        return Path(directory)


def _copy_to_dtype(lm: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(lm).to(dtype)


def load_lm(directory: str | Path, *, device: str = "auto", dtype: str = "auto") -> PlainLM:
    """Load a plain HF causal LM directory (safetensors only, no remote code)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from .backbone import quiet_hf
    from .catalog import read_generation_defaults

    quiet_hf()
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ColaError(f"{directory} has no config.json")
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except (OSError, ValueError) as err:
        raise ColaError(f"cannot load the LM in {directory}: {str(err).splitlines()[0]}") from err
    lm.config._attn_implementation = "sdpa"
    tok = None
    if (directory / "tokenizer.json").is_file():
        tok = PreTrainedTokenizerFast.from_pretrained(str(directory))
    model = PlainLM(lm.float(), tok)
    model.generation_defaults = read_generation_defaults(directory)
    dev = torch_device(device)
    return model.to(device=dev, dtype=torch_dtype(dtype, dev)).eval()
