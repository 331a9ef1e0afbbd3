"""CoLA inside vLLM: a model class (backbone + policy/Q stacks) and a logits processor (the action
choice and the world-model head). Imported only in processes that run vLLM.

How a CoLA step maps onto vLLM, and why
---------------------------------------
A CoLA step reads the backbone's final-normed feature h_t, runs the policy's own transformer
blocks over h (with their own KV cache), picks an action a_t (greedy, top-k/temperature sample,
or forced), and decodes x_{t+1} = argmax lm_head(norm(merge(h_t, e_{a_t}))).

* **Model** (``ColaVLLMForCausalLM``). One decoder stack whose layer list is the backbone's L
  Llama layers followed by the policy's P layers and the Q head's layers, all vLLM
  ``LlamaDecoderLayer`` s. Every layer, head layers included, therefore gets its own *paged* KV
  cache, and prefix caching covers the heads too: a cached prefix block holds the backbone's, the
  policy's and Q's keys/values. The head layers read h (the final-normed backbone output) as
  their input stream, exactly like ``cola_models.heads.ActionHead``; they use unscaled RoPE with
  the backbone's theta and the heads' own FFN width (as ``ColaModel`` does). ``forward`` returns
  ``[h | policy logits | Q values]`` per token ([N, D + K (+ K)]); vLLM only indexes rows of
  it, so the width is free. The layers get distinct global indices (0..L+P+Q-1) because vLLM
  orders KV caches by layer index.
* **compute_logits** cannot see which request a row belongs to, so it does no CoLA work: it packs
  ``[h | policy | Q]`` into the first D + 2K entries of a vocabulary-sized row.
* **Logits processor** (``ColaLogitsProcessor``, vLLM V1 ``LogitsProcessor``). It is the one
  per-request, per-step hook: ``update_state`` tells it each row's ``SamplingParams`` (our
  settings live in ``extra_args["cola"]``) and the live list of its output tokens, so it knows the
  step ``t = len(output_ids)``. ``apply`` unpacks each row and replaces it:
    - ``generate``: choose a_t (forced ``actions[t]``, greedy argmax, or a top-k/temperature
      sample by Gumbel-max whose noise is a pure function of (request seed, t, action), so
      preemption or batch order never changes a sample and no per-row RNG state or device sync
      is needed), run the world-model head (``cola_models.world_model.WorldModelHead``, the
      paper's non-linear merge, output mode "plain" or "reference") for that one action and
      return its vocabulary logits; vLLM's greedy sampler then takes the argmax, which is the
      CoLA token. Only one action per row reaches the LM head: emitting all K candidates'
      logits instead would be K x V per row (3.1M for SmolLM2, 8.2M for Llama-3.1-8B).
    - ``prior``: return ``[policy logits | Q values | a_1 .. a_m | t_1 .. t_m | -inf ...]``:
      besides the policy and Q it decodes the children of the policy's top m actions
      (``prefetch``), because search expands a node right after reading its prior.
    - ``expand``: decode the k requested actions and return their token ids as values
      ``[t_1 .. t_k | -inf ...]``.
  Either way all children come from the row's single h: one backbone step serves every child,
  the CoLA property search relies on. The engine runs with ``logprobs_mode="processed_logits"``,
  so asking for ``logprobs=n`` returns exactly these n values with their positions, float32 and
  unrounded: the vector travels back through vLLM's own output path, also across processes.
  The alternative, computing priors teacher-forced in torch (vLLM returns no hidden states),
  would re-run the whole prefix in torch for every node and every valued rollout end; here
  they reuse vLLM's prefix cache and cost the last partial KV block.
  A processor, not the model, does this because only the processor sees per-request data; the
  world-model head runs in the processor on the model's weights (found through a per-process
  registry keyed by the model directory), so compute stays at one merge + LM head per row.
* All requests run at vLLM temperature 0 (the batch is "all greedy"), which is what makes the
  processed row the returned "logits" and the argmax the CoLA token (best-of-n's ``n > 1``
  requests use temperature 1 with top-k 1, the same argmax, because vLLM refuses ``n > 1`` when
  greedy). All randomness lives in the action, as in the reference's generation.

Requirements that follow: vocabulary size >= D + 2K and >= 4K (tiny: 259 >= 160, tiny-arith:
512 >= 384, SmolLM2: 49152 >= 704, Llama-3.1-8B: 128256 >= 4224), and a Llama-architecture
backbone (``model_type="llama"``; vLLM's ``LlamaDecoderLayer`` is reused for every layer).
"""

