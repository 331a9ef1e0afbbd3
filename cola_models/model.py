"""ColaModel: backbone + IDM + world-model head + policy (+ Q), and the batched operations that
training, search and evaluation share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .backbone import Backbone
from .blocks import positions_from_mask
from .checkpoint import save_model
from .config import ColaConfig
from .heads import SURPRISE, ActionHead, idm_transition_logits, lm_surprise, sequence_surprise
from .state import ColaState
from .world_model import WorldModelHead


@dataclass
class ColaOutput:
    """Teacher-forced outputs over a batch of sequences (left-padded), shapes in comments."""

    h: Tensor  # [B, T, D] backbone features
    policy_logits: Tensor  # [B, T, K] logits of a_t at each position t
    idm_logits: Tensor | None  # [B, T-1, K] logits of the action behind x_t -> x_{t+1}
    token_logits: Tensor | None  # [B, T, V] world model's x_{t+1} logits under the given a_t
    q_values: Tensor | None  # [B, T, K]


class ColaModel(nn.Module):
    kind = "cola"

    def __init__(self, config: ColaConfig, backbone: Backbone, tokenizer=None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.tokenizer = tokenizer  # not a module; saved beside the weights
        self.generation_defaults: dict = {}  # prompt template etc. the model was trained with
        shape = backbone.block_shape(config.head_ffn)
        K = config.n_actions
        self.idm = ActionHead(shape, config.idm_layers, K)
        self.world = WorldModelHead(
            backbone.dim,
            K,
            config.merge_layers,
            config.merge_ffn or backbone.hf_config.intermediate_size,
            config.output_mode,
        )
        self.policy = ActionHead(shape, config.policy_layers, K)
        self.q = ActionHead(shape, config.q_layers, K) if config.q_head else None
        self.q_in = None
        if config.q_head and config.q_features == "h+lm":
            self.q_in = nn.Linear(SURPRISE, backbone.dim)  # the LM's surprise, into h's space

    # ------------------------------------------------------------------ introspection
    @property
    def n_actions(self) -> int:
        return self.config.n_actions

    @property
    def device(self) -> torch.device:
        return self.world.codebook.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.world.codebook.weight.dtype

    def param_counts(self) -> dict[str, int]:
        """Parameters per component (tied tensors counted once), keys as in the paper's table."""

        def count(module: nn.Module | None) -> int:
            if module is None:
                return 0
            return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())

        return {
            "backbone": count(self.backbone),
            "idm": count(self.idm),
            "codebook": count(self.world.codebook),
            "merge": count(self.world.merge),
            "policy": count(self.policy),
            "q": count(self.q),
        }

    def save_pretrained(self, directory, *, dtype: str | None = None):
        """config.json + model.safetensors (+ tokenizer), written atomically (cola_models.checkpoint)."""
        return save_model(self, directory, dtype=dtype)

    # ------------------------------------------------------------------ pieces
    def world_logits(
        self, h: Tensor, actions: Tensor | None = None, weights: Tensor | None = None
    ) -> Tensor:
        """World-model token logits: h [..., D] with actions [...] or one-hot weights [..., K]."""
        return self.world.logits(
            h, self.backbone.final_norm, self.backbone.lm_head, actions=actions, weights=weights
        )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        actions: Tensor | None = None,
        *,
        idm: bool = True,
    ) -> ColaOutput:
        """Teacher-forced pass. input_ids, attention_mask: [B, T]; actions: [B, T] (a_t at t)."""
        key_mask = attention_mask.bool()
        positions = positions_from_mask(attention_mask)
        h, _ = self.backbone(input_ids, key_mask, positions)  # [B, T, D]
        policy_logits, _ = self.policy(h, positions, key_mask)
        q_values = None
        if self.q is not None:
            q_values = self.q_sequence(h, input_ids, positions, key_mask)
        return ColaOutput(
            h=h,
            policy_logits=policy_logits,
            idm_logits=idm_transition_logits(self.idm, h, positions, key_mask) if idm else None,
            token_logits=self.world_logits(h, actions) if actions is not None else None,
            q_values=q_values,
        )

    def _q_extra(self, surprise) -> Tensor | None:
        """The Q head's own inputs beside h ([B, T, D]), or None when it reads h alone."""
        if self.q_in is None:
            return None
        return self.q_in(surprise().to(self.q_in.weight.dtype))

    def q_sequence(self, h: Tensor, input_ids: Tensor, positions: Tensor, key_mask: Tensor):
        """Q values [B, T, K] of every position of teacher-forced sequences (h [B, T, D])."""
        extra = self._q_extra(lambda: sequence_surprise(self.backbone.token_logits, h, input_ids))
        return self.q(h, positions, key_mask, extra=extra)[0]

    # ------------------------------------------------------------------ incremental state
    def _heads(self, h, positions, key_mask, state: ColaState | None, values: bool, surprise):
        pl, pcache = self.policy(h, positions, key_mask, state.policy_cache if state else None)
        q, qcache = None, None
        if self.q is not None and values:
            cache = state.q_cache if state else None
            q, qcache = self.q(h, positions, key_mask, cache, extra=self._q_extra(surprise))
        return pl, pcache, q, qcache

    @torch.no_grad()
    def start(self, input_ids: Tensor, attention_mask: Tensor, *, values: bool = True) -> ColaState:
        """Prefill left-padded prompts [B, T] into a state ready to choose a_T. ``values=False``
        leaves the Q head out of this state and every state advanced from it (q_values None):
        a caller that never reads Q (greedy decoding, sampling, a search judged by something
        else) then skips a third of the head work of every step."""
        key_mask = attention_mask.bool()
        positions = positions_from_mask(attention_mask)
        h, bcache = self.backbone(input_ids, key_mask, positions)
        surprise = lambda: sequence_surprise(self.backbone.token_logits, h, input_ids)  # noqa: E731
        pl, pcache, q, qcache = self._heads(h, positions, key_mask, None, values, surprise)
        return ColaState(
            key_mask=key_mask,
            next_pos=positions[:, -1] + 1,
            h=h[:, -1],
            policy_logits=pl[:, -1],
            q_values=None if q is None else q[:, -1],
            backbone_cache=bcache,
            policy_cache=pcache,
            q_cache=qcache,
        )

    @torch.no_grad()
    def advance(self, state: ColaState, tokens: Tensor) -> ColaState:
        """Read one token per row ([B]): one backbone step + one step of each head stack."""
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(state.batch_size, 1)], dim=1)
        positions = state.next_pos[:, None]  # [B, 1]
        h, bcache = self.backbone(tokens[:, None], key_mask, positions, state.backbone_cache)
        # what the LM knew of the token just read, from the features before it: [B, 1, 3]
        surprise = lambda: lm_surprise(self.backbone.token_logits, state.h, tokens)[:, None]  # noqa: E731
        pl, pcache, q, qcache = self._heads(
            h, positions, key_mask, state, state.q_cache is not None, surprise
        )
        return ColaState(
            key_mask=key_mask,
            next_pos=state.next_pos + 1,
            h=h[:, -1],
            policy_logits=pl[:, -1],
            q_values=None if q is None else q[:, -1],
            backbone_cache=bcache,
            policy_cache=pcache,
            q_cache=qcache,
        )

    @torch.no_grad()
    def next_token_logits(self, h: Tensor, actions: Tensor) -> Tensor:
        """Logits of x_{t+1} for k actions per row, from features h [B, D] of the rows' one
        backbone step (a state's ``h``).

        actions: [B, k] -> [B, k, V]. No backbone work happens here: that is CoLA's point.
        """
        h = h[:, None, :].expand(-1, actions.shape[1], -1)  # [B, k, D]
        return self.world_logits(h, actions)

    @torch.no_grad()
    def expand(self, input_ids: Tensor, attention_mask: Tensor, actions: Tensor) -> Tensor:
        """Prefill [B, T] prefixes once and return next-token logits [B, k, V] of actions [B, k]."""
        state = self.start(input_ids, attention_mask, values=False)
        return self.next_token_logits(state.h, actions)

    @torch.no_grad()
    def score(
        self, input_ids: Tensor, attention_mask: Tensor, actions: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Teacher-forced log-probs of each transition t -> t+1 ([B, T-1] each).

        Without ``actions`` the IDM's argmax actions are used (how the data "explains" itself).
        Returns idm_actions, action_logprobs (policy), token_logprobs (world model under the
        actions) and backbone_logprobs (the plain LM).
        """
        out = self.forward(input_ids, attention_mask)
        idm_actions = out.idm_logits.argmax(-1)  # [B, T-1]
        acts = idm_actions if actions is None else actions[:, :-1]
        targets = input_ids[:, 1:]
        pl = out.policy_logits[:, :-1].log_softmax(-1)
        wl = self.world_logits(out.h[:, :-1], acts).float().log_softmax(-1)
        bl = self.backbone.token_logits(out.h[:, :-1]).float().log_softmax(-1)
        return {
            "idm_actions": idm_actions,
            "action_logprobs": pl.gather(-1, acts[..., None])[..., 0],
            "token_logprobs": wl.gather(-1, targets[..., None])[..., 0],
            "backbone_logprobs": bl.gather(-1, targets[..., None])[..., 0],
        }
