"""Property tests (hypothesis): geometry round trips, label-safe resampling, metric bounds.

Each property is checked on random small inputs; ``max_examples`` stays modest
so the whole file runs in well under 30 s on a 2-core CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flare_helpers.data import nifti
from flare_helpers.data.labels import FLARE22_IDS, OrganSet
from flare_helpers.evaluate.metrics import (
    dice,
    hd95,
    normalized_surface_dice,
    score_case,
    volume_ml,
)
from flare_helpers.preprocess.resample import resize_nearest, resize_probabilities_argmax

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


# --------------------------------------------------------------------------- geometry


@st.composite
def affines(draw) -> np.ndarray:
    """Axis permutation × flips × anisotropic spacing, an optional small tilt, a translation."""
    perm = draw(st.permutations([0, 1, 2]))
    signs = draw(st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3))
    spacing = draw(st.tuples(*[st.floats(0.3, 6.0)] * 3))
    linear = np.zeros((3, 3))
    for file_axis, world_axis in enumerate(perm):
        linear[world_axis, file_axis] = signs[file_axis] * spacing[file_axis]
    angle = draw(st.sampled_from([0.0, 0.0, 0.15, -0.3]))  # radians; 0 = axis-aligned
    c, s = np.cos(angle), np.sin(angle)
    tilt = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = tilt @ linear
    affine[:3, 3] = draw(st.tuples(*[st.floats(-300, 300)] * 3))
    return affine


shapes = st.tuples(*[st.integers(2, 7)] * 3)


@FAST
@given(affine=affines(), shape=shapes, seed=st.integers(0, 2**16))
def test_load_canonicalise_and_save_back_is_exact(affine, shape, seed):
    """Whatever the voxel order, save_like(load(x)) gives x's voxels, affine and codes back."""
    rng = np.random.default_rng(seed)
    image = rng.integers(-1024, 3000, shape).astype(np.int16)
    labels = rng.integers(0, 14, shape).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nib.save(nib.Nifti1Image(image, affine), tmp / "ct.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), tmp / "lab.nii.gz")
        stored = nib.load(tmp / "ct.nii.gz")
        ct = nifti.load_image(tmp / "ct.nii.gz")
        lab = nifti.load_label(tmp / "lab.nii.gz", ct.geometry)

        # canonical: voxel axes run toward R, A, S
        canonical_affine = stored.affine @ nib.orientations.inv_ornt_aff(ct.geometry.ornt, shape)
        assert nib.aff2axcodes(canonical_affine) == ("R", "A", "S")
        assert ct.data.shape == ct.geometry.canonical_shape
        np.testing.assert_array_equal(ct.geometry.from_canonical(ct.data), image)
        np.testing.assert_allclose(
            ct.spacing, np.linalg.norm(canonical_affine[:3, :3], axis=0), rtol=1e-5
        )

        out = nifti.save_like(lab.data, ct, tmp / "pred.nii.gz")
        written = nib.load(out)
        np.testing.assert_array_equal(np.asarray(written.dataobj), labels)
        np.testing.assert_array_equal(written.affine, stored.affine)
        assert written.shape == stored.shape
        for code in ("qform_code", "sform_code"):
            assert int(written.header[code]) == int(stored.header[code])


# --------------------------------------------------------------------------- resampling


label_sets = st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True)


@FAST
@given(
    values=label_sets,
    shape_in=shapes,
    shape_out=st.tuples(*[st.integers(1, 12)] * 3),
    seed=st.integers(0, 2**16),
)
def test_nearest_resize_never_invents_labels(values, shape_in, shape_out, seed):
    labels = np.random.default_rng(seed).choice(np.array(values, np.uint8), size=shape_in)
    out = resize_nearest(labels, shape_out)
    assert out.shape == shape_out and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= set(np.unique(labels).tolist())
    np.testing.assert_array_equal(resize_nearest(labels, shape_in), labels)


@FAST
@given(
    n_classes=st.integers(2, 6),
    allowed=st.data(),
    shape_in=shapes,
    shape_out=st.tuples(*[st.integers(1, 12)] * 3),
    seed=st.integers(0, 2**16),
)
def test_probability_resize_only_gives_classes_the_network_proposed(
    n_classes, allowed, shape_in, shape_out, seed
):
    """A class with zero probability everywhere never wins, after any up/down-sampling."""
    used = allowed.draw(
        st.lists(st.integers(0, n_classes - 1), min_size=1, max_size=n_classes, unique=True)
    )
    rng = np.random.default_rng(seed)
    probs = np.zeros((*shape_in, n_classes), np.float32)
    probs[..., used] = rng.dirichlet(np.ones(len(used)), size=shape_in).astype(np.float32)
    out = resize_probabilities_argmax(probs, shape_out, chunk=3)
    assert out.shape == shape_out and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= set(used)
    np.testing.assert_array_equal(
        resize_probabilities_argmax(probs, shape_in), np.argmax(probs, axis=-1)
    )
    one = np.zeros_like(probs)
    one[..., used[0]] = 1.0  # a certain network: the same class everywhere
    assert np.all(resize_probabilities_argmax(one, shape_out) == used[0])


