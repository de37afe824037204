"""Per-organ segmentation metrics on the native grid, following the FLARE22 evaluation.

Plain numpy on boolean masks (or label-id volumes for :func:`score_case`), with
the voxel spacing in mm taken from the file header. The surface metrics use
DeepMind's ``surface-distance`` package, the code the official FLARE22 script is
built on (JunMa11/FLARE, ``FLARE22/Evaluation/FLARE22_DSC_NSD_Eval.py``, commit
be3eb6f, and its ``SurfaceDice.py``). Its rules, reproduced here:

* per case and organ; an organ absent from both masks scores DSC 1 and NSD 1,
  an organ present in only one of them DSC 0 and NSD 0;
* NSD is the surface Dice at the organ's tolerance in mm (liver 5, kidneys 3,
  spleen 3, …; ``labels.NSD_TOLERANCE_MM``);
* aorta, IVC and esophagus are scored only on the slices (superior axis) that
  hold the organ in the ground truth.

The empty-mask cases are decided here, before the package is called: its
empty-mask branches use ``np.Inf`` / ``np.NaN``, which NumPy 2 removed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import surface_distance
from scipy import ndimage

from flare_helpers.data.labels import DEFAULT_ORGANS, NSD_TOLERANCE_MM, OrganSet
from flare_helpers.errors import FlareError

#: Percentile of the surface distances reported as the robust Hausdorff distance.
HD95_PERCENT = 95.0
#: Tubular organs that FLARE22 scores only within the ground truth's slice range.
SLICE_RANGE_ORGANS: frozenset[str] = frozenset({"aorta", "ivc", "esophagus"})
#: Axis of the canonical RAS volume that runs toward Superior (the FLARE22 "z").
SUPERIOR_AXIS = 2

SpacingLike = Sequence[float] | np.ndarray


# --------------------------------------------------------------------------- checks


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as boolean arrays of one shape (non-zero = foreground)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"masks differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    return gt.astype(bool, copy=False), pred.astype(bool, copy=False)


def _check_spacing(spacing_mm: SpacingLike, ndim: int) -> tuple[float, ...]:
    """Spacing as a tuple of positive finite floats, one per array axis."""
    spacing = tuple(float(s) for s in np.ravel(np.asarray(spacing_mm, dtype=np.float64)))
    if len(spacing) != ndim:
        raise ValueError(f"spacing {list(spacing)} has {len(spacing)} values for a {ndim}D mask")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {list(spacing)}")
    return spacing


def _check_surface_input(gt: np.ndarray, pred: np.ndarray, spacing_mm: SpacingLike):
    gt, pred = _check_pair(gt, pred)
    if gt.ndim not in (2, 3):
        raise ValueError(f"surface metrics need 2D or 3D masks, got shape {gt.shape}")
    return gt, pred, _check_spacing(spacing_mm, gt.ndim)


def _check_tolerance(tolerance_mm: float) -> float:
    tolerance = float(tolerance_mm)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    return tolerance


# --------------------------------------------------------------------------- metrics


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice similarity coefficient (DSC) of two masks: 2|G∩P| / (|G| + |P|).

    Args:
        gt: ground-truth mask, any shape; non-zero voxels are foreground.
        pred: predicted mask, same shape.

    Returns:
        DSC in [0, 1]; 1.0 when both masks are empty (FLARE22: nothing to find,
        nothing found), 0.0 when exactly one is empty.

    Raises:
        ValueError: the masks differ in shape.
    """
    gt, pred = _check_pair(gt, pred)
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if total == 0:
        return 1.0
    return 2 * int(np.count_nonzero(gt & pred)) / total


def _surface_distances(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """``surface_distance.compute_surface_distances`` for two non-empty masks.

    The package crops both masks to the bounding box of their union itself
    (``_compute_bounding_box`` / ``_crop_to_bounding_box``), so callers need not.
    """
    with warnings.catch_warnings():
        # It still calls the deprecated scipy.ndimage.filters/.morphology namespaces.
        warnings.simplefilter("ignore", DeprecationWarning)
        return surface_distance.compute_surface_distances(gt, pred, spacing)


def _surface_scores(
    gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], tolerance: float | None
) -> tuple[float, float]:
    """(NSD at ``tolerance``, HD95 in mm) of checked boolean masks; NSD is NaN if no tolerance."""
    gt_empty, pred_empty = not gt.any(), not pred.any()
    if gt_empty and pred_empty:
        return 1.0, 0.0
    if gt_empty or pred_empty:
        return 0.0, math.nan
    distances = _surface_distances(gt, pred, spacing)
    nsd = (
        math.nan
        if tolerance is None
        else float(surface_distance.compute_surface_dice_at_tolerance(distances, tolerance))
    )
    hd = float(surface_distance.compute_robust_hausdorff(distances, HD95_PERCENT))
    return nsd, hd


