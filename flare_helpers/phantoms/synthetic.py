"""FLARE22-layout phantom CTs: an abdomen-like body with all 13 labelled organs.

Two families. ``ct`` (the default) is CT-like and CT-sized at any grid: see
:mod:`flare_helpers.phantoms.ct`. ``simple``, described below, is the fast family
the tests were first written on: smoothly deformed ellipsoids of uniform HU.

In the ``simple`` family each case is built in the canonical RAS voxel frame (axis 0 → patient right,
axis 1 → anterior, axis 2 → superior) from normalised coordinates in (-1, 1)
that span the field of view, so the anatomy fills any grid size. Organs are
smoothly deformed ellipsoids, capsules and tubes at their usual places (liver
large right-upper, spleen left-posterior, kidneys beside the spine with the
right one lower, aorta left of the IVC in front of the spine …) with
contrast-CT HU values plus noise; sizes, positions and intensities vary per case.

The volume is then stored in the orientation a scanner might have written
(RAS, LPS, LAS, …) with the affine changed to match, so the anatomy in world
coordinates is the same whichever voxel order the file uses. Spacing is
anisotropic (in-plane 0.6–0.9 mm, slices 2.5–5 mm) and varies per case.

Everything is drawn from ``numpy.random.default_rng([seed, case_number])``:
the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from tqdm.auto import tqdm

from flare_helpers.data.cases import image_name, label_name, labelled_case_id, unlabelled_case_id
from flare_helpers.data.fileio import atomic_path
from flare_helpers.data.labels import FLARE22_IDS
from flare_helpers.data.layout import DATASET_DIRNAME
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.ct import make_ct_phantom

#: Orientations cycled through by case number; the first case is LPS (DICOM order).
ORIENTATIONS: tuple[str, ...] = ("LPS", "RAS", "LAS", "RPI", "LPS", "RAS")
DEFAULT_SHAPE: tuple[int, int, int] = (64, 64, 32)
ZIP_ROOT = DATASET_DIRNAME
#: Phantom families: ``ct`` (CT-like, the default) and ``simple`` (ellipsoids, fast).
FAMILIES: tuple[str, ...] = ("ct", "simple")
DEFAULT_FAMILY = "ct"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps keep the zip deterministic

AIR_HU, FAT_HU, MUSCLE_HU = -1000.0, -100.0, 50.0


@dataclass(frozen=True)
class Blob:
    """One labelled structure in normalised RAS coordinates.

    Attributes:
        name: FLARE22 organ name (or ``""`` for unlabelled anatomy such as bone).
        center: (u, v, w) centre; u → right, v → anterior, w → superior, each in (-1, 1).
        radii: semi-axes along u, v, w (same units).
        hu: mean intensity in Hounsfield units.
        wobble: amplitude of the smooth radial deformation (0 = exact ellipsoid).
        end: for a capsule, the (u, v, w) of the second end; ``radii[0]`` is its radius.
    """

    name: str
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    hu: float
    wobble: float = 0.08
    end: tuple[float, float, float] | None = None


def _anatomy(rng: np.random.Generator) -> list[Blob]:
    """Organs of one case, painted in this order (later ones win where they overlap)."""

    def jitter(c: tuple[float, float, float], amount: float = 0.03) -> tuple[float, ...]:
        return tuple(float(x + rng.uniform(-amount, amount)) for x in c)

    def size(r: tuple[float, float, float]) -> tuple[float, ...]:
        s = rng.uniform(0.85, 1.15)
        return tuple(float(x * s * rng.uniform(0.95, 1.05)) for x in r)

    def hu(mean: float, spread: float = 12.0) -> float:
        return float(mean + rng.normal(0.0, spread))

    # Right kidney sits 0.10–0.22 (normalised) lower than the left, as in most patients.
    kidney_drop = rng.uniform(0.10, 0.22)
    kidney_w = rng.uniform(-0.30, -0.15)
    return [
        Blob("liver", jitter((0.40, 0.02, 0.45)), size((0.45, 0.42, 0.55)), hu(105), 0.10),
        Blob("spleen", jitter((-0.52, -0.26, 0.48)), size((0.16, 0.24, 0.38)), hu(115)),
        Blob("stomach", jitter((-0.32, 0.22, 0.52)), size((0.22, 0.18, 0.24)), hu(35), 0.12),
        Blob(
            "right_kidney", jitter((0.32, -0.34, kidney_w)), size((0.14, 0.14, 0.35)), hu(170, 15)
        ),
        Blob(
            "left_kidney",
            jitter((-0.32, -0.34, kidney_w + kidney_drop)),
            size((0.14, 0.14, 0.35)),
            hu(170, 15),
        ),
        Blob(
            "pancreas",
            jitter((0.12, -0.02, 0.10)),
            size((0.07, 0.07, 0.07)),
            hu(90),
            0.05,
            end=jitter((-0.38, -0.12, 0.22)),
        ),
        Blob(
            "duodenum",
            jitter((0.24, 0.02, 0.24)),
            size((0.06, 0.06, 0.06)),
            hu(40),
            0.05,
            end=jitter((0.26, -0.02, -0.12)),
        ),
        Blob("gallbladder", jitter((0.40, 0.30, 0.18)), size((0.07, 0.09, 0.12)), hu(10, 5)),
        Blob(
            "right_adrenal",
            jitter((0.22, -0.30, kidney_w + 0.42)),
            size((0.04, 0.06, 0.07)),
            hu(60),
        ),
        Blob(
            "left_adrenal",
            jitter((-0.22, -0.30, kidney_w + kidney_drop + 0.42)),
            size((0.04, 0.06, 0.07)),
            hu(60),
        ),
        Blob(
            "aorta",
            (-0.07, -0.22, -0.6),
            size((0.055, 0.055, 0.0)),
            hu(190, 20),
            0.0,
            end=(-0.07, -0.22, 0.9),
        ),
        Blob(
            "ivc",
            (0.12, -0.18, -1.2),
            size((0.06, 0.06, 0.0)),
            hu(150, 15),
            0.0,
            end=(0.12, -0.18, 0.75),
        ),
        Blob(
            "esophagus",
            (-0.08, -0.12, 0.70),
            size((0.04, 0.04, 0.0)),
            hu(45),
            0.0,
            end=(-0.08, -0.12, 1.3),
        ),
    ]


def _grid(shape: Sequence[int], extra_slices: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates along each axis, as broadcastable 1D arrays.

    The normal scan spans (-1, 1) on every axis. ``extra_slices`` more slices
    on each end of z continue the same coordinate spacing beyond ±1, so the
    central slices of a longer scan have exactly the normal scan's coordinates.
    """
    normal = (shape[0], shape[1], shape[2] - 2 * extra_slices)
    first = (0, 0, -extra_slices)
    axes = [
        (np.arange(n, dtype=np.float32) + np.float32(f) + 0.5) / n0 * 2.0 - 1.0
        for n, n0, f in zip(shape, normal, first, strict=True)
    ]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _bbox(center: np.ndarray, reach: np.ndarray, grid: tuple[np.ndarray, ...]) -> tuple[slice, ...]:
    """Voxel slices covering centre ± reach (normalised units) plus one voxel, within the grid."""
    out = []
    for c, r, g in zip(center, reach, grid, strict=True):
        axis = g.ravel()
        lo = int(np.searchsorted(axis, c - r)) - 1
        hi = int(np.searchsorted(axis, c + r)) + 1
        out.append(slice(max(lo, 0), max(min(hi, axis.size), 0)))
    return tuple(out)


