"""The training loop: one for every network of the package (the VNet and the localiser).

Given a config, a cache and the files one network writes in a run folder
(:class:`flare_helpers.data.layout.ModelFiles`), it builds the network, streams
batches from the cache, fits, and records each epoch atomically: the
``history`` CSV, the best model by validation mean Dice, and a resume
checkpoint. Running it again resumes from the newest checkpoint with the same
optimizer state, shuffling order and augmentation draws; a finished network is
not retrained.

A run folder (``train.output_dir``, which may live on Google Drive) is opened
once for all its networks (:func:`open_run_folder`): its lock, the resolved
``config.yaml`` and the ``splits.json`` the models are trained with. How the
cache gets filled is the caller's business (a function passed in); what
trains in the folder, and in what order, is the workflow's
(:mod:`flare_helpers.workflows.training`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
from tqdm.auto import tqdm

from flare_helpers.config import Config, load_run_config, save_config
from flare_helpers.data.fileio import read_json, write_json_atomic
from flare_helpers.data.labels import OrganSet
from flare_helpers.data.layout import ModelFiles, RunLayout
from flare_helpers.data.lock import FolderLock
from flare_helpers.data.splits import read_splits
from flare_helpers.errors import FlareError, one_line
from flare_helpers.model import runtime
from flare_helpers.model.losses import DiceCELoss
from flare_helpers.model.metrics import training_metrics
from flare_helpers.model.modelfile import load_model_file
from flare_helpers.model.vnet import vnet_from_config
from flare_helpers.train import callbacks as cb
from flare_helpers.train.batches import FlareDataset, weighted_training_cases
from flare_helpers.train.budget import Deadline, MeasuredPlan, format_duration
from flare_helpers.train.plan import probe

#: Sections that must match to resume a run (the rest, e.g. epochs, may change).
_FIXED_SECTIONS = ("data.organs", "preprocess", "model")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_network` (the VNet's or the localiser's).

    ``best_model`` is the model a run leaves: ``best.keras`` (by ``monitor``), or
    ``last.keras`` where a run stopped before any validation could pick one. The
    rest describes this session: ``stopped_by`` ("time limit" or empty),
    ``stopped_inside`` ``(epoch, steps run, steps per epoch)`` of a stop inside an
    epoch (epoch 0-based), ``last_model`` the weights saved then, ``steps_run``
    and ``fit_seconds`` (training, end-of-run saving included) and
    ``session_seconds`` (from this network's start: plan, building, training).
    ``skipped`` says why a network was not trained at all (its time cannot fit
    the epochs it needs, :func:`train_network`'s ``min_epochs``); empty otherwise.
    """

    run_dir: Path
    best_model: Path
    history_csv: Path
    epochs_completed: int
    best_epoch: int
    best_value: float
    monitor: str
    resumed_from: int
    replicas: int = 1
    epochs: int = 0
    stopped_by: str = ""
    stopped_inside: tuple[int, int, int] | None = None
    last_model: Path | None = None
    steps_run: int = 0
    fit_seconds: float = 0.0
    session_seconds: float = 0.0
    time_limit_seconds: float = math.inf
    skipped: str = ""

    def stop_line(self) -> str:
        """What ended this session early (empty when nothing did)."""
        if not self.stopped_by:
            return ""
        name = self.best_model.name if self.best_model.name != "last.keras" else "the run"
        took = format_duration(self.session_seconds)
        limit = format_duration(self.time_limit_seconds)
        if self.stopped_inside is not None:
            epoch, steps, total = self.stopped_inside
            return (
                f"{name}: the {self.stopped_by} ended training inside epoch {epoch + 1} after "
                f"{steps} of {total} steps ({took} of {limit}); that epoch is not recorded: "
                "running again repeats it from the last checkpoint"
            )
        return (
            f"{name}: the {self.stopped_by} ended training after epoch {self.epochs_completed} "
            f"of {self.epochs} ({took} of {limit}); running again goes on"
        )

    def model_line(self) -> str:
        """Which model the run leaves, and the last weights where they were saved."""
        if self.best_model.name == (self.last_model.name if self.last_model else None):
            return (
                f"model left: {self.best_model} (the last weights; no validation ran, the "
                "split has no validation cases)"
            )
        if self.best_epoch > 0:
            what = f"best {self.monitor} {self.best_value:.4f} at epoch {self.best_epoch}"
        else:
            what = f"one validation when it stopped: {self.monitor} {self.best_value:.4f}"
        line = f"model left: {self.best_model} ({what})"
        return f"{line}; last weights: {self.last_model}" if self.last_model else line