@FAST
@given(
    organs=st.lists(st.sampled_from(sorted(FLARE22_IDS)), min_size=1, max_size=13, unique=True),
    seed=st.integers(0, 2**16),
)
def test_organ_remapping_round_trip_never_invents_ids(organs, seed):
    ids = np.random.default_rng(seed).integers(0, 14, (5, 4, 3)).astype(np.uint8)
    organ_set = OrganSet(tuple(organs))
    classes = organ_set.to_classes(ids)
    assert int(classes.max(initial=0)) < organ_set.n_classes
    back = organ_set.to_flare(classes)
    kept = np.isin(ids, organ_set.flare_ids)
    np.testing.assert_array_equal(back[kept], ids[kept])
    assert np.all(back[~kept] == 0)


# --------------------------------------------------------------------------- metrics


masks = arrays(np.bool_, st.tuples(*[st.integers(3, 8)] * 3))
spacings = st.tuples(*[st.floats(0.5, 3.0)] * 3)


@st.composite
def mask_pairs(draw) -> tuple[np.ndarray, np.ndarray]:
    gt = draw(masks)
    pred = draw(arrays(np.bool_, gt.shape))
    return gt, pred


@FAST
@given(pair=mask_pairs(), spacing=spacings, tolerance=st.floats(0.0, 5.0))
def test_dice_nsd_hd95_are_symmetric_and_bounded(pair, spacing, tolerance):
    gt, pred = pair
    d, n = dice(gt, pred), normalized_surface_dice(gt, pred, spacing, tolerance)
    assert 0.0 <= d <= 1.0 and 0.0 <= n <= 1.0
    assert d == dice(pred, gt)
    assert np.isclose(n, normalized_surface_dice(pred, gt, spacing, tolerance), rtol=1e-12)
    h, h_swapped = hd95(gt, pred, spacing), hd95(pred, gt, spacing)
    assert (np.isnan(h) and np.isnan(h_swapped)) or h == h_swapped
    assert np.isnan(h) or h >= 0
    if gt.any() != pred.any():  # exactly one empty: FLARE22 scores 0
        assert d == 0.0 and n == 0.0 and np.isnan(h)
    # NSD grows with the tolerance and reaches 1 once it spans the whole volume
    if gt.any() and pred.any():
        diagonal = float(np.linalg.norm(np.array(gt.shape) * np.array(spacing)))
        assert normalized_surface_dice(gt, pred, spacing, tolerance + 1.0) >= n - 1e-12
        assert normalized_surface_dice(gt, pred, spacing, 2 * diagonal) == 1.0


@FAST
@given(mask=masks, spacing=spacings)
def test_a_mask_against_itself_is_perfect(mask, spacing):
    assert dice(mask, mask) == 1.0
    assert normalized_surface_dice(mask, mask, spacing, 0.0) == 1.0
    assert hd95(mask, mask, spacing) == 0.0
    assert volume_ml(mask, spacing) == np.count_nonzero(mask) * np.prod(spacing) / 1000


@FAST
@given(shape=st.tuples(*[st.integers(3, 7)] * 3), spacing=spacings, seed=st.integers(0, 2**16))
def test_score_case_is_bounded_and_symmetric(shape, spacing, seed):
    """Swapping truth and prediction keeps DSC, NSD and HD95 and negates the volume difference."""
    rng = np.random.default_rng(seed)
    ids = np.array([0, 1, 2, 3, 13], np.uint8)
    gt, pred = rng.choice(ids, size=shape), rng.choice(ids, size=shape)
    rows, swapped = score_case(gt, pred, spacing), score_case(pred, gt, spacing)
    for a, b in zip(rows, swapped, strict=True):
        assert a["organ"] == b["organ"]
        assert 0 <= a["dsc"] <= 1 and 0 <= a["nsd"] <= 1
        assert a["dsc"] == b["dsc"] and np.isclose(a["nsd"], b["nsd"], rtol=1e-12)
        assert (np.isnan(a["hd95_mm"]) and np.isnan(b["hd95_mm"])) or a["hd95_mm"] == b["hd95_mm"]
        assert a["volume_diff_ml"] == -b["volume_diff_ml"]
