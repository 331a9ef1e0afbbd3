"""Shared helpers for the benchmarks: timing with warm-up and medians, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def timeit(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine() -> str:
    import torch

    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({threads} threads), {gpu}"
    )


def md_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table: ``header`` and one line per row of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
