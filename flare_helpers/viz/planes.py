"""Shared 2D plumbing: pick a slice in display orientation, window HU, tint organs.

Volumes are in canonical RAS voxel order (axis 0 → patient's right, axis 1 →
anterior, axis 2 → superior). Every 2D view follows the radiological display
convention:

- axial: patient's right on the image's left, anterior up;
- coronal: patient's right on the image's left, superior up;
- sagittal: anterior on the image's left, superior up.

With a ``(first, second)`` slice of the two remaining RAS axes, each of these
is ``slice.T[::-1, ::-1]`` (rows run down the second axis, columns down the
first), so one rule serves all three planes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flare_helpers.config import PreprocessConfig
from flare_helpers.data.labels import ORGAN_COLORS, OrganSet
from flare_helpers.errors import FlareError

#: Plane name → the RAS axis it is perpendicular to.
PLANE_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
#: Planes in the order the figures show them (rows of ``plot_case``).
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
#: Letters at the image's (left, right, top, bottom) edges, per plane.
ORIENTATION_LETTERS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}
#: Abdominal soft-tissue window in HU: the network's input window (``preprocess.hu_window``).
DEFAULT_HU_WINDOW: tuple[float, float] = PreprocessConfig.hu_window
DEFAULT_ALPHA = 0.45


@dataclass(frozen=True)
class CaseArrays:
    """One case as the viewers need it, all arrays in canonical RAS voxel order.

    Attributes:
        image: (X, Y, Z) CT in HU (any real dtype; shown as float32).
        spacing: voxel size in mm along R, A, S.
        gt: (X, Y, Z) ground-truth FLARE22 ids (uint8), or None.
        pred: (X, Y, Z) predicted FLARE22 ids (uint8), or None.
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    gt: np.ndarray | None = None
    pred: np.ndarray | None = None

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim != 3:
            raise FlareError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise FlareError(f"spacing must be three positive mm values, got {self.spacing}")
        object.__setattr__(self, "spacing", spacing)
        for name in ("gt", "pred"):
            labels = getattr(self, name)
            if labels is not None and np.shape(labels) != image.shape:
                raise FlareError(
                    f"{name} shape {np.shape(labels)} differs from the image's {image.shape}"
                )

    @property
    def labels(self) -> np.ndarray | None:
        """The label volume that locates the organs: ground truth, else the prediction."""
        return self.gt if self.gt is not None else self.pred


def organ_ids(organs: Sequence[str]) -> tuple[int, ...]:
    """FLARE22 ids of ``organs`` (checked: unknown names raise FlareError)."""
    return OrganSet.from_names(organs).flare_ids


def organ_names(organs: Sequence[str]) -> tuple[str, ...]:
    """Normalised organ names (``"Right Kidney"`` → ``"right_kidney"``), checked."""
    return OrganSet.from_names(organs).organs


def display_name(organ: str) -> str:
    """Human-readable organ name for legends and titles (``right_kidney`` → ``right kidney``)."""
    return organ.replace("_", " ")


def legend_handles(organs: Sequence[str]) -> list:
    """Matplotlib legend patches, one per organ in its ``ORGAN_COLORS`` colour."""
    from matplotlib.patches import Patch  # matplotlib only where a figure is drawn

    return [Patch(color=ORGAN_COLORS[o], label=display_name(o)) for o in organs]


