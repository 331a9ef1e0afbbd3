"""What solve, eval and compare share before a search runs: the models, their backends, the
prompt in the model's own format, and the checks that turn impossible requests into one line."""

from __future__ import annotations

from dataclasses import dataclass

from cola_models.errors import ColaError
from latent_search.search import SearchSpec


@dataclass
class Searcher:
    model: object
    backend: object
    value_backend: object | None
    template: str
    context: int
    fingerprint: str = ""
    """Identity of the searched model's weights (``cola_models.catalog.fingerprint``)."""
    scorer: object | None = None
    """A reward model's scorer of finished texts (``--scorer verifier``), else None (Q head)."""
    value_fn: object | None = None
    """The same reward model valuing partial texts (beam, mcts), else None (Q head)."""

    def search_args(self) -> dict:
        """What ``latent_search.search.run_search`` takes from the searcher besides prompts."""
        return {
            "value_backend": self.value_backend,
            "scorer": self.scorer,
            "value_fn": self.value_fn,
        }

    def encode(self, questions: list[str], max_new_tokens: int) -> list[list[int]]:
        """Token ids of each question's prompt; a prompt that cannot fit is a user error."""
        ids = self.encode_fitting(questions, max_new_tokens)
        for row in ids:
            if isinstance(row, str):
                raise ColaError(row)
        return ids

    def encode_fitting(self, questions: list[str], max_new_tokens: int) -> list:
        """Like ``encode``, but a prompt that cannot fit becomes the reason why (a string), so
        that an evaluation records it instead of stopping."""
        import cola_models as cm

        from .prompts import fill

        for q in questions:
            if not q.strip():
                raise ColaError("the question is empty")
        prompts = [fill(self.template, q) for q in questions]
        ids = cm.tokenizer_encode(self.model.tokenizer, prompts)
        return [
            row
            if len(row) + max_new_tokens <= self.context
            else f"the question takes {len(row)} tokens; with {max_new_tokens} new tokens that "
            f"exceeds the model's context of {self.context}"
            for row in ids
        ]


def _needs_q(model, spec: SearchSpec, value_model: str | None) -> None:
    if (
        model.kind == "lm"
        and not value_model
        and spec.scorer in ("q", "equations-q")
        and (spec.algorithm in ("beam", "mcts", "mcts-q", "best-of-n"))
    ):
        raise ColaError(
            f"token-level {spec.algorithm} of a plain LM needs --value-model (a CoLA model with a"
            " Q head), --scorer verifier with --verifier DIR or, for best-of-n, --scorer vote"
        )


def _reward(
    searcher: Searcher, spec: SearchSpec, verifier: str | None, placement, judge: dict
) -> None:
    """Judge with a reward model, or the model's own likelihood, when the scorer asks for one.
    ``judge``: the flags that say how to read the reward model (``cola_models.prm.OPTIONS``)."""
    if any(v is not None for v in judge.values()) and not verifier:
        raise ColaError(
            "--verifier-format, --step-separator, --step-tag, --good-token, "
            "--bad-token and --prm-aggregate read a --verifier DIR; none was given"
        )
    if spec.scorer.startswith("likelihood"):
        from latent_search.backends.likelihood import likelihood_scorer, likelihood_value_fn

        searcher.scorer = likelihood_scorer(searcher.model)
        searcher.value_fn = likelihood_value_fn(searcher.model)
        return
    if spec.scorer == "equations-likelihood":
        from latent_search.backends.likelihood import likelihood_scorer, likelihood_value_fn
        from latent_search.equations import equation_scorer, equation_value_fn
        from latent_search.scorers import tie_broken, tie_broken_value

        be, model = searcher.backend, searcher.model
        searcher.scorer = tie_broken(equation_scorer(be), likelihood_scorer(model))
        searcher.value_fn = tie_broken_value(equation_value_fn(be), likelihood_value_fn(model))
        return
    if spec.scorer not in ("verifier", "weighted-vote"):
        return
    if not verifier:
        raise ColaError(f"--scorer {spec.scorer} needs --verifier DIR (a reward model)")
    from cola_models.prm import ProcessRewardModel, load_judge
    from latent_search.backends import reward

    rm = load_judge(verifier, judge, device=placement.device, dtype=placement.dtype)
    decode = searcher.backend.decode
    if not isinstance(rm, ProcessRewardModel):
        searcher.scorer = reward.reward_scorer(rm, decode)
        searcher.value_fn = reward.reward_value_fn(rm, decode)
        return
    from .prompts import question_of

    # The PRM reads the question in its own format: the searched prompt's template undone, read
    # when called (eval sets the template after loading).
    def question(prompt: str) -> str:
        return question_of(searcher.template, prompt)

    searcher.scorer = reward.prm_scorer(rm, decode, question)
    searcher.value_fn = reward.prm_value_fn(rm, decode, question)


def _backend_opts(backend: str, model, spec: SearchSpec, placement) -> dict:
    """vLLM's engine runs in the searcher's dtype (bfloat16 on a GPU by default). The torch
    backend runs a CoLA model's Q head only for a search that reads it: one judged by Q, or
    MCTS-Q (its macro-steps test Q's TD error whatever the judge)."""
    if backend == "vllm":
        return {"dtype": placement.dtype}
    if model.kind != "cola":
        return {}
    plain = spec.algorithm in ("greedy", "sample")
    reads_q = spec.scorer in ("q", "equations-q") or spec.algorithm == "mcts-q"
    return {"values": not plain and reads_q}


def load_searcher(
    model_name: str,
    spec: SearchSpec,
    *,
    value_model: str | None = None,
    backend: str = "torch",
    verifier: str | None = None,
    judge: dict | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> Searcher:
    """The models a search runs on, placed on ``device`` in ``dtype`` ("auto": CUDA in bfloat16
    when a GPU is present, else the CPU in float32); every model of one search on one device.
    ``judge``: how to read ``verifier`` (format, step separator or tag, aggregation; flags)."""
    import cola_models as cm
    from cola_models.catalog import fingerprint
    from cola_models.devices import Placement
    from latent_search.backends.factory import BACKENDS, make_backend

    if backend not in BACKENDS:  # before loading a model: fail fast
        raise ColaError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    placement = Placement(device, dtype).resolved()  # a missing device: one line, no model work
    model = cm.load_model(model_name, device=placement.device, dtype=placement.dtype)
    value_backend = None
    if value_model:
        value = cm.load_model(value_model, device=placement.device, dtype=placement.dtype)
        if getattr(value, "q", None) is None:
            raise ColaError(f"--value-model {value_model} has no Q head")
        if value.tokenizer.get_vocab() != model.tokenizer.get_vocab():
            raise ColaError("--value-model must share the searched model's tokenizer")
        value_backend = make_backend("torch", value)
    _needs_q(model, spec, value_model)
    # A trained model knows the prompt format it was trained with; a random preset has none.
    template = model.generation_defaults.get("prompt_template", "{question}")
    searcher = Searcher(
        model=model,
        backend=make_backend(backend, model, **_backend_opts(backend, model, spec, placement)),
        value_backend=value_backend,
        template=template,
        context=model.backbone.hf_config.max_position_embeddings,
        fingerprint=fingerprint(model_name),
    )
    _reward(searcher, spec, verifier, placement, judge or {})
    return searcher