def _relative(grid: tuple[np.ndarray, ...], box: tuple[slice, ...], origin: np.ndarray) -> list:
    """Coordinates inside ``box`` relative to ``origin``, one broadcastable array per axis."""
    out = []
    for axis, (g, s, c) in enumerate(zip(grid, box, origin, strict=True)):
        index = [slice(None)] * 3
        index[axis] = s
        out.append(g[tuple(index)] - c)
    return out


def _blob_mask(
    blob: Blob, grid: tuple[np.ndarray, ...], shape: Sequence[int], rng: np.random.Generator
):
    """Return (bbox slices, boolean mask within the bbox) for one structure."""
    radii = np.asarray(blob.radii, dtype=np.float32)
    start = np.asarray(blob.center, dtype=np.float32)
    if blob.end is None:
        reach = radii * (1.0 + blob.wobble) + 0.02
        box = _bbox(start, reach, grid)
        rel = _relative(grid, box, start)
        r2 = sum((d / r) ** 2 for d, r in zip(rel, radii, strict=True))
        if blob.wobble:
            phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
            freq = rng.uniform(2.0, 4.0, size=3).astype(np.float32)
            bump = sum(
                np.sin(f * d / r + p) for d, r, f, p in zip(rel, radii, freq, phase, strict=True)
            )
            r2 = r2 / (1.0 + blob.wobble * bump / 3.0) ** 2
        return box, r2 <= 1.0
    # Capsule / tube: distance to the segment start–end below the radius.
    end = np.asarray(blob.end, dtype=np.float32)
    radius = float(radii[0])
    lo, hi = np.minimum(start, end) - radius - 0.02, np.maximum(start, end) + radius + 0.02
    box = _bbox((lo + hi) / 2, (hi - lo) / 2, grid)
    rel = _relative(grid, box, start)
    axis = end - start
    t = sum(d * a for d, a in zip(rel, axis, strict=True)) / float(axis @ axis)
    t = np.clip(t, 0.0, 1.0)
    d2 = sum((d - t * a) ** 2 for d, a in zip(rel, axis, strict=True))
    return box, d2 <= radius**2


