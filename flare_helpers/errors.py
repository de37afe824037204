"""User-facing errors: one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class FlareError(Exception):
    """A problem with the user's input, config or environment, not a bug.

    The console scripts print it as a single line and exit non-zero.

    Args:
        problem: what is wrong, in words a user can act on.
        path: the file or folder it concerns, if any.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
