"""The verifier: what it learns from, what its labels may read, and that the scorer it becomes
ranks and plugs into search without ever seeing a gold answer."""

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

import cola_models as cm
from cola_models.errors import ColaError
from train.value_labels import step_ends
from train.verifier import (
    VerifierConfig,
    heldout_auc,
    pairwise_loss,
    verifier_loss,
)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("verifier-lm")
    model = cm.build_model("tiny", seed=0)
    cm.PlainLM(copy.deepcopy(model.backbone.lm), model.tokenizer).save_pretrained(root / "lm")
    return root / "lm"


def _rows(n_problems, offset=0, right_word="yes"):
    """Toy task: a right sample ends in ``right_word``, a wrong one in the other word."""
    rows = []
    other = {"yes": "no", "no": "yes"}[right_word]
    for p in range(n_problems):
        for j, right in enumerate([True, False, True, False]):
            word = right_word if right else other
            rows.append(
                {
                    "p": p + offset,
                    "text": f"Q {p} {j}\nA: {word}",
                    "reward": float(right),
                    "answer": word,
                }
            )
    return rows


def test_a_verifier_trained_on_a_toy_task_ranks_the_right_answer_first(lm_dir):
    from cola_models.reward_model import reward_model_from_lm

    rm = reward_model_from_lm(lm_dir, seed=0)
    cfg = VerifierConfig(step_labels=False)
    opt = torch.optim.AdamW(rm.model.parameters(), lr=3e-3)
    # Make "right" the word the untrained model prefers less, so that ranking must be learned.
    yes, no = rm.score_texts(["Q 0 0\nA: yes", "Q 0 0\nA: no"])[0]
    word = "no" if yes > no else "yes"
    held = _rows(6, offset=100, right_word=word)
    assert heldout_auc(rm, held)["auc_within"] < 0.5
    for _ in range(40):
        loss, _ = verifier_loss(rm, _rows(8, right_word=word), [], cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rm.model.eval()
    assert heldout_auc(rm, held)["auc_within"] == 1.0


def test_the_pairwise_term_is_zero_when_all_samples_agree():
    final = torch.tensor([0.3, -1.2, 2.0, 0.1], requires_grad=True)
    group = torch.tensor([0, 0, 1, 1])
    for right in (torch.tensor([True] * 4), torch.tensor([False] * 4)):
        loss = pairwise_loss(final, right, group)
        loss.backward()
        assert loss.item() == 0.0 and torch.equal(final.grad, torch.zeros(4))
    mixed = pairwise_loss(final, torch.tensor([True, False, False, False]), group)
    assert mixed.item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(-1.5)).item())


def test_step_labels_come_from_training_problems_only():
    from eval.tasks import get_task

    (train,) = get_task("arith").generate(1, seed=0, split="train", levels=(2,))
    (test,) = get_task("arith").generate(1, seed=0, split="test", levels=(2,))
    (a, op, b, r), (c, op2, d, r2) = train.data["steps"]
    good = f"Question: {train.question}\nAnswer: {a}{op}{b}={r}. {c}{op2}{d}={r2}. \\boxed{{{r2}}}"
    assert [lab for _, lab in step_ends(train, good, right=True)] == [1.0, 1.0]
    bad = good.replace(f"={r}.", f"={r + 1}.", 1)  # first step's result wrong
    assert [lab for _, lab in step_ends(train, bad, right=False)] == [0.0, 0.0]
    with pytest.raises(ColaError, match="held-out problem reached the label code"):
        step_ends(test, good, right=True)


def test_the_verifier_scorer_never_reads_a_gold_answer(lm_dir, monkeypatch):
    from cola_models.reward_model import reward_model_from_lm
    from eval.tasks import ArithTask
    from latent_search.backends.reward import reward_scorer
    from latent_search.backends.torch_backend import TorchBackend
    from latent_search.search import SearchSpec, run_search

    def no_gold(*args, **kwargs):
        raise AssertionError("a scorer read the gold answer")

    monkeypatch.setattr(ArithTask, "reward", no_gold)
    model = cm.build_model("tiny", seed=0)
    backend = TorchBackend(model)
    rm = reward_model_from_lm(lm_dir, seed=0)
    scorer = reward_scorer(rm, backend.decode)
    spec = SearchSpec("best-of-n", n=3, max_new_tokens=6, scorer="verifier")
    (res,) = run_search(backend, [[1, 40, 41]], spec, scorer=scorer, answer_fn=str)
    assert len(res.stats["scores"]) == 3 and not res.oracle
    assert res.tokens_used > backend.usage.tokens  # the verifier's own tokens are charged too


def test_an_external_reward_model_scores_through_the_cli(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from latent_search_cli.app import app

    tok = cm.build_model("tiny", seed=0).tokenizer
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "rm", safe_serialization=True)
    tok.save_pretrained(tmp_path / "rm")
    runner = CliRunner()
    args = ["solve", "1+1=", "--model", "tiny", "--max-new-tokens", "4", "--json"]
    res = runner.invoke(
        app,
        [
            *args,
            "--search",
            "best-of-n",
            "--n",
            "3",
            "--scorer",
            "verifier",
            "--verifier",
            str(tmp_path / "rm"),
        ],
    )
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)["stats"]["scores"]
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)
    # A causal LM directory is not a reward model: one line, exit 2.
    cm.build_model("tiny", seed=0).save_pretrained(tmp_path / "cola")
    bad = runner.invoke(
        app,
        [*args, "--search", "beam", "--scorer", "verifier", "--verifier", str(tmp_path / "cola")],
    )
    assert bad.exit_code == 2 and "not a sequence-classification reward model" in bad.output


def test_a_corrupt_sample_cache_is_a_one_line_error(tmp_path):
    from train.verifier import cached_samples

    (tmp_path / "samples.jsonl").write_text(
        '{"p": 0, "text": "x", "reward": 1, "answer": "1"}\nnot json\n'
    )
    with pytest.raises(ColaError, match=r"samples.jsonl:2 is not a sample row"):
        cached_samples(
            tmp_path / "samples.jsonl", None, [], VerifierConfig(), 0, "verifier_samples"
        )


def test_synthetic_rows_are_labelled_by_the_task_reward_and_train_only():
    import random

    from eval.tasks import get_task
    from train.negatives import swapped_number
    from train.verifier import synthetic_rows

    task = get_task("arith")
    problems = task.generate(40, seed=5, split="train")
    rows = synthetic_rows(problems, None, seed=0)
    assert sum(r["reward"] == 1.0 for r in rows) == len(problems)  # every gold solution
    assert sum(r["reward"] == 0.0 for r in rows) >= len(problems)  # most get both variants
    for r in rows:  # the label is the task's own verdict on the text
        assert task.reward(problems[r["p"]], r["text"]) == r["reward"]
    assert rows == synthetic_rows(problems, None, seed=0)  # a pure function of the seed
    test_problem = task.generate(1, seed=5, split="test")[0]
    with pytest.raises(ColaError, match="held-out"):
        swapped_number(test_problem, random.Random(0))
