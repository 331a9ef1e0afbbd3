"""Every search algorithm and scorer on a model placed by --device / --dtype: bfloat16 on the
CPU here, and CUDA (marked, run where a GPU is). The ledger hands search code host tensors."""

import pytest
import torch

from latent_search.search import SearchSpec, run_search

QUESTIONS = [
    "Tom has 3 apples. Ann gives him 4 more. How many apples does Tom have now?",
    "A box holds 12 pens. Sam takes 5 pens out. How many pens are left in the box?",
]
CASES = [
    ("greedy", {}),
    ("sample", {}),
    ("best-of-n", dict(n=3, scorer="equations-likelihood")),
    ("best-of-n", dict(n=3, scorer="q")),
    ("beam", dict(candidates="token", beam_width=3, expand_k=8, scorer="equations")),
    ("beam", dict(candidates="sampled", beam_width=2, expand_k=3, scorer="likelihood")),
    ("beam", dict(scorer="q", beam_width=2)),
    ("mcts", dict(rounds=6, scorer="likelihood")),
    ("mcts", dict(rounds=6, gumbel=True, scorer="q")),
    ("mcts", dict(rounds=6, candidates="token", scorer="equations")),
    ("mcts-q", dict(rounds=6, scorer="q")),
    ("mcts-q", dict(rounds=6, scorer="equations-likelihood")),
]
IDS = [f"{a}-{e.get('scorer', 'none')}-{e.get('candidates', '')}{'-gumbel' * e.get('gumbel', 0)}"
       for a, e in CASES]  # fmt: skip


def _searchers(device: str, dtype: str):
    from eval.searcher import load_searcher

    cache = {}

    def get(spec):
        key = (spec.scorer, spec.algorithm == "mcts-q")
        if key not in cache:
            cache[key] = load_searcher("tiny-arith", spec, device=device, dtype=dtype)
        return cache[key]

    return get


def _run_all(device: str, dtype: str, algorithm: str, extra: dict):
    spec = SearchSpec(algorithm=algorithm, max_new_tokens=48, **extra)
    searcher = _searchers(device, dtype)(spec)
    assert searcher.model.device.type == device and searcher.model.dtype == dtype
    ids = searcher.encode(QUESTIONS, spec.max_new_tokens)
    results = run_search(searcher.backend, ids, spec, **searcher.search_args())
    assert len(results) == 2
    for r in results:
        assert r.tokens and r.tokens_used > 0 and isinstance(r.text, str)
        if r.tree is not None:
            assert all(isinstance(p, float) for p in r.tree.prior)
    return results


@pytest.mark.parametrize(("algorithm", "extra"), CASES, ids=IDS)
def test_every_search_runs_in_bfloat16_on_the_cpu(algorithm, extra):
    _run_all("cpu", torch.bfloat16, algorithm, extra)


@pytest.mark.cuda
@pytest.mark.parametrize(("algorithm", "extra"), CASES, ids=IDS)
def test_every_search_runs_on_cuda(algorithm, extra):
    _run_all("cuda", torch.bfloat16, algorithm, extra)


def test_the_ledger_hands_search_float32_host_tensors(tiny_arith):
    from cola_models.loading import load_model
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.ledger import Ledger

    model = load_model("tiny-arith", device="cpu", dtype="bf16")
    backend = TorchBackend(model)
    assert backend.prior([[1, 5, 6]]).logits.dtype == torch.bfloat16  # the backend's own
    ledger = Ledger(backend, 1)
    prior = ledger.prior([0], [[1, 5, 6]])
    assert prior.logits.dtype == prior.q.dtype == torch.float32
    assert prior.logits.device.type == prior.q.device.type == "cpu"
    toks = ledger.expand([0], [[1, 5, 6]], torch.tensor([[0, 1]]))
    assert toks.device.type == "cpu" and toks.shape == (1, 2)
