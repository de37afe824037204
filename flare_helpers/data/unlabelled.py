"""FLARE22's unlabelled scans, read one case at a time from their zip or folder.

The organisers ship 2,000 unlabelled CTs (about 250 GB) as
``FLARE_UnlabeledCase1-1000/Case_00001_0000.nii.gz`` … in zips or folders. Nothing
here ever extracts the whole set: :func:`list_scans` lists a chosen slice of it
(``max_cases``, a 1-based ``first``..``last`` range), and :func:`scan_file`
hands out one CT at a time, from a zip through a scratch file that is deleted
as soon as the case is done. Label files inside such a set are ignored with a
note (:func:`flare_helpers.data.cases.discover_unlabelled` for folders).
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from flare_helpers.data.cases import IMAGE_SUFFIX, discover_unlabelled, image_case_id
from flare_helpers.data.extract import _check_zip, _safe_name
from flare_helpers.data.fileio import atomic_path, remove_stale_temps
from flare_helpers.errors import FlareError, one_line

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Scan:
    """One unlabelled CT: its case id, and its member name (zip) or file path (folder)."""

    case_id: str
    name: str
    size: int

    @property
    def image_name(self) -> str:
        """FLARE22 image file name of the case, ``<case>_0000.nii.gz``."""
        return f"{self.case_id}{IMAGE_SUFFIX}.nii.gz"


@dataclass(frozen=True)
class ScanSource:
    """A zip or folder of unlabelled scans and the slice of it chosen for this run."""

    path: Path
    scans: tuple[Scan, ...]
    total: int
    notes: tuple[str, ...] = ()

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()


def _zip_scans(path: Path) -> tuple[list[Scan], list[str]]:
    _check_zip(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise FlareError(f"cannot open zip ({one_line(exc)})", path) from exc
    scans: dict[str, Scan] = {}
    notes = []
    for info in infos:
        member = _safe_name(info.filename, path)
        if member is None or not member.name.endswith((".nii.gz", ".nii")):
            continue
        case_id = image_case_id(member.name)
        if case_id is None or "labels" in PurePosixPath(member).parts[:-1]:
            notes.append(f"ignored {member.name}: a label file in an unlabelled set")
            continue
        if case_id in scans:
            raise FlareError(f"case {case_id} is in the zip twice", path)
        scans[case_id] = Scan(case_id, info.filename, info.file_size)
    return [scans[c] for c in sorted(scans)], notes


def list_scans(
    path: str | Path, *, max_cases: int = 0, first: int = 1, last: int = 0
) -> ScanSource:
    """The unlabelled scans of a zip or folder, sorted by case id, cases ``first``..``last``.

    Args:
        path: e.g. ``FLARE_UnlabeledCase1-1000.zip`` or its extracted folder.
        max_cases: at most this many (0 = no limit), counted from ``first``.
        first, last: 1-based positions in the sorted list (``last`` 0 = to the end).

    Raises:
        FlareError: missing path, not a zip, no scans, or a bad range.
    """
    path = Path(path)
    if not path.exists():
        raise FlareError("unlabelled scans not found", path)
    if path.is_dir():
        found = discover_unlabelled(path)
        scans = [Scan(c.case_id, str(c.image), c.image.stat().st_size) for c in found.cases]
        notes = list(found.notes)
    else:
        scans, notes = _zip_scans(path)
        if not scans:
            raise FlareError("no <case>_0000.nii.gz scans in this zip", path)
    if first < 1 or last < 0 or max_cases < 0 or (last and last < first):
        raise FlareError(f"bad case range {first}..{last or 'end'} (1-based, first <= last)")
    if first > len(scans):
        raise FlareError(f"case range starts at {first} but there are {len(scans)} scans", path)
    chosen = scans[first - 1 : last or None]
    if max_cases:
        chosen = chosen[:max_cases]
    return ScanSource(path, tuple(chosen), len(scans), tuple(notes))


@contextmanager
def scan_file(source: ScanSource, scan: Scan, scratch: str | Path) -> Iterator[Path]:
    """A readable ``.nii.gz`` path of ``scan``: the file itself, or a scratch copy from the zip.

    The scratch copy lives in ``scratch`` only while the ``with`` block runs.

    Raises:
        FlareError: the zip member is corrupt or truncated (naming the member).
    """
    if not source.is_zip:
        yield Path(scan.name)
        return
    dest = Path(scratch) / scan.image_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    copy_scan(source, scan, dest)
    try:
        yield dest
    finally:
        dest.unlink(missing_ok=True)


def copy_scan(source: ScanSource, scan: Scan, dest: str | Path) -> Path:
    """Copy one scan's bytes (from the zip or the folder) to ``dest``, atomically."""
    dest = Path(dest)
    try:
        if source.is_zip:
            with (
                zipfile.ZipFile(source.path) as archive,
                archive.open(scan.name) as src,
                atomic_path(dest) as tmp,
                tmp.open("wb") as out,
            ):
                shutil.copyfileobj(src, out, _CHUNK)
        else:
            with atomic_path(dest) as tmp:
                shutil.copyfile(scan.name, tmp)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise FlareError(f"member '{scan.name}' is corrupt ({one_line(exc)})", source.path) from exc
    return dest


def extract_scans(
    path: str | Path,
    out_dir: str | Path,
    *,
    max_cases: int = 0,
    first: int = 1,
    last: int = 0,
    progress: bool = True,
) -> tuple[Path, ScanSource]:
    """Copy the chosen unlabelled scans to ``out_dir/<name>/images/<case>_0000.nii.gz``.

    ``<name>`` is the zip's or folder's name (``FLARE_UnlabeledCase1-1000``).
    Resumable: a scan already there with the right size is kept. Returns the
    folder (it holds ``images/`` only) and the listing.
    """
    source = list_scans(path, max_cases=max_cases, first=first, last=last)
    name = source.path.name.removesuffix(".zip") if source.is_zip else source.path.name
    target = Path(out_dir) / name
    images = target / "images"
    images.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(images)
    todo = [
        s
        for s in source.scans
        if not (
            (images / s.image_name).is_file() and (images / s.image_name).stat().st_size == s.size
        )
    ]
    for scan in tqdm(todo, desc="extract", unit="case", disable=not progress):
        copy_scan(source, scan, images / scan.image_name)
    return target, source
