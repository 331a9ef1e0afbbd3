import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from eval.prompts import PROMPT_TEMPLATE, format_example, format_prompt
from eval.tasks import (
    TASKS,
    ArithTask,
    CountdownTask,
    Problem,
    get_task,
    split_of,
)
from eval.tasks.countdown_expr import ExprError, evaluate, solves

ARITH = ArithTask()
COUNTDOWN = CountdownTask()
MAX_SOLUTION = {1: 120, 2: 120, 3: 160, 4: 200}

ADVERSARIAL = [
    "",
    "no box here",
    "\\boxed{",
    "\\boxed{3+5",
    "\\boxed{}",
    "\\boxed{{}",
    "}}}\\boxed}{",
    "\\boxed{__import__('os')}",
    "\\boxed{__import__('os').system('echo hi')}",
    "\\boxed{9**9**9}",
    "\\boxed{9^9^9}",
    "\\boxed{" + "9" * 5000 + "}",
    "\\boxed{" + "(" * 500 + "1" + ")" * 500 + "}",
    "\\boxed{" + "-" * 150 + "1}",
    "\\boxed{1/0}",
    "\\boxed{5/(3-3)}",
    "\\boxed{2.5*4}",
    "\\boxed{lambda: 1}",
    "\\boxed{\\frac{1}{2}}",
    "x" * 10_000,
    "\\boxed{" + "1+" * 5000 + "1}",
    "\\boxed x5",
    "\\boxed{1=2=3}",
    "\x00\\boxed{\x00}",
]


# ------------------------------------------------------------------------------------ interface


def test_prompt_format():
    assert PROMPT_TEMPLATE == "Question: {question}\nAnswer:"
    assert format_prompt("What is 1+1?") == "Question: What is 1+1?\nAnswer:"
    p = ARITH.generate(1, seed=3)[0]
    prompt, completion = format_example(p)
    assert prompt == format_prompt(p.question)
    assert completion == " " + p.solution
    hash(p)  # Problem stays hashable despite its dict field


def test_get_task_and_registry():
    assert set(TASKS) == {"arith", "countdown"}
    assert get_task("arith") is TASKS["arith"] and get_task("countdown") is TASKS["countdown"]
    assert TASKS["arith"].levels == (1, 2, 3, 4) and TASKS["countdown"].levels == (1, 2, 3)
    with pytest.raises(ValueError) as info:
        get_task("gsm8k")
    msg = str(info.value)
    assert "\n" not in msg and "arith" in msg and "countdown" in msg


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        ARITH.generate(3, seed=0, split="valid")
    with pytest.raises(ValueError):
        COUNTDOWN.generate(3, seed=0, levels=(4,))
    with pytest.raises(ValueError):
        ARITH.generate(3, seed=0, levels=())
    assert ARITH.generate(0, seed=0) == []


# ---------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("task", [ARITH, COUNTDOWN], ids=lambda t: t.name)
def test_generation_is_deterministic(task):
    a = task.generate(200, seed=7, split="train")
    b = task.generate(200, seed=7, split="train")
    assert a == b
    assert [p.id for p in a] == [f"{task.name}-train-s7-{i}" for i in range(200)]
    c = task.generate(200, seed=8, split="train")
    assert [p.question for p in a] != [p.question for p in c]
    # a prefix of a longer request is the same list: ids are stable as n grows
    assert task.generate(50, seed=7, split="train") == a[:50]


def test_generation_does_not_depend_on_the_process_hash_seed():
    code = (
        "import hashlib; from eval.tasks import TASKS; "
        "ps = [p for t in TASKS.values() for p in t.generate(50, seed=3, split='test')]; "
        "print(hashlib.sha256(repr(ps).encode()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hs},
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hs in ("1", "2")
    }
    assert len(outs) == 1


def test_split_of_is_stable_and_roughly_ten_percent():
    assert split_of("Use 3, 5, 2 to make 16.") == split_of("Use 3, 5, 2 to make 16.")
    splits = Counter(split_of(f"question {i}") for i in range(5000))
    assert 0.07 < splits["test"] / 5000 < 0.13


