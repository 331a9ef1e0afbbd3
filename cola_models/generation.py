"""Batched, KV-cached CoLA generation: each step the policy picks a latent action, the world model
turns (h_t, a_t) into the next token. All randomness lives in the action (reference default)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .blocks import shared_padding
from .errors import ColaError
from .sampling import sample_logits, uniform_actions
from .tokenizer import encode, left_pad, pad_id

ACTION_MODES = ("sample", "greedy", "uniform")
TOKEN_MODES = ("greedy", "sample")


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    action: str = "sample"
    """"sample" from the policy (temperature/top-k), "greedy" argmax, or "uniform" random control."""
    action_temperature: float | None = None
    """None: the model's default (reference: 1.0)."""
    action_top_k: int | None = None
    """None: the model's default (reference: 40); 0 keeps all K."""
    token: str = "greedy"
    """"greedy" (reference default during RL and eval) or "sample" from the world model."""
    token_temperature: float = 1.0
    stop_strings: tuple[str, ...] = ()
    stop_at_eos: bool = True
    values: bool = False
    """CoLA: run the Q head along in the states a generation prefills (only a caller that reads
    Q from ``keep_states`` needs it; actions and tokens are the same either way)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ColaError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.action not in ACTION_MODES:
            raise ColaError(f"action={self.action!r} must be one of {', '.join(ACTION_MODES)}")
        if self.token not in TOKEN_MODES:
            raise ColaError(f"token={self.token!r} must be one of {', '.join(TOKEN_MODES)}")
        if self.action_temperature is not None and self.action_temperature <= 0:
            raise ColaError(f"action_temperature={self.action_temperature} must be > 0")
        if self.token_temperature <= 0:
            raise ColaError(f"token_temperature={self.token_temperature} must be > 0")
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))


@dataclass
class GenerationOutput:
    texts: list[str]
    token_ids: list[list[int]]
    action_ids: list[list[int]]
    action_logprobs: list[list[float]]
    """log pi(a_t | s_t) of the chosen action under the raw policy (temperature 1, all K): the
    quantity RL ratios use, whatever temperature/top-k did the sampling."""
    finish_reasons: list[str] = field(default_factory=list)  # "eos" | "stop" | "length"
    prefill_tokens: int = 0
    decode_tokens: int = 0
    final_states: list | None = None
    """With ``keep_states``: per row, the one-row state its last token was chosen from (prefix =
    prompt + token_ids[:-1]), so a caller can value or extend the text without recomputing it."""

    @property
    def forward_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens


class _Decoder:
    """One step of a generation loop: ``choose`` the next tokens (and the actions behind them)."""

    def _act(self, logits: Tensor, forced: Tensor, temperature: float, top_k: int):
        """Pick one action per row of logits [b, N] by ``cfg.action`` (forced >= 0 wins) and
        return (actions [b], their log-prob under the raw distribution [b])."""
        if self.cfg.action == "greedy":
            acts = logits.argmax(-1)
        elif self.cfg.action == "uniform":
            acts = uniform_actions(logits.shape[0], logits.shape[1], logits.device, self.generator)
        else:
            acts = sample_logits(logits, temperature, top_k, self.generator)
        acts = torch.where(forced >= 0, forced, acts)
        return acts, logits.float().log_softmax(-1).gather(-1, acts[:, None])[:, 0]

    def __init__(self, model, cfg: GenerationConfig, generator) -> None:
        self.model, self.cfg, self.generator = model, cfg, generator

    def start(self, ids: Tensor, mask: Tensor):
        return self.model.start(ids, mask)

    def advance(self, state, tokens: Tensor):
        return self.model.advance(state, tokens)


class _ColaDecoder(_Decoder):
    """Acts with latent actions: the policy picks a_t, the world model decodes x_{t+1}."""

    def start(self, ids: Tensor, mask: Tensor):
        # Choosing reads policy logits only: the Q head runs only when asked for.
        return self.model.start(ids, mask, values=self.cfg.values)

    def choose(self, state, forced: Tensor, live: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cfg, model = self.cfg, self.model
        temperature = cfg.action_temperature or model.config.action_temperature
        top_k = model.config.action_top_k if cfg.action_top_k is None else cfg.action_top_k
        logits = state.policy_logits[live]  # [b, K]
        actions, logps = self._act(logits, forced, temperature, top_k)  # [b]
        token_logits = model.world_logits(state.h[live], actions)  # [b, V]
        if cfg.token == "greedy":
            tokens = token_logits.argmax(-1)
        else:
            tokens = sample_logits(token_logits, cfg.token_temperature, 0, self.generator)
        return tokens, actions, logps


class _TokenDecoder(_Decoder):
    """Acts with tokens (a plain LM): the token *is* the action, so ``cfg.action`` decides:
    "greedy" argmax, "sample" with action_temperature (default 1) / action_top_k (default all),
    "uniform" random tokens (the random-token control)."""

    def choose(self, state, forced: Tensor, live: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.cfg
        tokens, logps = self._act(
            state.logits[live], forced, cfg.action_temperature or 1.0, cfg.action_top_k or 0
        )  # [b]
        return tokens, tokens, logps


def _compact(batch: int, live: int) -> bool:
    """Whether finished rows should leave the batch now. Leaving copies the live rows' caches;
    staying costs a wasted row per step. Waiting until an eighth of the batch is finished bounds
    the waste to that share and the copies to a few per generation (deviation from the
    reference, which uses HF generate: finished rows stay to the end there)."""
    return batch - live >= max(1, batch // 8)


def _stopped(tokenizer, ids: list[int], stops: tuple[str, ...], tail: int) -> str | None:
    text = tokenizer.decode(ids[-tail:], skip_special_tokens=True)
    return next((s for s in stops if s in text), None)


def _final_text(tokenizer, ids: list[int], stops: tuple[str, ...]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = [text.find(s) for s in stops if s in text]
    return text[: min(cut)] if cut else text


def length_groups(lengths: list[int], waste: float = 1.25) -> list[list[int]]:
    """Indices of ``lengths`` in ascending length, cut into runs whose left-padded size (rows x
    longest) is at most ``waste`` times their real tokens: prompts of very different lengths are
    prefilled apart instead of every row paying for the longest."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    total = 0
    for i in order:
        if groups and lengths[i] * (len(groups[-1]) + 1) <= waste * (total + lengths[i]):
            groups[-1].append(i)
            total += lengths[i]
        else:
            groups.append([i])
            total = lengths[i]
    return groups


