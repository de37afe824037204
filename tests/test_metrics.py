"""Metrics against hand-computed values and an independent FLARE22-style reference loop."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import surface_distance
from scipy import ndimage

from flare_helpers.data.labels import FLARE22_IDS
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.metrics import (
    dice,
    hd95,
    normalized_surface_dice,
    organ_dice,
    score_case,
    volume_ml,
)
from flare_helpers.phantoms.synthetic import make_phantom

ANISO = (0.8, 0.8, 3.0)  # in-plane 0.8 mm, slices 3 mm


def cube(n: int = 6, size: int = 14, start: int = 3) -> np.ndarray:
    mask = np.zeros((size, size, size), dtype=bool)
    mask[start : start + n, start : start + n, start : start + n] = True
    return mask


def ball(radius: float, size: int = 25) -> np.ndarray:
    offsets = np.indices((size,) * 3) - size // 2
    return np.sqrt((offsets**2).sum(axis=0)) <= radius


# --------------------------------------------------------------------------- Dice


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_dice_shifted_cubes(k, axis):
    # n³ voxels each, overlapping in n²(n − k): DSC = 2 n²(n − k) / 2n³ = (n − k) / n.
    n = 6
    a = cube(n)
    assert dice(a, np.roll(a, k, axis=axis)) == pytest.approx((n - k) / n, abs=1e-6)


def test_dice_nested_spheres():
    outer, inner = ball(8), ball(4)
    assert inner.sum() == 257 and outer.sum() == 2109  # lattice points in the two balls
    assert dice(outer, inner) == pytest.approx(2 * 257 / (2109 + 257), abs=1e-6)


def test_dice_accepts_integer_masks():
    a = cube().astype(np.uint8)
    assert dice(a * 5, a) == 1.0


# --------------------------------------------------------------------------- empty masks


def test_both_empty():
    empty = np.zeros((8, 8, 8), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert normalized_surface_dice(empty, empty, ANISO, 2.0) == 1.0
    assert hd95(empty, empty, ANISO) == 0.0
    assert volume_ml(empty, ANISO) == 0.0


@pytest.mark.parametrize("empty_side", ["gt", "pred"])
def test_one_empty(empty_side):
    full, empty = cube(), np.zeros((14, 14, 14), dtype=bool)
    gt, pred = (empty, full) if empty_side == "gt" else (full, empty)
    assert dice(gt, pred) == 0.0
    assert normalized_surface_dice(gt, pred, ANISO, 5.0) == 0.0
    assert math.isnan(hd95(gt, pred, ANISO))


# --------------------------------------------------------------------------- surface metrics


def test_identical_masks():
    a = ball(6)
    assert normalized_surface_dice(a, a, ANISO, 0.0) == 1.0
    assert hd95(a, a, ANISO) == 0.0


@pytest.mark.parametrize(
    ("axis", "k", "expected"),
    [(2, 1, 3.0), (2, 2, 6.0), (0, 1, 0.8), (0, 2, 1.6), (1, 3, 2.4)],
)
def test_hd95_shifted_cubes_by_hand(axis, k, expected):
    # surface_distance puts surface points on voxel corners. For A = [0, n]³ (corner
    # coordinates) and B = A shifted by k along `axis`, every point of A's surface is at
    # most k·s from B's surface ((k - x)·s for x < k, 0 on the shared side walls, ≤ k·s on
    # the far face), and the whole near face x = 0 is at exactly k·s. That face alone
    # holds more than 5 % of the surface area (its share is ≥ 5.9 % for spacing
    # 0.8/0.8/3), so the 95th area percentile is the maximum, k·s; B → A is the mirror case.
    a = cube(6)
    b = np.roll(a, k, axis=axis)
    assert hd95(a, b, ANISO) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(k * ANISO[axis])


def _cube_surfel_area(boundary_axes: list[int], spacing) -> float:
    """Marching-cubes area of one corner point of a box surface (surface_distance tables).

    Face point (one coordinate on the box boundary, normal along axis i): the product of
    the other two spacings. Edge point (edge along axis i, 2 normals of length 1/4):
    ½·s_i·√(s_j² + s_l²). Vertex point (1 normal of length √3/8 scaled per axis):
    ⅛·√((s1 s2)² + (s0 s2)² + (s0 s1)²).
    """
    s = spacing
    if len(boundary_axes) == 1:
        i = boundary_axes[0]
        return math.prod(s[j] for j in range(3) if j != i)
    if len(boundary_axes) == 2:
        (i,) = {0, 1, 2} - set(boundary_axes)
        j, m = boundary_axes
        return 0.5 * s[i] * math.hypot(s[j], s[m])
    return 0.125 * math.sqrt((s[1] * s[2]) ** 2 + (s[0] * s[2]) ** 2 + (s[0] * s[1]) ** 2)


def _shifted_cube_nsd_by_hand(n: int, k: int, axis: int, spacing, tolerance: float) -> float:
    """NSD of a cube and its copy shifted by k (< n) voxels along `axis`, from geometry.

    Corner points p of A = [0, n]³ on its surface (some coordinate at 0 or n). With
    x = p[axis] and the two other coordinates (u, v): distance to B's surface is
    (k − x)·s_axis when x < k; 0 when x ≥ k and u or v is on the boundary (the shared
    side walls); on the far face x = n, interior (u, v): min(k·s_axis, distance to the
    nearest side wall). B → A mirrors A → B, so NSD equals A's matched area share.
    """
    others = [ax for ax in range(3) if ax != axis]
    matched = total = 0.0
    for p in np.ndindex(n + 1, n + 1, n + 1):
        on_boundary = [ax for ax in range(3) if p[ax] in (0, n)]
        if not on_boundary:
            continue
        area = _cube_surfel_area(on_boundary, spacing)
        x = p[axis]
        rim = any(ax in on_boundary for ax in others)
        if x < k:
            distance = (k - x) * spacing[axis]
        elif rim:
            distance = 0.0
        else:
            walls = [min(p[ax], n - p[ax]) * spacing[ax] for ax in others]
            distance = min(k * spacing[axis], *walls)
        total += area
        matched += area if distance <= tolerance else 0.0
    return matched / total


def test_nsd_shifted_cube_closed_form():
    # Spacing 0.8/0.8/3, n = 6, shift 1 slice (3 mm), tolerance 2 mm. Out of tolerance:
    # the whole near face z = 0 (3 mm) and the one far-face point (3, 3, 6) at 2.4 mm.
    # Near face: 25 interior points × 0.64 + 20 edge points × ½·0.8·√(0.8² + 3²)
    # + 4 vertices × ⅛·√(2.4² + 2.4² + 0.64²); the far point 0.64.
    s0, s1, s2 = ANISO
    edge_xy = 0.5 * s0 * math.hypot(s1, s2)  # edges along the in-plane axes
    edge_z = 0.5 * s2 * math.hypot(s0, s1)
    vertex = 0.125 * math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2)
    out = 25 * s0 * s1 + 20 * edge_xy + 4 * vertex + s0 * s1
    total = 2 * 25 * s0 * s1 + 4 * 25 * s1 * s2 + 40 * edge_xy + 20 * edge_z + 8 * vertex
    expected = 1 - out / total
    assert expected == pytest.approx(0.879674, abs=1e-6)
    assert _shifted_cube_nsd_by_hand(6, 1, 2, ANISO, 2.0) == pytest.approx(expected, abs=1e-12)
    got = normalized_surface_dice(cube(6), np.roll(cube(6), 1, axis=2), ANISO, 2.0)
    assert got == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    ("axis", "k", "tolerance"),
    [(2, 1, 2.0), (2, 1, 3.0), (2, 2, 4.0), (0, 1, 0.5), (0, 1, 2.0), (1, 2, 1.0), (0, 3, 1.0)],
)
def test_nsd_anisotropic_shift_by_hand(axis, k, tolerance):
    expected = _shifted_cube_nsd_by_hand(6, k, axis, ANISO, tolerance)
    got = normalized_surface_dice(cube(6), np.roll(cube(6), k, axis=axis), ANISO, tolerance)
    assert got == pytest.approx(expected, abs=1e-3)


def test_anisotropy_decides():
    # The same one-voxel shift is 3 mm along the slice axis but 0.8 mm in plane.
    a = cube(6)
    along_slices, in_plane = np.roll(a, 1, axis=2), np.roll(a, 1, axis=0)
    assert normalized_surface_dice(a, in_plane, ANISO, 2.0) == 1.0
    assert normalized_surface_dice(a, along_slices, ANISO, 2.0) < 0.88
    assert normalized_surface_dice(a, along_slices, ANISO, 3.0) == 1.0
    assert hd95(a, along_slices, ANISO) / hd95(a, in_plane, ANISO) == pytest.approx(3.75)


def test_nsd_nested_spheres():
    # Corner points of a voxelised ball of radius R lie within R ± √3/2 of its centre,
    # so the surfaces of radius-8 and radius-4 balls are ≥ 4 − √3 ≈ 2.27 mm apart, and
    # each point is ≤ 4 + √3 + √2/2 ≈ 6.44 mm from the other surface (isotropic 1 mm).
    outer, inner = ball(8), ball(4)
    assert normalized_surface_dice(outer, inner, (1, 1, 1), 2.0) == 0.0
    assert normalized_surface_dice(outer, inner, (1, 1, 1), 6.5) == 1.0
    assert 4 - math.sqrt(3) <= hd95(outer, inner, (1, 1, 1)) <= 4 + math.sqrt(3) + 0.75


def test_one_voxel_organs():
    a = np.zeros((5, 5, 5), dtype=bool)
    a[2, 2, 2] = True
    assert dice(a, a) == 1.0
    assert normalized_surface_dice(a, a, ANISO, 0.0) == 1.0
    assert hd95(a, a, ANISO) == 0.0
    # Neighbour along the 3 mm axis: 4 of each voxel's 8 corners are shared, the other
    # 4 are 3 mm away; all 8 corner surfels have the same area.
    b = np.roll(a, 1, axis=2)
    assert dice(a, b) == 0.0
    assert normalized_surface_dice(a, b, ANISO, 2.9) == pytest.approx(0.5, abs=1e-12)
    assert normalized_surface_dice(a, b, ANISO, 3.0) == 1.0
    assert hd95(a, b, ANISO) == pytest.approx(3.0, abs=1e-9)
    assert volume_ml(a, ANISO) == pytest.approx(0.8 * 0.8 * 3.0 / 1000)


def test_volume_ml():
    assert volume_ml(cube(6), ANISO) == pytest.approx(216 * 1.92 / 1000, abs=1e-12)
    assert volume_ml(np.ones((10, 10, 10), np.uint8), (1.0, 1.0, 1.0)) == pytest.approx(1.0)


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: dice(a, b),
        lambda a, b: normalized_surface_dice(a, b, ANISO, 2.0),
        lambda a, b: hd95(a, b, ANISO),
        lambda a, b: score_case(a.astype(np.uint8), b.astype(np.uint8), ANISO),
    ],
)
def test_different_shapes_rejected(call):
    with pytest.raises(ValueError, match="shape"):
        call(np.zeros((8, 8, 8), bool), np.zeros((8, 8, 9), bool))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1, -2, 1)])
def test_bad_spacing_rejected(spacing):
    a = cube()
    for call in (
        lambda: normalized_surface_dice(a, a, spacing, 2.0),
        lambda: hd95(a, a, spacing),
        lambda: volume_ml(a, spacing),
        lambda: score_case(a.astype(np.uint8), a.astype(np.uint8), spacing),
    ):
        with pytest.raises(ValueError, match="spacing"):
            call()


def test_nan_spacing_and_negative_tolerance_rejected():
    a = cube()
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, math.nan, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(a, a, ANISO, -1.0)


def test_score_case_rejects_float_ids_and_unknown_organs():
    ids = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="integers"):
        score_case(ids.astype(np.float32), ids, ANISO)
    with pytest.raises(FlareError, match="unknown organ"):
        score_case(ids, ids, ANISO, organs=("livr",))


def test_organ_without_tolerance_is_an_error():
    ids = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(FlareError, match="no NSD tolerance for organ.*pancreas"):
        score_case(ids, ids, ANISO, organs=("liver", "pancreas"), tolerances={"liver": 5.0})
    rows = score_case(ids, ids, ANISO, organs=("pancreas",), tolerances={"pancreas": 5.0})
    assert rows[0]["organ"] == "pancreas" and rows[0]["dsc"] == 1.0 and rows[0]["nsd"] == 1.0


# --------------------------------------------------------------------------- score_case vs reference

#: FLARE22 tolerances (mm) from the official script, for the organs these tests score.
OFFICIAL_TOLERANCE = {"liver": 5, "right_kidney": 3, "spleen": 3, "left_kidney": 3}


def official_flare22_scores(gt_data: np.ndarray, seg_data: np.ndarray, spacing) -> dict:
    """The per-case loop of JunMa11/FLARE FLARE22/Evaluation/FLARE22_DSC_NSD_Eval.py.

    Whole volumes, no cropping, surface_distance called directly. Two departures,
    neither changing a value: HD95 is added with ``compute_robust_hausdorff``, and a
    non-empty ground truth with an empty prediction is set to 0 directly (the
    original reaches the package's ``np.Inf`` branch, which NumPy 2 removed, and gets 0).
    """
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for organ, tolerance in OFFICIAL_TOLERANCE.items():
            i = FLARE22_IDS[organ]
            gt_i, seg_i = gt_data == i, seg_data == i
            if np.sum(gt_i) == 0 and np.sum(seg_i) == 0:
                dsc, nsd, hd = 1, 1, 0.0
            elif np.sum(gt_i) == 0 or np.sum(seg_i) == 0:
                dsc, nsd, hd = 0, 0, math.nan
            else:
                distances = surface_distance.compute_surface_distances(gt_i, seg_i, spacing)
                dsc = surface_distance.compute_dice_coefficient(gt_i, seg_i)
                nsd = surface_distance.compute_surface_dice_at_tolerance(distances, tolerance)
                hd = surface_distance.compute_robust_hausdorff(distances, 95)
            out[organ] = {"dsc": float(dsc), "nsd": float(nsd), "hd95_mm": float(hd)}
    return out


def perturbed(labels: np.ndarray) -> np.ndarray:
    """A plausible bad prediction: liver eroded, right kidney shifted, left kidney missing,
    spleen dilated (into background only)."""
    pred = labels.copy()
    liver = labels == FLARE22_IDS["liver"]
    pred[liver & ~ndimage.binary_erosion(liver, iterations=1)] = 0
    kidney = labels == FLARE22_IDS["right_kidney"]
    pred[kidney] = 0
    pred[np.roll(kidney, (2, -1, 1), axis=(0, 1, 2))] = FLARE22_IDS["right_kidney"]
    pred[labels == FLARE22_IDS["left_kidney"]] = 0
    spleen = ndimage.binary_dilation(labels == FLARE22_IDS["spleen"], iterations=2)
    pred[spleen & (labels == 0)] = FLARE22_IDS["spleen"]
    return pred


def _assert_rows_match(rows: list[dict], reference: dict) -> None:
    assert sorted(r["organ"] for r in rows) == sorted(reference)
    for row in rows:
        ref = reference[row["organ"]]
        for key in ("dsc", "nsd", "hd95_mm"):
            np.testing.assert_allclose(row[key], ref[key], rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("case_number", [1, 2, 3])
def test_score_case_matches_official_loop(case_number):
    _, labels, affine = make_phantom(11, case_number, (48, 48, 24), family="simple")
    spacing = tuple(np.diag(affine)[:3])
    pred = perturbed(labels)
    rows = score_case(labels, pred, spacing, organs=tuple(OFFICIAL_TOLERANCE))
    _assert_rows_match(rows, official_flare22_scores(labels, pred, spacing))
    by_organ = {r["organ"]: r for r in rows}
    assert by_organ["left_kidney"]["dsc"] == 0.0 and by_organ["left_kidney"]["nsd"] == 0.0
    assert math.isnan(by_organ["left_kidney"]["hd95_mm"])
    assert by_organ["left_kidney"]["pred_ml"] == 0.0
    assert 0.3 < by_organ["liver"]["dsc"] < 1.0 and 0.0 < by_organ["right_kidney"]["dsc"] < 1.0
    voxel_ml = math.prod(spacing) / 1000
    for organ, row in by_organ.items():
        i = FLARE22_IDS[organ]
        assert row["gt_ml"] == pytest.approx(np.count_nonzero(labels == i) * voxel_ml)
        assert row["pred_ml"] == pytest.approx(np.count_nonzero(pred == i) * voxel_ml)
        assert row["volume_diff_ml"] == pytest.approx(row["pred_ml"] - row["gt_ml"])


def test_score_case_organ_only_in_prediction_and_in_neither():
    _, labels, affine = make_phantom(11, 4, (48, 48, 24), family="simple")
    spacing = tuple(np.diag(affine)[:3])
    gt = labels.copy()
    gt[gt == FLARE22_IDS["spleen"]] = 0  # spleen only in the prediction
    gt[gt == FLARE22_IDS["left_kidney"]] = 0
    pred = labels.copy()
    pred[pred == FLARE22_IDS["left_kidney"]] = 0  # left kidney in neither
    rows = {r["organ"]: r for r in score_case(gt, pred, spacing)}
    assert rows["spleen"]["dsc"] == 0.0 and rows["spleen"]["nsd"] == 0.0
    assert math.isnan(rows["spleen"]["hd95_mm"])
    assert rows["left_kidney"]["dsc"] == 1.0 and rows["left_kidney"]["nsd"] == 1.0
    assert rows["left_kidney"]["hd95_mm"] == 0.0
    assert rows["liver"]["dsc"] == 1.0 and rows["liver"]["hd95_mm"] == 0.0
    _assert_rows_match(list(rows.values()), official_flare22_scores(gt, pred, spacing))


def test_score_case_crop_identical_at_volume_border():
    # Organs touching the array faces: the crop margin is clipped there, and the numbers
    # must still equal the whole-volume reference.
    labels = np.zeros((20, 18, 12), np.uint8)
    labels[:7, :9, :5] = FLARE22_IDS["liver"]
    labels[14:, 10:, 6:] = FLARE22_IDS["spleen"]
    labels[8:12, 3:8, 4:9] = FLARE22_IDS["right_kidney"]
    pred = np.roll(labels, 1, axis=0)
    pred[-1] = labels[-1]
    spacing = (0.7, 0.9, 2.5)
    rows = score_case(labels, pred, spacing, organs=tuple(OFFICIAL_TOLERANCE))
    _assert_rows_match(rows, official_flare22_scores(labels, pred, spacing))


def test_score_case_same_in_any_voxel_order():
    # The file's voxel order and the canonical one give the same numbers when the
    # spacing follows the axes.
    _, labels, affine = make_phantom(5, 1, (40, 36, 20), family="simple")
    spacing = np.diag(affine)[:3]
    pred = perturbed(labels)
    base = score_case(labels, pred, spacing)
    reordered = score_case(
        labels.transpose(2, 0, 1)[::-1, :, ::-1],
        pred.transpose(2, 0, 1)[::-1, :, ::-1],
        spacing[[2, 0, 1]],
    )
    for a, b in zip(base, reordered, strict=True):
        for key in ("dsc", "nsd", "hd95_mm", "gt_ml", "pred_ml"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12)


def test_tubular_organs_scored_on_ground_truth_slices():
    # FLARE22 scores aorta, IVC and esophagus only on the slices labelled in the
    # ground truth: a prediction running past them is not penalised.
    gt = np.zeros((16, 16, 30), np.uint8)
    gt[6:10, 6:10, 5:16] = FLARE22_IDS["aorta"]
    pred = np.zeros_like(gt)
    pred[6:10, 6:10, 0:25] = FLARE22_IDS["aorta"]
    (row,) = score_case(gt, pred, (1.0, 1.0, 2.0), organs=("aorta",), tolerances={"aorta": 2})
    assert row["dsc"] == 1.0 and row["nsd"] == 1.0 and row["hd95_mm"] == 0.0
    assert row["gt_ml"] == pytest.approx(16 * 11 * 2 / 1000)
    assert row["pred_ml"] == pytest.approx(16 * 25 * 2 / 1000)
    # A non-tubular organ with the same masks is penalised for the extra slices.
    (liver,) = score_case(
        np.where(gt > 0, 1, 0).astype(np.uint8),
        np.where(pred > 0, 1, 0).astype(np.uint8),
        (1.0, 1.0, 2.0),
        organs=("liver",),
    )
    assert liver["dsc"] == pytest.approx(2 * 11 / (11 + 25), abs=1e-6)


def test_organ_dice_equals_score_case_dsc_without_surfaces():
    """The cheap per-organ DSC (figure titles) is score_case's, tubular organs included."""
    gt = np.zeros((16, 16, 30), np.uint8)
    gt[6:10, 6:10, 5:16] = FLARE22_IDS["aorta"]
    gt[1:5, 1:5, 2:8] = FLARE22_IDS["liver"]
    pred = np.zeros_like(gt)
    pred[6:10, 6:10, 0:25] = FLARE22_IDS["aorta"]
    pred[2:5, 1:5, 2:8] = FLARE22_IDS["liver"]
    pred[12:14, 12:14, 0:2] = FLARE22_IDS["spleen"]
    organs = ("liver", "spleen", "left_kidney", "aorta")
    rows = score_case(gt, pred, (1.0, 1.0, 2.0), organs=organs, tolerances=dict.fromkeys(organs, 2))
    cheap = organ_dice(gt, pred, organs)
    assert cheap == {row["organ"]: row["dsc"] for row in rows}
    assert cheap == {
        "liver": pytest.approx(2 * 3 / 7),
        "spleen": 0.0,
        "left_kidney": 1.0,
        "aorta": 1.0,
    }
    with pytest.raises(ValueError, match="differ in shape"):
        organ_dice(gt, pred[:-1])
