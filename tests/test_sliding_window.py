"""Gaussian-weighted sliding windows: coverage, weights, borders, padding, batching, mirroring."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from flare_helpers.data.nifti import load_image
from flare_helpers.infer import predict as infer
from flare_helpers.model.sliding_window import (
    gaussian_importance,
    mirrored,
    sliding_window_probabilities,
    window_boxes,
    window_count,
    window_starts,
)


def _softmax_of_input(batch: np.ndarray) -> np.ndarray:
    """A deterministic stand-in network: 3 channels computed voxel-wise from the input."""
    logits = np.stack([batch, 1.0 - batch, 0.5 * np.sin(7.0 * batch)], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _identity(batch: np.ndarray) -> np.ndarray:
    return batch[..., None].astype(np.float32)


def test_window_starts_cover_the_volume_with_the_asked_overlap():
    assert window_starts(213, 128, 0.5) == [0, 42, 85]  # stride ≤ 64, last window ends at 213
    assert window_starts(128, 128, 0.5) == [0]
    assert window_starts(200, 64, 0.0) == [0, 45, 91, 136]
    for size, patch, overlap in [(213, 128, 0.5), (110, 64, 0.25), (97, 32, 0.5), (65, 64, 0.9)]:
        starts = window_starts(size, patch, overlap)
        assert starts[0] == 0 and starts[-1] == size - patch
        assert max(np.diff(starts), default=0) <= patch * (1 - overlap)
    with pytest.raises(ValueError, match="pad first"):
        window_starts(10, 16, 0.5)
    # a 512×512×110 CT body crop at 1.5×1.5×2.5 mm is about 250×170×110 voxels
    assert window_count((250, 170, 110), (128, 128, 64), 0.5) == 3 * 2 * 3
    assert window_count((250, 170, 110), (128, 128, 64), 0.25) == 3 * 2 * 2
    assert window_count((20, 30, 10), (32, 32, 16), 0.5) == 1  # padded to one patch


def test_gaussian_importance_peaks_at_the_centre_and_stays_positive():
    w = gaussian_importance((32, 32, 16))
    assert w.shape == (32, 32, 16) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=1e-6) and w.min() >= 1e-3
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric
    # σ = patch / 8 around the patch centre ((n - 1) / 2), as a direct 3D formula
    grid = np.indices((32, 32, 16), dtype=np.float64)
    centre = np.array([15.5, 15.5, 7.5])[:, None, None, None]
    sigma = np.array([4.0, 4.0, 2.0])[:, None, None, None]
    expected = np.exp(-0.5 * (((grid - centre) / sigma) ** 2).sum(0))
    expected = np.maximum(expected / expected.max(), 1e-3)
    np.testing.assert_allclose(w, expected, rtol=1e-5)


def test_one_patch_sized_volume_equals_the_plain_network_output():
    x = np.random.default_rng(0).random((32, 24, 16), dtype=np.float32)
    out = sliding_window_probabilities(x, (32, 24, 16), _softmax_of_input, overlap=0.5)
    np.testing.assert_allclose(out, _softmax_of_input(x[None])[0], rtol=1e-6, atol=1e-7)


def test_weighted_mean_is_exact_at_borders_and_inside():
    """A network that returns its input must give the input back everywhere."""
    x = np.random.default_rng(1).random((70, 45, 33), dtype=np.float32)
    out = sliding_window_probabilities(x, (32, 32, 16), _identity, overlap=0.5, batch_size=3)
    assert out.shape == (70, 45, 33, 1)
    np.testing.assert_allclose(out[..., 0], x, rtol=1e-5)


def test_weighted_mean_of_differing_windows_matches_a_direct_sum():
    """Windows that disagree: each voxel gets Σ w·p / Σ w over the windows covering it."""
    shape, patch = (50, 40, 20), (32, 32, 16)
    boxes = window_boxes(shape, patch, 0.5)
    calls: list[int] = []

    def window_index(batch: np.ndarray) -> np.ndarray:
        out = []
        for _ in batch:
            calls.append(len(calls))
            out.append(np.full((*patch, 1), float(calls[-1]), np.float32))
        return np.stack(out)

    out = sliding_window_probabilities(
        np.zeros(shape, np.float32), patch, window_index, overlap=0.5, batch_size=2
    )
    w = gaussian_importance(patch)
    for voxel in [(0, 0, 0), (49, 39, 19), (25, 20, 10), (10, 35, 2)]:
        num = den = 0.0
        for k, box in enumerate(boxes):
            if all(b.start <= v < b.stop for b, v in zip(box, voxel, strict=True)):
                local = tuple(v - b.start for b, v in zip(box, voxel, strict=True))
                num += w[local] * k
                den += w[local]
        assert out[(*voxel, 0)] == pytest.approx(num / den, rel=1e-5)
    assert len(calls) == len(boxes) == 3 * 2 * 2  # x: 0, 9, 18; y: 0, 8; z: 0, 4


def test_volume_smaller_than_a_patch_is_padded_and_cropped_back():
    x = np.random.default_rng(2).random((20, 40, 9), dtype=np.float32)
    seen = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return _identity(batch)

    out = sliding_window_probabilities(x, (32, 32, 16), record, overlap=0.5, pad_value=-1.0)
    assert out.shape == (20, 40, 9, 1)
    np.testing.assert_allclose(out[..., 0], x, rtol=1e-5)
    first = seen[0][0]
    assert first.shape == (32, 32, 16)
    assert np.all(first[20:] == -1.0) and np.all(first[:, :, 9:] == -1.0)


def test_mirroring_swaps_the_kidney_channels_back():
    """A network that labels by position: right half → right kidney, left half → left kidney.

    Mirrored and flipped back, it must agree with itself only if the two kidney
    channels are swapped back.
    """

    def by_side(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((*batch.shape, 4), np.float32)
        half = batch.shape[1] // 2
        out[:, half:, ..., 1] = 0.8  # axis 0 points to the patient's right (RAS)
        out[:, :half, ..., 2] = 0.8
        out[..., 3] = batch
        out[..., 0] = 1.0 - out[..., 1:].sum(-1)
        return out

    x = np.random.default_rng(3).random((2, 16, 8, 8), dtype=np.float32)
    x = 0.5 * (x + x[:, ::-1])  # a left-right symmetric image
    np.testing.assert_allclose(mirrored(by_side, [(1, 2)])(x), by_side(x), rtol=1e-6)
    wrong = mirrored(by_side)(x)
    assert np.abs(wrong[..., 1] - by_side(x)[..., 1]).max() == pytest.approx(0.4)


def test_spacing_model_predicts_windows_and_tta_keeps_the_grid(tiny_spacing_run, synthetic_data):
    image = load_image(synthetic_data / "images" / "FLARE22_Tr_0002_0000.nii.gz")
    plain = infer.load_predictor(tiny_spacing_run / "best.keras")
    x, box = infer.prepare_image(image, plain.params)
    assert x.shape != tuple(plain.params.target_shape)  # the grid follows the spacing
    assert window_count(x.shape, plain.params.target_shape, 0.5) > 1
    probs = infer.volume_probabilities(plain, x)
    assert probs.shape == (*x.shape, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    tta = infer.load_predictor(tiny_spacing_run / "best.keras", tta=True)
    probs_tta = infer.volume_probabilities(tta, x)
    assert probs_tta.shape == probs.shape and not np.allclose(probs_tta, probs)
    labels = infer.labels_on_grid(tta, probs_tta, box, image.data.shape)
    assert labels.shape == image.data.shape


def test_a_run_saved_before_modes_existed_predicts_in_resize_mode(tiny_spacing_run, tmp_path):
    """Runs saved before ``preprocess.mode`` existed were resize-mode runs."""
    old = tmp_path / "old_run"
    old.mkdir()
    (old / "best.keras").write_bytes((tiny_spacing_run / "best.keras").read_bytes())
    settings = yaml.safe_load((tiny_spacing_run / "config.yaml").read_text())
    del settings["preprocess"]["mode"], settings["preprocess"]["target_spacing"]
    (old / "config.yaml").write_text(yaml.safe_dump(settings))
    assert infer.load_predictor(old / "best.keras").params.mode == "resize"
    assert infer.load_predictor(tiny_spacing_run / "best.keras").params.mode == "spacing"
