"""Procedurally generated math tasks with verifiable rewards (one module per task), and the
registry that names them. ``eval.tasks.base`` says what they share and why they are generated."""

from __future__ import annotations

from cola_models.errors import ColaError

from .arith import ArithTask
from .base import Problem, Task, split_of
from .countdown import CountdownTask

__all__ = ["TASKS", "ArithTask", "CountdownTask", "Problem", "Task", "get_task", "split_of"]

TASKS: dict[str, ArithTask | CountdownTask] = {"arith": ArithTask(), "countdown": CountdownTask()}


def get_task(name: str) -> ArithTask | CountdownTask:
    """The task registered under `name`; a one-line ValueError lists the choices otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ColaError(
            f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}"
        ) from None
