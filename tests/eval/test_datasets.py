"""Benchmark loading: real MATH-500/GSM8K files, line-level validation, the registry, prompts."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from eval.datasets import (
    BenchmarkProblem,
    default_data_dir,
    get_benchmark,
    load_gsm8k,
    load_math500,
)
from eval.prompts import PROMPT_TEMPLATES, get_template
from eval.prompts import format_prompt as task_prompt


def format_prompt(problem, template=None):
    return task_prompt(problem.question, template, task=problem.task)


MATH_ROW = {
    "problem": "What is $1+1$?",
    "solution": "It is $\\boxed{2}$.",
    "answer": "2",
    "subject": "Prealgebra",
    "level": 1,
    "unique_id": "test/prealgebra/1.json",
}
GSM_ROW = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"}


def _write(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def _real(name: str) -> Path:
    path = default_data_dir() / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


# -------------------------------------------------------------------------------- real files


def test_math500_file_loads_completely():
    bench = load_math500(_real("math500.jsonl"))
    assert len(bench) == 500 and bench.warnings == []
    p = bench[0]
    assert p.task == "math500" and p.id == p.unique_id and p.id.endswith(".json")
    assert p.question and p.answer and p.solution
    assert isinstance(p.level, int) and 1 <= p.level <= 5 and p.subject
    assert p.groups == {"level": p.level, "subject": p.subject}
    assert len({q.id for q in bench}) == 500


def test_gsm8k_file_references_are_the_hash_numbers():
    bench = load_gsm8k(_real("gsm8k_train.jsonl"), limit=300)
    assert len(bench) == 300 and bench.warnings == []
    assert bench[0].answer == "72" and bench[0].id == "gsm8k-0"
    assert all("####" not in p.solution and "," not in p.answer for p in bench)
    assert all(p.answer.lstrip("-").replace(".", "", 1).isdigit() for p in bench)


# ------------------------------------------------------------------------------- validation


def _bad_math_file(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "m.jsonl",
        [
            MATH_ROW,  # line 1
            "{not json",  # 2
            {**MATH_ROW, "problem": None},  # 3: missing
            {k: v for k, v in MATH_ROW.items() if k != "answer"},  # 4: missing
            {**MATH_ROW, "answer": ["2"]},  # 5: wrong type
            [1, 2],  # 6: not an object
            "",  # 7: blank, ignored
            {**MATH_ROW, "level": "hard"},  # 8: bad level
            {**MATH_ROW, "unique_id": None, "level": "Level 3", "answer": 7},  # 9: fine
        ],
    )


def test_malformed_lines_are_skipped_with_numbered_warnings(tmp_path, caplog):
    path = _bad_math_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="eval.datasets"):
        bench = load_math500(path)
    assert [p.id for p in bench] == ["test/prealgebra/1.json", "math500-8"]
    assert bench[1].level == 3 and bench[1].answer == "7"
    lines = [int(w.split(":")[1]) for w in bench.warnings]
    assert lines == [2, 3, 4, 5, 6, 8]
    assert all(w.startswith(f"{path}:") for w in bench.warnings)
    assert "bad JSON" in bench.warnings[0]
    assert "missing field 'problem'" in bench.warnings[1]
    assert "missing field 'answer'" in bench.warnings[2]
    assert "must be a string" in bench.warnings[3]
    assert "JSON object" in bench.warnings[4]
    assert "level" in bench.warnings[5]
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 6


def test_strict_mode_fails_on_the_first_malformed_line(tmp_path):
    path = _bad_math_file(tmp_path)
    with pytest.raises(ValueError, match=rf"^{path}:2: bad JSON"):
        load_math500(path, strict=True)


def test_gsm8k_validation(tmp_path):
    path = _write(
        tmp_path / "g.jsonl",
        [
            GSM_ROW,
            {**GSM_ROW, "answer": "no final answer"},
            {**GSM_ROW, "answer": "#### five"},
            {"question": 3, "answer": "#### 3"},
            {**GSM_ROW, "answer": "a\n#### 1,200"},
        ],
    )
    bench = load_gsm8k(path)
    assert [(p.id, p.answer) for p in bench] == [("gsm8k-0", "5"), ("gsm8k-4", "1200")]
    assert bench[0].solution == "2+3=5"
    assert [w.split(":")[1] for w in bench.warnings] == ["2", "3", "4"]
    with pytest.raises(ValueError, match=r":2: field 'answer' has no '#### N'"):
        load_gsm8k(path, strict=True)


def test_limit_and_file_errors(tmp_path):
    path = _write(tmp_path / "m.jsonl", [MATH_ROW, {**MATH_ROW, "unique_id": "b"}, "{bad"])
    bench = load_math500(path, limit=2)
    assert len(bench) == 2 and bench.warnings == []  # stops before reading the bad line
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_math500(path, limit=bad)
    with pytest.raises(ValueError, match="no such file"):
        load_math500(tmp_path / "missing.jsonl")
    empty = _write(tmp_path / "e.jsonl", ["{bad"])
    with pytest.raises(ValueError, match="no valid math500 problems"):
        load_math500(empty)


# --------------------------------------------------------------------------------- registry


def test_procedural_benchmarks_are_held_out_and_self_grading():
    from eval.tasks import split_of

    for name in ("arith", "countdown"):
        bench = get_benchmark(name, limit=20)
        assert len(bench) == 20 and bench.name == name
        assert all(p.task == name and split_of(p.question) == "test" for p in bench)
        assert all(p.grade(p.solution) for p in bench)
        assert not bench[0].grade("\\boxed{-1}")
        assert bench[0].groups == {"level": bench[0].level}
    assert len(get_benchmark("arith")) == 500
    assert get_benchmark("arith", limit=3, seed=2)[0].id == "arith-test-s2-0"
    with pytest.raises(ValueError, match="takes no data path"):
        get_benchmark("arith", "x.jsonl")


def test_unknown_benchmark():
    with pytest.raises(ValueError, match="unknown benchmark 'mmlu'"):
        get_benchmark("mmlu")


def test_data_directory_and_environment_variable(tmp_path, monkeypatch):
    _write(tmp_path / "math500.jsonl", [MATH_ROW])
    _write(tmp_path / "gsm8k_train.jsonl", [GSM_ROW])
    assert len(get_benchmark("math500", tmp_path)) == 1
    monkeypatch.setenv("LATENT_SEARCH_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert get_benchmark("math500")[0].id == "test/prealgebra/1.json"
    gsm = get_benchmark("gsm8k")
    # Evaluating on a train split is said, not hidden, and not counted as a skipped data line.
    assert "train" in gsm.notes[0] and gsm.warnings == []
    monkeypatch.setenv("LATENT_SEARCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no math500 data in"):
        get_benchmark("math500")


def test_hub_ids_need_an_explicit_flag(monkeypatch):
    with pytest.raises(ValueError, match="allow_download=True"):
        get_benchmark("math500", "HuggingFaceH4/MATH-500")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        get_benchmark("math500", "HuggingFaceH4/MATH-500", allow_download=True)


def test_hub_loading_goes_through_the_same_validation(monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [GSM_ROW, {"question": "q"}, GSM_ROW]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    bench = get_benchmark("gsm8k", "openai/gsm8k", allow_download=True)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [p.id for p in bench] == ["gsm8k-0", "gsm8k-2"]
    assert bench.warnings == ["openai/gsm8k[test]:2: missing field 'answer'"]


# ---------------------------------------------------------------------------------- prompts


def test_bundled_models_use_the_qa_template():
    from cola_models.catalog import bundled_models

    meta = json.loads((bundled_models()["tiny-arith"] / "config.json").read_text())
    assert meta["generation"]["prompt_template"] == PROMPT_TEMPLATES["qa"]


def test_prompt_templates():
    math = BenchmarkProblem("math500", "m", "What is $\\{1\\}$?", "1")
    arith = get_benchmark("arith", limit=1)[0]
    assert format_prompt(arith) == task_prompt(arith.question)  # the training format
    boxed = format_prompt(math)
    assert boxed.startswith("Question: What is $\\{1\\}$?") and "\\boxed{}" in boxed
    assert format_prompt(math, "qa") == "Question: What is $\\{1\\}$?\nAnswer:"
    assert format_prompt(math, "Q: {question} A:") == "Q: What is $\\{1\\}$? A:"
    assert format_prompt(math, "cola").startswith("User: Please reason step by step")
    assert "####" in format_prompt(math, "hashes")
    with pytest.raises(ValueError, match="prompt template"):
        get_template("nonsense", "math500")


def test_math500_problems_grade_with_math_verify():
    pytest.importorskip("math_verify")
    p = BenchmarkProblem("math500", "m", "q", "\\frac{1}{2}")
    assert p.grade("so \\boxed{0.5}") and not p.grade("\\boxed{0.25}")


def test_a_line_that_is_not_utf8_spoils_only_itself_and_is_named(tmp_path):
    good = json.dumps(MATH_ROW).encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good + b"\n" + b'{"problem": "caf\xe9", "answer": "1"}\n' + good + b"\n")
    bench = load_math500(path)
    assert len(bench) == 2
    assert bench.warnings == [f"{path}:2: not UTF-8 text (byte 0xe9 at column 17)"]
    with pytest.raises(ValueError, match=rf"^{path}:2: not UTF-8 text"):
        load_math500(path, strict=True)
