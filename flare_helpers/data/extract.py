"""Safe, idempotent, resumable extraction of the FLARE22 training zip."""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from flare_helpers.data.fileio import atomic_path, read_json, remove_stale_temps, write_json_atomic
from flare_helpers.data.layout import DATASET_DIRNAME
from flare_helpers.errors import FlareError, one_line

_MARKER = ".extracted.json"
_CHUNK = 1 << 20


def _check_zip(zip_path: Path) -> None:
    if not zip_path.exists():
        raise FlareError("file not found", zip_path)
    if not zip_path.is_file():
        raise FlareError("is a folder, expected a .zip file", zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise FlareError("not a zip file (or it is truncated)", zip_path)


def _safe_name(name: str, zip_path: Path) -> PurePosixPath | None:
    """Validate a member name; None for folders and macOS metadata we skip."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise FlareError(f"refusing absolute member path '{name}'", zip_path)
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise FlareError(
            f"refusing member '{name}': it would be written outside the target", zip_path
        )
    if name.endswith("/") or not parts:
        return None
    if parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] == ".DS_Store":
        return None
    return PurePosixPath(*parts)


def _dataset_members(
    archive: zipfile.ZipFile, zip_path: Path
) -> dict[PurePosixPath, zipfile.ZipInfo]:
    """Map each member below the folder holding ``images/`` to its path inside that folder.

    Works for the organisers' layout (``FLARE22Train/images/…``), a zip that
    nests one more level (``FLARE22Train/FLARE22Train/images/…``) and a zip
    without the top folder (``images/…``).
    """
    names: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        path = _safe_name(info.filename, zip_path)
        if path is None:
            continue
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix type
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "symbolic link" if kind == stat.S_IFLNK else "special file"
            raise FlareError(f"refusing {kind} member '{info.filename}'", zip_path)
        names[path] = info
    if not names:
        raise FlareError("the zip is empty", zip_path)
    roots = {p.parents[1] for p in names if len(p.parts) >= 2 and p.parts[-2] == "images"}
    if not roots:
        raise FlareError(
            "no images/ folder inside the zip (expected FLARE22Train/images/…)", zip_path
        )
    if len(roots) > 1:
        listed = ", ".join(sorted(str(r) for r in roots))
        raise FlareError(f"several images/ folders in the zip ({listed}); expected one", zip_path)
    root = roots.pop()
    return {p.relative_to(root): info for p, info in names.items() if p.is_relative_to(root)}


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _zip_fingerprint(zip_path: Path) -> dict:
    stat = zip_path.stat()
    return {"zip": str(zip_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def extract_zip(zip_path: str | Path, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Extract the FLARE22 training zip into ``out_dir/FLARE22Train`` and return that folder.

    Safe: every member is checked before anything is written; absolute paths and
    ``..`` are refused. Idempotent: a completed extraction of the same zip is
    recognised (size and mtime recorded in a marker file) and nothing is done.
    Resumable: after an interrupted run, files already on disk are kept only if
    their CRC-32 equals the zip's; each file is written under a temporary name
    and renamed, so no half-written NIfTI is ever left under its real name.

    Raises:
        FlareError: missing file, not a zip, unsafe or missing members, disk errors.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    _check_zip(zip_path)
    target = out_dir / DATASET_DIRNAME
    marker = target / _MARKER
    fingerprint = _zip_fingerprint(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FlareError(f"cannot open zip ({exc})", zip_path) from exc
    with archive:
        members = _dataset_members(archive, zip_path)
        if target.is_dir():
            remove_stale_temps(target, recursive=True)  # left by an interrupted run
        if marker.exists() and _marker_matches(marker, fingerprint, target, members):
            return target
        todo = [
            (rel, info) for rel, info in members.items() if not _is_extracted(target / rel, info)
        ]
        total = sum(info.file_size for _, info in todo)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc="extract", disable=not progress
        ) as bar:
            for rel, info in todo:
                _extract_member(archive, info, target / rel, zip_path, bar)
    write_json_atomic(
        marker, {**fingerprint, "members": {str(rel): info.CRC for rel, info in members.items()}}
    )
    return target


def extraction_is_current(zip_path: str | Path, out_dir: str | Path) -> bool:
    """Whether ``out_dir/FLARE22Train`` already holds a complete extraction of ``zip_path``
    (what :func:`extract_zip` would find with nothing to do).

    Raises:
        FlareError: the zip is missing, not a zip, or holds no FLARE22 layout.
    """
    zip_path = Path(zip_path)
    _check_zip(zip_path)
    target = Path(out_dir) / DATASET_DIRNAME
    if not (target / _MARKER).is_file():
        return False
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _dataset_members(archive, zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FlareError(f"cannot open zip ({one_line(exc)})", zip_path) from exc
    return _marker_matches(target / _MARKER, _zip_fingerprint(zip_path), target, members)


def _marker_matches(marker: Path, fingerprint: dict, target: Path, members: dict) -> bool:
    try:
        saved = read_json(marker)
    except FlareError:
        return False
    if any(saved.get(key) != value for key, value in fingerprint.items()):
        return False
    return all(
        (target / rel).is_file() and (target / rel).stat().st_size == info.file_size
        for rel, info in members.items()
    )


def _is_extracted(dest: Path, info: zipfile.ZipInfo) -> bool:
    return dest.is_file() and dest.stat().st_size == info.file_size and _crc32(dest) == info.CRC


def _extract_member(archive, info, dest: Path, zip_path: Path, bar) -> None:
    try:
        with atomic_path(dest) as tmp, archive.open(info) as src, tmp.open("wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise FlareError(
            f"member '{info.filename}' is corrupt ({one_line(exc)})", zip_path
        ) from exc