def plane_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D slice ``index`` of ``plane``, oriented for display (row 0 at the top)."""
    axis = _axis(plane)
    return np.take(volume, int(index), axis=axis).T[::-1, ::-1]


def plane_shape(shape: Sequence[int], plane: str) -> tuple[int, int]:
    """(rows, columns) of a displayed slice of a volume of ``shape``."""
    first, second = (n for axis, n in enumerate(shape) if axis != _axis(plane))
    return second, first


def plane_pixel_mm(spacing: Sequence[float], plane: str) -> tuple[float, float]:
    """(row height, column width) in mm of one displayed pixel; imshow aspect is their ratio."""
    first, second = (float(s) for axis, s in enumerate(spacing) if axis != _axis(plane))
    return second, first


def plane_extent_mm(
    shape: Sequence[int], spacing: Sequence[float], plane: str
) -> tuple[float, float]:
    """(height, width) in mm of a displayed slice."""
    rows, cols = plane_shape(shape, plane)
    row_mm, col_mm = plane_pixel_mm(spacing, plane)
    return rows * row_mm, cols * col_mm


def organ_centre(
    labels: np.ndarray | None, organs: Sequence[str], shape: Sequence[int]
) -> tuple[int, int, int]:
    """Voxel (i, j, k) at the centre of the bounding box of ``organs`` in ``labels``.

    Falls back to the volume centre when there are no labels or none of the organs
    is present, so a default slice always exists.
    """
    centre = [int(n) // 2 for n in shape]
    if labels is None:
        return tuple(centre)
    present = np.isin(labels, organ_ids(organs))
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(present.any(axis=other))
        if hits.size:
            centre[axis] = int(hits[0] + hits[-1]) // 2
    return tuple(centre)


def organ_slices(
    labels: np.ndarray | None, organs: Sequence[str], shape: Sequence[int]
) -> tuple[int, int, int]:
    """Voxel (i, j, k) whose sagittal (i), coronal (j) and axial (k) slices show the most organs.

    Each plane's slice is chosen on its own: the one that shows as many of
    ``organs`` as any slice of that plane can; among those, the one with the
    largest total organ area; then the one nearest the centre of the organs'
    bounding box (:func:`organ_centre`). The three slices therefore need not
    meet at one organ. Falls back to :func:`organ_centre` along an axis where
    none of the organs is present (the volume centre without labels).
    """
    centre = organ_centre(labels, organs, shape)
    if labels is None:
        return centre
    counts = [np.zeros(int(n), dtype=np.int64) for n in shape]
    areas = [np.zeros(int(n), dtype=np.int64) for n in shape]
    for flare_id in organ_ids(organs):
        mask = labels == flare_id
        for axis in range(3):
            area = mask.sum(axis=tuple(a for a in range(3) if a != axis))
            counts[axis] += area > 0
            areas[axis] += area
    chosen = []
    for axis in range(3):
        if not counts[axis].any():
            chosen.append(centre[axis])
            continue
        nearness = -np.abs(np.arange(int(shape[axis])) - centre[axis])
        chosen.append(int(np.lexsort((nearness, areas[axis], counts[axis]))[-1]))
    return tuple(chosen)


def slice_index(position: Sequence[int], plane: str) -> int:
    """Index along ``plane``'s axis of a voxel position (i, j, k)."""
    return int(position[_axis(plane)])


def window(image2d: np.ndarray, hu_window: Sequence[float]) -> np.ndarray:
    """HU → grey 0..1 (float32) for display: ``hu_window`` = (lowest, highest) HU shown."""
    low, high = float(hu_window[0]), float(hu_window[1])
    if not high > low:
        raise FlareError(f"hu_window must be (low, high) with high > low, got {tuple(hu_window)}")
    grey = (np.asarray(image2d, dtype=np.float32) - low) / (high - low)
    return np.clip(grey, 0.0, 1.0)


def colour_tables(organs: Sequence[str], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-label-id RGB (256×3) and opacity (256,) tables; ids outside ``organs`` are clear."""
    rgb = np.zeros((256, 3), dtype=np.float32)
    opacity = np.zeros(256, dtype=np.float32)
    for name, flare_id in zip(organ_names(organs), organ_ids(organs), strict=True):
        rgb[flare_id] = ORGAN_COLORS[name]
        opacity[flare_id] = float(np.clip(alpha, 0.0, 1.0))
    return rgb, opacity


def overlay_rgb(
    image2d: np.ndarray,
    labels2d: np.ndarray | None,
    organs: Sequence[str],
    *,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    alpha: float = DEFAULT_ALPHA,
) -> np.ndarray:
    """Windowed grey CT with organs tinted in their ``ORGAN_COLORS``: (H, W, 3) float32 0..1."""
    grey = window(image2d, hu_window)[..., None]
    rgb = np.repeat(grey, 3, axis=-1)
    if labels2d is None:
        return rgb
    colours, opacity = colour_tables(organs, alpha)
    ids = np.asarray(labels2d, dtype=np.uint8)
    a = opacity[ids][..., None]
    return rgb * (1.0 - a) + colours[ids] * a


def dice_text(dice: Mapping[str, float], organs: Sequence[str], width: int = 80) -> str:
    """``"Dice: liver 0.962 · spleen 0.931"``, wrapped between organs at ``width`` characters."""
    parts = [f"{display_name(o)} {float(dice[o]):.3f}" for o in organs if o in dice]
    if not parts:
        return ""
    lines = ["Dice:"]
    for part in parts:
        joined = f"{lines[-1]} {part}" if lines[-1] == "Dice:" else f"{lines[-1]} · {part}"
        if len(joined) > width and lines[-1] != "Dice:":
            lines.append(part)
        else:
            lines[-1] = joined
    return "\n".join(lines)


def _axis(plane: str) -> int:
    try:
        return PLANE_AXIS[plane]
    except KeyError:
        raise FlareError(f"unknown plane '{plane}'; choose one of {', '.join(PLANES)}") from None
