"""Dense value labels: every answer token carries the label of the step it belongs to, a fault
stays found, and gold steps reach only training problems' labels."""

import pytest

import cola_models as cm
from eval.tasks import get_task
from train.value_labels import dense_labels, sample_labels, token_ends


def _two_step(split="train"):
    (p,) = get_task("arith").generate(1, seed=0, split=split, levels=(2,))
    (a, op, b, r), (c, op2, d, r2) = p.data["steps"]
    return p, f"{a}{op}{b}={r}. {c}{op2}{d}={r2}. \\boxed{{{r2}}}", r


def test_dense_labels_take_the_step_they_belong_to():
    ends = [(10, 1.0), (20, 0.0)]
    assert dense_labels(ends, [3, 10, 11, 20, 25], outcome=0.0) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert dense_labels([], [1, 2], outcome=1.0) == [1.0, 1.0]


def test_a_wrong_result_turns_its_step_and_every_later_token_off_track():
    p, good, r = _two_step()
    prompt = f"Question: {p.question}\nAnswer: "
    bad = good.replace(f"={r}.", f"={r + 1}.", 1)
    tok = cm.load_model("tiny-arith").tokenizer
    for text, right, first_step in ((good, True, 1.0), (bad, False, 0.0)):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ends = token_ends(tok, prompt, ids)
        assert ends[-1] == len(prompt + tok.decode(ids, skip_special_tokens=True))
        labels = sample_labels(p, prompt, tok.decode(ids), ends, right)
        assert labels[0] == first_step and labels[-1] == float(right)
        assert set(labels) == {float(right)}  # wrong from the first step on: all zero


def test_held_out_problems_never_get_step_labels():
    from cola_models.errors import ColaError

    p, good, _ = _two_step("test")
    with pytest.raises(ColaError, match="held-out"):
        sample_labels(p, "Question: x\nAnswer: ", good, [5], True)
