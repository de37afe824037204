"""Keras callbacks for resumable training: history, best/resume checkpoints, schedules.

They share one idea: everything needed to continue after a crash is on disk
and written atomically, and state such as "best value so far" or "epochs
without improvement" is recomputed from the history file rather than kept in
memory, so a resumed run behaves exactly like an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
from tqdm.auto import tqdm

from flare_helpers.data.fileio import atomic_path, read_history, write_text_atomic
from flare_helpers.train.budget import ETA_CAP_HOURS, Deadline, eta_seconds, format_duration

_CHECKPOINT = re.compile(r"^epoch_(\d{4,})\.keras$")


#: Metrics whose exponential moving average :class:`HistoryLog` adds as ``ema_<name>``.
EMA_OF = ("val_mean_dice", "mean_dice")


def ema_name(monitor: str) -> str:
    """The history column of ``monitor``'s moving average (``ema_val_mean_dice``)."""
    return f"ema_{monitor}"


def moving_average(values: list[float], smoothing: float) -> list[float]:
    """nnU-Net's EMA pseudo-Dice: ``ema_0 = v_0``, ``ema_t = a·ema_{t-1} + (1 - a)·v_t``
    (``a = smoothing``; nnU-Net's is 0.9); a NaN value leaves the average unchanged."""
    out: list[float] = []
    for value in values:
        previous = out[-1] if out else math.nan
        if math.isnan(value):
            out.append(previous)
        elif math.isnan(previous):
            out.append(value)
        else:
            out.append(smoothing * previous + (1.0 - smoothing) * value)
    return out


class HistoryLog(keras.callbacks.Callback):
    """CSV of every logged metric per epoch, rewritten atomically after each epoch.

    Rows from epochs at or after ``initial_epoch`` (left by a run that crashed
    before its checkpoint was saved) are dropped, so each epoch appears once.
    Each metric of :data:`EMA_OF` also gets its moving average ``ema_<name>``
    (:func:`moving_average`, from the rows on disk, so a resumed run continues it):
    validation Dice on a few cases jumps from epoch to epoch, and the best model
    is picked by the average (as nnU-Net picks its best checkpoint).
    """

    def __init__(self, path: str | Path, initial_epoch: int = 0, smoothing: float = 0.9) -> None:
        super().__init__()
        self.path = Path(path)
        self.smoothing = float(smoothing)
        self.rows: list[dict[str, float]] = [
            row for row in read_history(self.path) if row["epoch"] < initial_epoch
        ]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch}
        for key, value in (logs or {}).items():
            row[key] = float(value)
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        for name in EMA_OF:
            if name in row:
                previous = [r.get(ema_name(name), math.nan) for r in self.rows[-1:]]
                row[ema_name(name)] = moving_average(previous + [row[name]], self.smoothing)[-1]
        self.rows.append(row)
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())

    def best(self, monitor: str) -> tuple[int, float] | None:
        """(epoch, value) of the highest ``monitor`` so far, or None."""
        scored = [
            (r["epoch"], r[monitor]) for r in self.rows if not math.isnan(r.get(monitor, math.nan))
        ]
        return max(scored, key=lambda item: (item[1], -item[0])) if scored else None


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model (atomically) whenever ``monitor`` beats every earlier epoch."""

    def __init__(self, path: str | Path, history: HistoryLog, monitor: str) -> None:
        super().__init__()
        self.path, self.history, self.monitor = Path(path), history, monitor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        best = self.history.best(self.monitor)
        if best is not None and best[0] == epoch:
            save_model_atomic(self.model, self.path)


class ResumeCheckpoint(keras.callbacks.Callback):
    """After each epoch, save weights and optimizer state as ``epoch_NNNN.keras``.

    The file name carries the number of completed epochs; older files are
    removed only after the new one is complete, so a crash at any moment leaves
    at least one valid checkpoint.
    """

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        path = self.folder / f"epoch_{epoch + 1:04d}.keras"
        save_model_atomic(self.model, path)
        for old in self.folder.glob("epoch_*.keras"):
            if old != path:
                old.unlink(missing_ok=True)


def latest_checkpoint(folder: str | Path) -> tuple[int, Path] | None:
    """(completed epochs, path) of the newest resume checkpoint, or None."""
    found = []
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return max(found) if found else None


def save_model_atomic(model: keras.Model, path: str | Path) -> Path:
    """``model.save`` (architecture, weights, optimizer state) under a temporary name, then rename."""
    with atomic_path(path) as tmp:
        model.save(tmp)
    return Path(path)


class EarlyStopFromHistory(keras.callbacks.Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (history-based, resume-safe)."""

    def __init__(self, history: HistoryLog, monitor: str, patience: int) -> None:
        super().__init__()
        self.history, self.monitor, self.patience = history, monitor, patience
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        best = self.history.best(self.monitor)
        if best is not None and epoch - best[0] >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True