def make_phantom(
    seed: int,
    case_number: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    fov: float = 1.0,
    voxel_scale: float | Sequence[float] = 1.0,
    family: str = DEFAULT_FAMILY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Build one case in canonical RAS voxel order.

    Args:
        seed: data-set seed.
        case_number: 1-based case number (varies anatomy and spacing).
        shape: (X, Y, Z) voxels; X/Y in-plane, Z slices of the normal scan range.
        fov: scan range along z as a multiple of the normal one: about ``Z * fov``
            slices (``round(Z * (fov - 1) / 2)`` more on each end) of the same
            spacing, centred on the same point, with the same organs at the same
            world positions and more body above and below (a chest-to-pelvis scan
            beside an abdomen-only one). The central ``Z`` slices hold exactly the
            normal scan's labels.
        voxel_scale: multiplies the voxel size (one factor, or X, Y, Z factors): the
            same anatomy in fewer, larger voxels. A 128×128×40 phantom with
            ``(4.5, 4.5, 2)`` spans a real CT's 350–520 mm field of view and
            200–400 mm scan range, so tests can train at CT-like physical size cheaply.
            ``simple`` family only: ``ct`` phantoms are CT-sized at any grid.
        family: ``"ct"`` (:func:`flare_helpers.phantoms.ct.make_ct_phantom`) or ``"simple"``.

    Returns:
        ``(image, labels, affine)``: int16 HU (X, Y, Z), uint8 FLARE22 ids, and the
        4×4 RAS affine in mm (in-plane 0.6–0.9 mm, slices 2.5–5 mm, centred on 0).
    """
    _check_family(family)
    if family == "ct":
        if np.any(np.asarray(voxel_scale) != 1.0):
            raise FlareError("--voxel-scale is for the simple family; ct phantoms are CT-sized")
        image, labels, affine, _ = make_ct_phantom(seed, case_number, shape, fov)
        return image, labels, affine
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise FlareError(f"phantom shape must be three sizes >= 8, got {list(shape)}")
    if not (math.isfinite(fov) and 1.0 <= fov <= 10.0):
        raise FlareError(f"--fov must be between 1 and 10, got {fov}")
    scale = np.broadcast_to(np.asarray(voxel_scale, dtype=np.float64), (3,))
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise FlareError(f"--voxel-scale must be > 0, got {list(np.ravel(voxel_scale))}")
    extra = int(round(shape[2] * (fov - 1.0) / 2.0))
    shape = (shape[0], shape[1], shape[2] + 2 * extra)
    rng = np.random.default_rng([int(seed), int(case_number)])
    inplane = rng.uniform(0.6, 0.9)
    spacing = np.array([inplane, inplane, rng.uniform(2.5, 5.0)]) * scale
    grid = _grid(shape, extra)
    u, v, _ = grid

    image = np.full(shape, AIR_HU, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)

    # Body: subcutaneous fat, a muscle wall, then visceral fat with soft-tissue texture.
    half_width, half_depth = rng.uniform(0.80, 0.92), rng.uniform(0.60, 0.72)
    centre_v = rng.uniform(-0.06, 0.0)
    body_r = np.sqrt((u / half_width) ** 2 + ((v - centre_v) / half_depth) ** 2)
    body = np.broadcast_to(body_r <= 1.0, shape)
    image[body] = FAT_HU
    wall = np.broadcast_to((body_r <= 0.93) & (body_r > 0.86), shape)
    image[wall] = MUSCLE_HU
    inside = np.broadcast_to(body_r <= 0.86, shape)
    image[inside] = -80.0

    # Spine: vertebral body (cancellous, cortical rim) behind the aorta; spinal canal.
    spine_c = (0.0, -0.46 + rng.uniform(-0.02, 0.02))
    spine_r = np.sqrt((u - spine_c[0]) ** 2 + (v - spine_c[1]) ** 2)
    image[np.broadcast_to(spine_r <= 0.13, shape)] = 700.0
    image[np.broadcast_to(spine_r <= 0.105, shape)] = 260.0
    canal_r = np.sqrt((u - spine_c[0]) ** 2 + (v - (spine_c[1] - 0.17)) ** 2)
    image[np.broadcast_to(canal_r <= 0.05, shape)] = 20.0
    muscle_l = np.sqrt(((np.abs(u) - 0.2) / 0.1) ** 2 + ((v - spine_c[1] + 0.08) / 0.1) ** 2)
    image[np.broadcast_to(muscle_l <= 1.0, shape)] = MUSCLE_HU

    for blob in _anatomy(rng):
        box, mask = _blob_mask(blob, grid, shape, rng)
        mask &= body[box]
        image[box][mask] = blob.hu
        labels[box][mask] = FLARE22_IDS[blob.name]

    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    np.clip(image, -1024, 3071, out=image)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2.0
    return np.rint(image).astype(np.int16), labels, affine


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise FlareError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Rewrite a RAS-ordered volume in the voxel order ``axcodes`` (e.g. ``"LPS"``).

    The returned affine changes with the voxels so every voxel keeps its world
    position: the anatomy is the same, only the storage order differs.
    """
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes)))
    new_data = np.ascontiguousarray(apply_orientation(data, ornt))
    return new_data, affine @ inv_ornt_aff(ornt, data.shape)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def case_files(
    seed: int,
    case_number: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    fov: float = 1.0,
    voxel_scale: float | Sequence[float] = 1.0,
    family: str = DEFAULT_FAMILY,
) -> dict[str, bytes]:
    """The two ``.nii.gz`` files of one case, keyed by their path inside the zip."""
    image, labels, affine = make_phantom(seed, case_number, shape, fov, voxel_scale, family)
    axcodes = ORIENTATIONS[(case_number - 1) % len(ORIENTATIONS)]
    image_o, affine_o = reorient(image, affine, axcodes)
    labels_o, _ = reorient(labels, affine, axcodes)
    case_id = labelled_case_id(case_number)
    return {
        f"{ZIP_ROOT}/images/{image_name(case_id)}": _nifti_bytes(image_o, affine_o),
        f"{ZIP_ROOT}/labels/{label_name(case_id)}": _nifti_bytes(labels_o, affine_o),
    }


