"""The training budget before training: steps, patches, compute and time on a GPU.

A run's budget is ``train.epochs × train.steps_per_epoch`` steps of
``train.batch_size`` patches (nnU-Net trains 1,000 × 250 steps of 2). Its time on
a GPU is estimated from the network's floating-point operations and the GPU's
published throughput, because the time per step is not known before the first
step runs:

- the VNet's convolutions (:func:`vnet_flops`) count ``2 × multiply-adds``; a
  training step costs about 3× the forward pass (the backward pass computes the
  gradients of the activations and of the weights, each about one forward);
- a GPU sustains only part of its peak on 3D convolutions of few channels:
  :data:`GPU_EFFICIENCY` of the peak of the precision in use is assumed (an
  assumption, not a measurement: Colab's T4 throttles at 70 W, and cuDNN's
  half-precision kernels for 5³ kernels of 16–32 channels run far from the tensor
  cores' peak, 10 %; float32 on the CUDA cores gets closer to its lower peak, 40 %).

Nothing here imports Keras; the numbers come from the settings alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flare_helpers.config import Config, ModelConfig

#: nnU-Net's default budget (``nnUNetTrainer``: 1,000 epochs of 250 steps, batch 2).
NNUNET_EPOCHS, NNUNET_STEPS_PER_EPOCH, NNUNET_BATCH = 1000, 250, 2

#: Share of the GPU's peak throughput assumed to be sustained when training the VNet,
#: by arithmetic: half precision (tensor cores) and float32.
GPU_EFFICIENCY = {"half": 0.1, "float32": 0.4}

#: Training step ≈ forward + backward (gradients of activations and of weights).
TRAIN_STEP_FACTOR = 3


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's published peak throughput (dense, TFLOP/s) and usable memory."""

    name: str
    float32_tflops: float
    half_tflops: float
    memory_gib: float


#: NVIDIA T4 datasheet: 8.1 TFLOP/s float32, 65 TFLOP/s float16 tensor cores; Colab
#: reports 15 GiB of its 16 GB.
T4 = GpuSpec("T4", 8.1, 65.0, 15.0)