def _fixed_settings(cfg_dict: dict) -> dict:
    return {
        "data.organs": list(cfg_dict["data"]["organs"]),
        "preprocess": cfg_dict["preprocess"],
        "model": cfg_dict["model"],
    }


def _check_same_run(paths: RunLayout, cfg: Config) -> None:
    """Refuse to mix a different model or preprocessing into an existing run folder."""
    if not paths.config.exists():
        return
    old = _fixed_settings(load_run_config(paths.config).to_dict())
    new = _fixed_settings(cfg.to_dict())
    for key in _FIXED_SECTIONS:
        if old[key] != new[key]:
            raise FlareError(
                f"holds a run with different {key} settings; set another train.output_dir "
                "or delete this folder to start over",
                paths.root,
            )


def _strategy(cfg: Config):
    """Context in which to build and compile, for the configured distribution."""
    name = cfg.train.distribution
    if name == "none":
        return contextlib.nullcontext()
    backend = keras.backend.backend()
    if name in ("mirrored", "multi_worker"):
        if backend != "tensorflow":
            raise FlareError(
                f"train.distribution={name} needs the TensorFlow backend (have {backend})"
            )
        import tensorflow as tf  # only the TensorFlow backend has these strategies

        strategy = (
            tf.distribute.MirroredStrategy()
            if name == "mirrored"
            else tf.distribute.MultiWorkerMirroredStrategy()
        )
        return strategy.scope()
    if backend != "jax":
        raise FlareError(f"train.distribution=data_parallel needs the JAX backend (have {backend})")
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; on TensorFlow optionally force deterministic ops."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the TensorFlow backend only

        tf.config.experimental.enable_op_determinism()


def make_loss(cfg: Config) -> keras.losses.Loss:
    """Soft Dice + cross-entropy with the configured weights (``train.dice_weight`` …)."""
    return DiceCELoss(
        dice_weight=cfg.train.dice_weight,
        ce_weight=cfg.train.ce_weight,
        include_background=cfg.train.dice_include_background,
        batch_dice=cfg.train.batch_dice,
    )


def build_and_compile(cfg: Config, n_classes: int) -> keras.Model:
    """The configured VNet, compiled with Adam, Dice+CE and per-organ Dice metrics."""
    precision = runtime.resolve_mixed_precision(cfg.train.mixed_precision)[0]
    dtype = None if precision == "float32" else precision
    model = vnet_from_config(cfg.model, cfg.preprocess.target_shape, n_classes, dtype=dtype)
    optimizer = keras.optimizers.Adam(learning_rate=cfg.train.learning_rate)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    loss = make_loss(cfg)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=training_metrics(OrganSet.from_names(cfg.data.organs).organs),
        jit_compile=cfg.train.jit_compile,
    )
    return model


def make_datasets(cfg: Config, splits: dict[str, list[str]], *, initial_epoch: int = 0):
    """Training and validation batches from the cache, as ``fit`` gets them.

    ``resize`` mode serves whole cached volumes. ``spacing`` mode serves
    ``preprocess.target_shape`` patches: random ones (``train.foreground_fraction``
    of them centred on an organ) for training, and for validation one fixed patch
    centred on each organ present in each validation case, the same every epoch,
    so every organ of every case is scored. That validation is cheaper than a
    sliding window over each whole case and keeps epochs comparable; it does not
    see false positives far from the organs, which the held-out evaluation (whole
    cases, sliding window) does.

    Kept pseudo-labelled cases in the cache (``data.pseudo_dirs``) join training
    only, each drawn ``pseudo.sample_weight`` times as often as a labelled case.

    Returns:
        ``(train, val)``; ``val`` is None when the split has no validation cases.
    """
    organs = OrganSet.from_names(cfg.data.organs)
    common = {
        "cache_dir": cfg.data.cache_dir,
        "n_classes": organs.n_classes,
        "organs": organs.organs,
        "batch_size": cfg.train.batch_size,
    }
    if cfg.preprocess.mode == "spacing":
        common["patch_shape"] = cfg.preprocess.target_shape
        common["voxel_mm"] = cfg.preprocess.target_spacing
    train_ids, weights = list(splits["train"]), None
    if cfg.data.pseudo_dirs:
        train_ids, weights = weighted_training_cases(
            cfg.data.cache_dir, splits["train"], cfg.pseudo.sample_weight
        )
    train_data = FlareDataset(
        case_ids=train_ids,
        case_weights=weights,
        augment=cfg.augment,
        shuffle=True,
        seed=cfg.train.seed,
        epoch=initial_epoch,
        steps_per_epoch=cfg.train.steps_per_epoch,
        workers=cfg.train.workers,
        use_multiprocessing=cfg.train.use_multiprocessing,
        drop_remainder=cfg.train.distribution != "none",
        foreground_fraction=cfg.train.foreground_fraction,
        **common,
    )
    val_data = (
        FlareDataset(
            case_ids=splits["val"],
            seed=cfg.train.seed,
            organ_patches=True,
            **common,
        )
        if splits["val"]
        else None
    )
    return train_data, val_data


