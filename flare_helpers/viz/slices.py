"""Static slice figures: axial, coronal and sagittal planes with organ overlays."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from flare_helpers.data.fileio import atomic_path
from flare_helpers.data.labels import DEFAULT_ORGANS
from flare_helpers.errors import FlareError
from flare_helpers.viz.planes import (
    DEFAULT_ALPHA,
    DEFAULT_HU_WINDOW,
    ORIENTATION_LETTERS,
    PLANE_AXIS,
    PLANES,
    CaseArrays,
    dice_text,
    legend_handles,
    organ_names,
    organ_slices,
    overlay_rgb,
    plane_extent_mm,
    plane_pixel_mm,
    plane_slice,
    slice_index,
)

#: Column titles of ``plot_case``; axes are labelled ``"<plane>:<column>"``.
COLUMN_TITLES: dict[str, str] = {"image": "CT", "gt": "Ground truth", "pred": "Prediction"}
_MAX_FIGURE_HEIGHT_IN = 12.0
_COLUMN_WIDTH_IN = 3.2
_DPI = 100  # figure sizes are whole pixels at this resolution


def plot_case(
    image: np.ndarray,
    spacing: Sequence[float],
    gt: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    *,
    organs: Sequence[str] = DEFAULT_ORGANS,
    slices: Sequence[int] | None = None,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    dice: Mapping[str, float] | None = None,
    title: str = "",
    alpha: float = DEFAULT_ALPHA,
) -> Figure:
    """Axial, coronal and sagittal slices of one case with organ overlays, each plane cut
    where it shows the most organs.

    Rows are the axial, coronal and sagittal planes; columns the CT alone, the
    ground-truth overlay and the prediction overlay (a column only for what is
    given). Radiological convention: the patient's right is on the image's left
    (axial, coronal), anterior is up (axial) or left (sagittal), superior is up
    (coronal, sagittal); edge letters say so. Pixels have their physical aspect.

    Args:
        image: (X, Y, Z) CT in HU, canonical RAS voxel order.
        spacing: voxel size in mm along R, A, S.
        gt: ground-truth FLARE22 ids, same shape, or None.
        pred: predicted FLARE22 ids, same shape, or None.
        organs: organs to tint (others are not drawn).
        slices: voxel position (i, j, k) whose sagittal (i), coronal (j) and axial (k)
            slices are shown. By default each plane's slice is chosen on its own
            (:func:`~flare_helpers.viz.planes.organ_slices`, from ``gt``, else ``pred``):
            the one showing as many of ``organs`` as any slice of that plane can,
            ties going to the larger total organ area; the volume centre without labels.
        hu_window: (lowest, highest) HU mapped to black and white.
        dice: organ → Dice, written in the title.
        title: first title line, e.g. the case id.
        alpha: overlay opacity 0..1.

    Returns:
        A matplotlib Figure (not registered with pyplot; Jupyter displays it
        when it is a cell's value; save it with :func:`save_figure`).
    """
    case = CaseArrays(image, spacing, gt, pred)
    organs = organ_names(organs)
    shape = case.image.shape
    position = tuple(slices) if slices is not None else organ_slices(case.labels, organs, shape)
    if len(position) != 3:
        raise FlareError(f"slices must be a voxel position (i, j, k), got {slices}")
    position = tuple(int(np.clip(p, 0, n - 1)) for p, n in zip(position, shape, strict=True))
    columns = ["image"] + [name for name in ("gt", "pred") if getattr(case, name) is not None]

    ratios = [_height_ratio(shape, case.spacing, plane) for plane in PLANES]
    col_width = min(_COLUMN_WIDTH_IN, (_MAX_FIGURE_HEIGHT_IN - 1.4) / sum(ratios))
    size_px = np.round(
        np.array([col_width * len(columns) + 0.6, col_width * sum(ratios) + 1.4]) * _DPI
    )
    fig = Figure(figsize=tuple(size_px / _DPI), dpi=_DPI, layout="constrained")
    grid = fig.add_gridspec(len(PLANES), len(columns), height_ratios=ratios)
    for row, plane in enumerate(PLANES):
        index = slice_index(position, plane)
        grey = plane_slice(case.image, plane, index)
        for col, column in enumerate(columns):
            labels = getattr(case, column) if column != "image" else None
            labels2d = plane_slice(labels, plane, index) if labels is not None else None
            rgb = overlay_rgb(grey, labels2d, organs, hu_window=hu_window, alpha=alpha)
            ax = fig.add_subplot(grid[row, col], label=f"{plane}:{column}")
            show_plane(ax, rgb, case.spacing, plane)
            if row == 0:
                ax.set_title(COLUMN_TITLES[column], fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{plane} {index + 1}/{shape[PLANE_AXIS[plane]]}", fontsize=9)

    width_in = float(fig.get_size_inches()[0])
    scores = dice_text(dice or {}, organs, width=int(width_in * 11))
    fig.suptitle("\n".join(t for t in (title, scores) if t), fontsize=11)
    if len(columns) > 1:
        handles = legend_handles(organs)
        ncol = min(len(handles), max(1, int(width_in / 1.5)))
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: float | None = None) -> Path:
    """Write ``fig`` as an RGB PNG atomically (no half-written file on a crash); return the path.

    The PNG is ``fig.get_size_inches() * dpi`` pixels (``dpi`` defaults to the figure's),
    8-bit RGB: no palette, which would merge organ colours, and no alpha channel.
    """
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, facecolor=fig.get_facecolor())
    with atomic_path(path) as tmp:
        Image.open(buffer).convert("RGB").save(tmp, format="PNG")
    return path


def show_plane(ax, rgb: np.ndarray, spacing: Sequence[float], plane: str) -> None:
    """Draw a displayed slice with its physical aspect and R/L/A/P/S/I edge letters."""
    row_mm, col_mm = plane_pixel_mm(spacing, plane)
    ax.imshow(rgb, aspect=row_mm / col_mm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    left, right, top, bottom = ORIENTATION_LETTERS[plane]
    style = {"color": "white", "fontsize": 8, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def _height_ratio(shape: Sequence[int], spacing: Sequence[float], plane: str) -> float:
    height, width = plane_extent_mm(shape, spacing, plane)
    return float(np.clip(height / width, 0.2, 5.0))
