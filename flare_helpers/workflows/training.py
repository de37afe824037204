"""A training run: cache, then (spacing mode) the organ localiser, then the VNet.

``flare-train`` and notebook 03 run this. The run folder is opened once
(:func:`open_run`: its lock, settings and split), and both networks train
through the same loop (:func:`flare_helpers.train.loop.train_network`) with their
own files (:attr:`flare_helpers.data.layout.RunLayout.localizer`, ``.vnet``), so
resume, history, the best-model choice and the progress line behave the same
for both. Running it again resumes where it stopped; a finished run is only
reported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flare_helpers.config import Config
from flare_helpers.data.layout import CacheLayout, RunLayout
from flare_helpers.data.pseudo_folder import pseudo_cases
from flare_helpers.data.splits import read_splits
from flare_helpers.localize.localizer import (
    build_coarse_cache,
    drop_localizer,
    gate_localizer,
    localizer_training_config,
)
from flare_helpers.preprocess.pipeline import PreprocessParams, preprocess_dataset, read_manifest
from flare_helpers.train.budget import Deadline
from flare_helpers.train.loop import (
    RunFolder,
    TrainResult,
    open_run_folder,
    train_network,
)


def prepare_data(cfg: Config, *, progress: bool = True) -> dict[str, list[str]]:
    """Make sure the cache is current and return the split.

    With the raw data present the cache is brought up to date (cheap when it
    already is), the kept cases of ``data.pseudo_dirs`` included as
    training-only cases. Without it (e.g. a Colab runtime that lost its local
    disk) an existing cache built with the same settings is used as it is.
    """
    cache = Path(cfg.data.cache_dir)
    if Path(cfg.data.data_dir).exists():
        preprocess_dataset(
            cfg.data.data_dir,
            cache,
            cfg,
            training_only=pseudo_cases(cfg.data.pseudo_dirs),
            progress=progress,
        )
    else:
        read_manifest(cache, PreprocessParams.from_config(cfg))
    return read_splits(CacheLayout(cache).splits)


def open_run(cfg: Config, *, progress: bool = True) -> RunFolder:
    """Open ``train.output_dir`` for this run (its lock; see
    :func:`flare_helpers.train.loop.open_run_folder`), with :func:`prepare_data`."""
    return open_run_folder(cfg, lambda: prepare_data(cfg, progress=progress))


def train_localizer(
    cfg: Config,
    splits: dict[str, list[str]],
    *,
    progress: bool = True,
    deadline: Deadline | None = None,
) -> TrainResult | None:
    """Train (or resume, or report) the run's organ localiser; None where the run has none.

    Spacing-mode runs with ``localizer.enabled`` only: the cached cases of
    ``splits`` are resampled to the localiser's grid, then it trains on the
    labelled training split through the one loop. The caller holds the run folder.
    Its time, the coarse grid included, is at most ``localizer.time_share`` of
    ``train.time_limit_minutes`` from now, and never past ``deadline`` (the run's).
    Below ``localizer.min_val_dice`` it is not kept (:func:`gate_localizer`; the
    result's ``best_model`` then names ``localizer_rejected.keras``). Where its
    measured plan fits fewer than ``localizer.min_epochs`` epochs in that share, it is
    not trained at all (a localiser trained that briefly does not find the organs),
    and the VNet has the time.
    """
    if cfg.preprocess.mode != "spacing" or not cfg.localizer.enabled:
        return None
    settings = localizer_training_config(cfg)
    deadline = (deadline or Deadline(0.0)).within(60.0 * settings.train.time_limit_minutes)
    build_coarse_cache(cfg, [*splits["train"], *splits["val"]], progress=progress)
    files = RunLayout(Path(cfg.train.output_dir)).localizer
    result = train_network(
        settings,
        splits,
        files,
        progress=progress,
        deadline=deadline,
        section="localizer",
        min_epochs=cfg.localizer.min_epochs,
    )
    if result.skipped:
        where = drop_localizer(cfg.train.output_dir)
        print(f"{result.skipped}: prediction covers the whole crop; the VNet gets its time")
        return dataclasses.replace(result, best_model=where)
    where = gate_localizer(
        cfg.train.output_dir, result.best_epoch, cfg.localizer.min_val_dice, result.best_value
    )
    return dataclasses.replace(result, best_model=where)


def train(cfg: Config, *, progress: bool = True) -> TrainResult:
    """Train (or resume, or report) the run ``cfg`` describes; return the VNet's outcome.

    ``train.time_limit_minutes`` bounds all of it after preprocessing: the
    localiser trains in at most its share (``localizer.time_share``), the VNet in
    what remains of the run's limit (:attr:`RunFolder.deadline`).

    Raises:
        FlareError: the run folder is in use or holds another run, no data/cache,
            a checkpoint that does not fit, or a distribution setting the backend
            cannot do.
    """
    with open_run(cfg, progress=progress) as folder:
        if folder.finished is None:
            train_localizer(cfg, folder.splits, progress=progress, deadline=folder.deadline)
        return train_network(
            cfg, folder.splits, folder.layout.vnet, progress=progress, deadline=folder.deadline
        )