from __future__ import annotations

import copy
import random
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.llama import LlamaDecoderLayer
from vllm.model_executor.models.utils import maybe_prefix
from vllm.sequence import IntermediateTensors
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from cola_models.errors import ColaError
from cola_models.world_model import WorldModelHead

EXTRA_KEY = "cola"
"""Key of our settings in ``SamplingParams.extra_args``."""

_MODELS: weakref.WeakValueDictionary[str, ColaVLLMForCausalLM] = weakref.WeakValueDictionary()
"""Models built in this process, by model directory: how the logits processor finds the weights
of the world-model head (both live in the same worker process)."""

# q/k/v and gate/up are fused in vLLM's layers; checkpoint names are HF Llama's.
_STACKED = (
    (".qkv_proj", ".q_proj", "q"),
    (".qkv_proj", ".k_proj", "k"),
    (".qkv_proj", ".v_proj", "v"),
    (".gate_up_proj", ".gate_proj", 0),
    (".gate_up_proj", ".up_proj", 1),
)


def _cola(config) -> dict:
    cola = getattr(config, "cola", None)
    if not isinstance(cola, dict):
        raise ColaError("not a CoLA export: config.json lacks the 'cola' section")
    return cola


def _head_config(config, cola: dict):
    """Config of the policy/Q blocks: backbone-shaped, own FFN width, unscaled RoPE (as
    cola_models.blocks: the backbone's theta, no Llama-3.1 scaling)."""
    c = copy.deepcopy(config)
    c.intermediate_size = cola["head_ffn"]
    c.rope_parameters = {"rope_type": "default", "rope_theta": float(cola["rope_theta"])}
    if getattr(c, "layer_types", None) is not None:
        c.layer_types = None
    return c