def _prefill(decoder, seqs: list[list[int]], pad: int, device, room: int):
    """Prefill prompts in groups of similar length and join the states (with ``room`` cache
    slots for the generation). Returns (batch position -> row of ``seqs``, the state). The batch
    is in ascending prompt length, so rows that share padding sit together."""
    groups = length_groups([len(s) for s in seqs])
    states = []
    for group in groups:
        ids, mask = left_pad([seqs[i] for i in group], pad, device)
        states.append(decoder.start(ids, mask))
    return [i for g in groups for i in g], type(states[0]).cat(states, room)


@torch.no_grad()
def generate(
    model,
    prompts: list[str] | list[list[int]],
    config: GenerationConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    forced_actions: list[list[int]] | None = None,
    tokenizer=None,
    state=None,
    keep_states: bool = False,
) -> GenerationOutput:
    """Generate continuations for a batch of prompts (strings or token-id lists).

    ``model`` is a ColaModel (actions are latent) or a PlainLM (actions are tokens; ``action_ids``
    then equal ``token_ids``). forced_actions[i][t], when given, replaces the choice at step t of
    row i (steps past the end of a row's list fall back to ``config.action``). Finished rows leave
    the batch, so a long straggler does not pay for the others. ``state``: the model state of the
    prompts (row i <-> prompts[i]) when the caller has it cached; no prefill is run then.
    """
    cfg = config or GenerationConfig()
    tok = tokenizer or model.tokenizer
    if tok is None:
        raise ColaError("generation needs a tokenizer (the model has none)")
    if not prompts:
        return GenerationOutput([], [], [], [])
    seqs = encode(tok, prompts) if isinstance(prompts[0], str) else [list(p) for p in prompts]
    if any(len(s) == 0 for s in seqs):
        raise ColaError("empty prompt")
    if generator is not None and generator.device.type != model.device.type:
        raise ColaError(
            f"the generator is on {generator.device.type}, the model on {model.device.type}: "
            "make it with cola_models.devices.make_generator(seed, model.device)"
        )
    decoder = (_TokenDecoder if getattr(model, "kind", "cola") == "lm" else _ColaDecoder)(
        model, cfg, generator
    )
    B, device = len(seqs), model.device
    prefill = 0
    rows: list[int | None] = list(range(B))  # batch position -> original row (None: finished)
    owned = state is None  # a caller's state may share buffers with its other states
    if state is None:
        rows, state = _prefill(decoder, seqs, pad_id(tok), device, cfg.max_new_tokens)
        prefill = sum(len(s) for s in seqs)
    state = state.reserved(cfg.max_new_tokens)  # room for the whole generation, allocated once
    final_states: list | None = [None] * B if keep_states else None
    eos = tok.eos_token_id if cfg.stop_at_eos else None
    tail = max((len(s) for s in cfg.stop_strings), default=0) + 8
    out_tokens: list[list[int]] = [[] for _ in range(B)]
    out_actions: list[list[int]] = [[] for _ in range(B)]
    out_logps: list[list[float]] = [[] for _ in range(B)]
    reasons = ["length"] * B
    decode_tokens = 0

    for step in range(cfg.max_new_tokens):
        # Rows still generating, as batch positions: only they choose (and draw random numbers),
        # so the random stream does not depend on when finished rows leave the batch.
        live_pos = [j for j, r in enumerate(rows) if r is not None]
        forced = torch.full((len(live_pos),), -1, dtype=torch.long, device=device)
        if forced_actions is not None:
            for i, j in enumerate(live_pos):
                if step < len(forced_actions[rows[j]]):
                    forced[i] = forced_actions[rows[j]][step]
        live = torch.tensor(live_pos, dtype=torch.long, device=device)
        tokens, actions, logps = decoder.choose(state, forced, live)  # [live] each
        tokens_l, actions_l, logps_l = tokens.tolist(), actions.tolist(), logps.tolist()
        keep = []
        for i, j in enumerate(live_pos):
            r = rows[j]
            t = tokens_l[i]
            out_tokens[r].append(t)
            out_actions[r].append(actions_l[i])
            out_logps[r].append(logps_l[i])
            if eos is not None and t == eos:
                reasons[r] = "eos"
            elif cfg.stop_strings and _stopped(tok, out_tokens[r], cfg.stop_strings, tail):
                reasons[r] = "stop"
            else:
                keep.append(j)
        if final_states is not None:
            last = step == cfg.max_new_tokens - 1
            for j, r in enumerate(rows):
                if r is not None and (last or reasons[r] != "length"):
                    final_states[r] = state.select([j])
        if not keep or step == cfg.max_new_tokens - 1:
            break
        batch_tokens = torch.zeros(len(rows), dtype=torch.long, device=device)  # finished: 0
        batch_tokens[live] = tokens
        alive = set(keep)
        rows = [r if j in alive else None for j, r in enumerate(rows)]
        if _compact(len(rows), len(keep)):
            if owned and not shared_padding(state.key_mask[keep]):
                state = state.compacted(keep)  # in place: no new buffers
            else:  # a copy of its own, without the padding no kept row needs any more
                state, owned = state.select(keep, cfg.max_new_tokens - step), True
            batch_tokens = batch_tokens[keep]
            rows = [rows[j] for j in keep]
        state = decoder.advance(state, batch_tokens)
        decode_tokens += len(keep)  # tokens served; finished rows still in the batch are not

    texts = [_final_text(tok, ids, cfg.stop_strings) for ids in out_tokens]
    return GenerationOutput(
        texts=texts,
        token_ids=out_tokens,
        action_ids=out_actions,
        action_logprobs=out_logps,
        finish_reasons=reasons,
        prefill_tokens=prefill,
        decode_tokens=decode_tokens,
        final_states=final_states,
    )
