"""One ledger: every model call of a search is charged to the problem it served, expansions and
valuations included, and ``budget`` binds (or is refused) for every algorithm."""

import pytest
from counting_backend import Counting
from toy_world import ToyBackend

from latent_search.search import SearchSpec, run_search

# Judged by the toy's Q (its texts have no equations), over first-token steps unless named.
Q = dict(scorer="q")
SEARCHES = [
    SearchSpec("greedy", max_new_tokens=8),
    SearchSpec("sample", max_new_tokens=8),
    SearchSpec("best-of-n", n=4, max_new_tokens=8, **Q),
    SearchSpec("beam", max_new_tokens=8, expand_k=3, beam_width=4, candidates="first-token", **Q),
    SearchSpec("mcts", rounds=12, max_new_tokens=8, expand_k=3, **Q),
    SearchSpec("mcts", rounds=12, max_new_tokens=8, expand_k=3, gumbel=True, **Q),
    SearchSpec("mcts-q", rounds=12, max_new_tokens=8, **Q),
    SearchSpec("beam", max_new_tokens=8, expand_k=3, candidates="sampled", **Q),
    SearchSpec("mcts", rounds=12, max_new_tokens=8, expand_k=3, candidates="sampled", **Q),
]


@pytest.mark.parametrize(
    "spec",
    SEARCHES,
    ids=lambda s: s.algorithm + ("-gumbel" * s.gumbel) + ("-sampled" * (s.candidates == "sampled")),
)
def test_per_problem_tokens_add_up_to_all_model_work(spec):
    be = Counting(ToyBackend(n_actions=4, horizon=4))
    results = run_search(be, [[0], [1], [2]], spec, answer_fn=str)
    assert sum(r.tokens_used for r in results) == sum(be.totals.values()) > 0
    if spec.algorithm in ("beam", "mcts", "mcts-q") and spec.candidates == "first-token":
        assert be.totals["expand"] > 0  # the toy charges its expansions: they reach the ledger


def test_per_problem_tokens_on_the_torch_backend_match_its_usage():
    import cola_models as cm
    from latent_search.backends.torch_backend import TorchBackend

    be = TorchBackend(cm.build_model("tiny", seed=0, q_head=True))
    prompts = [[1, 40, 41, 42], [1, 50, 51], [1, 60]]
    for spec in SEARCHES:
        before = be.usage.tokens
        results = run_search(be, prompts, spec, answer_fn=str)
        assert sum(r.tokens_used for r in results) == be.usage.tokens - before, spec.algorithm


@pytest.mark.parametrize("algorithm", ["best-of-n", "beam", "mcts", "mcts-q"])
def test_a_budget_binds_every_search_within_one_step(algorithm):
    """A problem starts no step once its spend reached the budget, so it passes the budget by
    at most one step (docs/search.md says what a step is for each search). One step's cost is
    measured as the most that one more step (sample, beam step, simulation, round) adds to a
    search without a budget."""

    def run(size: int, budget=None):
        backend = ToyBackend(n_actions=4, horizon=6)
        if algorithm == "beam":  # single-token steps, so that a beam takes several rounds
            from latent_search.beam import BeamConfig, beam_search
            from latent_search.scorers import q_value_fn

            cfg = BeamConfig(expand_k=3, step_tokens=0, max_new_tokens=8, max_steps=size,
                             budget=budget)  # fmt: skip
            return beam_search(backend, [[0]], cfg, q_value_fn(backend))[0]
        if algorithm == "mcts-q":  # no macro-steps: the toy's zero Q is "confident" everywhere
            from latent_search.mcts_q import MCTSQConfig, mcts_q
            from latent_search.scorers import q_value_scorer

            cfg = MCTSQConfig(
                rounds=size, max_depth=8, rollout_tokens=8, macro_tokens=0, budget=budget
            )
            return mcts_q(backend, [[0]], cfg, q_value_scorer(backend))[0]
        spec = SearchSpec(algorithm, n=size, rounds=size, max_new_tokens=8, expand_k=3,
                          budget=budget, scorer="q")  # fmt: skip
        return run_search(backend, [[0]], spec, answer_fn=str)[0]

    free = [run(k).tokens_used for k in range(1, 25)]
    step = max(b - a for a, b in zip([0, *free], free))
    budget = 12
    assert free[-1] > budget + step  # without the budget the search would spend far more
    capped = run(24, budget).tokens_used
    assert budget <= capped <= budget + step, (free, step, capped)


@pytest.mark.parametrize("algorithm", ["greedy", "sample"])
def test_a_budget_is_refused_where_nothing_can_bind(algorithm):
    with pytest.raises(ValueError, match="--budget does not apply"):
        SearchSpec(algorithm, budget=100)


def test_best_of_n_under_a_budget_draws_fewer_samples():
    spec = SearchSpec("best-of-n", n=8, max_new_tokens=8, budget=12, scorer="q")
    (res,) = run_search(ToyBackend(n_actions=4, horizon=4), [[0]], spec, answer_fn=str)
    assert 1 <= len(res.stats["scores"]) < 8


def test_a_best_of_n_budget_counts_its_judge_before_drawing_again(tiny_arith):
    """The judge's pass (here the model's own likelihood: a forward pass per sample) is charged
    in the round that drew the sample, so the spend passes the budget by at most one sample and
    its judge pass (before: every sample drawn under the budget, then all of them judged)."""
    from latent_search.backends.likelihood import likelihood_scorer
    from latent_search.backends.torch_backend import TorchBackend

    backend = TorchBackend(tiny_arith, values=False)
    prompt = tiny_arith.tokenizer("Tom has 3 apples. Ann gives him 4 more. How many apples?")[
        "input_ids"
    ]
    budget, new = 300, 64
    spec = SearchSpec("best-of-n", n=16, max_new_tokens=new, budget=budget, scorer="likelihood")
    (res,) = run_search(backend, [prompt], spec, scorer=likelihood_scorer(tiny_arith))
    one_step = 2 * (len(prompt) + new)  # a sample's rollout and its judge pass, at most
    assert budget <= res.tokens_used <= budget + one_step
    assert 1 < len(res.stats["scores"]) < 16
