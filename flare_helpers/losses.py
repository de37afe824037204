"""Training loss: soft Dice + categorical cross-entropy (the usual nnU-Net/MONAI ``DiceCE``).

Inputs are channels-last volumes: ``y_true`` one-hot ``(batch, X, Y, Z, C)`` and
``y_pred`` softmax probabilities of the same shape. Everything is computed in
float32, so the loss is safe under mixed precision.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="flare_helpers")
class DiceCELoss(keras.losses.Loss):
    """``dice_weight · soft Dice loss + ce_weight · cross-entropy``, one value per sample.

    Soft Dice loss of sample ``b`` and class ``c`` (sums over the voxels of that sample)::

        1 - (2 Σ p·g + smooth) / (Σ p + Σ g + smooth)

    averaged over the included classes. It is computed per sample, not over the
    pooled batch, because FLARE scores each case separately: pooled sums let a
    large organ in one volume hide a missed small organ in another, and make the
    loss depend on how volumes happen to be batched. A class absent from a
    sample's ground truth contributes ≈ 0 only when the prediction for it is
    empty too (the ``smooth`` terms), otherwise ≈ 1, as in MONAI's
    ``DiceLoss(batch=False)``.

    Cross-entropy is averaged over the voxels of each sample (all classes,
    background included). Keras then averages the per-sample values over the
    batch (``reduction="sum_over_batch_size"``), honouring ``sample_weight``.

    Args:
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        include_background: whether class 0 enters the Dice mean; off by default
            because background dominates the volume and would inflate Dice.
        smooth: added to numerator and denominator, so an empty class predicted
            empty scores a loss of 0 and gradients stay finite.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        include_background: bool = False,
        smooth: float = 1e-5,
        name: str = "dice_ce",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)

    def dice_loss(self, y_true, y_pred):
        """Per-sample soft Dice loss ``(batch,)``, averaged over the included classes."""
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if not self.include_background:
            if y_pred.shape[-1] == 1:
                raise ValueError("include_background=False needs at least 2 classes")
            y_true = y_true[..., 1:]
            y_pred = y_pred[..., 1:]
        spatial_axes = tuple(range(1, len(y_pred.shape) - 1))
        intersection = ops.sum(y_true * y_pred, axis=spatial_axes)
        denominator = ops.sum(y_true, axis=spatial_axes) + ops.sum(y_pred, axis=spatial_axes)
        dice = (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        return ops.mean(1.0 - dice, axis=-1)

    def ce_loss(self, y_true, y_pred):
        """Per-sample categorical cross-entropy ``(batch,)``, averaged over voxels."""
        voxel_ce = keras.losses.categorical_crossentropy(
            ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        )
        return ops.mean(ops.reshape(voxel_ce, (ops.shape(voxel_ce)[0], -1)), axis=-1)

    def call(self, y_true, y_pred):
        return self.dice_weight * self.dice_loss(y_true, y_pred) + self.ce_weight * self.ce_loss(
            y_true, y_pred
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
            "include_background": self.include_background,
            "smooth": self.smooth,
        }
