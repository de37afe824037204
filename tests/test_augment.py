"""Augmentation: label safety, geometry against scipy, nnU-Net's chances and ranges,
flips that swap sides, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from flare_helpers.config import AugmentConfig
from flare_helpers.data.labels import DEFAULT_ORGANS, OrganSet, lr_swap_pairs
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.synthetic import make_phantom
from flare_helpers.preprocess.pipeline import window_to_unit
from flare_helpers.train.augment import (
    adjust_intensity,
    augment_pair,
    augment_patch,
    bg_contrast,
    draw_params,
    gamma_retain_stats,
    rotation_matrix,
    sampling_matrix,
    transformed_patch,
)

NONE = {f"{name}_probability": 0.0 for name in AugmentConfig().probabilities()}
ALL = {f"{name}_probability": 1.0 for name in AugmentConfig().probabilities()}
INTENSITY = ("noise", "blur", "brightness", "contrast", "low_resolution", "gamma_inverted", "gamma")


def only(**changes) -> AugmentConfig:
    """A config with every transform off except those in ``changes``."""
    return AugmentConfig(**{**NONE, **changes})


def centroid(label: np.ndarray, cls: int) -> np.ndarray:
    return np.argwhere(label == cls).mean(axis=0)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """A small phantom as the cache holds it: [0, 1] float32 image, training classes."""
    hu, flare_ids, _ = make_phantom(3, 1, (48, 40, 24), family="simple")
    return window_to_unit(hu, (-160.0, 240.0)), OrganSet().to_classes(flare_ids)


@pytest.mark.parametrize(
    ("organs", "pairs"),
    [
        (DEFAULT_ORGANS, [(2, 3)]),
        (("liver", "left_kidney", "spleen", "right_kidney"), [(4, 2)]),
        (("liver", "spleen"), []),
        (("right_adrenal", "left_adrenal", "Right Kidney", "left_kidney"), [(1, 2), (3, 4)]),
    ],
)
def test_lr_swap_pairs(organs, pairs):
    assert lr_swap_pairs(organs) == pairs


def test_lr_swap_pairs_refuses_one_sided_organ():
    with pytest.raises(FlareError, match="right_kidney is listed without left_kidney"):
        lr_swap_pairs(("liver", "right_kidney"))


def test_disabled_returns_the_inputs(phantom):
    image, label = phantom
    cfg = AugmentConfig(enabled=False, **ALL)
    out_image, out_label = augment_pair(image, label, np.random.default_rng(0), cfg, [(2, 3)])
    assert out_image is image
    assert out_label is label


def test_same_generator_state_gives_same_result(phantom):
    image, label = phantom
    cfg = AugmentConfig(**ALL)
    first = augment_pair(image, label, np.random.default_rng(11), cfg, [(2, 3)])
    again = augment_pair(image, label, np.random.default_rng(11), cfg, [(2, 3)])
    other = augment_pair(image, label, np.random.default_rng(12), cfg, [(2, 3)])
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_labels_never_take_new_values(phantom):
    image, label = phantom
    allowed = set(np.unique(label).tolist()) | {0}
    cfg = AugmentConfig(**{**ALL, "lr_flip_probability": 0.5})
    image_copy, label_copy = image.copy(), label.copy()
    for seed in range(20):
        out_image, out_label = augment_pair(
            image, label, np.random.default_rng(seed), cfg, [(2, 3)], (1.2, 1.2, 2.5)
        )
        assert out_label.dtype == np.uint8 and out_label.shape == label.shape
        assert set(np.unique(out_label).tolist()) <= allowed
        assert out_image.dtype == np.float32
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(label, label_copy)


def test_nnunet_chances_and_ranges_are_the_defaults():
    cfg = AugmentConfig()
    assert cfg.probabilities() == {
        "rotation": 0.2,
        "scale": 0.2,
        "noise": 0.1,
        "blur": 0.1,  # 0.2 × 0.5 per channel
        "brightness": 0.15,
        "contrast": 0.15,
        "low_resolution": 0.125,  # 0.25 × 0.5 per channel
        "gamma_inverted": 0.1,
        "gamma": 0.3,
        "lr_flip": 0.0,
    }
    assert cfg.rotation_deg == (30.0, 30.0, 30.0) and cfg.scale_range == (0.7, 1.4)
    assert cfg.gamma_range == (0.7, 1.5) and cfg.brightness_range == (0.75, 1.25)


def test_each_transform_applies_as_often_as_its_chance():
    cfg = AugmentConfig(lr_flip_probability=0.25)
    n = 4000
    draws = [draw_params(np.random.default_rng(seed), cfg) for seed in range(n)]
    counts = {
        "rotation": sum(p.rotate for p in draws),
        "scale": sum(p.zoom for p in draws),
        "noise": sum(p.noise for p in draws),
        "blur": sum(p.blur for p in draws),
        "brightness": sum(p.brightness for p in draws),
        "contrast": sum(p.contrast for p in draws),
        "low_resolution": sum(p.low_res for p in draws),
        "gamma_inverted": sum(p.gamma_inverted for p in draws),
        "gamma": sum(p.gamma for p in draws),
        "lr_flip": sum(p.flip for p in draws),
    }
    for name, chance in cfg.probabilities().items():
        sd = np.sqrt(n * chance * (1 - chance))
        assert abs(counts[name] - n * chance) <= 4 * sd + 1, (name, counts[name])
    scales = np.array([p.scale for p in draws])
    angles = np.array([p.angles_deg for p in draws])
    assert scales.min() >= 0.7 and scales.max() <= 1.4
    assert np.all(np.abs(angles) <= 30) and np.all(np.abs(angles).max(axis=0) > 28)
    gammas = np.array([p.gamma_value for p in draws])
    assert gammas.min() >= 0.7 and gammas.max() <= 1.5
    assert abs((gammas < 1).mean() - 0.5) < 0.05  # BGContrast: half below 1


def test_bg_contrast_draws_half_below_one():
    values = np.array([bg_contrast(np.random.default_rng(s), 0.75, 1.25) for s in range(2000)])
    assert abs((values < 1).mean() - 0.5) < 0.05
    assert values.min() >= 0.75 and values.max() <= 1.25


def test_rotation_matrix_is_a_rotation():
    r = rotation_matrix((10.0, -20.0, 30.0))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    about_z = rotation_matrix((0.0, 0.0, 90.0))
    np.testing.assert_allclose(about_z @ [1, 0, 0], [0, 1, 0], atol=1e-12)


@pytest.mark.parametrize(
    ("angles", "scale"), [((0, 0, 7.0), 1.07), ((-13.0, 5.0, 0), 0.91), ((10, 20, 23.0), 1.0)]
)
def test_transformed_patch_equals_scipy_affine_transform(phantom, angles, scale):
    image, label = phantom
    matrix = sampling_matrix(angles, scale)
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - matrix @ centre
    kw = {"mode": "grid-constant", "cval": 0.0}  # 0 beyond the case, interpolated into it
    want_image = ndimage.affine_transform(image, matrix, offset, order=1, output=np.float32, **kw)
    want_label = ndimage.affine_transform(label, matrix, offset, order=0, output=np.uint8, **kw)
    got_image, got_label = transformed_patch(image, label, (0, 0, 0), image.shape, matrix)
    np.testing.assert_allclose(got_image, want_image, atol=1e-5)
    np.testing.assert_array_equal(got_label, want_label)


@pytest.mark.parametrize("angles", [(0, 0, 30.0), (30.0, 0, 0), (0, -30.0, 0), (20, 20, 20)])
def test_rotation_keeps_each_organ_volume(angles):
    """Nearest-neighbour labels through a rotation in mm: each organ keeps its voxel count
    within 3 %, also about the axes where voxels are 2.5 mm long."""
    hu, flare_ids, _ = make_phantom(3, 1, (96, 96, 64))
    label = np.pad(OrganSet().to_classes(flare_ids), 24)  # room: nothing rotates out
    image = label.astype(np.float32)
    voxel_mm = (1.2, 1.2, 2.5)
    matrix = sampling_matrix(angles, 1.0, voxel_mm)
    _, out = transformed_patch(image, label, (0, 0, 0), label.shape, matrix)
    before = np.bincount(label.ravel(), minlength=5)[1:]
    after = np.bincount(out.ravel(), minlength=5)[1:]
    np.testing.assert_allclose(after, before, rtol=0.03)


def test_zoom_scales_each_organ_volume_by_its_cube():
    hu, flare_ids, _ = make_phantom(3, 1, (96, 96, 64))
    label = OrganSet().to_classes(flare_ids)
    matrix = sampling_matrix((0, 0, 0), 0.8, (1.2, 1.2, 2.5))
    _, out = transformed_patch(label.astype(np.float32), label, (0, 0, 0), label.shape, matrix)
    before = np.bincount(label.ravel(), minlength=5)[1:]
    after = np.bincount(out.ravel(), minlength=5)[1:]
    np.testing.assert_allclose(after, before * 0.8**3, rtol=0.06)


def test_rotation_in_mm_moves_the_centroid_as_computed():
    shape = np.array([40, 40, 20])
    voxel_mm = np.array([1.0, 1.0, 2.0])
    grid = np.indices(shape)
    start = np.array([28.0, 20.0, 14.0])
    mm = (grid - start[:, None, None, None]) * voxel_mm[:, None, None, None]
    ball = ((mm**2).sum(axis=0) <= 16).astype(np.uint8)
    angles = (0.0, 25.0, 0.0)  # about axis 1: moves the ball in the 0-2 plane
    image, label = transformed_patch(
        ball.astype(np.float32), ball, (0, 0, 0), shape, sampling_matrix(angles, 1.0, voxel_mm)
    )
    centre = (shape - 1) / 2
    expected_mm = rotation_matrix(angles) @ ((start - centre) * voxel_mm)
    expected = centre + expected_mm / voxel_mm
    assert np.linalg.norm(expected - start) > 2.0
    np.testing.assert_allclose(centroid(label, 1), expected, atol=0.3)


def test_patch_is_sampled_from_the_whole_case_not_padded():
    """A rotated patch in the middle of a case shows the case at its corners, as
    nnU-Net's larger initial patch does; cut from the patch alone they would be 0."""
    case = np.full((80, 80, 40), 0.5, dtype=np.float32)
    label = np.ones(case.shape, dtype=np.uint8)
    cfg = AugmentConfig(**{**NONE, "rotation_probability": 1.0})
    out, out_label = augment_patch(
        case, label, (20, 20, 10), (40, 40, 20), np.random.default_rng(1), cfg
    )
    assert out.shape == (40, 40, 20)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
    assert (out_label == 1).all()


