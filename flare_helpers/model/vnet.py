"""VNet (Milletari et al. 2016) for 3D segmentation, as a functional Keras 3 model.

Layout (default ``depth=4``, ``base_filters=16``, ``convs_per_stage=(1, 2, 3, 3, 3)``)::

    level  filters  encoder stage          decoder stage (after 2³ transposed conv + concat)
    0      16       1 conv  (+ input ×16)  1 conv on 32 channels  → 1³ conv → softmax
    1      32       2 convs                2 convs on 64 channels
    2      64       3 convs                3 convs on 128 channels
    3      128      3 convs                3 convs on 256 channels
    4      256      3 convs (bottom)

Every stage is residual: its ``kernel_size³`` convolutions (each followed by a
PReLU with one slope per channel) are added to the stage input. Down-sampling
is a strided 2³ convolution that doubles the filters, up-sampling a 2³
transposed convolution that halves them; both are followed by a PReLU. The
structure (and so the parameter count, up to MONAI's batch norms and conv
counts) matches ``monai.networks.nets.VNet``.

Tensors are channels-last ``(batch, X, Y, Z, channels)`` in canonical RAS voxel
order; the output is per-voxel class probabilities ``(batch, X, Y, Z, n_classes)``
in float32, also under mixed precision. Only ``keras.ops`` is used, so the model
runs on the TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers, ops

from flare_helpers.config import ModelConfig
from flare_helpers.errors import FlareError


@keras.saving.register_keras_serializable(package="flare_helpers")
class RepeatChannels(layers.Layer):
    """Tile the channel (last) axis ``repeats`` times: ``(…, C)`` → ``(…, C·repeats)``.

    The first VNet stage adds its input, repeated to ``base_filters`` channels,
    to the output of its convolution (the paper's residual on a 1-channel CT).
    """

    def __init__(self, repeats: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = int(repeats)

    def call(self, inputs):
        return ops.tile(inputs, [1] * (len(inputs.shape) - 1) + [self.repeats])

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels * self.repeats)

    def get_config(self) -> dict:
        return {**super().get_config(), "repeats": self.repeats}


def _check_arguments(
    input_shape: Sequence[int | None],
    n_classes: int,
    base_filters: int,
    depth: int,
    convs_per_stage: Sequence[int],
    kernel_size: int,
    dropout: float,
) -> tuple[int | None, ...]:
    """Validate the architecture; return the input shape as ``(X, Y, Z, channels)``."""
    shape = tuple(None if s is None else int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4:
        raise FlareError(
            f"input shape {tuple(input_shape)} must be (X, Y, Z) or (X, Y, Z, channels)"
        )
    if depth < 1:
        raise FlareError(f"depth must be >= 1, got {depth} (model.depth)")
    if len(convs_per_stage) != depth + 1:
        raise FlareError(
            f"convs_per_stage {tuple(convs_per_stage)} needs depth + 1 = {depth + 1} entries, "
            f"one per encoder level (model.convs_per_stage)"
        )
    if any(int(n) < 1 for n in convs_per_stage):
        raise FlareError(
            f"convs_per_stage {tuple(convs_per_stage)} entries must be >= 1 (model.convs_per_stage)"
        )
    if n_classes < 1 or base_filters < 1 or kernel_size < 1:
        raise FlareError(
            f"n_classes, base_filters and kernel_size must be >= 1, got "
            f"{n_classes}, {base_filters}, {kernel_size}"
        )
    if not 0.0 <= dropout < 1.0:
        raise FlareError(f"dropout must be in [0, 1), got {dropout} (model.dropout)")
    factor = 2**depth
    spatial = shape[:3]
    if any(s is not None and (s < 1 or s % factor) for s in spatial):
        raise FlareError(
            f"input shape {spatial} must be divisible by 2**depth = {factor} along every axis "
            f"(preprocess.target_shape)"
        )
    channels = shape[3]
    if channels is None or channels < 1 or base_filters % channels:
        raise FlareError(
            f"input channels ({channels}) must divide base_filters ({base_filters}): the first "
            f"stage adds the input repeated to base_filters channels"
        )
    return shape


NORMALIZATIONS = ("none", "batch", "instance")


def _normalize(x, kind: str, name: str, dtype: str | None):
    """Optional normalisation after a convolution (the paper has none; MONAI uses batch)."""
    if kind == "batch":
        return layers.BatchNormalization(name=name, dtype=dtype)(x)
    if kind == "instance":
        return layers.GroupNormalization(groups=-1, name=name, dtype=dtype)(x)
    return x


def _residual_stage(
    x,
    residual,
    n_convs: int,
    filters: int,
    kernel_size: int,
    prefix: str,
    dtype: str | None,
    normalization: str = "none",
):
    """``n_convs`` × (conv ``kernel_size³`` → [norm] → PReLU), then add ``residual``."""
    for i in range(n_convs):
        x = layers.Conv3D(
            filters,
            kernel_size,
            padding="same",
            kernel_initializer="he_uniform",
            name=f"{prefix}_conv{i}",
            dtype=dtype,
        )(x)
        x = _normalize(x, normalization, f"{prefix}_norm{i}", dtype)
        x = _prelu(f"{prefix}_prelu{i}", dtype)(x)
    return layers.Add(name=f"{prefix}_add", dtype=dtype)([x, residual])


def _transition(x, conv: type[layers.Layer], filters: int, prefix: str, dtype, normalization: str):
    """Change of level: a 2³ stride-2 ``conv`` (down) or transposed conv (up) → [norm] → PReLU."""
    x = conv(
        filters,
        2,
        strides=2,
        kernel_initializer="he_uniform",
        name=f"{prefix}_conv",
        dtype=dtype,
    )(x)
    x = _normalize(x, normalization, f"{prefix}_norm", dtype)
    return _prelu(f"{prefix}_prelu", dtype)(x)


def _prelu(name: str, dtype: str | None) -> layers.PReLU:
    """PReLU with one slope per channel, shared over X, Y, Z (initial slope 0.25, as in He)."""
    return layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25),
        shared_axes=[1, 2, 3],
        name=name,
        dtype=dtype,
    )


def build_vnet(
    input_shape: Sequence[int | None],
    n_classes: int,
    *,
    base_filters: int = ModelConfig.base_filters,
    depth: int = ModelConfig.depth,
    convs_per_stage: Sequence[int] = ModelConfig.convs_per_stage,
    kernel_size: int = ModelConfig.kernel_size,
    dropout: float = ModelConfig.dropout,
    normalization: str = ModelConfig.normalization,
    dtype: str | None = None,
) -> keras.Model:
    """Build the VNet of Milletari et al. (2016).

    Args:
        input_shape: ``(X, Y, Z)`` or ``(X, Y, Z, channels)`` in voxels; X, Y and Z
            must divide by ``2**depth`` (``None`` allows any such size at run time).
        n_classes: output channels, background included (e.g. 5 for 4 organs).
        base_filters: filters of the first stage; each level down doubles them.
        depth: number of down-sampling steps (levels 0..depth).
        convs_per_stage: convolutions in each encoder stage, levels 0..depth; the
            decoder stage of level ``l`` has ``convs_per_stage[l]`` convolutions.
        kernel_size: edge of the cubic convolution kernels in the stages.
        dropout: channel-wise (spatial) dropout rate in the two deepest down- and
            up-sampling transitions, as in MONAI; 0 disables it.
        normalization: ``"none"`` (the paper), ``"batch"`` (as MONAI's VNet) or
            ``"instance"`` after every convolution; normalised nets train faster.
        dtype: Keras dtype policy for every layer (``None`` = global policy,
            ``"mixed_float16"``, ``"mixed_bfloat16"``). The softmax is always float32.

    Returns:
        An uncompiled ``keras.Model`` named ``"vnet"`` mapping a float32 image
        ``(batch, X, Y, Z, channels)`` to float32 probabilities ``(batch, X, Y, Z, n_classes)``.

    Raises:
        FlareError: the input shape does not divide by ``2**depth``, or the
            architecture settings are inconsistent.
    """
    shape = _check_arguments(
        input_shape, n_classes, base_filters, depth, convs_per_stage, kernel_size, dropout
    )
    if normalization not in NORMALIZATIONS:
        raise FlareError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    filters = [base_filters * 2**level for level in range(depth + 1)]
    deep_levels = range(max(1, depth - 1), depth + 1)

    inputs = keras.Input(shape=shape, name="image")
    repeated = RepeatChannels(base_filters // shape[3], name="enc0_repeat", dtype=dtype)(inputs)
    x = _residual_stage(
        inputs, repeated, convs_per_stage[0], filters[0], kernel_size, "enc0", dtype, normalization
    )
    skips = [x]
    for level in range(1, depth + 1):
        down = _transition(x, layers.Conv3D, filters[level], f"down{level}", dtype, normalization)
        x = down
        if dropout > 0 and level in deep_levels:
            x = layers.SpatialDropout3D(dropout, name=f"down{level}_dropout", dtype=dtype)(x)
        x = _residual_stage(
            x,
            down,
            convs_per_stage[level],
            filters[level],
            kernel_size,
            f"enc{level}",
            dtype,
            normalization,
        )
        skips.append(x)

    for level in range(depth - 1, -1, -1):
        if dropout > 0 and level + 1 in deep_levels:
            x = layers.SpatialDropout3D(dropout, name=f"up{level}_dropout", dtype=dtype)(x)
        x = _transition(
            x, layers.Conv3DTranspose, filters[level], f"up{level}", dtype, normalization
        )
        x = layers.Concatenate(name=f"up{level}_concat", dtype=dtype)([x, skips[level]])
        x = _residual_stage(
            x,
            x,
            convs_per_stage[level],
            2 * filters[level],
            kernel_size,
            f"dec{level}",
            dtype,
            normalization,
        )

    logits = layers.Conv3D(n_classes, 1, name="logits", dtype=dtype)(x)
    probabilities = layers.Activation("softmax", name="softmax", dtype="float32")(logits)
    return keras.Model(inputs, probabilities, name="vnet")


def vnet_from_config(
    model_cfg: ModelConfig,
    input_shape: Sequence[int | None],
    n_classes: int,
    dtype: str | None = None,
) -> keras.Model:
    """Build the VNet described by the ``model:`` section of the config.

    ``input_shape`` is usually ``preprocess.target_shape`` and ``n_classes``
    ``OrganSet(data.organs).n_classes``.
    """
    return build_vnet(
        input_shape,
        n_classes,
        base_filters=model_cfg.base_filters,
        depth=model_cfg.depth,
        convs_per_stage=model_cfg.convs_per_stage,
        kernel_size=model_cfg.kernel_size,
        dropout=model_cfg.dropout,
        normalization=model_cfg.normalization,
        dtype=dtype,
    )


def count_parameters(model: keras.Model) -> int:
    """Number of weights (trainable and not) of ``model``."""
    return sum(math.prod(w.shape) for w in model.weights)
