"""The one exception type users see: a problem with their input, told in one line."""

from __future__ import annotations


class ColaError(ValueError):
    """Bad user input (unknown preset, missing file, mismatched checkpoint, out-of-range config).

    The CLI prints ``str(err)`` on one line and exits non-zero; everything else is a bug and
    keeps its traceback.
    """