@dataclass
class RunFolder:
    """A run folder opened by :func:`open_run_folder`; it holds the folder's lock.

    Attributes:
        layout: the run folder's files.
        splits: the split its networks train on (the folder's copy once written).
        finished: the saved summary of a run whose VNet is already trained to
            ``train.epochs`` (then the data was not touched), else None.
        deadline: the whole run's time limit (``train.time_limit_minutes``), counted
            from when the folder and its data were ready.
    """

    layout: RunLayout
    lock: FolderLock
    splits: dict[str, list[str]]
    finished: dict | None = None
    deadline: Deadline = Deadline(0.0)

    def __str__(self) -> str:
        if self.finished is not None:
            return (
                f"{self.layout.root}: already trained ({self.finished['epochs_completed']} epochs)"
            )
        parts = ", ".join(f"{name} {len(ids)}" for name, ids in self.splits.items())
        return f"{self.layout.root}: split {parts}"

    def close(self) -> None:
        """Give the run folder's lock back."""
        self.lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_run_folder(
    cfg: Config, prepare_data: Callable[[], dict[str, list[str]]], *, what: str = "run folder"
) -> RunFolder:
    """Open ``train.output_dir`` for training: lock it, bring the data up to date, save settings.

    Takes the folder's lock (a second writer is refused; see
    :mod:`flare_helpers.data.lock`), refuses a folder holding a different model or
    preprocessing, calls ``prepare_data`` (which fills the cache and returns its
    split), and saves the resolved ``config.yaml`` and, once, the split: a resumed
    run keeps the split it started with. A finished run is only reported.

    Raises:
        FlareError: the folder is in use or holds another run, ``prepare_data``'s
            errors, or an empty training split.
    """
    layout = RunLayout(Path(cfg.train.output_dir))
    lock = FolderLock(layout.lock, what).acquire()
    try:
        _check_same_run(layout, cfg)
        done = layout.vnet.done
        if done.exists() and read_json(done).get("epochs") == cfg.train.epochs:
            splits = (
                read_splits(layout.splits)
                if layout.splits.exists()
                else {name: [] for name in ("train", "val", "test")}
            )
            return RunFolder(layout, lock, splits, finished=read_json(done))
        cache_splits = prepare_data()
        splits = read_splits(layout.splits) if layout.splits.exists() else cache_splits
        save_config(cfg, layout.config)
        if not layout.splits.exists():
            write_json_atomic(layout.splits, splits)
        if not splits["train"]:
            raise FlareError("the training split is empty", layout.splits)
        deadline = Deadline.after(60.0 * cfg.train.time_limit_minutes)
        return RunFolder(layout, lock, splits, deadline=deadline)
    except BaseException:
        lock.release()  # also removes the folder if the lock made it and nothing was written
        raise