@pytest.mark.parametrize("task", [ARITH, COUNTDOWN], ids=lambda t: t.name)
def test_splits_are_disjoint(task):
    train = task.generate(3000, seed=0, split="train")
    test = task.generate(300, seed=0, split="test")
    assert all(split_of(p.question) == "train" for p in train)
    assert all(split_of(p.question) == "test" for p in test)
    train_q = [p.question for p in train]
    test_q = [p.question for p in test]
    assert len(set(train_q)) == len(train_q) and len(set(test_q)) == len(test_q)
    assert not set(train_q) & set(test_q)
    # other seeds never leak into the other split either
    assert not {p.question for p in task.generate(300, seed=1, split="test")} & set(train_q)
    # the default mix covers every level
    assert {p.level for p in train} == set(task.levels)


# ---------------------------------------------------------------------------------------- arith


def _recompute_arith(p: Problem) -> int:
    """Replay the recorded steps, checking every step's arithmetic and that each operand is either
    stated in the question or an earlier result."""
    stated = {int(x) for x in re.findall(r"\d+", p.question)}
    results: set[int] = set()
    value = None
    for a, op, b, r in p.data["steps"]:
        for operand in (a, b):
            assert operand in stated or operand in results, (p.question, operand)
        if op == "+":
            assert a + b == r
        elif op == "-":
            assert a - b == r
        elif op == "*":
            assert a * b == r
        else:
            assert op == "/" and b != 0 and a % b == 0 and a // b == r
        assert r > 0
        results.add(r)
        value = r
    return value


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_arith_level_problems_are_valid(level):
    problems = ARITH.generate(400, seed=level, levels=(level,))
    cap = {1: 200, 2: 200, 3: 500, 4: 999}[level]
    for p in problems:
        assert p.task == "arith" and p.level == level
        assert len(p.data["steps"]) == level
        assert max(r for *_, r in p.data["steps"]) <= cap
        assert _recompute_arith(p) == int(p.answer)
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}")
        assert len(p.solution) < MAX_SOLUTION[level]
        assert ARITH.reward(p, p.solution) == 1.0
        assert ARITH.reward(p, " " + p.solution + "\n") == 1.0
        assert ARITH.reward(p, f"\\boxed{{{int(p.answer) + 1}}}") == 0.0
        assert ARITH.reward(p, p.solution.replace("\\boxed", "")) == 0.0


def test_arith_level_mix_and_variety():
    problems = ARITH.generate(2000, seed=0)
    share = Counter(p.level for p in problems)
    for level, w in {1: 0.3, 2: 0.3, 3: 0.25, 4: 0.15}.items():
        assert abs(share[level] / 2000 - w) < 0.05
    ops = Counter(op for p in problems for _, op, _, _ in p.data["steps"])
    assert all(ops[o] > 100 for o in "+-*/")
    assert len({p.question.split()[0] for p in problems}) >= 15  # many names


def test_arith_reward_answer_formats():
    p = ARITH.generate(1, seed=0)[0]
    ans = int(p.answer)
    for good in (
        f"\\boxed{{{ans}}}",
        f"\\boxed{{ {ans}.0 }}",
        f"\\boxed{{${ans}}}",
        f"so \\boxed{{{ans - 1}}} no wait \\boxed{{{ans}}}",
        f"\\boxed{{\\${ans}}}",
    ):
        assert ARITH.reward(p, good) == 1.0, good
    for bad in (
        f"\\boxed{{{ans}}} then \\boxed{{{ans + 1}}}",
        f"\\boxed{{{ans}.5}}",
        f"{ans}",
        f"\\boxed{{{ans}/1}}",
        f"\\boxed{{x={ans}}}",
    ):
        assert ARITH.reward(p, bad) == 0.0, bad
    q = Problem("arith", "x", "q", "1200. \\boxed{1200}", "1200", 4, {"steps": []})
    assert ARITH.reward(q, "\\boxed{1,200}") == 1.0


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_arith_reward_never_raises(text):
    p = ARITH.generate(1, seed=0)[0]
    assert ARITH.reward(p, text) == 0.0
    assert ARITH.reward(p, None) == 0.0  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ countdown


