"""What the notebooks share: where their files are, their settings, and the extracted data.

Every notebook derives its settings the same way (:func:`notebook_config`):
the working folder fixes where the cache, the run and the evaluation go
(:class:`~flare_helpers.data.layout.SeriesLayout`), a config YAML and
``section.key=value`` overrides set everything else. So the notebooks agree
without passing anything but files on disk. The papermill runner that executes
them in batch is :mod:`flare_helpers.series.runner`.

Each notebook stands alone in a fresh runtime (Colab gives every notebook opened
from its badge a new one: the local disk empty, only Drive kept). What a notebook
needs comes back through one function per need, each printing one line:
:func:`ensure_data` re-extracts the CTs from the zip on Drive, :func:`ensure_cache`,
:func:`ensure_model` and :func:`ensure_predictions` find notebook 02's cache, 03's
model and 04's predictions in ``work_dir``. A missing one is a one-line
:class:`~flare_helpers.errors.FlareError` naming the notebook to run first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flare_helpers.config import Config, load_config
from flare_helpers.data.cases import discover_cases, predicted_cases
from flare_helpers.data.extract import extract_zip, extraction_is_current
from flare_helpers.data.fileio import read_history, read_json
from flare_helpers.data.layout import SeriesLayout
from flare_helpers.data.splits import read_splits
from flare_helpers.errors import FlareError


def resolve(value: str, env_var: str) -> str:
    """A path setting: the environment variable ``env_var`` when set, else ``value``.

    Lets a local Jupyter user point the notebooks elsewhere without editing the
    parameters cell (whose defaults are the Colab/Drive paths).
    """
    return os.environ.get(env_var) or value


def series_paths(work_dir: str | Path, data_root: str | Path) -> SeriesLayout:
    """Paths of the series, with ``FLARE_WORK_DIR`` / ``FLARE_DATA_ROOT`` applied."""
    return SeriesLayout(
        Path(resolve(str(work_dir), "FLARE_WORK_DIR")).expanduser(),
        Path(resolve(str(data_root), "FLARE_DATA_ROOT")).expanduser(),
    )


def zip_file(zip_path: str | Path) -> Path:
    """The training zip's path, with ``FLARE_ZIP`` applied."""
    return Path(resolve(str(zip_path), "FLARE_ZIP")).expanduser()


def notebook_config(
    paths: SeriesLayout,
    config_path: str | Path | None = None,
    overrides: Iterable[str] = (),
    train: Mapping[str, Any] | None = None,
) -> Config:
    """Settings for a notebook: paths from ``paths``, then the YAML file, then overrides.

    ``train`` holds the notebook's own training parameters (notebook 03's and 06's
    ``epochs``, ``batch_size``, ``learning_rate``, …). They are the only way to set
    those keys there: they replace the YAML file's values, and an override naming
    one of them is refused rather than silently losing to the parameter.
    """
    overrides = list(overrides)
    train = dict(train or {})
    for text in overrides:
        section, _, name = text.partition("=")[0].strip().partition(".")
        if section == "train" and name in train:
            raise FlareError(
                f"override '{text}' sets a notebook parameter: set {name} = ... in the "
                "parameters cell instead"
            )
    layout = [
        f"data.data_dir={paths.data_dir}",
        f"data.cache_dir={paths.cache_dir}",
        f"train.output_dir={paths.run_dir}",
    ]
    cfg = load_config(config_path or None, [*layout, *overrides])
    return cfg.replace(train=train) if train else cfg