@dataclass
class TrainingRun:
    """Where one network's training stands in its run folder (:func:`prepare_run`).

    Attributes:
        files: what this network writes (:attr:`RunLayout.vnet` or :attr:`RunLayout.localizer`).
        splits: the split it trains on.
        monitor: the metric that picks the best model (``ema_val_mean_dice``, the moving
            average of the validation mean Dice, or ``ema_mean_dice`` of the training
            Dice without validation cases).
        initial_epoch: epochs already completed (the newest resume checkpoint).
        epochs: where ``fit`` stops: ``train.epochs``, or ``initial_epoch`` when
            there is nothing left to train (finished, or stopped early).
        history: the history log, holding the rows of the completed epochs.
        checkpoint: the resume checkpoint to restore, if any.
        finished: the saved summary of a network already trained to ``train.epochs``.
        deadline: this network's time limit (its start: when it was prepared).
        section: the settings section of its epochs (``train``; ``localizer``).
        plan: the plan measured before training (:func:`measure_plan`), if any.
        time_limit: the callback that ends training at ``deadline`` and counts steps.
        fit_seconds: time spent in :func:`fit` this session.
        last_model: ``files.last_model`` once saved this session.
        final_validation: the validation run when training stopped before any other.
    """

    files: ModelFiles
    splits: dict[str, list[str]]
    monitor: str
    initial_epoch: int
    epochs: int
    history: cb.HistoryLog
    checkpoint: Path | None = None
    finished: dict | None = None
    replicas: int = 1
    deadline: Deadline = Deadline(0.0)
    section: str = "train"
    plan: MeasuredPlan | None = None
    time_limit: cb.TimeLimit | None = None
    fit_seconds: float = 0.0
    last_model: Path | None = None
    final_validation: dict[str, float] | None = None

    @property
    def to_train(self) -> bool:
        """Whether epochs are left to train."""
        return self.finished is None and self.initial_epoch < self.epochs

    def __str__(self) -> str:
        name = self.files.best_model.name
        if self.finished is not None:
            return f"{name}: already trained ({self.finished['epochs_completed']} epochs)"
        if self.initial_epoch >= self.epochs:
            return f"{name}: stopped early at epoch {self.initial_epoch}"
        start = "resuming" if self.initial_epoch else "starting"
        return (
            f"{name}: {start} at epoch {self.initial_epoch + 1} of {self.epochs}; "
            f"best model by {self.monitor}"
        )


def prepare_run(
    cfg: Config,
    splits: dict[str, list[str]],
    files: ModelFiles,
    *,
    deadline: Deadline | None = None,
    section: str = "train",
) -> TrainingRun:
    """Where the network of ``files`` stands: finished, or the epoch and checkpoint to resume from.

    ``cfg.train.epochs`` is this network's budget (the localiser's settings come in
    as a config of their own, :func:`flare_helpers.localize.localizer.localizer_training_config`).
    Its time limit starts now: ``cfg.train.time_limit_minutes``, but never past
    ``deadline`` (the whole run's, :attr:`RunFolder.deadline`).
    """
    deadline = (deadline or Deadline.after(0.0)).within(60.0 * cfg.train.time_limit_minutes)
    if files.done.exists() and read_json(files.done).get("epochs") == cfg.train.epochs:
        done = read_json(files.done)
        completed = int(done["epochs_completed"])
        checkpoint = cb.latest_checkpoint(files.checkpoints)
        return TrainingRun(
            files,
            splits,
            str(done["monitor"]),
            completed,
            completed,
            cb.HistoryLog(files.history, completed),
            checkpoint[1] if checkpoint is not None else None,
            finished=done,
            deadline=deadline,
            section=section,
        )
    monitor = cb.ema_name("val_mean_dice" if splits["val"] else "mean_dice")
    latest = cb.latest_checkpoint(files.checkpoints)
    initial_epoch = latest[0] if latest is not None else 0
    history = cb.HistoryLog(files.history, initial_epoch, cfg.train.ema_smoothing)
    more = initial_epoch < cfg.train.epochs and not _stopped_early(history, monitor, cfg)
    return TrainingRun(
        files,
        splits,
        monitor,
        initial_epoch,
        cfg.train.epochs if more else initial_epoch,
        history,
        latest[1] if latest is not None else None,
        deadline=deadline,
        section=section,
    )


def load_initial_weights(model: keras.Model, path: str | Path) -> None:
    """Start ``model`` from the weights of another ``.keras`` file of the same architecture
    (``pseudo.init_from``: a student fine-tuned from its teacher).

    Raises:
        FlareError: the file is bad or its architecture differs.
    """
    path = Path(path)
    source = load_model_file(path)
    try:
        model.set_weights(source.get_weights())
    except ValueError as exc:
        raise FlareError(
            f"this model's architecture differs from model: ({one_line(exc)})", path
        ) from exc


