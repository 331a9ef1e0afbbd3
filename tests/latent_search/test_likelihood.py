"""The model's own likelihood as a gold-free scorer: what it scores (the text after the prompt,
under the LM head), that its work is charged, and that searches select by it."""

import json

import pytest
import torch
from typer.testing import CliRunner

import cola_models as cm
from latent_search.backends.likelihood import likelihood_scorer, mean_token_probs
from latent_search.backends.torch_backend import TorchBackend
from latent_search.search import SearchSpec, run_search


@pytest.fixture(scope="module")
def model():
    return cm.build_model("tiny", seed=0)


def _direct(model, seq, start):
    """The definition, one sequence at a time, without padding."""
    ids = torch.tensor([seq])
    with torch.no_grad():
        h, _ = model.backbone(ids, torch.ones_like(ids).bool(), torch.arange(len(seq))[None])
        logp = model.backbone.token_logits(h[0, :-1]).float().log_softmax(-1)
    picked = logp[torch.arange(len(seq) - 1), ids[0, 1:]][start - 1 :]
    return float(picked.mean().exp())


def test_it_scores_the_generated_tokens_only(model):
    seqs = [[1, 40, 41, 50, 51, 52], [1, 40, 41, 42, 43, 44, 60], [1, 9, 60]]
    starts = [3, 3, 2]
    got, costs = mean_token_probs(model, seqs, starts)  # one padded batch, two prompts
    want = [_direct(model, s, n) for s, n in zip(seqs, starts)]
    assert got == pytest.approx(want, rel=1e-5)
    assert all(0.0 < x <= 1.0 for x in got)
    assert costs == [3 + 3, 4, 2 + 1]  # the shared prompt [1, 40, 41] is run once
    # a different prompt before the same answer changes the score only through the context
    assert mean_token_probs(model, [[1, 40, 41, 50, 51, 52]], [1])[0] != pytest.approx(got[:1])
    assert mean_token_probs(model, [[1, 40]], [2]) == ([1.0], [2])  # nothing generated yet


def test_best_of_n_keeps_the_most_likely_sample_and_charges_its_work(model, monkeypatch):
    from eval.tasks import ArithTask

    def no_gold(*args, **kwargs):
        raise AssertionError("a scorer read the gold answer")

    monkeypatch.setattr(ArithTask, "reward", no_gold)
    backend = TorchBackend(model)
    spec = SearchSpec("best-of-n", n=4, max_new_tokens=6, scorer="likelihood", seed=1)
    prompt = [1, 40, 41]
    (res,) = run_search(backend, [prompt], spec, scorer=likelihood_scorer(model), answer_fn=str)
    scores = res.stats["scores"]
    assert len(scores) == 4 and not res.oracle
    assert _direct(model, prompt + res.tokens, len(prompt)) == pytest.approx(max(scores), rel=1e-5)
    assert res.tokens_used > backend.usage.tokens  # the scoring forward passes are charged


def test_likelihood_needs_the_model_and_votes_only_in_best_of_n():
    with pytest.raises(ValueError, match="needs a scorer built from the searched model"):
        run_search(None, [[1]], SearchSpec("best-of-n", scorer="likelihood"))
    with pytest.raises(ValueError, match="for best-of-n"):
        SearchSpec("beam", scorer="likelihood-vote")


@pytest.mark.parametrize("search", ["best-of-n", "beam"])
def test_the_cli_searches_by_likelihood(search):
    from latent_search_cli.app import app

    args = ["solve", "1+1=", "--model", "tiny", "--max-new-tokens", "4", "--json"]
    res = CliRunner().invoke(app, [*args, "--search", search, "--scorer", "likelihood"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["oracle"] is False
