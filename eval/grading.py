"""Is a model's final answer right? Extraction (`eval.answers`) + math-verify, under a time limit.

`is_correct(output_text, reference)` extracts the answer the text commits to (last `\\boxed{}`,
GSM8K's `#### N`, "the answer is ...", else the last number) and compares it with the reference
using math-verify (`pip install "latent-search[grading]"`), which accepts equivalent forms: 0.5 and
`\\frac12`, `\\dfrac`, `30^\\circ` and 30, `\\text{}` wrappers, tuples, intervals, reordered sums,
`x = 5` and 5, `1,000` and 1000.

Why grading runs in a worker process by default: math-verify's own timeouts use `signal.alarm`,
which works only in the main thread (an evaluation may grade from a worker thread), takes whole
seconds, and raises an `Exception` subclass that its own `except Exception` clauses can swallow
(then the computation simply goes on). A signal also cannot stop a computation inside a C
extension (sympy does its big-integer arithmetic in GMP when gmpy2 is installed). A child process
can always be killed. The worker starts once (~1 s: it imports sympy), then grades each item over a
pipe (a round trip costs well under a millisecond); an item that overruns its limit is graded wrong,
and if the worker does not answer shortly after, it is killed and restarted. Inside the worker a
fractional `setitimer` alarm, raising a BaseException nothing swallows, stops ordinary overruns
(`\\boxed{9^{9^{9^{9^{9}}}}}` against 5) without paying that restart.

`isolation="inline"` grades in this process under the same alarm: no worker, but no protection
against C-level hangs; outside the main thread it falls back to the worker.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cola_models.errors import ColaError
from eval.answers import extract_answer

__all__ = ["DEFAULT_TIMEOUT", "Grade", "grade_batch", "is_correct", "shutdown_worker"]

DEFAULT_TIMEOUT = 5.0
"""Seconds per item (math-verify's own default per comparison)."""
MAX_ANSWER_CHARS = 1000
"""Longer extracted answers are graded wrong without parsing (MATH-500's longest gold: ~60)."""
_KILL_GRACE = 1.0  # the worker's own alarm gets this long before the parent kills it
_STARTUP_TIMEOUT = 120.0  # importing sympy on a loaded 2-core machine can take a while


@dataclass(frozen=True)
class Grade:
    """One graded item: the verdict, the answer that was extracted, and whether time ran out."""

    correct: bool
    answer: str | None
    timed_out: bool = False


# ------------------------------------------------------------------------------ core (in-process)


class _Overrun(BaseException):
    """Raised by the alarm. A BaseException so math-verify's `except Exception` cannot swallow it."""


_DOLLAR = re.compile(r"(?<!\\)\$")  # a $ not written as \$
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _normalize(answer: str) -> str:
    """Only what math-verify would misread: `1,000` (else a set {1, 0}) becomes 1000, and stray
    math delimiters (`#### $72`) go, since the answer is wrapped in $...$ for parsing."""
    a = _DOLLAR.sub("", answer).strip()
    if _THOUSANDS.match(a):
        a = a.replace(",", "")
    return a


@functools.lru_cache(maxsize=1)
def _math_verify():
    """math-verify's parse/verify and extraction configs, imported once and quietly."""
    import logging

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # Its timeouts are off (we time items ourselves); it warns about that on every first call.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return parse, verify, [LatexExtractionConfig(), ExprExtractionConfig()]


@functools.lru_cache(maxsize=4096)
def _parse(answer: str):
    """math-verify's parse of one bare answer (wrapped in $...$ so LaTeX extraction applies).

    Cached: a reference is parsed once for all the samples graded against it."""
    parse, _, config = _math_verify()
    # parsing_timeout=None: math-verify's signal.alarm(0) on exit would cancel our own timer.
    return parse(f"${answer}$", extraction_config=config, parsing_timeout=None)


def _equal(answer: str, reference: str) -> bool:
    """Parse both and compare, with no time limit of its own (callers add one)."""
    _, verify, _ = _math_verify()
    gold, pred = _parse(_normalize(reference)), _parse(_normalize(answer))
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise _Overrun after `seconds` (main thread only); restores the previous handler."""

    def _fire(signum, frame):
        raise _Overrun

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _equal_with_alarm(answer: str, reference: str, timeout: float) -> tuple[bool, bool]:
    """(equal, timed_out) under a `timeout`-second alarm."""
    try:
        with _alarm(timeout):
            return _equal(answer, reference), False
    except _Overrun:
        return False, True
    except Exception:  # a grader must never crash an evaluation run, whatever the model wrote
        return False, False


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------------- worker


def _worker_main() -> None:
    """The child's loop: one JSON request per stdin line, one JSON reply per line on the pipe."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol
    _math_verify()
    reply.write("ready\n")
    for line in sys.stdin:
        req = json.loads(line)
        reply.write(json.dumps(_equal_with_alarm(req["answer"], req["reference"], req["timeout"])))
        reply.write("\n")


class _Worker:
    """A grading child process with per-item deadlines; restarted after a kill or a fork."""

    def __init__(self, argv: list[str] | None = None) -> None:
        # argv: the child's command line (tests substitute a child that never answers)
        self._argv = argv or [
            sys.executable,
            "-c",
            "from eval.grading import _worker_main; _worker_main()",
        ]
        self._proc: subprocess.Popen | None = None
        self._pid = 0  # the parent's pid when the child was started (a forked parent restarts it)
        self._buf = b""
        self._lock = threading.Lock()

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)  # so the child imports this eval package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._pid, self._buf = os.getpid(), b""
        if self._readline(_STARTUP_TIMEOUT) != b"ready":
            self.stop()
            raise RuntimeError("the grading worker process failed to start")

    def _readline(self, timeout: float) -> bytes | None:
        """One line from the child within `timeout` seconds; None on timeout or a dead child."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            proc.kill()
            proc.wait()

    def equal(self, answer: str, reference: str, timeout: float) -> tuple[bool, bool]:
        """(equal, timed_out), as `_equal_with_alarm` in the child, or (False, True) after a kill."""
        with self._lock:
            if self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None:
                self._proc = None
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            req = {"answer": answer, "reference": reference, "timeout": timeout}
            try:
                self._proc.stdin.write((json.dumps(req) + "\n").encode())
                self._proc.stdin.flush()
            except BrokenPipeError:
                self.stop()
                return False, False
            line = self._readline(timeout + _KILL_GRACE)
            if line is None:  # a C-level hang (or a crash): kill; the next item restarts it
                self.stop()
                return False, True
            equal, timed_out = json.loads(line)
            return bool(equal), bool(timed_out)


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def shutdown_worker() -> None:
    """Stop the grading worker now (it restarts on the next graded item)."""
    with _WORKER._lock:
        _WORKER.stop()


# ----------------------------------------------------------------------------------- public API


def _require_math_verify() -> None:
    if importlib.util.find_spec("math_verify") is None:
        raise ImportError('grading needs math-verify: pip install "latent-search[grading]"')


def _check(output_text, reference, timeout: float, isolation: str) -> None:
    if not isinstance(output_text, str) or not isinstance(reference, str):
        raise ColaError("output_text and reference must be strings")
    if not timeout > 0:
        raise ColaError(f"timeout={timeout} must be > 0 seconds")
    if isolation not in ("process", "inline"):
        raise ColaError(f"isolation={isolation!r} must be 'process' or 'inline'")


def grade(
    output_text: str,
    reference: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    isolation: str = "process",
) -> Grade:
    """Grade one model output against a reference answer; never takes much longer than `timeout`.

    isolation: "process" (default; a killable worker) or "inline" (this process, SIGALRM; cannot
    stop a C-level computation; falls back to the worker outside the main thread).
    """
    _check(output_text, reference, timeout, isolation)
    _require_math_verify()
    answer = extract_answer(output_text, fallback_last_number=True)
    if answer is None or not answer.strip() or len(answer) > MAX_ANSWER_CHARS:
        return Grade(False, answer)
    if isolation == "inline" and _can_alarm():
        equal, timed_out = _equal_with_alarm(answer, reference, timeout)
    else:
        equal, timed_out = _WORKER.equal(answer, reference, timeout)
    return Grade(equal, answer, timed_out)


def is_correct(
    output_text: str,
    reference: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    isolation: str = "process",
) -> bool:
    """True iff the final answer of `output_text` is mathematically equal to `reference`."""
    return grade(output_text, reference, timeout=timeout, isolation=isolation).correct


def grade_batch(
    outputs: Sequence[str],
    references: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    isolation: str = "process",
) -> list[Grade]:
    """Grade outputs[i] against references[i]; each item has its own `timeout`."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} references")
    return [grade(o, r, timeout=timeout, isolation=isolation) for o, r in zip(outputs, references)]
