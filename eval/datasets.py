"""Benchmark problem sets: MATH-500 and GSM8K from local JSONL (or, only when asked, the hub), the
procedural tasks' held-out problems (posed with the templates of ``eval.prompts``).

Every loader validates each line: a malformed line (bad JSON, a missing field, a wrong type) is
reported as `file:line: problem` and either skipped with a warning (kept in `Benchmark.warnings`
and logged) or, with `strict=True`, fatal (ValueError). Nothing is dropped silently.

    bench = get_benchmark("math500", "../shared/data/math500.jsonl", limit=100)
    prompts = [format_prompt(p.question, "boxed") for p in bench]
    correct = [p.grade(text) for p, text in zip(bench, outputs)]
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cola_models.errors import ColaError
from eval.tasks import Problem

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkProblem",
    "default_data_dir",
    "get_benchmark",
    "load_gsm8k",
    "load_math500",
]

log = logging.getLogger(__name__)

FILE_BENCHMARKS = ("math500", "gsm8k")
PROCEDURAL = ("arith", "countdown")
BENCHMARKS = FILE_BENCHMARKS + PROCEDURAL


@dataclass(frozen=True)
class BenchmarkProblem:
    """One problem of any benchmark, with its reference final answer and how to grade an output."""

    task: str  # "math500" | "gsm8k" | "arith" | "countdown"
    id: str  # stable across runs (resumable evaluation keys on it)
    question: str
    answer: str  # the reference final answer (GSM8K: the N of '#### N', separators removed)
    solution: str = ""  # the reference worked solution, when the source has one
    level: int | None = None
    subject: str | None = None
    unique_id: str | None = None
    # The generated problem of a procedural task: its reward (not math-verify) grades it.
    problem: Problem | None = field(default=None, compare=False, repr=False)

    @property
    def groups(self) -> dict:
        """Breakdown keys for reports: level and subject where the source has them."""
        return {
            k: v for k, v in (("level", self.level), ("subject", self.subject)) if v is not None
        }

    def grade(self, output_text: str) -> bool:
        """Is `output_text` right? Procedural tasks use their exact reward; others math-verify."""
        if self.problem is not None:
            from eval.tasks import get_task

            return get_task(self.problem.task).reward(self.problem, output_text) > 0.5
        from eval.grading import is_correct

        return is_correct(output_text, self.answer)


@dataclass
class Benchmark:
    """A loaded problem set; `warnings` holds one `file:line: problem` per skipped line."""

    name: str
    problems: list[BenchmarkProblem]
    source: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What a user should know about the set that is not a data error (e.g. a train split)."""

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[BenchmarkProblem]:
        return iter(self.problems)

    def __getitem__(self, i):
        return self.problems[i]


# ------------------------------------------------------------------------------ validation


class _Bad(Exception):
    """One malformed record; the message names the problem (the caller adds file:line)."""


def _text(row: dict, key: str, *, required: bool = True) -> str | None:
    if key not in row or row[key] is None:
        if required:
            raise _Bad(f"missing field {key!r}")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise _Bad(f"field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _Bad(f"field {key!r} is empty")
    return value


_LEVEL = re.compile(r"^(?:level\s*)?(\d+)$", re.IGNORECASE)


def _level(row: dict) -> int | None:
    """MATH levels come as 3 or "Level 3"; absent is fine, anything else is malformed."""
    value = row.get("level")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _LEVEL.match(value.strip())):
        return int(m.group(1))
    raise _Bad(f"field 'level' must be an integer or 'Level N', got {value!r}")


def _math500_row(row: dict, index: int) -> BenchmarkProblem:
    answer = row.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = str(answer)  # some dumps store integer answers as numbers
        row = {**row, "answer": answer}
    unique_id = _text(row, "unique_id", required=False)
    return BenchmarkProblem(
        task="math500",
        id=unique_id or f"math500-{index}",
        question=_text(row, "problem"),
        answer=_text(row, "answer").strip(),
        solution=_text(row, "solution", required=False) or "",
        level=_level(row),
        subject=_text(row, "subject", required=False) or _text(row, "type", required=False),
        unique_id=unique_id,
    )


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_GSM8K_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+$")


def _gsm8k_row(row: dict, index: int) -> BenchmarkProblem:
    full = _text(row, "answer")
    m = _GSM8K_FINAL.search(full)
    if m is None:
        raise _Bad("field 'answer' has no '#### N' final answer")
    final = m.group(1).replace("$", "").strip()
    if not _GSM8K_NUMBER.match(final):
        raise _Bad(f"the '#### N' final answer {final!r} is not a number")
    return BenchmarkProblem(
        task="gsm8k",
        id=f"gsm8k-{index}",
        question=_text(row, "question"),
        answer=final.replace(",", ""),  # "1,080" -> "1080"
        solution=full[: m.start()].rstrip(),
    )


_ROWS = {"math500": _math500_row, "gsm8k": _gsm8k_row}


def _convert(
    name: str, rows: Iterable[tuple[int, object]], where: str, *, strict: bool, limit: int | None
) -> Benchmark:
    """Validate (line number, decoded row or JSON error) pairs into a Benchmark."""
    make = _ROWS[name]
    bench = Benchmark(name, [], where)
    for lineno, row in rows:
        if limit is not None and len(bench.problems) >= limit:
            break
        try:
            if isinstance(row, _Bad):
                raise row
            if isinstance(row, json.JSONDecodeError):
                raise _Bad(f"bad JSON ({row.msg} at column {row.colno})")
            if not isinstance(row, dict):
                raise _Bad(f"expected a JSON object, got {type(row).__name__}")
            # ids use the 0-based line index, so skipping a bad line never renumbers the others
            bench.problems.append(make(row, lineno - 1))
        except _Bad as err:
            message = f"{where}:{lineno}: {err}"
            if strict:
                raise ColaError(message) from None
            log.warning("skipped %s", message)
            bench.warnings.append(message)
    return bench


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, decoded row, or the reason it is not one) of each non-blank line. Lines are
    decoded one by one, so bytes that are not UTF-8 spoil their own line, not the file."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield lineno, _Bad(f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                   f"{err.start + 1})")  # fmt: skip
                continue
            if not line.strip():
                continue  # blank lines (a trailing newline) hold no record
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                yield lineno, err


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ColaError(f"limit={limit!r} must be a positive integer")