def normalized_surface_dice(
    gt: np.ndarray, pred: np.ndarray, spacing_mm: SpacingLike, tolerance_mm: float
) -> float:
    """Normalized surface Dice (NSD): the share of both surfaces within ``tolerance_mm`` of the other.

    Surfaces are the marching-cubes surface elements of ``surface_distance``,
    weighted by their area in mm², so anisotropic spacing is handled exactly.

    Args:
        gt: ground-truth mask, 2D or 3D; non-zero voxels are foreground.
        pred: predicted mask, same shape.
        spacing_mm: voxel size in mm along each axis of the arrays (from the header).
        tolerance_mm: largest surface-to-surface distance that still counts as a match.

    Returns:
        NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises:
        ValueError: different shapes, not 2D/3D, spacing of the wrong length or not
            positive, or a negative tolerance.
    """
    gt, pred, spacing = _check_surface_input(gt, pred, spacing_mm)
    return _surface_scores(gt, pred, spacing, _check_tolerance(tolerance_mm))[0]


def hd95(gt: np.ndarray, pred: np.ndarray, spacing_mm: SpacingLike) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (``compute_robust_hausdorff``).

    For each direction (ground truth → prediction and back) the surface elements
    are sorted by their distance to the other surface and the distance at 95 %
    of the cumulated surface *area* is taken; the result is the larger of the two.

    Args:
        gt: ground-truth mask, 2D or 3D; non-zero voxels are foreground.
        pred: predicted mask, same shape.
        spacing_mm: voxel size in mm along each axis of the arrays (from the header).

    Returns:
        HD95 in mm; 0.0 when both masks are empty; ``nan`` when exactly one is
        empty (there is no surface to measure to, so the distance is undefined;
        summaries count these cases instead of averaging them).

    Raises:
        ValueError: different shapes, not 2D/3D, or spacing of the wrong length or not positive.
    """
    gt, pred, spacing = _check_surface_input(gt, pred, spacing_mm)
    return _surface_scores(gt, pred, spacing, None)[1]


def volume_ml(mask: np.ndarray, spacing_mm: SpacingLike) -> float:
    """Volume of a mask in millilitres: foreground voxels × voxel volume (mm³) / 1000.

    Args:
        mask: any-dimensional mask; non-zero voxels are foreground.
        spacing_mm: voxel size in mm along each axis of ``mask``.

    Returns:
        Volume in ml (0.0 for an empty mask).

    Raises:
        ValueError: spacing of the wrong length or not positive.
    """
    mask = np.asarray(mask)
    spacing = _check_spacing(spacing_mm, mask.ndim)
    return int(np.count_nonzero(mask)) * math.prod(spacing) / 1000.0


# --------------------------------------------------------------------------- per case


def _organ_box(
    gt_boxes: list, pred_boxes: list, label: int, shape: tuple[int, ...]
) -> tuple[slice, ...] | None:
    """Union bounding box of ``label`` in both volumes, one voxel wider; None if absent."""
    boxes = [b[label - 1] for b in (gt_boxes, pred_boxes) if b[label - 1] is not None]
    if not boxes:
        return None
    return tuple(
        slice(
            max(min(b[ax].start for b in boxes) - 1, 0), min(max(b[ax].stop for b in boxes) + 1, n)
        )
        for ax, n in enumerate(shape)
    )


def _slice_range(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks restricted to the superior-axis slices that hold ground truth.

    The official script slices ``gt[:, :, z_lower:z_upper]``, which drops the top
    labelled slice (and fails on a one-slice organ); the range here is inclusive.
    """
    z = np.flatnonzero(gt.any(axis=tuple(ax for ax in range(gt.ndim) if ax != SUPERIOR_AXIS)))
    keep = [slice(None)] * gt.ndim
    keep[SUPERIOR_AXIS] = slice(int(z[0]), int(z[-1]) + 1)
    return gt[tuple(keep)], pred[tuple(keep)]


def _tolerances_for(organs: Sequence[str], tolerances: Mapping[str, float]) -> dict[str, float]:
    missing = [organ for organ in organs if organ not in tolerances]
    if missing:
        raise FlareError(
            f"no NSD tolerance for organ(s) {', '.join(missing)} (tolerances given for: "
            f"{', '.join(sorted(tolerances)) or 'none'}); pass tolerances with a value in mm "
            f"for each scored organ, e.g. {{'{missing[0]}': 3.0}}"
        )
    return {organ: _check_tolerance(tolerances[organ]) for organ in organs}


