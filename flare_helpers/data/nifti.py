"""NIfTI loading and saving: canonical RAS arrays plus the file's own grid.

Volumes are loaded with nibabel, voxels read as float32 (images, HU) or uint8
(labels) straight from ``dataobj``, reoriented to the closest canonical RAS
order for the network, and returned together with the file's own shape,
affine, orientation and spacing, so results can be written back onto exactly
the input's grid (:func:`save_like`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from flare_helpers.data.cases import NIFTI_EXTENSIONS, Case
from flare_helpers.data.fileio import atomic_path
from flare_helpers.data.labels import FLARE22_LABELS, IGNORE
from flare_helpers.errors import FlareError, one_line

#: Image and label affines may differ by float noise from the writer; more is a mismatch.
AFFINE_TOLERANCE_MM = 1e-3
MAX_LABEL_ID = max(FLARE22_LABELS)


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
    def canonical_affine(self) -> np.ndarray:
        """4×4 voxel → world (mm, RAS+: +x toward the patient's right) affine of the
        canonical array (:meth:`to_canonical`'s voxel order)."""
        return np.asarray(self.affine) @ inv_ornt_aff(self.ornt, self.shape)

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
    unexpected = (  # IGNORE: a pseudo-label's voxel that training skips
        []
        if in_range
        else [v for v in np.unique(values).tolist() if (v < 0 or v > MAX_LABEL_ID) and v != IGNORE]
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
