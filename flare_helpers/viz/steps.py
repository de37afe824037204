"""Teaching figures: the preprocessing steps on one case, and a training batch with its labels.

Both show what the network is given, in the coronal plane (the one where a
resize squeezes organs along z) or the axial one, with the display rules of
:mod:`flare_helpers.viz.planes`. On the network grid pixels are drawn square,
one per voxel, exactly as the network sees them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from flare_helpers.config import Config
from flare_helpers.data.labels import ORGAN_COLORS, OrganSet
from flare_helpers.data.nifti import Volume
from flare_helpers.preprocess.pipeline import (
    PreprocessParams,
    crop_box,
    prepare_image,
    prepare_label,
)
from flare_helpers.viz.planes import (
    PLANE_AXIS,
    legend_handles,
    organ_centre,
    overlay_rgb,
    plane_slice,
    slice_index,
)
from flare_helpers.viz.slices import show_plane

_UNIT_WINDOW = (0.0, 1.0)


def _legend(fig: Figure, organs: Sequence[str]) -> None:
    handles = legend_handles(organs)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9)


def _outline(ax, box: Sequence[slice], axis: int, shape2d: Sequence[int], **style) -> None:
    """Draw a 3D box (canonical voxels) as a rectangle on a plane cut along ``axis``."""
    rows, cols = shape2d
    others = [a for a in range(3) if a != axis]  # display columns ← others[0], rows ← others[1]
    c0, c1 = cols - box[others[0]].stop, cols - box[others[0]].start
    r0, r1 = rows - box[others[1]].stop, rows - box[others[1]].start
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, **style))


def plot_localizer_box(
    image: Volume,
    crop: Sequence[slice],
    region,
    organs: Sequence[str],
    plane: str = "coronal",
    title: str = "",
    rejected: str = "",
) -> Figure:
    """One CT slice with the body crop, the localiser's organ boxes and the box predicted.

    The fine network's windows cover only the dashed box (the organ boxes plus
    ``infer.roi_margin_mm``); the rest of the body crop (yellow) is background.
    A box that failed the localiser's checks is drawn in red, and the title says
    why and that the whole crop is predicted.

    Args:
        image: the CT as loaded (canonical RAS, HU).
        crop, region, rejected: from :func:`flare_helpers.infer.predict.locate_on_ct`
            (CT voxels; ``rejected``: why prediction does not use the box, or empty).
        organs: training organs in class order (class k is ``organs[k - 1]``).
        plane: ``"coronal"`` (default), ``"axial"`` or ``"sagittal"``.
        title: figure title (default: what is drawn).
    """
    organ_set = OrganSet.from_names(organs)
    axis = PLANE_AXIS[plane]
    shown = region.box if region is not None and region.box is not None else tuple(crop)
    index = (shown[axis].start + shown[axis].stop) // 2
    hu = plane_slice(image.data, plane, index)
    fig = Figure(figsize=(6.4, 5.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    show_plane(ax, overlay_rgb(hu, None, organ_set.organs), image.spacing, plane)
    _outline(ax, crop, axis, hu.shape, color="yellow", lw=1.5)
    found = "no organ found: the whole body crop is predicted"
    if region is not None and region.box is not None:
        for cls, box in region.organs.items():
            name = organ_set.organs[cls - 1]
            _outline(ax, box, axis, hu.shape, color=ORGAN_COLORS[name], lw=1.2)
        union = "red" if rejected else "white"
        _outline(ax, region.box, axis, hu.shape, color=union, lw=1.5, ls="--")
        found = "organ boxes, and their union + margin (dashed): the only windows run"
        if rejected:
            found = f"organ boxes, union (red, dashed) not used:\n{rejected}"
    ax.set_title(title or f"body crop (yellow); {found}", fontsize=9)
    _legend(fig, organ_set.organs)
    return fig


def plot_preprocessing(image: Volume, label: Volume, cfg: Config, plane: str = "coronal") -> Figure:
    """Three panels of one case: the CT with its body box, the network grid, the network input.

    1. the original CT (HU, true proportions) with the body crop outlined;
    2. the crop on the network grid (``resize``: squeezed into ``target_shape``;
       ``spacing``: resampled to ``target_spacing``), one square pixel per voxel;
    3. the HU window mapped to [0, 1] with the training classes overlaid.

    Args:
        image, label: the case as loaded (canonical RAS; HU and FLARE22 ids).
        cfg: the settings whose preprocessing is shown.
        plane: ``"coronal"`` (default), ``"axial"`` or ``"sagittal"``.
    """
    params = PreprocessParams.from_config(cfg)
    organs = OrganSet.from_names(cfg.data.organs)
    box = crop_box(image, params)
    x, _ = prepare_image(image, params)
    classes = prepare_label(label, box, params)
    centre = organ_centre(label.data, organs.organs, image.data.shape)
    index = slice_index(centre, plane)
    axis = PLANE_AXIS[plane]
    grid_index = int(
        np.clip(
            (index - box[axis].start + 0.5) * x.shape[axis] / (box[axis].stop - box[axis].start),
            0,
            x.shape[axis] - 1,
        )
    )
    fig = Figure(figsize=(12, 5.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    hu = plane_slice(image.data, plane, index)
    show_plane(axes[0], overlay_rgb(hu, None, organs.organs), image.spacing, plane)
    _outline(axes[0], box, axis, hu.shape, color="yellow", lw=1.5)
    axes[0].set_title(f"CT {'×'.join(map(str, image.data.shape))} voxels, body box", fontsize=10)
    grid_hu = plane_slice(np.asarray(x), plane, grid_index)
    show_plane(
        axes[1],
        overlay_rgb(grid_hu, None, organs.organs, hu_window=_UNIT_WINDOW),
        (1.0, 1.0, 1.0),
        plane,
    )
    how = (
        f"squeezed into {'×'.join(map(str, params.target_shape))}"
        if params.mode == "resize"
        else f"at {'×'.join(f'{s:g}' for s in params.target_spacing)} mm: "
        f"{'×'.join(map(str, x.shape))}"
    )
    axes[1].set_title(f"network grid, {how}", fontsize=10)
    ids = organs.to_flare(plane_slice(classes, plane, grid_index))
    show_plane(
        axes[2],
        overlay_rgb(grid_hu, ids, organs.organs, hu_window=_UNIT_WINDOW),
        (1.0, 1.0, 1.0),
        plane,
    )
    window = params.hu_window
    axes[2].set_title(f"[{window[0]:g}, {window[1]:g}] HU → [0, 1], training classes", fontsize=10)
    _legend(fig, organs.organs)
    return fig


def plot_batch(
    x: np.ndarray, y: np.ndarray, organs: Sequence[str], plane: str = "axial", title: str = ""
) -> Figure:
    """One training batch: each sample's input (top) and its labels (bottom).

    Args:
        x: (B, X, Y, Z, 1) network inputs in [0, 1] (canonical RAS order).
        y: (B, X, Y, Z, C) one-hot training classes (background first).
        organs: training organs in class order (class k is ``organs[k - 1]``).
        plane: the plane shown; each sample is cut through its most-labelled slice.
        title: figure title.
    """
    organ_set = OrganSet.from_names(organs)
    axis = PLANE_AXIS[plane]
    batch = x.shape[0]
    fig = Figure(figsize=(2.6 * batch + 0.4, 5.8), dpi=100, layout="constrained")
    axes = np.asarray(fig.subplots(2, batch, squeeze=False))
    for k in range(batch):
        classes = np.argmax(y[k], axis=-1).astype(np.uint8)
        other = tuple(a for a in range(3) if a != axis)
        index = int(np.argmax((classes > 0).sum(axis=other)))
        grey = plane_slice(x[k, ..., 0], plane, index)
        ids = organ_set.to_flare(plane_slice(classes, plane, index))
        show_plane(
            axes[0, k],
            overlay_rgb(grey, None, organs, hu_window=_UNIT_WINDOW),
            (1.0, 1.0, 1.0),
            plane,
        )
        show_plane(
            axes[1, k],
            overlay_rgb(grey, ids, organs, hu_window=_UNIT_WINDOW),
            (1.0, 1.0, 1.0),
            plane,
        )
        axes[0, k].set_title(f"sample {k + 1}, {plane} {index + 1}/{x.shape[1 + axis]}", fontsize=9)
    fig.suptitle(title or f"one training batch: {batch} × {'×'.join(map(str, x.shape[1:4]))}")
    _legend(fig, organ_set.organs)
    return fig
