"""Keras metrics that monitor hard Dice per organ during training.

They accumulate true-positive, false-positive and false-negative voxel counts
of the argmax prediction over every batch of an epoch, and report
``Dice = 2 TP / (2 TP + FP + FN)`` from the totals. A class absent from both
the predictions and the ground truth of everything seen scores 1.0 (the FLARE
convention), so a batch without an organ neither drags the value down nor
produces NaN. These are training monitors on the network grid; the reported
per-case scores on the original grid come from :mod:`flare_helpers.evaluate.metrics`.

Counts are float32 variables (exact up to 2**24 voxels per class, relative
error ~1e-7 beyond), because integer and float64 variables are not portable
across the TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


class _HardDice(keras.metrics.Metric):
    """Epoch-accumulated hard Dice of ``class_indices``; the result is their mean Dice.

    ``y_true`` is one-hot ``(batch, X, Y, Z, C)`` (or integer labels
    ``(batch, X, Y, Z)``), ``y_pred`` probabilities ``(batch, X, Y, Z, C)``;
    ``sample_weight``, if given, weights each sample's voxel counts (shape ``(batch,)``).
    """

    def __init__(self, class_indices: Sequence[int], name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.class_indices = tuple(int(c) for c in class_indices)
        if not self.class_indices or min(self.class_indices) < 0:
            raise ValueError(f"class indices must be >= 0, got {self.class_indices}")
        shape = (len(self.class_indices),)
        self.true_positives = self.add_variable(shape, "zeros", "float32", name="true_positives")
        self.false_positives = self.add_variable(shape, "zeros", "float32", name="false_positives")
        self.false_negatives = self.add_variable(shape, "zeros", "float32", name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        predicted = ops.argmax(y_pred, axis=-1)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]:
            truth = ops.argmax(y_true, axis=-1)
        else:
            truth = ops.reshape(ops.cast(y_true, predicted.dtype), ops.shape(predicted))
        classes = ops.convert_to_tensor(self.class_indices, dtype=predicted.dtype)
        pred_mask = ops.cast(ops.equal(ops.expand_dims(predicted, -1), classes), "float32")
        true_mask = ops.cast(ops.equal(ops.expand_dims(truth, -1), classes), "float32")
        hits = pred_mask * true_mask
        if sample_weight is not None:
            weight = ops.reshape(
                ops.cast(sample_weight, "float32"), (-1,) + (1,) * (len(pred_mask.shape) - 1)
            )
            hits, pred_mask, true_mask = hits * weight, pred_mask * weight, true_mask * weight
        axes = tuple(range(len(pred_mask.shape) - 1))
        true_positives = ops.sum(hits, axis=axes)
        self.true_positives.assign_add(true_positives)
        self.false_positives.assign_add(ops.sum(pred_mask, axis=axes) - true_positives)
        self.false_negatives.assign_add(ops.sum(true_mask, axis=axes) - true_positives)

    def per_class(self):
        """Dice of each class in ``class_indices`` over everything seen, ``(K,)`` float32."""
        denominator = 2.0 * self.true_positives + self.false_positives + self.false_negatives
        safe = ops.where(denominator > 0, denominator, 1.0)
        return ops.where(denominator > 0, 2.0 * self.true_positives / safe, 1.0)

    def result(self):
        return ops.mean(self.per_class())


@keras.saving.register_keras_serializable(package="flare_helpers")
class OrganDice(_HardDice):
    """Hard Dice of one class (e.g. ``OrganDice(1, name="dice_liver")``) over the epoch."""

    def __init__(self, class_index: int, name: str | None = None, **kwargs) -> None:
        super().__init__((class_index,), name=name or f"dice_class{int(class_index)}", **kwargs)
        self.class_index = int(class_index)

    def get_config(self) -> dict:
        return {**super().get_config(), "class_index": self.class_index}


@keras.saving.register_keras_serializable(package="flare_helpers")
class MeanOrganDice(_HardDice):
    """Mean over the organ classes ``1 … n_classes-1`` (never background) of their epoch
    hard Dice, counting only organs seen in the ground truth or the prediction.

    This is the number that picks ``best.keras``. An organ absent from everything
    seen and predicted nowhere has no Dice: counting it as 1.0 (as the per-organ
    monitors do, the FLARE convention) would let a model that predicts nothing
    score well on data that lack organs. An organ predicted where the truth has
    none scores 0. With no organ seen at all the result is 1.0.
    """

    def __init__(self, n_classes: int, name: str = "mean_dice", **kwargs) -> None:
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be >= 2 (background + organs), got {n_classes}")
        super().__init__(range(1, int(n_classes)), name=name, **kwargs)
        self.n_classes = int(n_classes)

    def result(self):
        seen = ops.cast(
            2.0 * self.true_positives + self.false_positives + self.false_negatives > 0, "float32"
        )
        n_seen = ops.sum(seen)
        mean = ops.sum(self.per_class() * seen) / ops.maximum(n_seen, 1.0)
        return ops.where(n_seen > 0, mean, 1.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_classes": self.n_classes}


def training_metrics(organs: Sequence[str]) -> list[keras.metrics.Metric]:
    """Metrics for ``model.compile``: voxel accuracy, Dice per organ and their mean.

    ``organs[i]`` is class ``i + 1`` (see :class:`flare_helpers.data.labels.OrganSet`);
    the logged keys are ``accuracy``, ``dice_<organ>`` and ``mean_dice``
    (``val_``-prefixed on validation data).
    """
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        *(OrganDice(i + 1, name=f"dice_{organ}") for i, organ in enumerate(organs)),
        MeanOrganDice(len(organs) + 1, name="mean_dice"),
    ]