@pytest.mark.parametrize("name", INTENSITY)
def test_each_intensity_transform_changes_the_image_within_range(phantom, name):
    image, label = phantom
    cfg = AugmentConfig(**{**NONE, f"{name}_probability": 1.0})
    changed = 0
    for seed in range(5):
        out_image, out_label = augment_pair(image, label, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(out_label, label)
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
        changed += np.abs(out_image - image).mean() > 1e-4
    assert changed >= 4


def test_gamma_keeps_mean_and_std(phantom):
    image, _ = phantom
    for invert in (False, True):
        out = gamma_retain_stats(image, 1.4, invert=invert)
        assert out.mean() == pytest.approx(image.mean(), abs=1e-4)
        assert out.std() == pytest.approx(image.std(), rel=1e-3)
        assert np.abs(out - image).mean() > 1e-3


def test_brightness_multiplies_about_the_organ_mean(phantom):
    image, _ = phantom
    cfg = AugmentConfig(**NONE)
    params = draw_params(
        np.random.default_rng(0), AugmentConfig(**{**NONE, "brightness_probability": 1.0})
    )
    got = adjust_intensity(image, params, cfg)
    want = np.clip((image - 0.49) * params.brightness_factor + 0.49, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_flip_moves_right_kidney_to_the_other_side_and_relabels_it(phantom):
    image, label = phantom
    n_x = image.shape[0]
    right, left = centroid(label, 2), centroid(label, 3)
    assert right[0] > left[0]  # axis 0 increases toward the patient's right

    cfg = only(lr_flip_probability=1.0)
    swap = lr_swap_pairs(DEFAULT_ORGANS)
    out_image, out_label = augment_pair(image, label, np.random.default_rng(0), cfg, swap)

    np.testing.assert_array_equal(out_image, image[::-1])
    mirror = np.array([-1.0, 1.0, 1.0])
    shift = np.array([n_x - 1.0, 0.0, 0.0])
    np.testing.assert_allclose(centroid(out_label, 2), shift + mirror * left)
    np.testing.assert_allclose(centroid(out_label, 3), shift + mirror * right)
    np.testing.assert_allclose(centroid(out_label, 1), shift + mirror * centroid(label, 1))
    assert (out_label == 2).sum() == (label == 3).sum()
    assert centroid(out_label, 2)[0] > centroid(out_label, 3)[0]
