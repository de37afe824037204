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

Those are estimates. What a run measures on its own device before it trains
(:func:`flare_helpers.train.loop.measure_plan`: seconds per step, validation,
saving, peak memory) becomes a :class:`MeasuredPlan`, which predicts the whole
run from those measurements and says when it will not fit its time limit
(:class:`Deadline`) or a Colab session, and which settings would.

Nothing here imports Keras.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

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
        """``"about 25,000 steps, ≈ 3.6 h on a T4 (estimate: …); resumes after a disconnect"``.

        An estimate, not a measurement: the line says what it assumes. Below a
        minute the FLOPs miss most of a step's cost (loading batches, launching
        kernels), so the figure is a lower bound there.
        """
        minutes = self.hours * 60
        if self.hours >= 1:
            took = f"≈ {self.hours:.1f} h"
        elif minutes >= 1:
            took = f"≈ {minutes:.0f} min"
        else:
            seconds = self.hours * 3600
            took = (
                f"at least {seconds:.2g} s"
                if seconds < 1
                else f"at least {format_duration(seconds)}"
            )
        share = GPU_EFFICIENCY["float32" if self.precision == "float32" else "half"]
        return (
            f"about {self.steps:,} steps, {took} on a {self.gpu.name} (estimate, not measured: "
            f"FLOPs at {share:.0%} of its {self.precision} peak); resumes after a disconnect"
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


# --------------------------------------------------------------------------- measured plan

#: A free Colab session ends after at most about 12 hours (Colab's FAQ; often sooner when idle).
COLAB_SESSION_HOURS = 12.0

#: Longest ETA a progress line states; beyond it says "more than" (a stalled step is no forecast).
ETA_CAP_HOURS = 99.0


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 10 min"``: a duration for a log line."""
    seconds = max(0.0, float(seconds))
    if math.isinf(seconds):
        return "no limit"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Deadline:
    """A wall-clock budget on ``time.monotonic()``'s clock (seconds).

    ``end`` is ``inf`` when there is no limit. A run's deadline starts once its
    data is ready; each network trained in the run gets a deadline
    :meth:`within` it (the localiser its share, the VNet what remains).
    """

    start: float
    end: float = math.inf

    @classmethod
    def after(cls, seconds: float, *, now: float | None = None) -> Deadline:
        """A deadline ``seconds`` from now (``seconds <= 0``: no limit)."""
        now = time.monotonic() if now is None else now
        return cls(now, now + seconds if seconds > 0 else math.inf)

    @property
    def limited(self) -> bool:
        """Whether there is a limit at all."""
        return math.isfinite(self.end)

    @property
    def seconds(self) -> float:
        """The whole budget, start to end (``inf`` without a limit)."""
        return self.end - self.start

    def left(self, now: float | None = None) -> float:
        """Seconds left (``inf`` without a limit; negative once past)."""
        return self.end - (time.monotonic() if now is None else now)

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the start."""
        return (time.monotonic() if now is None else now) - self.start

    def within(self, seconds: float, *, now: float | None = None) -> Deadline:
        """A deadline from now that ends ``seconds`` later (``<= 0``: no limit of its own),
        but never after this one."""
        own = Deadline.after(seconds, now=now)
        return Deadline(own.start, min(own.end, self.end))


def tolerance_seconds(limit_seconds: float) -> float:
    """How far past its time limit a run may end: max(1 minute, 5 %) (one step, the last saves)."""
    return max(60.0, 0.05 * limit_seconds)


@dataclass(frozen=True)
class StepTimes:
    """What a run measured on its own device before training (seconds; memory in MiB).

    Attributes:
        device: the backend and accelerator (:func:`flare_helpers.model.runtime.describe_device`).
        warmup_seconds: the first step, building the training function (compiling) included.
        seconds_per_step: median of the timed steps after it.
        steps_timed: how many steps were timed.
        fit_overhead_seconds: the fixed cost of one ``fit`` epoch (starting its batch
            workers, callbacks), the timed fit's time less its steps.
        validation_seconds: one validation pass over the validation cases (0 without any).
        save_seconds: writing the model once (``.keras`` with the optimiser state).
        peak_host_mib: the process's peak resident memory so far (host RSS).
        peak_gpu_mib: the GPU memory peak during the measured steps (None on the CPU).
    """

    device: str
    warmup_seconds: float
    seconds_per_step: float
    steps_timed: int
    fit_overhead_seconds: float
    validation_seconds: float
    save_seconds: float
    peak_host_mib: float
    peak_gpu_mib: float | None = None


@dataclass(frozen=True)
class MeasuredPlan:
    """A network's training predicted from :class:`StepTimes` measured on this device.

    An epoch is predicted as its fixed cost, ``steps_per_epoch`` measured steps,
    one validation pass and ``saves_per_epoch`` model saves (the resume
    checkpoint, and the best model when it improves: counted every epoch, so an
    upper bound). Nothing here is estimated from FLOPs.

    Attributes:
        network: the model file it trains (``best.keras``, ``localizer.keras``).
        epochs_key, steps_key: the settings of its epochs and steps per epoch
            (``steps_key`` empty where an epoch is one sample per case).
        time_limit_seconds: this network's own budget (``inf``: none).
        budget_left_seconds: what was left of it once measured.
        limit_key: the setting that sets that budget.
    """

    network: str
    measured: StepTimes
    epochs: int
    initial_epoch: int
    steps_per_epoch: int
    epochs_key: str = "train.epochs"
    steps_key: str = "train.steps_per_epoch"
    limit_key: str = "train.time_limit_minutes"
    time_limit_seconds: float = math.inf
    budget_left_seconds: float = math.inf
    saves_per_epoch: int = 2
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def epoch_fixed_seconds(self) -> float:
        """What an epoch costs besides its steps: fit overhead, validation, saving."""
        m = self.measured
        return m.fit_overhead_seconds + m.validation_seconds + self.saves_per_epoch * m.save_seconds

    @property
    def epoch_seconds(self) -> float:
        """One epoch, predicted from the measured times."""
        return self.epoch_fixed_seconds + self.steps_per_epoch * self.measured.seconds_per_step

    @property
    def run_seconds(self) -> float:
        """The whole run of ``epochs`` epochs, from the first."""
        return self.epochs * self.epoch_seconds

    @property
    def left_seconds(self) -> float:
        """The epochs still to train (a resumed run has done ``initial_epoch``)."""
        return max(0, self.epochs - self.initial_epoch) * self.epoch_seconds

    @property
    def epochs_in_budget(self) -> int:
        """Whole epochs that fit in what is left of the time limit (capped at those left)."""
        left = max(0, self.epochs - self.initial_epoch)
        if not math.isfinite(self.budget_left_seconds):
            return left
        return min(left, max(0, int(self.budget_left_seconds // self.epoch_seconds)))

    @property
    def fits_time_limit(self) -> bool:
        return self.left_seconds <= self.budget_left_seconds

    @property
    def fits_colab_session(self) -> bool:
        return self.left_seconds <= COLAB_SESSION_HOURS * 3600

    def _steps_for(self, seconds: float) -> int:
        """Steps per epoch with which the epochs left take ``seconds``."""
        left = max(1, self.epochs - self.initial_epoch)
        per_epoch = seconds / left - self.epoch_fixed_seconds
        return max(0, int(per_epoch // self.measured.seconds_per_step))

    def advice(self) -> list[str]:
        """What will not fit, and the settings that would (empty when everything fits)."""
        out = []
        left = max(0, self.epochs - self.initial_epoch)
        epoch = format_duration(self.epoch_seconds)
        if not self.fits_time_limit:
            budget = format_duration(self.budget_left_seconds)
            n = self.epochs_in_budget
            if n == 0:
                line = (
                    f"the time limit ({budget} left) is shorter than one epoch ({epoch}): it "
                    "stops inside the epoch, before its checkpoint, and a rerun repeats that "
                    f"epoch; raise {self.limit_key}"
                )
            else:
                line = (
                    f"the time limit ({budget} left) ends this run after about {n} of the {left} "
                    f"epochs left ({epoch} each; rerun to go on); to finish within it: "
                    f"{self.epochs_key}={self.initial_epoch + n}"
                )
            steps = self._steps_for(self.budget_left_seconds)
            if self.steps_key and steps >= 1:
                line += f", or {self.steps_key}={steps}"
            out.append(line)
        if not self.fits_colab_session and (
            self.fits_time_limit or self.budget_left_seconds > COLAB_SESSION_HOURS * 3600
        ):
            session = COLAB_SESSION_HOURS * 3600
            n = max(0, int(session // self.epoch_seconds))
            line = (
                f"longer than a free Colab session (about {COLAB_SESSION_HOURS:.0f} h): Colab "
                "disconnects it, and a rerun resumes at the last finished epoch; to finish in "
                f"one session: {self.epochs_key}={self.initial_epoch + n}"
            )
            steps = self._steps_for(session)
            if self.steps_key and steps >= 1:
                line += f", or {self.steps_key}={steps}"
            out.append(line + f"; or stop cleanly before: {self.limit_key}=690")
        return out

    def lines(self) -> list[str]:
        """The plan as text lines: what was measured, what it predicts, what does not fit."""
        m = self.measured
        gpu = f"{m.peak_gpu_mib / 1024:.2f} GiB" if m.peak_gpu_mib is not None else "no GPU"
        left = max(0, self.epochs - self.initial_epoch)
        resumed = (
            f"; {left} left: {format_duration(self.left_seconds)}" if self.initial_epoch else ""
        )
        limit = (
            f"{format_duration(self.time_limit_seconds)}, {format_duration(self.budget_left_seconds)}"
            " left"
            if math.isfinite(self.time_limit_seconds)
            else "none"
        )
        verdict = "fits" if self.fits_time_limit else "does not fit"
        return [
            f"plan for {self.network}, measured on this device ({m.device}):",
            f"  {m.seconds_per_step:.3g} s per step (median of {m.steps_timed}, after a "
            f"{format_duration(m.warmup_seconds)} warm-up step that built the model's functions)",
            f"  {self.steps_per_epoch} steps per epoch; per epoch also: validation "
            f"{format_duration(m.validation_seconds)}, saving {self.saves_per_epoch} × "
            f"{format_duration(m.save_seconds)}, fit overhead {format_duration(m.fit_overhead_seconds)}"
            f" → {format_duration(self.epoch_seconds)} per epoch",
            f"  predicted: {self.epochs} epochs ≈ {format_duration(self.run_seconds)}{resumed} "
            "(measured times × epochs)",
            f"  peak memory: host {m.peak_host_mib / 1024:.2f} GiB (RSS), GPU {gpu}",
            f"  time limit: {limit}"
            + (f" ({verdict})" if math.isfinite(self.time_limit_seconds) else ""),
            *(f"  note: {line}" for line in self.advice()),
        ]

    def to_dict(self) -> dict:
        """Everything as plain JSON values (``plan.json``); ``inf`` is written as None."""

        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        m = self.measured
        return {
            "network": self.network,
            "created": self.created,
            "device": m.device,
            "measured": {
                "warmup_seconds": m.warmup_seconds,
                "seconds_per_step": m.seconds_per_step,
                "steps_timed": m.steps_timed,
                "fit_overhead_seconds": m.fit_overhead_seconds,
                "validation_seconds": m.validation_seconds,
                "save_seconds": m.save_seconds,
                "peak_host_mib": m.peak_host_mib,
                "peak_gpu_mib": m.peak_gpu_mib,
            },
            "epochs": self.epochs,
            "initial_epoch": self.initial_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "saves_per_epoch": self.saves_per_epoch,
            "predicted": {
                "epoch_seconds": self.epoch_seconds,
                "run_seconds": self.run_seconds,
                "left_seconds": self.left_seconds,
                "how": "measured seconds per step × steps per epoch, plus the measured "
                "validation, saving and fit overhead of an epoch, × epochs",
            },
            "time_limit_seconds": finite(self.time_limit_seconds),
            "budget_left_seconds": finite(self.budget_left_seconds),
            "fits_time_limit": self.fits_time_limit,
            "fits_colab_session": self.fits_colab_session,
            "advice": self.advice(),
        }


def eta_seconds(
    steps_left: int,
    seconds_per_step: float,
    epochs_left: int,
    epoch_fixed_seconds: float,
    time_left: float = math.inf,
) -> float:
    """Seconds until training ends: the steps left of this epoch, then ``epochs_left`` more
    epochs, each ``steps_per_epoch`` steps plus its fixed cost; never past ``time_left``.

    Args:
        steps_left: steps left in the whole run (this epoch's and the later epochs').
        seconds_per_step: measured (a median, so one stalled step does not skew it).
        epochs_left: epoch ends still to come (each costs ``epoch_fixed_seconds``).
        time_left: seconds left of the time limit (``inf``: none).
    """
    eta = max(0, steps_left) * max(0.0, seconds_per_step) + max(0, epochs_left) * max(
        0.0, epoch_fixed_seconds
    )
    return min(eta, max(0.0, time_left))
