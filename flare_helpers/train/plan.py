"""Measure a few real training steps on this device, then put the model back as it was.

:func:`probe` is what a run's measured plan (:class:`~flare_helpers.train.budget.MeasuredPlan`,
``plan.json``) is made of. It trains the compiled model itself, through
``model.fit`` as training will (so the functions Keras builds, compiling
included, are the ones training then reuses, and the warm-up step pays for them
once), on batches of its own, then restores every model variable (weights,
normalisation statistics, random-seed states) and every optimiser variable (step
count, moments, loss scale) to the values they had. The steps measured therefore
change nothing: training afterwards gives the same weights as without them.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from flare_helpers.model import runtime
from flare_helpers.train.budget import StepTimes
from flare_helpers.train.callbacks import save_model_atomic


class _StepClock(keras.callbacks.Callback):
    """Seconds of each step: batch end to batch end (the first from its own start)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._last = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if not self.seconds:
            self._last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs and "loss" in logs:
            float(logs["loss"])  # waits for the step to finish on the device
        now = time.monotonic()
        self.seconds.append(now - self._last)
        self._last = now


def model_state(model: keras.Model) -> list[np.ndarray]:
    """Copies of every model and optimiser variable (builds the optimiser if it is not yet,
    under the model's distribution strategy where it has one, as ``fit`` would)."""
    if not model.optimizer.built:
        strategy = getattr(model, "distribute_strategy", None)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model.optimizer.build(model.trainable_variables)
    return [
        np.array(keras.ops.convert_to_numpy(v))
        for v in [*model.variables, *model.optimizer.variables]
    ]


def restore_state(model: keras.Model, state: list[np.ndarray]) -> None:
    """Assign what :func:`model_state` copied back to the same variables."""
    for variable, value in zip([*model.variables, *model.optimizer.variables], state, strict=True):
        variable.assign(value)


def _fit(model: keras.Model, data, clock: _StepClock) -> float:
    start = time.monotonic()
    model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
    return time.monotonic() - start


def probe(
    model: keras.Model,
    warmup_data,
    timed_data,
    val_warmup=None,
    val_data=None,
    *,
    save_path: str | Path,
) -> StepTimes:
    """Time ``model``'s training on this device; leave the model as it was.

    Args:
        warmup_data: one batch (a ``PyDataset`` of length 1): the first step, which
            builds the training function.
        timed_data: the steps to time: ``len(timed_data)``, the first of which (it also
            starts the batch workers) counts in the fit overhead, not the median.
        val_warmup, val_data: a small and the full validation set (None: no validation);
            the first builds the evaluation function, the second is timed.
        save_path: where to time one save of the model (removed afterwards).
    """
    state = model_state(model)
    runtime.reset_gpu_peak()
    try:
        warmup = _fit(model, warmup_data, _StepClock())
        clock = _StepClock()
        total = _fit(model, timed_data, clock)
        timed = clock.seconds[1:] if len(clock.seconds) > 1 else clock.seconds
        step = float(statistics.median(timed))
        validation = 0.0
        if val_data is not None:
            model.evaluate(val_warmup if val_warmup is not None else val_data, verbose=0)
            start = time.monotonic()
            model.evaluate(val_data, verbose=0)
            validation = time.monotonic() - start
        gpu = runtime.gpu_peak_mib()
    finally:
        restore_state(model, state)
    save_path = Path(save_path)
    start = time.monotonic()
    try:
        save_model_atomic(model, save_path)
        save = time.monotonic() - start
    finally:
        save_path.unlink(missing_ok=True)
    return StepTimes(
        device=runtime.describe_device(),
        warmup_seconds=warmup,
        seconds_per_step=step,
        steps_timed=len(timed),
        fit_overhead_seconds=max(0.0, total - len(clock.seconds) * step),
        validation_seconds=validation,
        save_seconds=save,
        peak_host_mib=runtime.host_peak_mib(),
        peak_gpu_mib=gpu,
    )