def _add_member(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    """One regular file (mode 644) with the fixed timestamp that keeps zips deterministic."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    archive.writestr(info, payload)


#: Unlabelled phantoms are case numbers ``UNLABELLED_OFFSET + k``: never a labelled phantom.
UNLABELLED_OFFSET = 100_000


def unlabelled_name(n_cases: int) -> str:
    """FLARE22's name for an unlabelled batch: ``FLARE_UnlabeledCase1-<n>``."""
    return f"FLARE_UnlabeledCase1-{n_cases}"


def write_unlabelled(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    *,
    fov: float = 1.0,
    progress: bool = True,
    family: str = DEFAULT_FAMILY,
) -> tuple[Path, Path]:
    """Write unlabelled phantoms as FLARE22 ships them, their ground truth kept apart.

    ``out_dir/FLARE_UnlabeledCase1-<n>.zip`` holds
    ``FLARE_UnlabeledCase1-<n>/Case_00001_0000.nii.gz`` … (images only); the labels
    go to the folder ``out_dir/FLARE_UnlabeledCase1-<n>_truth/Case_00001.nii.gz`` …,
    outside the zip, for tests and benchmarks. Returns ``(zip, truth folder)``.
    """
    if n_cases < 1:
        raise FlareError(f"--unlabelled must be at least 1, got {n_cases}")
    _check_family(family)
    name = unlabelled_name(n_cases)
    dest, truth = Path(out_dir) / f"{name}.zip", Path(out_dir) / f"{name}_truth"
    truth.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for k in tqdm(range(1, n_cases + 1), desc="unlabelled cases", disable=not progress):
            case = UNLABELLED_OFFSET + k
            files = list(case_files(seed, case, shape, fov, family=family).values())
            _add_member(archive, f"{name}/{image_name(unlabelled_case_id(k))}", files[0])
            with atomic_path(truth / label_name(unlabelled_case_id(k))) as label_tmp:
                label_tmp.write_bytes(files[1])
    return dest, truth


def write_synthetic_zip(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    *,
    fov: float = 1.0,
    voxel_scale: float | Sequence[float] = 1.0,
    progress: bool = True,
    family: str = DEFAULT_FAMILY,
) -> Path:
    """Write ``out_dir/FLARE22Train.zip`` with ``n_cases`` phantom cases.

    Members are ``FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz`` and
    ``FLARE22Train/labels/FLARE22_Tr_0001.nii.gz`` …, as in the real training set.
    The zip is written under a temporary name and renamed when complete.
    """
    if n_cases < 1:
        raise FlareError(f"--cases must be at least 1, got {n_cases}")
    _check_family(family)
    dest = Path(out_dir) / f"{ZIP_ROOT}.zip"
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for case_number in tqdm(
            range(1, n_cases + 1), desc="synthetic cases", disable=not progress
        ):
            files = case_files(seed, case_number, shape, fov, voxel_scale, family)
            for name, payload in files.items():
                _add_member(archive, name, payload)
    return dest