@pytest.mark.parametrize("level", [1, 2, 3])
def test_countdown_level_problems_are_valid(level):
    problems = COUNTDOWN.generate(400, seed=level, levels=(level,))
    count = {1: 3, 2: 4, 3: 4}[level]
    for p in problems:
        nums, target = p.data["numbers"], p.data["target"]
        assert p.task == "countdown" and p.level == level and len(nums) == count
        assert p.answer == str(target)
        assert p.question == f"Use {', '.join(map(str, nums))} to make {target}."
        expr = p.data["expression"]
        assert p.solution.endswith(f"\\boxed{{{expr}}}")
        result = evaluate(expr)  # recompute independently of the generator
        assert result.value == target and sorted(result.numbers) == sorted(nums)
        assert len(p.solution) < MAX_SOLUTION[level]
        assert COUNTDOWN.reward(p, p.solution) == 1.0
        assert COUNTDOWN.reward(p, f"\\boxed{{{expr} = {target}}}") == 1.0
        assert COUNTDOWN.reward(p, f"\\boxed{{{expr} = {target + 1}}}") == 0.0
        assert COUNTDOWN.reward(p, f"\\boxed{{({expr})+1}}") == 0.0 or 1 in nums
        assert COUNTDOWN.reward(p, f"\\boxed{{{target}}}") == 0.0  # target never among numbers
    if level == 3:
        assert min(p.data["target"] for p in problems) >= 100


def _cd(numbers, target):
    return Problem(
        "countdown", "t", "q", "", str(target), 1, {"numbers": numbers, "target": target}
    )


def test_countdown_reward_rules():
    p = _cd([3, 5, 2], 16)
    assert COUNTDOWN.reward(p, "3+5=8. 8*2=16. \\boxed{(3+5)*2}") == 1.0
    assert COUNTDOWN.reward(p, "\\boxed{2*(5+3)}") == 1.0
    assert COUNTDOWN.reward(p, "\\boxed{(3 + 5) \\times 2 = 16}") == 1.0
    assert COUNTDOWN.reward(p, "\\boxed{(3+5)*2=17}") == 0.0
    assert COUNTDOWN.reward(p, "\\boxed{3+5+2}") == 0.0  # wrong value
    assert COUNTDOWN.reward(p, "\\boxed{(3+5)*2} \\boxed{3+5}") == 0.0  # last box counts
    assert COUNTDOWN.reward(p, "\\boxed{3+5} \\boxed{(3+5)*2}") == 1.0
    assert COUNTDOWN.reward(p, "\\boxed{8*2}") == 0.0  # 8 not given
    assert COUNTDOWN.reward(p, "\\boxed{16}") == 0.0
    assert COUNTDOWN.reward(p, "\\boxed{5*3+5-2-2}") == 0.0  # numbers used twice
    assert COUNTDOWN.reward(_cd([3, 5, 5], 16), "\\boxed{3*5+5/5}") == 0.0  # 5 given twice, used 3x
    assert COUNTDOWN.reward(_cd([3, 5, 5], 20), "\\boxed{3*5+5}") == 1.0  # duplicates allowed
    assert COUNTDOWN.reward(_cd([3, 5, 2], 8), "\\boxed{3+5}") == 1.0  # a subset is fine
    assert COUNTDOWN.reward(_cd([6, 4, 3], 8), "\\boxed{6/3*4}") == 1.0
    assert COUNTDOWN.reward(_cd([7, 2, 2], 7), "\\boxed{7/2*2}") == 1.0  # exact fractions
    assert COUNTDOWN.reward(_cd([3, 5, 2], 16), "\\boxed{-(3-5)*8}") == 0.0
    assert COUNTDOWN.reward(_cd([3, 5, 2], 4), "\\boxed{-(3-5)*2}") == 1.0  # unary minus ok


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_countdown_reward_never_raises(text):
    p = _cd([3, 5, 2, 9], 16)
    assert COUNTDOWN.reward(p, text) == 0.0
    assert COUNTDOWN.reward(p, None) == 0.0  # type: ignore[arg-type]


def test_safe_parser():
    assert evaluate("(3+5)*2").value == 16
    assert evaluate(" 1 - 2 - 3 ").value == -4  # left-associative
    assert evaluate("8/2/2").value == 2
    assert evaluate("2+3*4").value == 14
    assert evaluate("7/2").value == Fraction(7, 2)
    assert evaluate("--3").value == 3
    assert evaluate("(3+5)*2").numbers == (3, 5, 2)
    for bad in (
        "",
        "()",
        "3+",
        "3 5",
        "(3",
        "3)",
        "9**9",
        "2^3",
        "1/0",
        "1/(2-2)",
        "a",
        "3.0",
        "__import__('os')",
        "1" * 13,
        "1+" * 150 + "1",
        "(" * 60 + "1" + ")" * 60,
    ):
        with pytest.raises(ExprError):
            evaluate(bad)
    assert not solves("9" * 10_000, [9], 9)
    assert not solves(None, [1], 1)  # type: ignore[arg-type]