def build_or_restore(cfg: Config, run: TrainingRun) -> keras.Model:
    """The compiled network (:func:`build_and_compile`), restored from its newest checkpoint.

    Seeds everything first (``train.seed``), builds under the configured
    distribution, and loads weights and optimizer state of the last finished
    epoch, so a resumed run goes on exactly where it stopped. A fresh network
    starts from ``pseudo.init_from`` where set.

    Raises:
        FlareError: the checkpoint does not fit the model settings.
    """
    organs = OrganSet.from_names(cfg.data.organs)
    keras.backend.clear_session()
    set_determinism(cfg.train.seed, cfg.train.deterministic)
    with _strategy(cfg):
        model = build_and_compile(cfg, organs.n_classes)
        if run.checkpoint is not None:  # its slots are variables too: mirrored like the weights
            model.optimizer.build(model.trainable_variables)
    run.replicas = _replicas(model)
    _check_replicas(run.replicas, cfg, run.splits)
    if run.checkpoint is None:
        if cfg.pseudo.init_from:
            load_initial_weights(model, cfg.pseudo.init_from)
        return model
    try:
        model.load_weights(run.checkpoint)
    except Exception as exc:
        raise FlareError(
            f"this checkpoint does not fit the model settings ({one_line(exc)}); delete "
            f"{run.files.checkpoints.name}/ to train it again",
            run.checkpoint,
        ) from exc
    return model


def measure_plan(
    cfg: Config,
    run: TrainingRun,
    model: keras.Model,
    train_data: FlareDataset,
    *,
    progress: bool = True,
) -> MeasuredPlan | None:
    """Time ``train.plan_steps`` real training steps on this device and predict the run.

    Before them one warm-up step builds (compiles) the training function, and one
    validation batch the evaluation function, which training then reuses; then one
    full validation pass and one save of the model are timed. The steps train the
    model itself, on batches of their own, and every model and optimiser variable
    is put back afterwards (:func:`flare_helpers.train.plan.probe`): training gives
    the same weights as without the plan. Their time counts against the time limit.

    Writes the plan to ``run.files.plan`` (JSON) and keeps it in ``run.plan`` (the
    time limit's reserve and the ETA use it); prints it when ``progress``.

    Returns:
        The plan, or None with ``train.plan_steps: 0`` or nothing left to train.
    """
    steps = cfg.train.plan_steps
    if steps == 0 or not run.to_train:
        return None
    val_ids = run.splits["val"]

    def batches(n: int, val: list[str]) -> tuple[FlareDataset, FlareDataset | None]:
        changed = cfg.replace(train={"steps_per_epoch": n})
        return make_datasets(changed, {**run.splits, "val": val}, initial_epoch=run.initial_epoch)

    warmup, val_warmup = batches(1, val_ids[: max(1, run.replicas)])
    timed, val_data = batches(steps + 1, val_ids)  # the first also starts the batch workers
    measured = probe(
        model,
        warmup,
        timed,
        val_warmup,
        val_data,
        save_path=run.files.plan.with_suffix(".probe.keras"),
    )
    section = run.section
    plan = MeasuredPlan(
        network=run.files.best_model.name,
        measured=measured,
        epochs=cfg.train.epochs,
        initial_epoch=run.initial_epoch,
        steps_per_epoch=len(train_data),
        epochs_key=f"{section}.epochs",
        steps_key="train.steps_per_epoch" if section == "train" else "",
        limit_key="train.time_limit_minutes" if section == "train" else f"{section}.time_share",
        time_limit_seconds=run.deadline.seconds,
        budget_left_seconds=run.deadline.left(),
    )
    write_json_atomic(run.files.plan, plan.to_dict())
    run.plan = plan
    if progress:
        tqdm.write("\n".join(plan.lines()))
    return plan