@support_torch_compile(
    dynamic_arg_dims={
        "input_ids": {0: "b"},
        "positions": {0: "b"},
        "intermediate_tensors": {0: "b"},
        "inputs_embeds": {0: "b"},
    },
)
class ColaStack(nn.Module):
    """Backbone layers, then the policy and Q stacks over h; returns [h | policy | Q] per token."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        cola = _cola(config)
        self.n_backbone = config.num_hidden_layers
        self.n_policy = int(cola["policy_layers"])
        self.n_q = int(cola["q_layers"]) if cola["q_head"] else 0
        head = _head_config(config, cola)
        D, K, eps = config.hidden_size, int(cola["n_actions"]), config.rms_norm_eps
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, D)
        layers = [
            LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}.layers.{i}")
            for i in range(self.n_backbone)
        ]
        layers += [
            LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}.layers.{i}", config=head)
            for i in range(self.n_backbone, self.n_backbone + self.n_policy + self.n_q)
        ]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(D, eps=eps)
        self.policy_norm = RMSNorm(D, eps=eps)
        self.policy_out = nn.Linear(D, K, bias=False)
        if self.n_q:
            self.q_norm = RMSNorm(D, eps=eps)
            self.q_out = nn.Linear(D, K, bias=False)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def _stack(self, start: int, end: int, h, positions, norm, out) -> torch.Tensor:
        # The head's residual stream starts from a copy of h: vLLM's fused add-norm works in
        # place and would otherwise overwrite h.
        x, residual = h.clone(), None
        for layer in self.layers[start:end]:
            x, residual = layer(positions, x, residual)
        x, _ = norm(x, residual)
        return out(x)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers[: self.n_backbone]:
            x, residual = layer(positions, x, residual)
        h, _ = self.norm(x, residual)  # the backbone's final-normed features (cola "h")
        h = h.clone()
        L, P = self.n_backbone, self.n_policy
        outs = [h, self._stack(L, L + P, h, positions, self.policy_norm, self.policy_out)]
        if self.n_q:
            outs.append(self._stack(L + P, L + P + self.n_q, h, positions, self.q_norm, self.q_out))
        return torch.cat(outs, dim=-1)


class ColaVLLMForCausalLM(nn.Module):
    """vLLM model of a CoLA checkpoint exported by ``latent_search.backends.vllm_backend``."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        cola = _cola(config)
        self.config = config
        self.dim = config.hidden_size
        self.vocab_size = config.vocab_size
        self.n_actions = int(cola["n_actions"])
        self.has_q = bool(cola["q_head"]) and int(cola["q_layers"]) > 0
        self.width = self.dim + self.n_actions * (2 if self.has_q else 1)
        need = max(self.dim + 2 * self.n_actions, 4 * self.n_actions)
        if self.vocab_size < need:
            raise ColaError(
                f"CoLA on vLLM passes [h | policy | Q] and prior rows through vocabulary-sized "
                f"logits rows: vocab {self.vocab_size} must be >= {need} (hidden {self.dim}, "
                f"{self.n_actions} actions)"
            )
        self.norm_eps = float(config.rms_norm_eps)
        self.model = ColaStack(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = ParallelLMHead(
                config.vocab_size, config.hidden_size, prefix=maybe_prefix(prefix, "lm_head")
            )
        self.world = WorldModelHead(
            self.dim,
            self.n_actions,
            int(cola["merge_layers"]),
            int(cola["merge_ffn"]),
            cola["output_mode"],
        )
        self.action_temperature = float(cola.get("action_temperature", 1.0))
        self.action_top_k = int(cola.get("action_top_k", 0))
        _MODELS[vllm_config.model_config.model] = self

    # ------------------------------------------------------------------ vLLM interface
    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Pack [h | policy | Q] into vocabulary-sized rows; the logits processor unpacks them."""
        out = hidden_states.new_zeros(hidden_states.shape[0], self.vocab_size)
        out[:, : self.width] = hidden_states
        return out

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            target = name
            shard = None
            if name.startswith("model.layers."):
                for fused, part, shard_id in _STACKED:
                    if part in name:
                        target, shard = name.replace(part, fused), shard_id
                        break
            if target not in params:
                raise KeyError(f"unexpected weight {name!r} in the CoLA export")
            param = params[target]
            loader = getattr(param, "weight_loader", default_weight_loader)
            if shard is None:
                loader(param, tensor)
            else:
                loader(param, tensor, shard)
            loaded.add(target)
        return loaded

    # ------------------------------------------------------------------ CoLA pieces
    def unpack(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Packed logits rows [R, V] -> h [R, D], policy logits [R, K], Q [R, K] or None."""
        D, K = self.dim, self.n_actions
        h = rows[:, :D]
        policy = rows[:, D : D + K]
        q = rows[:, D + K : D + 2 * K] if self.has_q else None
        return h, policy, q

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        # The backbone's final RMSNorm, written as transformers' LlamaRMSNorm (what the torch
        # backend computes), so the world-model head matches it operation for operation.
        w = self.model.norm.weight
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.norm_eps)
        return w * xf.to(dtype)

    def _lm_head(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        return F.linear(x, weight)[..., : self.vocab_size]  # drop vLLM's vocabulary padding

    @torch.no_grad()
    def world_logits(self, h: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """World-model token logits [n, V] for features h [n, D] under actions [n]."""
        w = self.world.codebook.weight
        return self.world.logits(h.to(w.dtype), self._final_norm, self._lm_head, actions=actions)


# ---------------------------------------------------------------------- the logits processor
@dataclass
class _Row:
    mode: str  # "generate" | "prior" | "expand"
    output_ids: list[int]  # live reference to the request's generated tokens
    greedy: bool = False  # generate: argmax action instead of a sample
    actions: list[int] = field(default_factory=list)  # generate: forced a_t; expand: candidates
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    prefetch: int = 0  # prior: also decode the children of the top-``prefetch`` actions


_MODES = ("generate", "prior", "expand")


def _row_settings(params) -> dict:
    extra = (params.extra_args or {}).get(EXTRA_KEY) or {}
    if not isinstance(extra, dict):
        raise ValueError(f"extra_args[{EXTRA_KEY!r}] must be a dict")
    return extra


def _signed(c: int) -> int:
    return c - 2**64 if c >= 2**63 else c


_GOLDEN, _MIX1, _MIX2 = (
    _signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def hashed_uniform(seed: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
    """Uniforms in (0, 1), [R, n], a pure function of (seed[r], step[r], column): splitmix64
    over wrapping int64 arithmetic. A counter-based generator needs no per-row RNG state, so a
    sampled action does not depend on batch order or preemption, and nothing syncs the device."""
    cols = torch.arange(n, device=seed.device, dtype=torch.int64)
    x = seed[:, None] * _GOLDEN + step[:, None] * _MIX2 + cols[None, :] + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    x = x ^ _shr(x, 31)
    return (_shr(x, 40).to(torch.float64) + 0.5) / float(1 << 24)


def choose_actions(
    policy: torch.Tensor,
    greedy: torch.Tensor,
    forced: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
) -> torch.Tensor:
    """One action per row of policy logits [R, K]: forced (>= 0) wins, else argmax (greedy) or a
    sample from softmax(logits / temperature) restricted to the top_k (0: all K) actions, drawn by
    Gumbel-max with ``hashed_uniform`` noise. Same distribution as cola_models.sampling
    .sample_logits (a different random stream)."""
    R, K = policy.shape
    logits = policy.float() / temperature[:, None]
    k = torch.where((top_k > 0) & (top_k < K), top_k, torch.full_like(top_k, K))
    kth = logits.sort(-1, descending=True).values.gather(-1, (k - 1)[:, None])  # [R, 1]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    gumbel = -torch.log(-torch.log(hashed_uniform(seed, step, K))).to(logits.dtype)
    sampled = (logits + gumbel).argmax(-1)
    acts = torch.where(greedy, policy.argmax(-1), sampled)
    return torch.where(forced >= 0, forced, acts)


class ColaLogitsProcessor(LogitsProcessor):
    """Per-request CoLA action choice and world-model decoding (see the module docstring)."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        extra = _row_settings(sampling_params)
        mode = extra.get("mode", "generate")
        if mode not in _MODES:
            raise ValueError(f"cola mode {mode!r} must be one of {', '.join(_MODES)}")
        if extra.get("action", "sample") not in ("sample", "greedy"):
            raise ValueError("cola action must be 'sample' or 'greedy'")
        if mode == "expand" and not extra.get("actions"):
            raise ValueError("cola expand needs a non-empty 'actions' list")
        if extra.get("temperature") is not None and extra["temperature"] <= 0:
            raise ValueError("cola temperature must be > 0")

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        self.key = vllm_config.model_config.model
        self.device = device
        self.rows: dict[int, _Row] = {}
        self._model: ColaVLLMForCausalLM | None = None
        cola = _cola(vllm_config.model_config.hf_config)
        self.default_temperature = float(cola.get("action_temperature", 1.0))
        self.default_top_k = int(cola.get("action_top_k", 0))

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the greedy token

    def _new_row(self, params, _prompt, output_ids: list[int]) -> _Row:
        extra = _row_settings(params)
        seed = extra.get("seed", params.seed)
        temperature = extra.get("temperature")
        top_k = extra.get("top_k")
        return _Row(
            mode=extra.get("mode", "generate"),
            output_ids=output_ids,
            greedy=extra.get("action", "sample") == "greedy",
            actions=[int(a) for a in extra.get("actions", ())],
            temperature=float(temperature or self.default_temperature),
            top_k=int(self.default_top_k if top_k is None else top_k),
            seed=int(seed) if seed is not None else random.getrandbits(62),
            prefetch=int(extra.get("prefetch", 0)),
        )

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_row)

    @property
    def model(self) -> ColaVLLMForCausalLM:
        if self._model is None:
            self._model = _MODELS[self.key]
        return self._model

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        m = self.model
        K, dev = m.n_actions, logits.device
        # Copies: the rows are overwritten in place below.
        h, policy, q = (None if t is None else t.clone() for t in m.unpack(logits))
        gen, expand, prior = [], [], []
        meta = []  # per generate row: greedy, forced, temperature, top_k, seed, step
        for i in range(logits.shape[0]):
            row = self.rows.get(i)
            if row is None:
                continue
            if row.mode == "prior":
                prior.append((i, min(row.prefetch, K)))
            elif row.mode == "expand":
                expand.append((i, row.actions))
            else:
                t = len(row.output_ids)  # the step: tokens generated so far
                forced = row.actions[t] if t < len(row.actions) else -1
                gen.append(i)
                meta.append((row.greedy, forced, row.temperature, row.top_k, row.seed, t))
        # Every (row, action) pair of this step goes through one batched world-model call:
        # generate rows (their chosen action), expand rows (their k actions), prior rows that
        # prefetch (their top-m actions by policy).
        feats, acts, n_pairs = [], [], []
        if gen:
            cols = list(zip(*meta))
            gidx = torch.tensor(gen, device=dev)
            acts.append(
                choose_actions(
                    policy[gidx],
                    torch.tensor(cols[0], device=dev),
                    torch.tensor(cols[1], device=dev),
                    torch.tensor(cols[2], device=dev, dtype=torch.float32),
                    torch.tensor(cols[3], device=dev),
                    torch.tensor(cols[4], device=dev, dtype=torch.int64),
                    torch.tensor(cols[5], device=dev, dtype=torch.int64),
                )
            )
            feats.append(h[gidx])
        n_pairs.append(len(gen))
        if expand:
            rep = [i for i, a_list in expand for _ in a_list]
            feats.append(h[torch.tensor(rep, device=dev)])
            acts.append(torch.tensor([a for _, a_list in expand for a in a_list], device=dev))
        n_pairs.append(sum(len(a) for _, a in expand))
        fetch = [(i, n) for i, n in prior if n > 0]
        top = {}
        for n in sorted({n for _, n in fetch}):
            rows = [i for i, k in fetch if k == n]
            ridx = torch.tensor(rows, device=dev)
            top[n] = (rows, policy[ridx].topk(n, dim=-1).indices)  # [r, n]
            feats.append(h[ridx].repeat_interleave(n, dim=0))
            acts.append(top[n][1].reshape(-1))
        n_pairs.append(sum(n for _, n in fetch))
        if acts:
            world = m.world_logits(torch.cat(feats), torch.cat(acts)).float()
            if gen:
                logits[gidx] = world[: n_pairs[0]]
            tokens = world[n_pairs[0] :].argmax(-1).float()
            j = 0
            for i, a_list in expand:
                logits[i] = float("-inf")
                logits[i, : len(a_list)] = tokens[j : j + len(a_list)]
                j += len(a_list)
        if prior:
            # [policy | Q | prefetched actions | their tokens]
            pidx = torch.tensor([i for i, _ in prior], device=dev)
            logits[pidx] = float("-inf")
            logits[pidx, :K] = policy[pidx]
            base = K
            if q is not None:
                logits[pidx, K : 2 * K] = q[pidx]
                base = 2 * K
            for n, (rows, actions) in top.items():
                toks = tokens[j : j + len(rows) * n].view(len(rows), n)
                j += len(rows) * n
                ridx = torch.tensor(rows, device=dev)
                logits[ridx, base : base + n] = actions.float()
                logits[ridx, base + n : base + 2 * n] = toks
        return logits