def load_jsonl_benchmark(
    name: str, path: str | Path, *, strict: bool = False, limit: int | None = None
) -> Benchmark:
    """Load benchmark `name` ("math500" | "gsm8k") from a local JSONL file."""
    if name not in _ROWS:
        raise ColaError(f"unknown file benchmark {name!r}; choose one of: {', '.join(_ROWS)}")
    _check_limit(limit)
    p = Path(path)
    if not p.is_file():
        raise ColaError(f"{p}: no such file")
    try:
        bench = _convert(name, _jsonl_rows(p), str(p), strict=strict, limit=limit)
    except OSError as err:  # unreadable: permissions, a vanished mount
        raise ColaError(f"cannot read {p}: {err.strerror or err}") from err
    if not bench.problems:
        raise ColaError(f"{p}: no valid {name} problems")
    return bench


def load_math500(path: str | Path, *, strict: bool = False, limit: int | None = None) -> Benchmark:
    """MATH-500 JSONL: problem, answer (required); solution, subject, level, unique_id."""
    return load_jsonl_benchmark("math500", path, strict=strict, limit=limit)


def load_gsm8k(path: str | Path, *, strict: bool = False, limit: int | None = None) -> Benchmark:
    """GSM8K JSONL: question, answer ending in '#### N' (the reference is N)."""
    return load_jsonl_benchmark("gsm8k", path, strict=strict, limit=limit)


# ------------------------------------------------------------------------------------- hub

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_SPLITS = {"math500": (None, "test"), "gsm8k": ("main", "test")}  # (config, split)


def _load_hub(name: str, dataset_id: str, *, strict: bool, limit: int | None) -> Benchmark:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"loading {dataset_id!r} from the hub needs the datasets package: pip install datasets"
        ) from None
    config, split = _HUB_SPLITS[name]
    rows = datasets.load_dataset(dataset_id, config, split=split)
    return _convert(name, enumerate(rows, 1), f"{dataset_id}[{split}]", strict=strict, limit=limit)


# -------------------------------------------------------------------------------- registry

# File names looked for when the data path is a directory, in order.
_FILE_NAMES = {
    "math500": ("math500.jsonl", "test.jsonl"),
    "gsm8k": ("gsm8k_test.jsonl", "gsm8k.jsonl", "test.jsonl", "gsm8k_train.jsonl"),
}


def default_data_dir() -> Path:
    """$LATENT_SEARCH_DATA, else ../shared/data beside the repository root."""
    env = os.environ.get("LATENT_SEARCH_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _resolve_file(name: str, path: str | Path | None) -> tuple[Path | None, str | None]:
    """(local file, note) for a file path, a directory, or None (the default data directory)."""
    directory = default_data_dir() if path is None else Path(path)
    if path is not None and not directory.is_dir():
        return directory, None
    for fname in _FILE_NAMES[name]:
        candidate = directory / fname
        if candidate.is_file():
            note = None
            if fname.endswith("_train.jsonl"):
                note = f"{candidate}: no test file found; evaluating on the GSM8K *train* split"
            return candidate, note
    raise ColaError(
        f"no {name} data in {directory} (looked for {', '.join(_FILE_NAMES[name])}); "
        "pass a JSONL path or set LATENT_SEARCH_DATA"
    )


def get_benchmark(
    name: str,
    path: str | Path | None = None,
    *,
    limit: int | None = None,
    strict: bool = False,
    allow_download: bool = False,
    seed: int = 1,
) -> Benchmark:
    """Problems of benchmark `name` for evaluation.

    math500/gsm8k: `path` is a JSONL file, a directory holding one, a hub dataset id (loaded only
    with `allow_download=True`), or None for the default data directory. arith/countdown: the
    first `limit` (default 500) held-out test problems generated with `seed` (`path` must be None).
    """
    _check_limit(limit)
    if name in PROCEDURAL:
        if path is not None:
            raise ColaError(f"{name} is generated; it takes no data path (got {path})")
        from eval.tasks import get_task

        problems = get_task(name).generate(limit or 500, seed=seed, split="test")
        return Benchmark(
            name,
            [
                BenchmarkProblem(
                    task=name,
                    id=p.id,
                    question=p.question,
                    answer=p.answer,
                    solution=p.solution,
                    level=p.level,
                    problem=p,
                )
                for p in problems
            ],
            f"{name} test split, seed {seed}",
        )
    if name not in FILE_BENCHMARKS:
        raise ColaError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    if path is not None and not Path(path).exists() and _HUB_ID.match(str(path)):
        if not allow_download:
            raise ColaError(
                f"{path!r} is not a local file; loading it as a hub dataset needs an explicit "
                "allow_download=True (--allow-download)"
            )
        return _load_hub(name, str(path), strict=strict, limit=limit)
    file, note = _resolve_file(name, path)
    bench = load_jsonl_benchmark(name, file, strict=strict, limit=limit)
    if note:
        bench.notes.append(note)
    return bench