def make_callbacks(
    cfg: Config, run: TrainingRun, *, progress: bool = True
) -> list[keras.callbacks.Callback]:
    """What ``fit`` calls after each step and epoch, all of it written atomically into the run folder.

    In order: the learning-rate schedule (if not constant), the history CSV, the
    best model by ``run.monitor``, early stopping and TensorBoard (if set), a
    progress bar with the time per epoch and the time left (if ``progress``), the
    time limit (``run.deadline``, checked after every step; it also counts the
    steps), and last the resume checkpoint, which marks the epoch as done.
    """
    files, history = run.files, run.history
    callbacks: list[keras.callbacks.Callback] = [history]
    schedule = cb.lr_schedule(cfg.train.lr_schedule, cfg.train.learning_rate, cfg.train.epochs)
    if schedule is not None:
        callbacks.insert(0, cb.EpochScheduler(schedule))
    callbacks.append(cb.BestCheckpoint(files.best_model, history, run.monitor))
    if cfg.train.early_stopping_patience > 0:
        callbacks.append(
            cb.EarlyStopFromHistory(history, run.monitor, cfg.train.early_stopping_patience)
        )
    if cfg.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(files.tensorboard)))
    measured = run.plan.measured if run.plan is not None else None
    if progress:
        callbacks.append(
            cb.TqdmProgress(
                cfg.train.epochs,
                deadline=run.deadline if run.deadline.limited else None,
                seconds_per_step=measured.seconds_per_step if measured else None,
                epoch_fixed_seconds=run.plan.epoch_fixed_seconds if run.plan else 0.0,
            )
        )
    run.time_limit = cb.TimeLimit(
        run.deadline,
        end_seconds=measured.save_seconds if measured else 0.0,
        validate_seconds=(
            measured.validation_seconds + measured.save_seconds
            if measured and run.splits["val"]
            else 0.0
        ),
        validated=_validated(run),
    )
    callbacks.append(run.time_limit)
    callbacks.append(cb.ResumeCheckpoint(files.checkpoints))  # last: marks the epoch as done
    return callbacks


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so a run that is told to
    stop (``kill``, a job scheduler, a runtime shutting down) saves its weights first.

    Only in the main thread (where Python handles signals); elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _validated(run: TrainingRun) -> bool:
    """Whether a model picked by validation (or by its monitor) exists for this network."""
    return run.history.best(run.monitor) is not None or run.files.best_model.exists()


def _end_inside_epoch(model: keras.Model, run: TrainingRun, val_data: FlareDataset | None) -> None:
    """The time limit ended an epoch midway: save the weights as ``last.keras`` and, where no
    validation has picked a model yet, validate once and save ``best.keras``."""
    cb.save_model_atomic(model, run.files.last_model)
    run.last_model = run.files.last_model
    if not _validated(run) and val_data is not None:
        logs = model.evaluate(val_data, verbose=0, return_dict=True)
        run.final_validation = {f"val_{k}": float(v) for k, v in logs.items()}
        cb.save_model_atomic(model, run.files.best_model)


def _save_on_interrupt(model: keras.Model, run: TrainingRun) -> None:
    """Ctrl-C or SIGTERM during ``fit``: save the weights trained this session as ``last.keras``
    and say which model the run leaves."""
    steps = run.time_limit.steps if run.time_limit is not None else 0
    if steps:
        cb.save_model_atomic(model, run.files.last_model)
        run.last_model = run.files.last_model
    best = run.files.best_model
    left = f"{best} (the best so far)" if best.exists() else "no validated model yet"
    last = f"; last weights: {run.files.last_model}" if run.last_model else ""
    print(f"interrupted after {steps} steps: model left: {left}{last}", flush=True)


def fit(
    model: keras.Model,
    run: TrainingRun,
    train_data: FlareDataset,
    val_data: FlareDataset | None,
    callbacks: list[keras.callbacks.Callback],
    *,
    progress: bool = True,
) -> None:
    """``model.fit`` from ``run.initial_epoch`` to ``run.epochs`` (nothing when none are left).

    The dataset shuffles itself, reproducibly per epoch, so ``shuffle=False``.
    When the time limit ends an epoch midway (:class:`~flare_helpers.train.callbacks.TimeLimit`),
    the weights are saved as ``last.keras`` and, if nothing was validated yet,
    validated once into ``best.keras``. Ctrl-C or SIGTERM also saves ``last.keras``
    (after at least one step), says which model is left, and is raised again.
    """
    if run.initial_epoch >= run.epochs:
        return
    start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            ended = False
            try:
                model.fit(
                    train_data,
                    validation_data=val_data,
                    epochs=run.epochs,
                    initial_epoch=run.initial_epoch,
                    shuffle=False,
                    callbacks=callbacks,
                    verbose=0 if progress else 2,
                )
            except cb.BudgetEnded:
                ended = True
            except KeyboardInterrupt:
                _save_on_interrupt(model, run)
                raise
            if ended:
                gc.collect()  # finalise the batch iterator fit left behind now, not at exit
                for callback in callbacks:
                    callback.on_train_end()
                _end_inside_epoch(model, run, val_data)
    finally:
        run.fit_seconds += time.monotonic() - start


