"""Crash-safe writing: build under a temporary name in the same folder, then rename.

A reader (or a rerun after a crash, a full disk or a killed Colab runtime) sees
either the old complete file or the new complete file, never a half-written one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flare_helpers.errors import FlareError


@functools.cache
def _default_mode() -> int:
    """Permissions a plain ``open(..., "w")`` would give (0o666 minus the umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_sibling(dest: Path, *, directory: bool) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{dest.name}.tmp-"
        if directory:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
        fd, name = tempfile.mkstemp(prefix=prefix, suffix="".join(dest.suffixes), dir=dest.parent)
        os.close(fd)
        return Path(name)
    except OSError as exc:
        raise FlareError(f"cannot write here ({exc.strerror or exc})", dest.parent) from exc


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``.

    Args:
        dest: final file (or folder, with ``directory=True``).
        directory: build a whole folder instead of a single file.

    On any exception the temporary file or folder is removed and ``dest`` is
    left exactly as it was. A folder replaces an existing ``dest`` folder.
    """
    dest = Path(dest)
    tmp = _temp_sibling(dest, directory=directory)
    try:
        yield tmp
        if directory and dest.exists():
            # Rename the old folder away first: a crash then leaves no `dest`
            # (rebuilt on the next run) rather than a half-deleted one.
            trash = _temp_sibling(dest, directory=True)
            os.replace(dest, trash / dest.name)
            os.replace(tmp, dest)
            _remove(trash)
        else:
            # mkstemp creates 0600 files; give the result the usual permissions
            os.chmod(tmp, _default_mode())
            os.replace(tmp, dest)
    except OSError as exc:
        _remove(tmp)
        raise FlareError(f"could not write ({exc.strerror or exc})", dest) from exc
    except BaseException:
        _remove(tmp)
        raise


#: Names :func:`atomic_path` gives its temporaries: ``.<name>.tmp-`` + tempfile's 8 characters.
_TEMP_NAME = re.compile(r"^\..+\.tmp-[a-z0-9_]{8}")


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary made by :func:`atomic_path`."""
    return _TEMP_NAME.match(name) is not None


def remove_stale_temps(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Delete the temporaries that interrupted atomic writes left in ``folder``.

    A process killed inside :func:`atomic_path` (SIGKILL, a Colab disconnect)
    cannot clean up after itself; the step that owns the folder calls this when
    it starts again. Only names made by :func:`atomic_path` are touched, so it
    must not run while another process writes into the same folder.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if is_temp_name(name):
                path = Path(root) / name
                _remove(path)
                removed.append(path)
        dirs[:] = [d for d in dirs if not is_temp_name(d)] if recursive else []
    return removed


def remove_stale_temps_of(dest: str | Path) -> list[Path]:
    """Delete the temporaries that interrupted atomic writes of ``dest`` left beside it.

    For outputs in a user's folder, where only our own file's leftovers may go.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    stale = [
        p for p in dest.parent.glob(f".{glob.escape(dest.name)}.tmp-*") if is_temp_name(p.name)
    ]
    for path in stale:
        _remove(path)
    return stale


def refuse_existing(paths: Iterable[str | Path]) -> None:
    """Raise before any work when an output already exists (the caller has no ``overwrite``).

    Raises:
        FlareError: naming the first existing path and how many more there are.
    """
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FlareError(f"output exists{more}; pass --overwrite to replace", existing[0])


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json_atomic(dest: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``dest`` atomically and return the path."""
    return write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or corrupt file into a one-line FlareError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FlareError("file not found", path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FlareError(f"not valid JSON ({exc})", path) from exc


def read_history(path: str | Path, *, required: bool = False) -> list[dict[str, float]]:
    """Rows of a training-history CSV (one per epoch) as dicts; ``epoch`` as an int.

    Empty cells are NaN (e.g. validation run every few epochs). A missing file
    gives an empty list, so a fresh run starts an empty history.

    Args:
        path: the run's ``history.csv``.
        required: refuse a missing file, an empty one or one without epochs.

    Raises:
        FlareError: a cell that is not a number; with ``required``, a missing or
            empty file, or one without epochs.
    """
    path = Path(path)
    if not path.is_file():
        if required:
            raise FlareError("training history not found", path)
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            columns = reader.fieldnames
            rows = [_history_row(raw) for raw in reader]
        except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
            raise FlareError(f"not a readable CSV ({exc})", path) from exc
    if required and columns is None:
        raise FlareError("training history is empty", path)
    if required and not rows:
        raise FlareError("training history has no epochs yet", path)
    return rows


def _history_row(raw: dict) -> dict[str, float]:
    row = {k: (float(v) if v not in ("", None) else math.nan) for k, v in raw.items()}
    if "epoch" in row:
        row["epoch"] = int(row["epoch"])
    return row
