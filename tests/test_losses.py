"""DiceCELoss against hand-computed values; OrganDice/MeanOrganDice against numpy counts."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from flare_helpers.model.losses import DiceCELoss
from flare_helpers.model.metrics import MeanOrganDice, OrganDice, training_metrics


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype="float32")[labels]


def random_probabilities(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    logits = rng.normal(size=shape).astype("float32")
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_dice_ce(
    y_true, y_pred, dice_weight=1.0, ce_weight=1.0, background=False, smooth=1e-5, batch=False
):
    """Independent float64 reference: Dice over the classes present in the truth (per sample,
    or pooled over the batch) + voxel-mean CE, batch mean."""
    y_true = y_true.astype(np.float64)
    y_pred = y_pred.astype(np.float64)
    first = 0 if background else 1
    t, p = y_true[..., first:], y_pred[..., first:]
    if batch:
        t, p = t[None], p[None]
    axes = tuple(range(1, t.ndim - 1))
    dice = (2 * (t * p).sum(axes) + smooth) / (t.sum(axes) + p.sum(axes) + smooth)
    present = t.sum(axes) > 0
    dice_loss = np.array(
        [(1 - d)[m].mean() if m.any() else 0.0 for d, m in zip(dice, present, strict=True)]
    )
    ce = -(y_true * np.log(np.clip(y_pred, 1e-7, 1 - 1e-7))).sum(-1)
    ce = ce.reshape(len(ce), -1).mean(axis=-1)
    return float((dice_weight * dice_loss + ce_weight * ce).mean())


def test_perfect_prediction_has_zero_dice_loss():
    labels = np.random.default_rng(0).integers(0, 4, size=(2, 8, 8, 4))
    y = one_hot(labels, 4)
    loss = DiceCELoss()
    assert float(np.max(loss.dice_loss(y, y))) < 1e-4
    assert float(np.max(loss.ce_loss(y, y))) < 1e-6
    assert float(loss(y, y)) < 1e-4


def test_two_voxel_case_matches_hand_computation():
    # voxel 0 is class 1 (predicted 0.8), voxel 1 is background (predicted 0.6)
    y_true = np.array([[[[[0.0, 1.0]]], [[[1.0, 0.0]]]]], "float32")
    y_pred = np.array([[[[[0.2, 0.8]]], [[[0.6, 0.4]]]]], "float32")
    s = 1e-5
    dice_fg = 1 - (2 * 0.8 + s) / (0.8 + 0.4 + 1 + s)
    dice_bg = 1 - (2 * 0.6 + s) / (0.2 + 0.6 + 1 + s)
    ce = (-math.log(0.8) - math.log(0.6)) / 2
    assert y_true.shape == (1, 2, 1, 1, 2)
    assert float(DiceCELoss()(y_true, y_pred)) == pytest.approx(dice_fg + ce, abs=1e-6)
    with_background = DiceCELoss(include_background=True)
    assert float(with_background(y_true, y_pred)) == pytest.approx(
        (dice_fg + dice_bg) / 2 + ce, abs=1e-6
    )
    weighted = DiceCELoss(dice_weight=0.25, ce_weight=2.0)
    assert float(weighted(y_true, y_pred)) == pytest.approx(0.25 * dice_fg + 2 * ce, abs=1e-6)


def large_found_and_small_missed() -> tuple[np.ndarray, np.ndarray]:
    """Two samples, one class: a 32-voxel organ found perfectly, a one-voxel organ missed."""
    y_true = np.zeros((2, 4, 4, 4, 2), "float32")
    y_true[..., 0] = 1
    y_true[0, :, :, :2] = (0, 1)
    y_true[1, 0, 0, 0] = (0, 1)
    y_pred = y_true.copy()
    y_pred[1, 0, 0, 0] = (1, 0)
    return y_true, y_pred


def test_dice_is_per_sample_not_pooled_over_the_batch():
    # sample 0: a large, perfectly found organ; sample 1: a one-voxel organ, missed
    y_true, y_pred = large_found_and_small_missed()
    loss = DiceCELoss(ce_weight=0.0)
    np.testing.assert_allclose(np.asarray(loss.dice_loss(y_true, y_pred)), [0.0, 1.0], atol=1e-5)
    assert float(loss(y_true, y_pred)) == pytest.approx(0.5, abs=1e-5)


def test_organ_absent_from_a_sample_adds_no_dice_loss():
    # class 2 is in neither sample's truth: its predicted probabilities must not matter
    rng = np.random.default_rng(7)
    y_true = one_hot(rng.integers(0, 2, size=(2, 6, 6, 4)), 3)
    low = random_probabilities(rng, (2, 6, 6, 4, 3))
    high = low.copy()
    high[..., 2] += 5.0
    high /= high.sum(axis=-1, keepdims=True)
    for batch in (False, True):
        loss = DiceCELoss(ce_weight=0.0, batch_dice=batch)
        for y_pred in (low, high):
            t, p = y_true[..., 1], y_pred[..., 1]
            axes = (0, 1, 2, 3) if batch else (1, 2, 3)
            expected = 1 - (2 * (t * p).sum(axes) + 1e-5) / (t.sum(axes) + p.sum(axes) + 1e-5)
            np.testing.assert_allclose(
                np.asarray(loss.dice_loss(y_true, y_pred)),
                np.broadcast_to(expected, (2,)),
                atol=1e-5,
            )
    # a sample with no organ at all has only its cross-entropy
    empty = one_hot(np.zeros((1, 4, 4, 4), "int64"), 3)
    assert float(DiceCELoss().dice_loss(empty, random_probabilities(rng, (1, 4, 4, 4, 3)))[0]) == 0


def test_batch_dice_pools_counts_over_the_batch():
    # the per-sample test's batch: pooled, the large organ hides the missed voxel
    y_true, y_pred = large_found_and_small_missed()
    loss = DiceCELoss(ce_weight=0.0, batch_dice=True)
    pooled = 1 - (2 * 32 + 1e-5) / (33 + 32 + 1e-5)
    np.testing.assert_allclose(np.asarray(loss.dice_loss(y_true, y_pred)), [pooled] * 2, atol=1e-6)
    rng = np.random.default_rng(5)
    y_true = one_hot(rng.integers(0, 5, size=(3, 6, 5, 4)), 5)
    y_true[0, ..., 3] = 0  # class 3 absent from sample 0 only: present in the batch
    y_true[0, ..., 0] = 1 - y_true[0, ..., 1:].sum(-1)
    y_pred = random_probabilities(rng, (3, 6, 5, 4, 5))
    loss = DiceCELoss(dice_weight=0.5, ce_weight=1.5, batch_dice=True)
    expected = numpy_dice_ce(y_true, y_pred, 0.5, 1.5, batch=True)
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("background", [False, True])
def test_random_batch_matches_numpy_reference(background):
    rng = np.random.default_rng(3)
    y_true = one_hot(rng.integers(0, 5, size=(3, 6, 5, 4)), 5)
    y_pred = random_probabilities(rng, (3, 6, 5, 4, 5))
    loss = DiceCELoss(dice_weight=0.5, ce_weight=1.5, include_background=background)
    expected = numpy_dice_ce(y_true, y_pred, 0.5, 1.5, background)
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, abs=1e-5)


def test_half_precision_predictions_are_computed_in_float32():
    rng = np.random.default_rng(4)
    y_true = one_hot(rng.integers(0, 3, size=(2, 8, 8, 8)), 3)
    y_pred = random_probabilities(rng, (2, 8, 8, 8, 3))
    value = DiceCELoss()(y_true, y_pred.astype("float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(numpy_dice_ce(y_true, y_pred), abs=2e-3)


def test_loss_config_round_trip():
    loss = DiceCELoss(
        dice_weight=0.3, ce_weight=0.7, include_background=True, smooth=1e-3, batch_dice=True
    )
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, DiceCELoss)
    assert restored.get_config() == loss.get_config()
    assert (restored.dice_weight, restored.ce_weight, restored.smooth) == (0.3, 0.7, 1e-3)
    assert restored.include_background is True and restored.batch_dice is True


def numpy_counts(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """TP, FP, FN per class, shape (3, n_classes)."""
    return np.array(
        [
            [np.sum((predicted == c) & (truth == c)) for c in range(n_classes)],
            [np.sum((predicted == c) & (truth != c)) for c in range(n_classes)],
            [np.sum((predicted != c) & (truth == c)) for c in range(n_classes)],
        ],
        dtype=np.float64,
    )


def numpy_dice(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = counts
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)


def numpy_mean_dice(counts: np.ndarray) -> float:
    """Mean Dice of the organ classes seen in the truth or the prediction."""
    tp, fp, fn = counts[:, 1:]
    seen = 2 * tp + fp + fn > 0
    return float(numpy_dice(counts)[1:][seen].mean())


def batches_with_absent_organs():
    """Three (truth, prediction) label batches; class 3 absent from batch 1, class 4 from all."""
    rng = np.random.default_rng(11)
    batches = []
    for index in range(3):
        truth = rng.integers(0, 4, size=(2, 8, 6, 4))
        predicted = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
        if index == 1:
            truth[truth == 3] = 0
            predicted[predicted == 3] = 1
        batches.append((truth, predicted))
    return batches


def as_keras_inputs(truth: np.ndarray, predicted: np.ndarray, n_classes: int = 5):
    """One-hot truth and soft probabilities whose argmax is ``predicted``."""
    rng = np.random.default_rng(0)
    scores = rng.random(predicted.shape + (n_classes,)).astype("float32") * 0.5
    scores += one_hot(predicted, n_classes)
    return one_hot(truth, n_classes), scores / scores.sum(axis=-1, keepdims=True)


def test_organ_dice_accumulates_over_batches_like_numpy():
    batches = batches_with_absent_organs()
    metrics = {c: OrganDice(c, name=f"dice_{c}") for c in range(1, 5)}
    mean_metric = MeanOrganDice(5)
    counts = np.zeros((3, 5))
    for truth, predicted in batches:
        y_true, y_pred = as_keras_inputs(truth, predicted)
        for metric in [*metrics.values(), mean_metric]:
            metric.update_state(y_true, y_pred)
        counts += numpy_counts(truth, predicted, 5)
    expected = numpy_dice(counts)
    assert expected[4] == 1.0
    assert 0.3 < expected[3] < 0.9
    for c, metric in metrics.items():
        assert float(metric.result()) == pytest.approx(expected[c], abs=1e-6)
    # class 4 is absent from every truth and prediction: no Dice, so not in the mean
    assert float(mean_metric.result()) == pytest.approx(expected[1:4].mean(), abs=1e-6)
    np.testing.assert_allclose(np.asarray(mean_metric.per_class()), expected[1:], atol=1e-6)


def test_organ_missed_in_one_batch_scores_zero_not_one():
    truth = np.zeros((1, 4, 4, 4), "int64")
    truth[0, 0, 0, :2] = 2
    metric = OrganDice(2)
    metric.update_state(*as_keras_inputs(truth, np.zeros_like(truth)))
    assert float(metric.result()) == 0.0
    assert metric.name == "dice_class2"


def test_reset_state_and_integer_labels_and_sample_weight():
    (truth_a, pred_a), (truth_b, pred_b), _ = batches_with_absent_organs()
    metric = MeanOrganDice(5)
    metric.update_state(*as_keras_inputs(truth_a, pred_a))
    metric.reset_state()
    assert float(metric.result()) == 1.0
    _, y_pred = as_keras_inputs(truth_b, pred_b)
    metric.update_state(truth_b, y_pred)
    expected = numpy_mean_dice(numpy_counts(truth_b, pred_b, 5))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)

    weighted = OrganDice(1)
    y_true, y_pred = as_keras_inputs(truth_b, pred_b)
    weighted.update_state(y_true, y_pred, sample_weight=np.array([1.0, 0.0], "float32"))
    first_only = numpy_dice(numpy_counts(truth_b[:1], pred_b[:1], 5))[1]
    assert float(weighted.result()) == pytest.approx(first_only, abs=1e-6)


def test_training_metrics_names_and_config_round_trip():
    metrics = training_metrics(["liver", "right_kidney", "left_kidney", "spleen"])
    assert [m.name for m in metrics] == [
        "accuracy",
        "dice_liver",
        "dice_right_kidney",
        "dice_left_kidney",
        "dice_spleen",
        "mean_dice",
    ]
    assert [m.class_index for m in metrics[1:5]] == [1, 2, 3, 4]
    assert metrics[-1].n_classes == 5
    restored = keras.metrics.deserialize(keras.metrics.serialize(metrics[2]))
    assert isinstance(restored, OrganDice)
    assert (restored.class_index, restored.name) == (2, "dice_right_kidney")
    restored_mean = keras.metrics.deserialize(keras.metrics.serialize(metrics[-1]))
    assert restored_mean.class_indices == (1, 2, 3, 4)


def test_ignored_voxels_count_in_neither_term_like_numpy():
    """An all-zero one-hot voxel (labels.IGNORE) leaves both the Dice sums and the CE mean:
    the loss equals a float64 reference computed over the known voxels only."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=(2, 6, 5, 4))
    y_true = one_hot(labels, 4)
    ignore = rng.random(labels.shape) < 0.3
    y_true[ignore] = 0.0
    y_pred = random_probabilities(rng, (2, 6, 5, 4, 4))
    known = ~ignore
    t = y_true.astype(np.float64)[..., 1:]
    p = (y_pred.astype(np.float64) * known[..., None])[..., 1:]
    dice = (2 * (t * p).sum((1, 2, 3)) + 1e-5) / (t.sum((1, 2, 3)) + p.sum((1, 2, 3)) + 1e-5)
    present = t.sum((1, 2, 3)) > 0
    dice_loss = np.array([(1 - d)[m].mean() for d, m in zip(dice, present, strict=True)])
    ce = -(y_true * np.log(np.clip(y_pred, 1e-7, 1 - 1e-7))).sum(-1)
    ce = np.array([ce[b][known[b]].mean() for b in range(2)])
    expected = float((dice_loss + ce).mean())
    assert float(DiceCELoss()(y_true, y_pred)) == pytest.approx(expected, abs=1e-5)
    # what the prediction says at an ignored voxel does not matter
    other = y_pred.copy()
    other[ignore] = random_probabilities(rng, (int(ignore.sum()), 4))
    assert float(DiceCELoss()(y_true, other)) == pytest.approx(expected, abs=1e-5)
    # no voxel ignored: unchanged from the plain reference
    full = one_hot(labels, 4)
    assert float(DiceCELoss()(full, y_pred)) == pytest.approx(numpy_dice_ce(full, y_pred), abs=1e-5)