class BudgetEnded(Exception):
    """Raised by :class:`TimeLimit` inside an epoch to end ``fit`` at once.

    Keras would otherwise validate the partial epoch and run every epoch-end
    callback, whose checkpoint would claim a finished epoch.
    :func:`flare_helpers.train.loop.fit` catches it and saves the model.
    """


class TimeLimit(keras.callbacks.Callback):
    """Ends training at ``deadline``, checked after every step; counts the steps run.

    Inside an epoch it raises :class:`BudgetEnded`: the partial epoch is not
    recorded (no history row, no checkpoint), so a rerun repeats it from the last
    checkpoint exactly as an uninterrupted run would; the caller saves the weights
    (``last.keras``). At an epoch end it sets ``model.stop_training``: that epoch
    is complete and saved. It stops early by what ending costs, so the run ends by
    its deadline: the last step's time, plus ``end_seconds`` (saving the model),
    plus ``validate_seconds`` while no validated model exists (a final validation
    and ``best.keras``). On the last step of an epoch it lets the epoch finish.

    Attributes:
        stopped: the deadline ended training.
        stopped_inside: ``(epoch, steps run, steps per epoch)`` of a stop inside an
            epoch (epoch 0-based), else None.
        steps: training steps run in this ``fit``.
    """

    def __init__(
        self,
        deadline: Deadline,
        *,
        end_seconds: float = 0.0,
        validate_seconds: float = 0.0,
        validated: bool = False,
    ) -> None:
        super().__init__()
        self.deadline = deadline
        self.end_seconds = float(end_seconds)
        self.validate_seconds = float(validate_seconds)
        self.validated = validated
        self.stopped = False
        self.stopped_inside: tuple[int, int, int] | None = None
        self.steps = 0
        self.epoch = 0
        self._last = time.monotonic()

    def reserve(self, step_seconds: float = 0.0) -> float:
        """Seconds before the deadline at which to stop: one step and what ending costs."""
        validate = 0.0 if self.validated else self.validate_seconds
        return step_seconds + self.end_seconds + validate

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self._last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        step, self._last = now - self._last, now
        self.steps += 1
        total = int(self.params.get("steps") or 0)
        if total and batch + 1 >= total:
            return  # the epoch's end is next: let it finish and save
        if self.deadline.left(now) <= self.reserve(step):
            self.stopped = True
            self.stopped_inside = (self.epoch, batch + 1, total)
            raise BudgetEnded(f"time limit reached in epoch {self.epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.validated = True  # the epoch's row is logged, best.keras saved by its monitor
        if self.deadline.left() <= self.reserve():
            self.stopped = True
            self.model.stop_training = True


def lr_schedule(name: str, base_lr: float, epochs: int) -> Callable[[int], float] | None:
    """Learning rate as a pure function of the epoch (so resuming needs no state).

    ``constant`` → None (no scheduler); ``cosine`` → cosine decay to 0 over
    ``epochs``; ``poly`` → nnU-Net's ``(1 - epoch / epochs) ** 0.9``.
    """
    if name == "constant":
        return None
    if name == "cosine":
        return lambda epoch: base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if name == "poly":
        return lambda epoch: base_lr * (1.0 - epoch / epochs) ** 0.9
    raise ValueError(f"unknown schedule {name!r}")


class EpochScheduler(keras.callbacks.Callback):
    """Set the optimizer's learning rate from ``schedule(epoch)`` at each epoch start."""

    def __init__(self, schedule: Callable[[int], float]) -> None:
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate.assign(self.schedule(epoch))


def eta_line(
    epoch: int,
    epochs: int,
    took: float,
    *,
    seconds_per_step: float,
    steps_per_epoch: int,
    epoch_fixed_seconds: float = 0.0,
    time_left: float = math.inf,
    now: float | None = None,
) -> str:
    """``"epoch 3/100 took 12 s (0.045 s/step); 97 to go: about 19 min 24 s (done at 12:19)"``.

    The time left is predicted from measured step times (a median, so a stalled
    step does not skew it) and each epoch's measured fixed cost (validation,
    saving), never from a whole first epoch that also compiled the model. With a
    time limit it never promises past the limit: when the epochs left need more,
    the line says when the limit ends the run instead. Beyond
    :data:`~flare_helpers.train.budget.ETA_CAP_HOURS` it says "more than".
    """
    left = max(0, epochs - epoch - 1)
    line = (
        f"epoch {epoch + 1}/{epochs} took {format_duration(took)} ({seconds_per_step:.3g} s/step)"
    )
    if left == 0:
        return line
    eta = eta_seconds(left * steps_per_epoch, seconds_per_step, left, epoch_fixed_seconds)
    now = time.time() if now is None else now
    if eta > time_left:
        stop = max(0.0, time_left)
        per_epoch = steps_per_epoch * seconds_per_step + epoch_fixed_seconds
        more = int(stop // per_epoch) if per_epoch > 0 else left
        finish = time.strftime("%H:%M", time.localtime(now + stop))
        return (
            f"{line}; {left} to go, but the time limit ends the run in {format_duration(stop)} "
            f"(at {finish}), after about {more} more"
        )
    if eta > ETA_CAP_HOURS * 3600:
        return f"{line}; {left} to go: more than {ETA_CAP_HOURS:.0f} h"
    finish = time.strftime("%H:%M", time.localtime(now + eta))
    return f"{line}; {left} to go: about {format_duration(eta)} (done at {finish})"


class TqdmProgress(keras.callbacks.Callback):
    """One tqdm bar per epoch (tqdm.auto: a widget in notebooks, text in consoles), then a line
    with the epoch's time and the time left (:func:`eta_line`), from the steps measured.

    Args:
        epochs: the run's epochs.
        deadline: the time limit the line must not promise past.
        seconds_per_step, epoch_fixed_seconds: the measured plan's, used until this
            session has measured its own (steps after its first, whole epochs).
    """

    def __init__(
        self,
        epochs: int,
        *,
        deadline: Deadline | None = None,
        seconds_per_step: float | None = None,
        epoch_fixed_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.epochs = epochs
        self.deadline = deadline
        self.bar: tqdm | None = None
        self.step_seconds: list[float] = []
        self.planned_step = seconds_per_step
        self.fixed_seconds = float(epoch_fixed_seconds)
        self._start = self._last = time.monotonic()
        self._seen = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.monotonic()
        self._seen = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._last = time.monotonic()
        self.bar = tqdm(
            total=self.params.get("steps"),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="step",
            leave=True,
        )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if self._seen:  # the session's first step may have built the model's functions
            self.step_seconds = [*self.step_seconds[-499:], now - self._last]
        self._seen += 1
        self._last = now
        if self.bar is not None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def seconds_per_step(self) -> float:
        """The median of this session's measured steps (the plan's until there are any)."""
        if self.step_seconds:
            return float(statistics.median(self.step_seconds))
        return self.planned_step if self.planned_step is not None else 0.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            shown = {k: f"{float(v):.4f}" for k, v in (logs or {}).items() if k in _SHOWN}
            self.bar.set_postfix(shown)
            self.bar.close()
            self.bar = None
        # From the previous epoch's end: includes its checkpoint writing, as the ETA should.
        now = time.monotonic()
        took, self._start = now - self._start, now
        steps = int(self.params.get("steps") or 0)
        step = self.seconds_per_step() or took / max(steps, 1)  # one-step epochs, no plan
        if epoch > 0 or self.planned_step is None:  # after the first: no compiling inside
            self.fixed_seconds = max(0.0, took - steps * step)
        time_left = self.deadline.left(now) if self.deadline is not None else math.inf
        tqdm.write(
            eta_line(
                epoch,
                self.epochs,
                took,
                seconds_per_step=step,
                steps_per_epoch=steps,
                epoch_fixed_seconds=self.fixed_seconds,
                time_left=time_left,
            )
        )

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_SHOWN = {"loss", "mean_dice", "val_loss", "val_mean_dice"}


def generalisation_gap(
    history_csv: str | Path, organs: list[str] | tuple[str, ...], last: int = 5
) -> list[dict[str, float | str]]:
    """Training against validation Dice per organ, each the mean of the ``last`` epochs.

    The training Dice is measured on the augmented training patches as they were
    trained on; the validation Dice on the fixed validation patches. A gap well
    above a few points means the network learns its training cases by heart.

    Returns:
        One row per organ and one ``mean`` row: ``organ``, ``train``, ``val`` and
        ``gap`` (train − val; NaN where the history has no validation Dice).
    """
    rows = read_history(history_csv, required=True)[-last:]

    def mean(key: str) -> float:
        values = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
        return sum(values) / len(values) if values else math.nan

    table = []
    for organ, key in [*((o, f"dice_{o}") for o in organs), ("mean", "mean_dice")]:
        train_value, val_value = mean(key), mean(f"val_{key}")
        table.append(
            {"organ": organ, "train": train_value, "val": val_value, "gap": train_value - val_value}
        )
    return table


def gap_lines(table: list[dict[str, float | str]]) -> str:
    """:func:`generalisation_gap` as aligned text lines (for a notebook or a log)."""
    lines = [f"{'organ':<14}{'train':>8}{'val':>8}{'gap':>8}"]
    for row in table:
        lines.append(f"{row['organ']:<14}{row['train']:>8.3f}{row['val']:>8.3f}{row['gap']:>+8.3f}")
    return "\n".join(lines)
