"""Augmentation: label safety, geometry against scipy, flips that swap sides, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from flare_helpers.augment import (
    adjust_intensity,
    augment_pair,
    draw_params,
    lr_swap_pairs,
    rotate_scale,
)
from flare_helpers.config import AugmentConfig
from flare_helpers.errors import FlareError
from flare_helpers.labels import DEFAULT_ORGANS, OrganSet
from flare_helpers.preprocess import window_to_unit
from flare_helpers.synthetic import make_phantom

NONE = {"spatial_probability": 0.0, "intensity_probability": 0.0, "lr_flip_probability": 0.0}
ALL = {"spatial_probability": 1.0, "intensity_probability": 1.0, "lr_flip_probability": 1.0}


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
    cfg = AugmentConfig(
        **{**ALL, "lr_flip_probability": 0.5}, rotation_deg=30.0, scale_range=(0.8, 1.25)
    )
    image_copy, label_copy = image.copy(), label.copy()
    for seed in range(30):
        out_image, out_label = augment_pair(
            image, label, np.random.default_rng(seed), cfg, [(2, 3)]
        )
        assert out_label.dtype == np.uint8 and out_label.shape == label.shape
        assert set(np.unique(out_label).tolist()) <= allowed
        assert out_image.dtype == np.float32
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(label, label_copy)


@pytest.mark.parametrize(("angle", "scale"), [(7.0, 1.07), (-13.0, 0.91), (23.0, 1.0)])
def test_rotate_scale_equals_scipy_affine_transform(phantom, angle, scale):
    image, label = phantom
    theta = np.deg2rad(angle)
    rotation = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    matrix = rotation.T / scale
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - matrix @ centre
    kw = {"mode": "constant", "cval": 0.0}
    want_image = ndimage.affine_transform(image, matrix, offset, order=1, output=np.float32, **kw)
    want_label = ndimage.affine_transform(label, matrix, offset, order=0, output=np.uint8, **kw)
    got_image, got_label = rotate_scale(image, label, angle, scale)
    np.testing.assert_allclose(got_image, want_image, atol=1e-5)
    np.testing.assert_array_equal(got_label, want_label)


def test_drawn_rotation_moves_the_centroid_as_computed():
    shape = np.array([40, 40, 20])
    grid = np.indices(shape)
    start = np.array([32.0, 19.0, 12.0])
    ball = (((grid - start[:, None, None, None]) ** 2).sum(axis=0) <= 16).astype(np.uint8)
    cfg = only(spatial_probability=1.0, rotation_deg=40.0, scale_range=(0.85, 1.15))
    params = draw_params(np.random.default_rng(5), cfg)
    assert params.spatial and abs(params.angle_deg) > 10

    image, label = augment_pair(ball.astype(np.float32), ball, np.random.default_rng(5), cfg)
    theta = np.deg2rad(params.angle_deg)
    rotation = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    centre = (shape - 1) / 2
    expected = centre + params.scale * rotation @ (start - centre)
    assert np.linalg.norm(expected - start) > 2.5
    np.testing.assert_allclose(centroid(label, 1), expected, atol=0.25)
    weights = np.indices(shape).reshape(3, -1) * image.reshape(-1)
    np.testing.assert_allclose(weights.sum(axis=1) / image.sum(), expected, atol=0.25)


def test_intensity_formula_and_range(phantom):
    image, label = phantom
    got = adjust_intensity(image, 1.1, 0.05, 2.0, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(got, np.clip(image**2 * 1.1 + 0.05, 0, 1), rtol=1e-6)

    cfg = only(
        intensity_probability=1.0,
        intensity_scale=0.5,
        intensity_shift=0.5,
        gamma_range=(0.5, 2.0),
        noise_std=0.3,
    )
    for seed in range(10):
        out_image, out_label = augment_pair(image, label, np.random.default_rng(seed), cfg)
        assert out_label is label
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
        assert np.abs(out_image - image).mean() > 0.01


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
