"""Training: config → cache → streaming datasets → VNet → fit, resumable after a crash.

A run folder (``train.output_dir``, which may live on Google Drive) holds::

    config.yaml          the resolved settings (inference reads its preprocessing from here)
    splits.json          the train/val/test split this model was trained with
    history.csv          every metric of every epoch
    best.keras           best model by validation mean Dice (train mean Dice without a val split)
    checkpoints/         epoch_NNNN.keras: weights + optimizer state of the last finished epoch
    training_done.json   written when all epochs (or early stopping) completed
    tensorboard/         (optional)
    localizer.keras      spacing mode: the organ localiser (flare_helpers.localize), with
    localizer_checkpoints/ and localizer_history.csv, trained before the main model

Running the same command again resumes from the newest checkpoint with the
same optimizer state, shuffling order and augmentation draws; a finished run
is not retrained.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import keras

from flare_helpers import callbacks as cb
from flare_helpers import localize
from flare_helpers.config import Config, load_run_config, save_config
from flare_helpers.errors import FlareError
from flare_helpers.fileio import read_json, write_json_atomic
from flare_helpers.labels import OrganSet
from flare_helpers.preprocess import PreprocessParams, preprocess_dataset, read_manifest
from flare_helpers.splits import read_splits

#: Sections that must match to resume a run (the rest, e.g. epochs, may change).
_FIXED_SECTIONS = ("data.organs", "preprocess", "model")


@dataclass(frozen=True)
class RunPaths:
    """Files of one training run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def best_model(self) -> Path:
        return self.root / "best.keras"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def done(self) -> Path:
        return self.root / "training_done.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def localizer_model(self) -> Path:
        return self.root / "localizer.keras"

    @property
    def localizer_checkpoints(self) -> Path:
        return self.root / "localizer_checkpoints"

    @property
    def localizer_history(self) -> Path:
        return self.root / "localizer_history.csv"


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`."""

    run_dir: Path
    best_model: Path
    history_csv: Path
    epochs_completed: int
    best_epoch: int
    best_value: float
    monitor: str
    resumed_from: int
    replicas: int = 1


def _fixed_settings(cfg_dict: dict) -> dict:
    return {
        "data.organs": list(cfg_dict["data"]["organs"]),
        "preprocess": cfg_dict["preprocess"],
        "model": cfg_dict["model"],
    }


def _check_same_run(paths: RunPaths, cfg: Config) -> None:
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


def prepare_data(cfg: Config, *, progress: bool = True) -> dict[str, list[str]]:
    """Make sure the cache is current and return the split.

    With the raw data present the cache is brought up to date (cheap when it
    already is). Without it (e.g. a Colab runtime that lost its local disk)
    an existing cache built with the same settings is used as it is.
    """
    params = PreprocessParams.from_config(cfg)
    cache = Path(cfg.data.cache_dir)
    if Path(cfg.data.data_dir).exists():
        preprocess_dataset(cfg.data.data_dir, cache, cfg, progress=progress)
    else:
        read_manifest(cache, params)
    return read_splits(cache / "splits.json")


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
        import tensorflow as tf

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
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def make_loss(cfg: Config) -> keras.losses.Loss:
    """Soft Dice + cross-entropy with the configured weights (``train.dice_weight`` …)."""
    from flare_helpers.losses import DiceCELoss

    return DiceCELoss(
        dice_weight=cfg.train.dice_weight,
        ce_weight=cfg.train.ce_weight,
        include_background=cfg.train.dice_include_background,
        batch_dice=cfg.train.batch_dice,
    )


def build_and_compile(cfg: Config, n_classes: int) -> keras.Model:
    """The configured VNet, compiled with Adam, Dice+CE and per-organ Dice metrics."""
    from flare_helpers.model import vnet_from_config
    from flare_helpers.train_metrics import training_metrics

    precision = cfg.train.mixed_precision
    dtype = None if precision == "none" else precision
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
    from flare_helpers.batches import FlareDataset

    organs = OrganSet.from_names(cfg.data.organs)
    common = {
        "cache_dir": cfg.data.cache_dir,
        "n_classes": organs.n_classes,
        "organs": organs.organs,
        "batch_size": cfg.train.batch_size,
    }
    if cfg.preprocess.mode == "spacing":
        common["patch_shape"] = cfg.preprocess.target_shape
        common["patches_per_case"] = cfg.train.patches_per_case
    from flare_helpers.pseudolabel import training_cases

    train_ids, weights = list(splits["train"]), None
    if cfg.data.pseudo_dirs:
        train_ids, weights = training_cases(
            splits["train"], read_manifest(cfg.data.cache_dir), cfg.pseudo
        )
    train_data = FlareDataset(
        case_ids=train_ids,
        case_weights=weights,
        augment=cfg.augment,
        shuffle=True,
        seed=cfg.train.seed,
        epoch=initial_epoch,
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


def train(cfg: Config, *, progress: bool = True) -> TrainResult:
    """Train (or resume, or report a finished run) as configured; return where things are.

    Raises:
        FlareError: no data/cache, an incompatible existing run folder, or a
            distribution setting the backend cannot do.
    """
    paths = RunPaths(Path(cfg.train.output_dir))
    _check_same_run(paths, cfg)
    organs = OrganSet.from_names(cfg.data.organs)
    if paths.done.exists() and read_json(paths.done).get("epochs") == cfg.train.epochs:
        return _result(paths, read_json(paths.done), resumed_from=-1)

    cache_splits = prepare_data(cfg, progress=progress)
    # A resumed run keeps the split it started with, whatever the cache holds now.
    splits = read_splits(paths.splits) if paths.splits.exists() else cache_splits
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths.config)
    if not paths.splits.exists():
        write_json_atomic(paths.splits, splits)
    if not splits["train"]:
        raise FlareError("the training split is empty", paths.splits)
    monitor = "val_mean_dice" if splits["val"] else "mean_dice"
    localize.train_localizer(cfg, splits, progress=progress)  # spacing mode only; resumable

    keras.backend.clear_session()
    set_determinism(cfg.train.seed, cfg.train.deterministic)
    with _strategy(cfg):
        model = build_and_compile(cfg, organs.n_classes)
    replicas = _replicas(model)
    _check_replicas(replicas, cfg, splits)
    latest = cb.latest_checkpoint(paths.checkpoints)
    initial_epoch = 0
    if latest is None:
        from flare_helpers.pseudolabel import init_student

        init_student(model, cfg)  # pseudo.init_from: a student starts from its teacher
    else:
        initial_epoch, checkpoint = latest
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint)

    train_data, val_data = make_datasets(cfg, splits, initial_epoch=initial_epoch)
    history = cb.HistoryLog(paths.history, initial_epoch)
    callbacks: list[keras.callbacks.Callback] = [history]
    schedule = cb.lr_schedule(cfg.train.lr_schedule, cfg.train.learning_rate, cfg.train.epochs)
    if schedule is not None:
        callbacks.insert(0, cb.EpochScheduler(schedule))
    callbacks.append(cb.BestCheckpoint(paths.best_model, history, monitor))
    if cfg.train.early_stopping_patience > 0:
        callbacks.append(
            cb.EarlyStopFromHistory(history, monitor, cfg.train.early_stopping_patience)
        )
    if cfg.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths.tensorboard)))
    time_limit = cb.TimeLimit(cfg.train.time_limit_minutes)
    if cfg.train.time_limit_minutes > 0:
        callbacks.append(time_limit)
    if progress:
        callbacks.append(cb.TqdmProgress(cfg.train.epochs))
    callbacks.append(cb.ResumeCheckpoint(paths.checkpoints))  # last: marks the epoch as done

    if initial_epoch < cfg.train.epochs and not _stopped_early(history, monitor, cfg):
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=cfg.train.epochs,
            initial_epoch=initial_epoch,
            shuffle=False,  # the dataset shuffles itself, reproducibly per epoch
            callbacks=callbacks,
            verbose=0 if progress else 2,
        )
    best = history.best(monitor)
    if best is None:
        raise FlareError(f"training logged no '{monitor}' values", paths.history)
    summary = {
        "replicas": replicas,
        "epochs": cfg.train.epochs,
        "epochs_completed": history.rows[-1]["epoch"] + 1,
        "best_epoch": best[0] + 1,
        "best_value": best[1],
        "monitor": monitor,
    }
    if not (time_limit.stopped and summary["epochs_completed"] < cfg.train.epochs):
        write_json_atomic(paths.done, summary)  # a time-limited run resumes when rerun
    return _result(paths, summary, resumed_from=initial_epoch)


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


def _result(paths: RunPaths, summary: dict, resumed_from: int) -> TrainResult:
    return TrainResult(
        run_dir=paths.root,
        best_model=paths.best_model,
        history_csv=paths.history,
        epochs_completed=int(summary["epochs_completed"]),
        best_epoch=int(summary["best_epoch"]),
        best_value=float(summary["best_value"]),
        monitor=str(summary["monitor"]),
        resumed_from=resumed_from,
        replicas=int(summary.get("replicas", 1)),
    )