def vnet_flops(
    model: ModelConfig, shape: Sequence[int], n_classes: int, in_channels: int = 1
) -> int:
    """Floating-point operations (2 × multiply-adds) of one forward pass of the VNet's
    convolutions on one ``shape`` input (normalisation and activations are a few %)."""
    voxels = [math.prod(shape) // 8**level for level in range(model.depth + 1)]
    filters = [model.base_filters * 2**level for level in range(model.depth + 1)]
    k3 = model.kernel_size**3
    macs = voxels[0] * in_channels * filters[0] * k3  # first convolution
    macs += (model.convs_per_stage[0] - 1) * voxels[0] * filters[0] ** 2 * k3
    for level in range(1, model.depth + 1):
        macs += voxels[level] * filters[level - 1] * filters[level] * 8  # 2³ stride-2 down
        macs += model.convs_per_stage[level] * voxels[level] * filters[level] ** 2 * k3
    channels = filters[model.depth]
    for level in range(model.depth - 1, -1, -1):
        macs += voxels[level] * channels * filters[level]  # 2³ stride-2 transposed: 8 per input
        width = 2 * filters[level]
        macs += model.convs_per_stage[level] * voxels[level] * width**2 * k3
        channels = width
    macs += voxels[0] * channels * n_classes  # 1×1×1 logits
    return 2 * macs


@dataclass(frozen=True)
class TrainingPlan:
    """What :func:`plan_training` expects of a run.

    Attributes:
        epochs, steps_per_epoch, batch_size: the budget (steps per epoch as served).
        steps, patches: over the whole run.
        step_tflop: compute of one training step (``batch_size`` patches).
        val_tflop_per_epoch: compute of the validation passes of one epoch.
        precision: the dtype policy the estimate assumes.
        gpu: the GPU of the estimate.
        seconds_per_step: estimated, validation included.
        hours: the whole run, estimated.
        samples_per_second: patches per second the input pipeline must deliver.
    """

    epochs: int
    steps_per_epoch: int
    batch_size: int
    steps: int
    patches: int
    step_tflop: float
    val_tflop_per_epoch: float
    precision: str
    gpu: GpuSpec
    seconds_per_step: float
    hours: float
    samples_per_second: float

    def time_line(self) -> str:
        """``"about 25,000 steps, ≈ 3.6 h on a T4; resumes after a disconnect"``."""
        minutes = self.hours * 60
        if self.hours >= 1:
            took = f"≈ {self.hours:.1f} h"
        elif minutes >= 1:
            took = f"≈ {minutes:.0f} min"
        else:  # the FLOPs alone say seconds; a step's fixed costs are not estimated
            took = "under a minute"
        return (
            f"about {self.steps:,} steps, {took} on a {self.gpu.name} "
            f"({self.precision}; estimated from FLOPs); resumes after a disconnect"
        )

    def budget_line(self) -> str:
        """The budget against nnU-Net's default (1,000 epochs × 250 steps × 2 patches)."""
        nnunet_steps = NNUNET_EPOCHS * NNUNET_STEPS_PER_EPOCH
        nnunet_patches = nnunet_steps * NNUNET_BATCH
        return (
            f"budget: {self.epochs} epochs × {self.steps_per_epoch} steps × {self.batch_size} "
            f"= {self.patches:,} patches in {self.steps:,} steps; nnU-Net: {NNUNET_EPOCHS} × "
            f"{NNUNET_STEPS_PER_EPOCH} × {NNUNET_BATCH} = {nnunet_patches:,} patches in "
            f"{nnunet_steps:,} steps ({100 * self.patches / nnunet_patches:.2g} % of it)"
        )


def plan_training(
    cfg: Config,
    n_train_cases: int,
    n_val_samples: int = 0,
    *,
    gpu: GpuSpec = T4,
    precision: str | None = None,
    efficiency: float | None = None,
) -> TrainingPlan:
    """Steps, patches and the estimated time of training ``cfg`` on ``gpu``.

    Args:
        n_train_cases: training cases (sets the epoch when ``train.steps_per_epoch`` is 0).
        n_val_samples: validation patches (or volumes) scored after each epoch.
        precision: the dtype policy on that GPU; default: what ``train.mixed_precision``
            resolves to there (``auto``: ``mixed_float16`` on a T4).
        efficiency: share of the peak sustained (default: :data:`GPU_EFFICIENCY`).
    """
    t = cfg.train
    steps_per_epoch = t.steps_per_epoch or math.ceil(max(n_train_cases, 1) / t.batch_size)
    steps = t.epochs * steps_per_epoch
    if precision is None:
        auto = "mixed_bfloat16" if gpu.name in ("A100", "L4", "H100") else "mixed_float16"
        precision = {"auto": auto, "none": "float32"}.get(t.mixed_precision, t.mixed_precision)
    kind = "float32" if precision == "float32" else "half"
    peak = gpu.float32_tflops if kind == "float32" else gpu.half_tflops
    efficiency = GPU_EFFICIENCY[kind] if efficiency is None else efficiency
    from_labels = 1 + len(cfg.data.organs)
    forward = vnet_flops(cfg.model, cfg.preprocess.target_shape, from_labels) / 1e12
    step_tflop = TRAIN_STEP_FACTOR * forward * t.batch_size
    val_tflop = forward * n_val_samples
    seconds_per_step = (step_tflop + val_tflop / steps_per_epoch) / (peak * efficiency)
    return TrainingPlan(
        epochs=t.epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=t.batch_size,
        steps=steps,
        patches=steps * t.batch_size,
        step_tflop=step_tflop,
        val_tflop_per_epoch=val_tflop,
        precision=precision,
        gpu=gpu,
        seconds_per_step=seconds_per_step,
        hours=steps * seconds_per_step / 3600.0,
        samples_per_second=t.batch_size / seconds_per_step,
    )