def _check_id_volumes(gt_ids: np.ndarray, pred_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 3D integer label-id volumes of one shape, as arrays."""
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"label volumes differ in shape: ground truth {gt_ids.shape}, prediction {pred_ids.shape}"
        )
    if gt_ids.ndim != 3:
        raise ValueError(f"label volumes must be 3D, got shape {gt_ids.shape}")
    for name, ids in (("ground truth", gt_ids), ("prediction", pred_ids)):
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} label ids must be integers, got dtype {ids.dtype}")
    return gt_ids, pred_ids


def _organ_masks(
    gt_ids: np.ndarray, pred_ids: np.ndarray, organ_set: OrganSet
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(organ, gt mask, pred mask)`` per organ, cut to the union box of both masks.

    An organ absent from both volumes gets two empty 1×1×1 masks.
    """
    top = max(organ_set.flare_ids)
    gt_boxes = ndimage.find_objects(gt_ids, max_label=top)
    pred_boxes = ndimage.find_objects(pred_ids, max_label=top)
    for organ, label in zip(organ_set.organs, organ_set.flare_ids, strict=True):
        box = _organ_box(gt_boxes, pred_boxes, label, gt_ids.shape)
        if box is None:
            empty = np.zeros((1, 1, 1), dtype=bool)
            yield organ, empty, empty
        else:
            yield organ, gt_ids[box] == label, pred_ids[box] == label


def _scored_region(organ: str, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The masks FLARE22 scores: tubular organs only on the ground truth's slices."""
    if organ in SLICE_RANGE_ORGANS and gt.any():
        return _slice_range(gt, pred)
    return gt, pred


def score_case(
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    spacing_mm: SpacingLike,
    organs: Sequence[str] = DEFAULT_ORGANS,
    tolerances: Mapping[str, float] = NSD_TOLERANCE_MM,
) -> list[dict]:
    """Score one case organ by organ, as the FLARE22 evaluation does.

    Both volumes hold FLARE22 label ids (1 liver, 2 right kidney, 3 spleen,
    13 left kidney, …) on the same grid. Each organ is cut out of the union
    bounding box of its two masks (plus one voxel) before the surface
    computation; ``surface_distance`` crops to that box itself, so the numbers
    are identical to scoring the whole volume, only the full-volume passes are saved.

    Args:
        gt_ids: ground-truth label ids, 3D.
        pred_ids: predicted label ids, same shape.
        spacing_mm: voxel size in mm along the three axes of the arrays (from the
            header; in canonical RAS order when the arrays are canonical).
        organs: organ names (``labels.FLARE22_IDS`` keys) to score, in row order. For
            aorta, IVC and esophagus, axis 2 is taken as the superior axis (RAS order).
        tolerances: NSD tolerance in mm per organ; every scored organ needs one.

    Returns:
        One dict per organ: ``organ``, ``dsc``, ``nsd``, ``hd95_mm`` (see :func:`hd95`
        for its empty-mask values), ``gt_ml``, ``pred_ml`` and ``volume_diff_ml``
        (pred − gt). Volumes cover the whole volume, also for the slice-range organs.

    Raises:
        ValueError: different shapes, not 3D, non-integer ids, or bad spacing.
        FlareError: unknown organ name, or an organ without a tolerance.
    """
    gt_ids, pred_ids = _check_id_volumes(gt_ids, pred_ids)
    spacing = _check_spacing(spacing_mm, 3)
    organ_set = OrganSet(tuple(organs))
    tolerance = _tolerances_for(organ_set.organs, tolerances)
    rows = []
    for organ, gt, pred in _organ_masks(gt_ids, pred_ids, organ_set):
        gt_ml, pred_ml = volume_ml(gt, spacing), volume_ml(pred, spacing)
        gt, pred = _scored_region(organ, gt, pred)
        nsd, hd = _surface_scores(gt, pred, spacing, tolerance[organ])
        rows.append(
            {
                "organ": organ,
                "dsc": dice(gt, pred),
                "nsd": nsd,
                "hd95_mm": hd,
                "gt_ml": gt_ml,
                "pred_ml": pred_ml,
                "volume_diff_ml": pred_ml - gt_ml,
            }
        )
    return rows


def organ_dice(
    gt_ids: np.ndarray, pred_ids: np.ndarray, organs: Sequence[str] = DEFAULT_ORGANS
) -> dict[str, float]:
    """``{organ: DSC}`` exactly as :func:`score_case` reports it, without the surface metrics.

    For figure titles and quick looks: no spacing is needed and no surface
    distances are computed, which on a CT-sized volume saves seconds per case.

    Raises:
        ValueError: different shapes, not 3D, or non-integer ids.
        FlareError: unknown organ name.
    """
    gt_ids, pred_ids = _check_id_volumes(gt_ids, pred_ids)
    return {
        organ: dice(*_scored_region(organ, gt, pred))
        for organ, gt, pred in _organ_masks(gt_ids, pred_ids, OrganSet(tuple(organs)))
    }


def case_dice(
    gt: np.ndarray | None, pred: np.ndarray | None, organs: Sequence[str] = DEFAULT_ORGANS
) -> dict[str, float] | None:
    """``{organ: DSC}`` of one case on its own grid (FLARE22 rules), e.g. for a figure title.

    None when the case has no ground truth or no prediction to compare.
    """
    if gt is None or pred is None:
        return None
    return organ_dice(gt, pred, organs)
