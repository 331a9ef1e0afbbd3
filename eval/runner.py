"""`latent-search eval`: one search method over a problem set, per-problem JSONL written as it goes.

A run directory holds ``config.json`` (what was asked), ``results.jsonl`` (one line per finished
problem, appended after every batch and fsynced) and ``summary.json`` (rewritten atomically after
every batch). Re-running with the same directory and the same settings skips finished problems;
different settings are refused rather than mixed. A line cut short by a crash is dropped and its
problem redone.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cola_models.errors import ColaError
from latent_search.search import SearchSpec


@dataclass(frozen=True)
class EvalConfig:
    task: str = "arith"
    model: str = "tiny-arith"
    search: SearchSpec = field(default_factory=SearchSpec)
    limit: int | None = None
    """Problems to evaluate (procedural tasks: default 500 held-out problems)."""
    problem_seed: int = 1
    """Which held-out problems of a procedural task (1: the set the README's tables use)."""
    data: str | None = None
    """JSONL file of a benchmark task (math500, gsm8k)."""
    samples: int = 1
    """Searches per problem with seeds seed, seed+1, ...: maj@k and pass@k when > 1."""
    batch_size: int = 32
    value_model: str | None = None
    verifier: str | None = None
    """A reward-model directory for --scorer verifier / weighted-vote."""
    judge: dict = field(default_factory=dict)
    """How to read ``verifier`` (``cola_models.prm.OPTIONS``); only the settings given, so a
    run made before they existed keeps its identity."""
    backend: str = "torch"
    template: str | None = None
    """Prompt template: a name from eval.prompts.PROMPT_TEMPLATES or a string with {question};
    default: the model's own training format, else the task's."""
    strict: bool = False
    """A malformed data line is fatal (else skipped with a warning naming file:line)."""
    allow_download: bool = False
    """--data may name a hub dataset (downloaded); off by default: no network at run time."""
    device: str = "auto"
    """auto (CUDA when present) | cpu | cuda | cuda:N (``cola_models.devices``)."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on the CPU) | float32 | bfloat16 | float16."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ColaError(f"--limit {self.limit} must be >= 1")
        if self.samples < 1 or self.batch_size < 1:
            raise ColaError("--samples and --batch-size must be >= 1")


def load_items(cfg: EvalConfig) -> tuple[list, list[str], list[str]]:
    """Problems with ``id``, ``question``, ``answer``, ``groups`` and ``grade(text)``, one
    ``file:line: problem`` warning per skipped data line, and notes on the set itself."""
    from .datasets import get_benchmark

    bench = get_benchmark(
        cfg.task,
        cfg.data,
        limit=cfg.limit,
        strict=cfg.strict,
        allow_download=cfg.allow_download,
        seed=cfg.problem_seed,
    )
    return list(bench), list(bench.warnings), list(bench.notes)


def prompt_template(cfg: EvalConfig, model) -> str:
    """--template, else the format the model was trained with, else the task's default."""
    from .prompts import get_template

    own = model.generation_defaults.get("prompt_template")
    return get_template(cfg.template or own, cfg.task)


# ------------------------------------------------------------------------------------ run files


def _read_done(path: Path) -> tuple[dict[str, dict], list[str]]:
    """Finished records by id, and the good lines; a torn last line (a crash mid-write) is left
    out (``_repair`` rewrites the file without it once the run holds the directory)."""
    if not path.is_file():
        return {}, []
    done, good = {}, []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec:
            done[rec["id"]] = rec
            good.append(line)
    return done, good


@contextlib.contextmanager
def _writing(out: Path, kept: int):
    """A write that fails (a full disk, a lost mount) is one line naming the place and what is
    kept: the records written before stay, and a torn last line is dropped on the rerun, which
    continues from them."""
    try:
        yield
    except OSError as err:
        raise ColaError(
            f"cannot write the results in {out}: {err.strerror or err}; the {kept} finished "
            "record(s) are kept and re-running the same command continues from them"
        ) from err


def _append(path: Path, records: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# Settings that do not change any finished record: how the work is chunked, and how many of
# the (fixed, ordered) problems are asked for, so that a run can be extended to a larger --limit.
_NOT_IDENTITY = ("batch_size", "limit")


def _config_dict(cfg: EvalConfig) -> dict:
    """The run's identity. Device and dtype are recorded as resolved (a kind of device, not
    its index: torchrun's ranks each hold a GPU of their own), since "auto" means another
    precision on another machine and a run must not mix records of both."""
    d = asdict(cfg)
    for k in _NOT_IDENTITY:
        d.pop(k)
    d["device"], d["dtype"] = placement_identity(cfg.device, cfg.dtype)
    return d


def placement_identity(device: str, dtype: str) -> tuple[str, str]:
    from cola_models.devices import Placement

    placed = Placement(device, dtype).resolved()
    return placed.device.split(":")[0], placed.dtype


def _identity(held: dict | None) -> dict | None:
    if held is None:
        return None
    # Runs written before --device existed ran on the CPU in float32.
    return {"device": "cpu", "dtype": "float32"} | {
        k: v for k, v in held.items() if k not in _NOT_IDENTITY
    }


# ------------------------------------------------------------------------------------ summary


def summarize(records: list[dict], cfg: EvalConfig, items: list, warnings=(), notes=()) -> dict:
    from .evaluate import wilson_interval

    n = len(records)
    k = sum(r["correct"] for r in records)
    lo, hi = wilson_interval(k, n)
    device, dtype = placement_identity(cfg.device, cfg.dtype)
    out = {
        "task": cfg.task,
        "model": cfg.model,
        "search": cfg.search.algorithm,
        "device": device,
        "dtype": dtype,
        "oracle": False,
        "n": n,
        "of": len(items),
        "accuracy": k / n if n else 0.0,
        "ci95": [lo, hi],
        "tokens_per_problem": sum(r["tokens"] for r in records) / max(n, 1),
        "seconds_per_problem": sum(r["seconds"] for r in records) / max(n, 1),
        "skipped_data_lines": list(warnings),
        "notes": list(notes),
        "unanswered_too_long": sum(1 for r in records if "error" in r),
    }
    branching = [r["branching"] for r in records if "branching" in r]
    if branching:  # how different a tree search's candidates were, beside its accuracy
        out["branching"] = sum(branching) / len(branching)
    if cfg.samples > 1:
        for name in ("maj", "pass"):
            kk = sum(r[f"{name}_correct"] for r in records)
            out[f"{name}@{cfg.samples}"] = kk / n if n else 0.0
            out[f"{name}@{cfg.samples}_ci95"] = list(wilson_interval(kk, n))
    groups: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for key, val in r["groups"].items():
            groups[key][str(val)].append(r["correct"])
    out["by"] = {
        key: {v: {"n": len(c), "accuracy": sum(c) / len(c)} for v, c in sorted(vals.items())}
        for key, vals in groups.items()
    }
    return out


# ------------------------------------------------------------------------------------ the run


def run_eval(
    cfg: EvalConfig,
    out: str | Path,
    *,
    progress: Callable[[int, int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Evaluate into ``out``. Everything is validated (the output place, a previous run's
    settings, the data, the model) before anything is written, and the directory has one writer
    at a time. ``progress(done, total, correct)`` runs after every batch.

    ``shard=(i, n)``: evaluate batches i, i+n, i+2n, ... (of ``batch_size`` problems, as one
    process forms them) into ``out/shard-i-of-n`` (a run directory of its own); ``merge_shards``
    then writes the results a single process would. Dealing whole batches keeps each batch's
    problems, and so its random stream: sampled searches draw the samples one process draws."""
    from cola_models.atomic import check_writable_dir

    out = check_writable_dir(out)
    items, warnings, notes = load_items(cfg)
    if shard is not None:
        i, n = shard
        if not 0 <= i < n:
            raise ColaError(f"--shard {i}/{n}: the index must be in 0..{n - 1}")
        out, items = out / f"shard-{i}-of-{n}", shard_items(items, cfg.batch_size, i, n)
    return _evaluate_into(out, cfg, items, warnings, notes, progress)


def _evaluate_into(out: Path, cfg: EvalConfig, items, warnings, notes, progress) -> dict:
    from cola_models.atomic import WriterLock

    from .rundir import held_config, refuse_other_run

    conf_path, res_path = out / "config.json", out / "results.jsonl"
    want = _config_dict(cfg)
    refuse_other_run(out, _identity(held_config(conf_path)), want, "an eval run")
    done, _ = _read_done(res_path)
    todo = [it for it in items if it.id not in done]
    searcher = _searcher(cfg) if todo else None
    with WriterLock(out, "latent-search eval"):
        refuse_other_run(out, _identity(held_config(conf_path)), want, "an eval run")  # raced?
        write_atomic_json(conf_path, {**want, "limit": cfg.limit})
        done, good = _read_done(res_path)
        if res_path.is_file():
            write_atomic_lines(res_path, good)  # drops a line torn by a crash
        records = [done[it.id] for it in items if it.id in done]
        todo = [it for it in items if it.id not in done]
        if todo and searcher is None:  # another writer left work since the first look
            searcher = _searcher(cfg)
        if progress:
            progress(len(records), len(items), sum(r["correct"] for r in records))
        for start in range(0, len(todo), cfg.batch_size):
            new = _run_batch(cfg, searcher, todo[start : start + cfg.batch_size])
            with _writing(out, len(records)):
                _append(res_path, new)
                records += new
                summary = summarize(records, cfg, items, warnings, notes)
                write_atomic_json(out / "summary.json", summary)
            if progress:
                progress(len(records), len(items), sum(r["correct"] for r in records))
        if searcher is not None and hasattr(searcher.backend, "close"):
            searcher.backend.close()  # an engine holds (GPU) memory until closed
        summary = summarize(records, cfg, items, warnings, notes)
        write_atomic_json(out / "summary.json", summary)
    return summary


def shard_items(items: list, batch_size: int, i: int, n: int) -> list:
    """Shard i of n: batches i, i+n, ... of the batches one process forms, in order."""
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    return [it for batch in batches[i::n] for it in batch]


def merge_shards(cfg: EvalConfig, out: str | Path, n: int) -> dict:
    """Join the n finished shards of ``out`` into ``out/results.jsonl`` and ``summary.json``, in
    the problems' order: what one process evaluating them all writes. A missing or unfinished
    shard, or one with other settings, is a one-line error."""
    from cola_models.atomic import WriterLock

    from .rundir import held_config, refuse_other_run

    out = Path(out)
    items, warnings, notes = load_items(cfg)
    want = _config_dict(cfg)
    by_id: dict[str, dict] = {}
    for i in range(n):
        shard = out / f"shard-{i}-of-{n}"
        refuse_other_run(shard, _identity(held_config(shard / "config.json")), want, "a shard")
        done, _ = _read_done(shard / "results.jsonl")
        missing = [it.id for it in shard_items(items, cfg.batch_size, i, n) if it.id not in done]
        if missing:
            raise ColaError(f"{shard} is missing {len(missing)} problem(s), e.g. {missing[0]}")
        by_id.update(done)
    records = [by_id[it.id] for it in items]
    with WriterLock(out, "latent-search eval --merge-shards"):
        refuse_other_run(out, _identity(held_config(out / "config.json")), want, "an eval run")
        write_atomic_json(out / "config.json", {**want, "limit": cfg.limit})
        write_atomic_lines(
            out / "results.jsonl", [json.dumps(r, ensure_ascii=False) for r in records]
        )
        summary = summarize(records, cfg, items, warnings, notes)
        write_atomic_json(out / "summary.json", summary)
    return summary


def _searcher(cfg: EvalConfig):
    from .searcher import load_searcher

    searcher = load_searcher(
        cfg.model,
        cfg.search,
        value_model=cfg.value_model,
        backend=cfg.backend,
        verifier=cfg.verifier,
        judge=cfg.judge,
        device=cfg.device,
        dtype=cfg.dtype,
    )
    searcher.template = prompt_template(cfg, searcher.model)
    return searcher


def _run_batch(cfg: EvalConfig, searcher, batch: list) -> list[dict]:
    """Search every problem of ``batch`` (``cfg.samples`` times) and grade it. A prompt longer
    than the context is recorded as unanswered (wrong), not dropped."""
    from latent_search.search import run_search

    from .answers import extract_answer

    spec = cfg.search
    ids_all = searcher.encode_fitting([it.question for it in batch], spec.max_new_tokens)
    chunk = [(it, ids) for it, ids in zip(batch, ids_all) if not isinstance(ids, str)]
    per_sample = []
    for s in range(cfg.samples if chunk else 0):
        t0 = time.perf_counter()
        results = run_search(
            searcher.backend,
            [ids for _, ids in chunk],
            SearchSpec(**{**asdict(spec), "seed": spec.seed + s}),
            answer_fn=extract_answer,
            **searcher.search_args(),
        )
        per_sample.append((results, (time.perf_counter() - t0) / len(chunk)))
    fits = {it.id: i for i, (it, _) in enumerate(chunk)}
    return [
        _record(it, fits[it.id], per_sample) if it.id in fits else _unanswered(it, ids)
        for it, ids in zip(batch, ids_all)
    ]


def write_atomic_json(path: Path, obj) -> None:
    from cola_models.atomic import write_atomic

    write_atomic(path, json.dumps(obj, indent=2))


def write_atomic_lines(path: Path, lines: list[str]) -> None:
    from cola_models.atomic import write_atomic

    write_atomic(path, "".join(line + "\n" for line in lines))


def _unanswered(item, reason: str) -> dict:
    return {
        "id": item.id,
        "question": item.question,
        "reference": item.answer,
        "output": "",
        "answer": None,
        "correct": False,
        "maj_correct": False,
        "pass_correct": False,
        "tokens": 0,
        "seconds": 0.0,
        "groups": item.groups,
        "oracle": False,
        "error": reason,
    }


def _record(item, row: int, per_sample: list) -> dict:
    from .answers import extract_answer

    texts = [res[row].text for res, _ in per_sample]
    answers = [extract_answer(t) for t in texts]
    correct = [bool(item.grade(t)) for t in texts]
    rec = {
        "id": item.id,
        "question": item.question,
        "reference": item.answer,
        "output": texts[0],
        "answer": answers[0],
        "correct": correct[0],
        "tokens": sum(res[row].tokens_used for res, _ in per_sample),
        "seconds": sum(secs for _, secs in per_sample),
        "groups": item.groups,
        "oracle": False,
    }
    branching = per_sample[0][0][row].stats.get("branching")
    if branching is not None:  # a tree search's distinct children per expanded node
        rec["branching"] = branching
    if len(texts) > 1:
        votes = Counter(a for a in answers if a is not None)
        top = votes.most_common(1)[0][0] if votes else None
        rec["samples"] = [
            {"output": t, "answer": a, "correct": c} for t, a, c in zip(texts, answers, correct)
        ]
        rec["maj_correct"] = top is not None and correct[answers.index(top)]
        rec["pass_correct"] = any(correct)
    return rec