def finish_run(cfg: Config, run: TrainingRun) -> TrainResult:
    """Record the outcome and return where the model and history are.

    ``files.done`` is written unless a time limit cut the run short (a rerun goes
    on). A run that stopped before any epoch ended has no history: its model is
    ``best.keras`` from the one validation at the stop, or ``last.keras`` without
    validation cases. A stale ``last.keras`` of an earlier session is removed when
    this one ends at an epoch's end. The plan (``files.plan``) gets what happened.

    Raises:
        FlareError: the history holds no value of the monitored metric.
    """
    if run.finished is not None:
        return _result(run.files, run.finished, resumed_from=-1)
    history, monitor = run.history, run.monitor
    limit = run.time_limit
    stopped = limit is not None and limit.stopped
    inside = limit.stopped_inside if limit is not None else None
    best = history.best(monitor)
    summary = {"replicas": run.replicas, "epochs": cfg.train.epochs}
    if best is not None:
        summary |= {
            "epochs_completed": history.rows[-1]["epoch"] + 1,
            "best_epoch": best[0] + 1,
            "best_value": best[1],
            "monitor": monitor,
        }
    elif inside is not None:
        final = run.final_validation or {}
        summary |= {
            "epochs_completed": run.initial_epoch,
            "best_epoch": 0,
            "best_value": final.get("val_mean_dice", math.nan),
            "monitor": "val_mean_dice",
        }
    else:
        raise FlareError(f"training logged no '{monitor}' values", run.files.history)
    if not (stopped and summary["epochs_completed"] < cfg.train.epochs):
        write_json_atomic(run.files.done, summary)  # a time-limited run resumes when rerun
    if inside is None and run.files.last_model.exists():
        run.files.last_model.unlink()  # an earlier session's; this one ended at an epoch's end
    result = _result(run.files, summary, resumed_from=run.initial_epoch)
    best_model = (
        run.files.best_model
        if run.files.best_model.exists() or run.last_model is None
        else run.last_model
    )
    result = dataclasses.replace(
        result,
        best_model=best_model,
        epochs=cfg.train.epochs,
        stopped_by="time limit" if stopped else "",
        stopped_inside=inside,
        last_model=run.last_model,
        steps_run=limit.steps if limit is not None else 0,
        fit_seconds=run.fit_seconds,
        session_seconds=run.deadline.elapsed(),
        time_limit_seconds=run.deadline.seconds,
    )
    if run.plan is not None:
        record = run.plan.to_dict()
        record["actual"] = {
            "fit_seconds": result.fit_seconds,
            "session_seconds": result.session_seconds,
            "steps_run": result.steps_run,
            "epochs_completed": result.epochs_completed,
            "stopped_by": result.stopped_by,
            "stopped_inside": list(inside) if inside else None,
        }
        write_json_atomic(run.files.plan, record)
    return result


