"""Safe writing, torch-free so that light modules (the tree viewer, the CLI) can use it: atomic
file writes, one writer per run directory, and output paths checked before any work."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import ColaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write through a temporary sibling and an atomic rename, so a reader never sees half a
    file and a crash leaves the old one. The file gets the usual permissions (0666 & ~umask),
    not the private 0600 of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class DirectoryBusy(ColaError):
    """Another process is writing the directory (a ValueError: the CLI prints it as one line)."""


class WriterLock:
    """One writer per run directory: an exclusive, non-blocking ``flock`` on the directory itself.

    The kernel drops the lock when the holder exits, however it exits (a kill included), so a
    crashed run never blocks its own resume. While held, ``.writer`` in the directory names the
    holder (pid and command) for the refusal message; it is removed on release. A directory
    this lock created is removed again on release if nothing else was written into it.
    """

    HOLDER = ".writer"

    def __init__(self, directory: str | os.PathLike, what: str) -> None:
        self.path = Path(directory)
        self.what = what
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> WriterLock:
        import fcntl
        import json
        import sys

        if self.path.exists() and not self.path.is_dir():
            raise ColaError(f"{self.path} is a file, not a run directory")
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryBusy(
                f"{self.path} is being written by {self._holder()}; wait for it to finish or "
                "choose another output directory"
            ) from None
        self._fd = fd
        holder = {"pid": os.getpid(), "command": _command_line(self.what, sys.argv)[:300]}
        write_atomic(self.path / self.HOLDER, json.dumps(holder))
        return self

    def _holder(self) -> str:
        import json

        try:
            h = json.loads((self.path / self.HOLDER).read_text())
            return f"process {h['pid']} ({h['command']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.path / self.HOLDER).unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only succeeds while empty


def _command_line(what: str, argv: list[str]) -> str:
    """The holder's command as its user typed it: the CLI's own command line (``what`` once, not
    ``what`` followed by the subcommand again), or ``what`` for a library caller."""
    name = Path(argv[0]).name if argv else ""
    if name == "latent-search":
        return " ".join(["latent-search", *argv[1:]])
    if name == "__main__.py" and "latent_search_cli" in argv[0]:
        return " ".join(["python -m latent_search_cli", *argv[1:]])
    return what


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """A directory the caller may create or write into, checked before any work (by trying, as
    permission bits do not bind root): a one-line ValueError for an existing file or a place
    that cannot be written. Leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ColaError(f"{what} {path} is an existing file, not a directory")
    _probe(path if path.exists() else _existing_parent(path), f"{what} {path}")
    return path


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """A file path the caller will write: not a directory, in a folder that can be written."""
    path = Path(path)
    if path.is_dir():
        raise ColaError(f"{what} {path} is a directory; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ColaError(f"{what} {path} is not writable")
    _probe(path.parent if path.parent.exists() else _existing_parent(path.parent), f"{what} {path}")
    return path


def _existing_parent(path: Path) -> Path:
    return next((p for p in path.absolute().parents if p.exists()), Path("/"))


def _probe(directory: Path, label: str) -> None:
    if not directory.is_dir():
        raise ColaError(f"{label}: {directory} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ColaError(f"{label}: cannot write in {directory} ({err.strerror})") from None