def format_seconds(seconds: float) -> str:
    """A duration for a reader: ``0.04 s``, ``4.2 s``, ``3 min 12 s`` or ``2 h 5 min``."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def ensure_data(paths: SeriesLayout, zip_path: str | Path, *, progress: bool = True) -> Path:
    """The extracted CTs on this runtime's disk, re-extracted from the zip when they are missing.

    Colab keeps the extracted CTs on the runtime's local disk (``data_root``), which
    a fresh runtime (each notebook opened from its badge, or after a disconnect)
    starts without, while the zip stays on Drive. With the zip present this
    extracts it (with a progress bar; nothing to do when the extraction is
    complete); without it, an existing extracted folder is used as it is. Prints
    one line: what was re-created and how long it took, or what was already there.

    Raises:
        FlareError: neither the extracted data nor the zip is there (one line
            saying to run notebook 01 first).
    """
    zip_path = Path(zip_path)
    data_dir = paths.data_dir
    if zip_path.is_file():
        start = time.perf_counter()
        current = extraction_is_current(zip_path, paths.data_root)
        if not current:
            extract_zip(zip_path, paths.data_root, progress=progress)
        took = format_seconds(time.perf_counter() - start)
        n_cts = len(discover_cases(data_dir).cases)
        if current:
            print(f"data: {data_dir} already holds the {n_cts} CTs of {zip_path.name}")
        else:
            print(f"data: re-created {data_dir} ({n_cts} CTs) from {zip_path} in {took}")
        return data_dir
    if (data_dir / "images").is_dir():
        n_cts = len(discover_cases(data_dir).cases)  # a clear error if it holds no images
        print(f"data: {data_dir} ({n_cts} CTs) used as it is (no zip at {zip_path})")
        return data_dir
    raise FlareError(
        f"no extracted CTs here and no zip at {zip_path} to re-create them from: run notebook "
        f"01_extract first (or flare-extract --zip FLARE22Train.zip --out {paths.data_root})",
        data_dir,
    )


def ensure_cache(paths: SeriesLayout) -> Path:
    """The preprocessed cache of notebook 02, kept in ``work_dir`` (on Drive in Colab).

    Nothing to re-create: the cache lives beside the model, not on the runtime's
    disk. Prints one line with its cases and split.

    Raises:
        FlareError: no cache (or no split) there: run notebook 02 first.
    """
    cache = paths.cache
    if not cache.manifest.is_file() or not cache.splits.is_file():
        raise FlareError("no preprocessed cache here: run notebook 02_preprocess first", cache.root)
    manifest = read_json(cache.manifest)
    splits = read_splits(cache.splits)
    parts = ", ".join(f"{name} {len(ids)}" for name, ids in splits.items())
    n_cases = len(manifest.get("cases", {}))
    print(f"cache: {cache.root} ({n_cases} cases; split {parts}) from work_dir")
    return cache.root


def ensure_model(paths: SeriesLayout) -> Path:
    """The trained model of notebook 03 in the run folder ``work_dir/model``; its path.

    Prints one line: the model, the epochs it trained and, in spacing mode, its
    localiser.

    Raises:
        FlareError: no ``best.keras`` (or its ``config.yaml``) there: run notebook 03 first.
    """
    run = paths.run
    if not run.best_model.is_file() or not run.config.is_file():
        raise FlareError("no trained model here: run notebook 03_train first", run.best_model)
    rows = read_history(run.history) if run.history.is_file() else []
    size = run.best_model.stat().st_size / 2**20
    localizer = ", with its localiser" if run.localizer_model.is_file() else ""
    print(
        f"model: {run.best_model} ({len(rows)} epochs trained, {size:.1f} MB{localizer}) "
        "from the run folder"
    )
    return run.best_model


def ensure_predictions(paths: SeriesLayout) -> list[str]:
    """The cases notebook 04 predicted (``work_dir/evaluation/predictions``), sorted.

    Raises:
        FlareError: no predictions there: run notebook 04 first.
    """
    folder = paths.predictions_dir
    try:
        cases = predicted_cases(folder)
    except FlareError as exc:  # no folder, or nothing predicted in it
        raise FlareError("no predictions here: run notebook 04_evaluate first", folder) from exc
    print(f"predictions: {len(cases)} case{'s' * (len(cases) != 1)} in {folder}")
    return cases
