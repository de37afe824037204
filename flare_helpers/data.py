"""Safe zip extraction, case discovery and pairing, NIfTI loading and saving.

Conventions (DESIGN.md): volumes are loaded with nibabel, voxels read as float32
(images, HU) or uint8 (labels) straight from ``dataobj``, reoriented to the
closest canonical RAS order for the network, and returned together with the
file's own shape, affine, orientation and spacing so results can be written
back onto exactly the input's grid.
"""

from __future__ import annotations

import math
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
from isal import igzip
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from tqdm.auto import tqdm

from flare_helpers.errors import FlareError
from flare_helpers.fileio import atomic_path, read_json, remove_stale_temps, write_json_atomic
from flare_helpers.labels import FLARE22_LABELS

DATASET_DIRNAME = "FLARE22Train"
IMAGE_SUFFIX = "_0000"
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_MARKER = ".extracted.json"
_CHUNK = 1 << 20
#: Image and label affines may differ by float noise from the writer; more is a mismatch.
AFFINE_TOLERANCE_MM = 1e-3
MAX_LABEL_ID = max(FLARE22_LABELS)


# --------------------------------------------------------------------------- extraction


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


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Case:
    """One training case: its id, image file and (optional) label file."""

    case_id: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class CaseList:
    """Cases found in a data folder, plus files that could not be paired."""

    cases: tuple[Case, ...]
    unlabelled: tuple[Path, ...] = ()
    orphan_labels: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def labelled(self) -> tuple[Case, ...]:
        """Cases that have both an image and a label."""
        return tuple(c for c in self.cases if c.label is not None)


def prediction_file(pred_dir: str | Path, case_id: str) -> Path | None:
    """``pred_dir/<case_id>.nii.gz`` (or ``.nii``) if it exists: FLARE22 prediction naming."""
    for ext in NIFTI_EXTENSIONS:
        path = Path(pred_dir) / f"{case_id}{ext}"
        if path.is_file():
            return path
    return None


def nifti_stem(path: str | Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def nifti_files(folder: str | Path) -> list[Path]:
    """The ``.nii.gz`` / ``.nii`` files in ``folder``, sorted; hidden files are skipped.

    Hidden names are macOS ``._*`` metadata copies and temporaries of interrupted
    writes (``.<name>.tmp-…``), never volumes to use.
    """
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.name.endswith(NIFTI_EXTENSIONS) and not p.name.startswith(".")
    )


def discover_cases(data_dir: str | Path) -> CaseList:
    """Pair ``images/<id>_0000.nii.gz`` with ``labels/<id>.nii.gz`` under ``data_dir``.

    Images without a label are kept (they can still be predicted) and listed in
    ``unlabelled``; labels without an image are listed in ``orphan_labels``.

    Raises:
        FlareError: ``data_dir`` or its ``images/`` folder is missing, or holds no NIfTI.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FlareError("data folder not found", data_dir)
    images_dir, labels_dir = data_dir / "images", data_dir / "labels"
    if not images_dir.is_dir():
        raise FlareError("no images/ folder here (run flare-extract first?)", data_dir)
    images = nifti_files(images_dir)
    if not images:
        raise FlareError("no .nii.gz images in this folder", images_dir)
    labels = {nifti_stem(p): p for p in nifti_files(labels_dir)} if labels_dir.is_dir() else {}
    cases, unlabelled, notes = [], [], []
    for image in images:
        stem = nifti_stem(image)
        if not stem.endswith(IMAGE_SUFFIX):
            notes.append(f"skipped {image.name}: image names end in {IMAGE_SUFFIX}.nii.gz")
            continue
        case_id = stem[: -len(IMAGE_SUFFIX)]
        label = labels.pop(case_id, None)
        cases.append(Case(case_id, image, label))
        if label is None:
            unlabelled.append(image)
    return CaseList(tuple(cases), tuple(unlabelled), tuple(sorted(labels.values())), tuple(notes))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels sit: the file's own grid and its canonical version.

    Attributes:
        shape: voxel shape as stored in the file.
        affine: the file's 4×4 voxel → world (mm) affine.
        axcodes: the file's orientation, e.g. ``"LPS"``.
        spacing: voxel size in mm along the file's axes (from the header).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    axcodes: str
    spacing: tuple[float, float, float]

    @property
    def ornt(self) -> np.ndarray:
        """nibabel orientation taking the file's voxel order to closest canonical RAS."""
        return io_orientation(self.affine)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Voxel shape after reorientation to RAS."""
        return tuple(int(self.shape[int(ax)]) for ax in np.argsort(self.ornt[:, 0]))

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical R, A, S axes."""
        return tuple(float(self.spacing[int(ax)]) for ax in np.argsort(self.ornt[:, 0]))

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Reorder a file-ordered array to RAS (a view: flips and transposes only)."""
        return apply_orientation(array, self.ornt)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`: RAS order back to the file's voxel order."""
        back = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(self.axcodes)))
        return apply_orientation(array, back)

    def to_dict(self) -> dict:
        """JSON-ready form (for cache manifests)."""
        return {
            "shape": list(self.shape),
            "affine": np.asarray(self.affine).tolist(),
            "axcodes": self.axcodes,
            "spacing": list(self.spacing),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(d["shape"]),
            np.asarray(d["affine"], dtype=np.float64),
            d["axcodes"],
            tuple(d["spacing"]),
        )