def train_network(
    cfg: Config,
    splits: dict[str, list[str]],
    files: ModelFiles,
    *,
    progress: bool = True,
    deadline: Deadline | None = None,
    section: str = "train",
    min_epochs: int = 0,
) -> TrainResult:
    """The one training loop: :func:`prepare_run`, :func:`build_or_restore`,
    :func:`make_datasets`, :func:`measure_plan`, :func:`make_callbacks`, :func:`fit`,
    :func:`finish_run`.

    Trains (or resumes, or reports) the network ``cfg`` describes on the cache
    ``cfg.data.cache_dir``, writing ``files``, within ``cfg.train.time_limit_minutes``
    and ``deadline`` (the whole run's). The caller holds the run folder
    (:func:`open_run_folder`). With ``progress``, a session the time limit ended
    says so and which model it leaves.

    A fresh network whose measured plan fits fewer than ``min_epochs`` epochs (or
    all of ``train.epochs`` where they are fewer) in its time limit is not trained:
    the result's ``skipped`` says why, and nothing is written but the plan.

    Raises:
        FlareError: no cache, a checkpoint that does not fit, or a distribution
            setting the backend cannot do.
        KeyboardInterrupt: Ctrl-C or SIGTERM (after saving, see :func:`fit`).
    """
    run = prepare_run(cfg, splits, files, deadline=deadline, section=section)
    if run.to_train:
        with sigterm_as_interrupt():
            model = build_or_restore(cfg, run)
            train_data, val_data = make_datasets(cfg, splits, initial_epoch=run.initial_epoch)
            plan = measure_plan(cfg, run, model, train_data, progress=progress)
            skipped = _too_short(plan, run, min(min_epochs, cfg.train.epochs))
            if skipped:
                return _skipped_result(run, skipped)
            callbacks = make_callbacks(cfg, run, progress=progress)
            fit(model, run, train_data, val_data, callbacks, progress=progress)
    result = finish_run(cfg, run)
    if progress and result.stopped_by:
        tqdm.write(f"{result.stop_line()}\n{result.model_line()}")
    return result


def _too_short(plan: MeasuredPlan | None, run: TrainingRun, min_epochs: int) -> str:
    """Why a fresh network's time cannot fit ``min_epochs`` (empty when it can, or when
    there is no plan, no limit or an earlier session's epochs to go on from)."""
    if plan is None or run.initial_epoch > 0 or not run.deadline.limited:
        return ""
    fit = plan.epochs_in_budget
    if fit >= min_epochs:
        return ""
    return (
        f"{plan.network}: not trained: its time ({format_duration(plan.budget_left_seconds)} left"
        f" of {format_duration(plan.time_limit_seconds)}, {plan.limit_key}) fits {fit} of its "
        f"{plan.epochs} epochs ({format_duration(plan.epoch_seconds)} each, measured), fewer "
        f"than the {min_epochs} it needs"
    )


def _skipped_result(run: TrainingRun, why: str) -> TrainResult:
    """The outcome of a network :func:`train_network` did not train (see ``skipped``)."""
    summary = {
        "epochs_completed": 0,
        "best_epoch": 0,
        "best_value": math.nan,
        "monitor": run.monitor,
    }
    result = _result(run.files, summary, resumed_from=0)
    return dataclasses.replace(
        result,
        epochs=run.epochs,
        skipped=why,
        session_seconds=run.deadline.elapsed(),
        time_limit_seconds=run.deadline.seconds,
    )


def _stopped_early(history: cb.HistoryLog, monitor: str, cfg: Config) -> bool:
    patience = cfg.train.early_stopping_patience
    best = history.best(monitor)
    return bool(patience and best is not None and history.rows[-1]["epoch"] - best[0] >= patience)


def _check_replicas(replicas: int, cfg: Config, splits: dict[str, list[str]]) -> None:
    """Every device needs a volume from the first batch (tf.distribute fails otherwise)."""
    if replicas <= 1:
        return
    if cfg.train.batch_size < replicas:
        raise FlareError(
            f"train.batch_size {cfg.train.batch_size} is smaller than the {replicas} devices; "
            f"use at least {replicas}"
        )
    if splits["val"] and len(splits["val"]) < replicas:
        raise FlareError(
            f"the validation split has {len(splits['val'])} case(s) for {replicas} devices; "
            "raise data.val_fraction or set it to 0"
        )


def _replicas(model: keras.Model) -> int:
    """Devices the model trained on in parallel (1 without a distribution)."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None:
        return int(strategy.num_replicas_in_sync)
    distribution = keras.distribution.distribution()
    return len(distribution.device_mesh.devices.ravel()) if distribution is not None else 1


def _result(files: ModelFiles, summary: dict, resumed_from: int) -> TrainResult:
    return TrainResult(
        run_dir=files.best_model.parent,
        best_model=files.best_model,
        history_csv=files.history,
        epochs_completed=int(summary["epochs_completed"]),
        best_epoch=int(summary["best_epoch"]),
        best_value=float(summary["best_value"]),
        monitor=str(summary["monitor"]),
        resumed_from=resumed_from,
        replicas=int(summary.get("replicas", 1)),
    )
