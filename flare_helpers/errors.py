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
        # One line always: messages of other libraries quoted in `problem` may span several.
        self.problem = " ".join(str(problem).split())
        self.path = None if path is None else Path(path)
        message = self.problem if self.path is None else f"{self.path}: {self.problem}"
        super().__init__(message)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__