@dataclass(frozen=True)
class Volume:
    """A volume in canonical RAS voxel order plus the geometry of its source file.

    Attributes:
        data: (X, Y, Z) array in RAS order: float32 HU for images, uint8 ids for labels.
        geometry: the file's own grid, for mapping results back.
        path: the file it came from.
    """

    data: np.ndarray
    geometry: Geometry
    path: Path
    header: nib.Nifti1Header | None = field(default=None, repr=False, compare=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the R, A, S axes of ``data``."""
        return self.geometry.canonical_spacing


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _header_size(raw: bytes) -> int | None:
    """348 (NIfTI-1) or 540 (NIfTI-2) from the first field, in either byte order; else None."""
    for order in ("little", "big"):
        size = int.from_bytes(raw[:4], order) if len(raw) >= 4 else 0
        if size in (348, 540):
            return size
    return None


def _nifti_bytes(path: Path) -> bytes:
    """The NIfTI bytes of a ``.nii.gz``: gunzipped with ISA-L (~3× faster than zlib).

    A file that is not gzip-compressed but starts with a NIfTI header (an
    uncompressed volume saved under a ``.nii.gz`` name) is read as is, as ITK does.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return igzip.decompress(raw)
    if _header_size(raw) is not None:
        return raw
    raise igzip.BadGzipFile("not gzip data, nor an uncompressed NIfTI")


def _read_nifti(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI (gzip decompressed with ISA-L, ~3× faster than zlib) and check its header.

    Checks that it is 3D and non-empty, that the voxel type is a real number,
    that the file holds all the voxels its header promises, and that the affine
    is usable; voxels are not read yet.
    """
    if not path.exists():
        raise FlareError("file not found", path)
    if path.is_dir():
        raise FlareError("is a folder, expected a NIfTI file", path)
    if not path.name.endswith(NIFTI_EXTENSIONS):
        raise FlareError("not a NIfTI file name (expected .nii.gz or .nii)", path)
    try:
        if path.name.endswith(".gz"):
            raw = _nifti_bytes(path)
            klass = nib.Nifti2Image if _header_size(raw) == 540 else nib.Nifti1Image
            img = klass.from_bytes(raw)
            available = len(raw)
        else:
            img = nib.load(path)
            available = path.stat().st_size
    except FileNotFoundError as exc:
        raise FlareError("file not found", path) from exc
    except PermissionError as exc:
        raise FlareError("permission denied", path) from exc
    except (OSError, EOFError, igzip.BadGzipFile) as exc:
        raise FlareError(f"truncated or corrupt gzip ({one_line(exc)})", path) from exc
    except Exception as exc:  # nibabel raises several unrelated types for bad headers
        raise FlareError(
            f"not a readable NIfTI file ({type(exc).__name__}: {one_line(exc)})", path
        ) from exc
    if not isinstance(img, nib.Nifti1Image):  # nib.load also opens other formats
        raise FlareError(f"not a NIfTI file ({type(img).__name__})", path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise FlareError(
            f"expected a 3D volume, got {len(img.shape)}D shape {tuple(img.shape)}", path
        )
    if min(shape) == 0:
        raise FlareError(f"volume has an empty dimension, shape {tuple(shape)}", path)
    dtype = img.get_data_dtype()
    if dtype.kind not in "iuf":
        raise FlareError(
            f"unsupported voxel type {dtype} (expected integers or real numbers)", path
        )
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    needed = offset + math.prod(int(n) for n in shape) * dtype.itemsize
    if available < needed:
        raise FlareError(
            f"voxel data is truncated: the header promises {needed} bytes, "
            f"the file holds {available}",
            path,
        )
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise FlareError("affine is singular or not finite", path)
    return img


def read_geometry(path: str | Path) -> Geometry:
    """Read only the header: shape, affine, orientation and spacing of a NIfTI file."""
    path = Path(path)
    img = _read_nifti(path)
    return _geometry(img, path)


#: Largest relative disagreement between header voxel sizes and the affine's axis lengths.
SPACING_TOLERANCE = 1e-2


def _geometry(img: nib.Nifti1Image, path: Path | None = None) -> Geometry:
    """Shape, affine, orientation and spacing; refuses a header whose two spacings disagree.

    Spacing comes from the header's voxel sizes (``pixdim``), as the FLARE22 evaluation
    reads it; viewers and our resampling place voxels by the affine. When the affine's
    axis lengths differ from ``pixdim`` the file is inconsistent, and any mm metric
    would silently be wrong, so it is an error.
    """
    shape = tuple(int(n) for n in img.shape[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.allclose(lengths, spacing, rtol=SPACING_TOLERANCE, atol=0):
        shown = " × ".join(f"{v:.3g}" for v in lengths)
        raise FlareError(
            f"header voxel size {' × '.join(f'{v:.3g}' for v in spacing)} mm disagrees with "
            f"the affine's {shown} mm (inconsistent pixdim and qform/sform)",
            path,
        )
    return Geometry(shape, affine, "".join(nib.aff2axcodes(affine)), spacing)


def _float32_voxels(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Voxels as float32 with the header's slope/intercept applied in float32.

    Reads the stored integers once and converts them, instead of nibabel's
    float64 scaling path: a 512×512×110 int16 CT costs 116 MB, not 232 MB.
    """
    proxy = img.dataobj
    try:
        raw = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
    except Exception as exc:
        raise FlareError(f"voxel data is truncated or unreadable ({one_line(exc)})", path) from exc
    data = raw.reshape(img.shape[:3]).astype(np.float32)
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    if slope != 1.0:
        data *= np.float32(slope)
    if inter != 0.0:
        data += np.float32(inter)
    if not np.issubdtype(raw.dtype, np.integer) and not np.isfinite(data).all():
        raise FlareError("image contains NaN or Inf voxels", path)
    return data


def load_image(path: str | Path) -> Volume:
    """Load a CT as float32 HU in canonical RAS order.

    Raises:
        FlareError: unreadable file, not 3D, empty, or NaN/Inf voxels.
    """
    path = Path(path)
    img = _read_nifti(path)
    geometry = _geometry(img, path)
    data = _float32_voxels(img, path)
    return Volume(geometry.to_canonical(data), geometry, path, img.header)


def load_label(path: str | Path, reference: Geometry | None = None) -> Volume:
    """Load a FLARE22 label volume as uint8 ids in canonical RAS order.

    Args:
        path: the label file.
        reference: the image's geometry; the label must share its shape and affine.

    Raises:
        FlareError: unreadable, non-integer values, ids outside 0..13, or a grid
            that differs from the image's.
    """
    path = Path(path)
    img = _read_nifti(path)
    geometry = _geometry(img, path)
    if reference is not None:
        if geometry.shape != reference.shape:
            raise FlareError(
                f"label shape {geometry.shape} differs from its image's {reference.shape}", path
            )
        if not np.allclose(geometry.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
            raise FlareError("label affine differs from its image's (not on the same grid)", path)
    try:
        values = np.asarray(img.dataobj).reshape(img.shape[:3])
    except Exception as exc:
        raise FlareError(f"voxel data is truncated or unreadable ({one_line(exc)})", path) from exc
    if not np.issubdtype(values.dtype, np.integer):
        if not np.isfinite(values).all():
            raise FlareError("label contains NaN or Inf voxels", path)
        if not np.array_equal(values, np.round(values)):
            raise FlareError("label has non-integer values (is this an image, not a label?)", path)
    # min/max is ~100× cheaper than np.unique on a CT-sized label; unique only names the culprits.
    in_range = values.size == 0 or (values.min() >= 0 and values.max() <= MAX_LABEL_ID)
    unexpected = (
        [] if in_range else [v for v in np.unique(values).tolist() if v < 0 or v > MAX_LABEL_ID]
    )
    if unexpected:
        shown = ", ".join(str(int(v) if float(v).is_integer() else v) for v in unexpected[:8])
        raise FlareError(
            f"unexpected label values {shown} (FLARE22 ids are 0..{MAX_LABEL_ID})", path
        )
    data = values.astype(np.uint8, copy=False)
    return Volume(geometry.to_canonical(data), geometry, path)


def load_case(case: Case) -> tuple[Volume, Volume | None]:
    """Load a case's image and, if present, its label (checked against the image)."""
    image = load_image(case.image)
    label = load_label(case.label, image.geometry) if case.label is not None else None
    return image, label


# --------------------------------------------------------------------------- saving


def save_like(
    canonical: np.ndarray,
    reference: str | Path | Volume,
    out_path: str | Path,
    *,
    overwrite: bool = True,
) -> Path:
    """Write a canonical-order label array onto the grid of ``reference`` as uint8 NIfTI.

    The array is put back into the reference file's voxel order and written with
    the reference's header and affine (qform/sform codes kept, scaling reset),
    so it overlays the reference exactly in any viewer. Written atomically.

    Args:
        canonical: (X, Y, Z) labels in RAS order.
        reference: the image file, or its loaded :class:`Volume` (saves re-reading it).
        out_path: ``.nii.gz`` (or ``.nii``) file to write.
        overwrite: replace an existing file; otherwise refuse.

    Raises:
        FlareError: output exists and ``overwrite`` is False, shape mismatch, disk errors.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FlareError("output exists (pass --overwrite to replace it)", out_path)
    if isinstance(reference, Volume) and reference.header is not None:
        ref_header, geometry, ref_path = reference.header, reference.geometry, reference.path
    else:
        ref_path = reference.path if isinstance(reference, Volume) else Path(reference)
        ref_img = _read_nifti(ref_path)
        ref_header, geometry = ref_img.header, _geometry(ref_img, ref_path)
    data = np.ascontiguousarray(geometry.from_canonical(np.asarray(canonical, dtype=np.uint8)))
    if data.shape != geometry.shape:
        raise FlareError(
            f"array shape {data.shape} does not fit the reference grid {geometry.shape}", ref_path
        )
    header = ref_header.copy()
    header.set_data_shape(geometry.shape)
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, float(data.max(initial=0))
    header.set_intent("label")
    klass = nib.Nifti2Image if isinstance(ref_header, nib.Nifti2Header) else nib.Nifti1Image
    out = klass(data, geometry.affine, header)
    out.set_sform(ref_header.get_sform(), code=int(ref_header["sform_code"]))
    out.set_qform(ref_header.get_qform(), code=int(ref_header["qform_code"]))
    with atomic_path(out_path) as tmp:
        nib.save(out, tmp)
    return out_path


def describe_cases(cases: Iterable[Case]) -> list[dict]:
    """One row per case: id, shape, spacing (mm), orientation and label presence.

    Reads headers only (no voxel data), so it is fast even for 50 real CTs.
    """
    rows = []
    for case in cases:
        g = read_geometry(case.image)
        rows.append(
            {
                "case": case.case_id,
                "shape": "×".join(str(n) for n in g.shape),
                "spacing_mm": "×".join(f"{s:.2f}" for s in g.spacing),
                "orientation": g.axcodes,
                "label": "yes" if case.label is not None else "no",
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of dict rows (same keys), columns aligned, for consoles and logs."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return os.linesep.join(lines)


if __name__ == "__main__":
    from flare_helpers.cli import extract_main

    raise SystemExit(extract_main())
