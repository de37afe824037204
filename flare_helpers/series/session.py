"""What the notebooks share: where their files are, their settings, and the extracted data.

Every notebook derives its settings the same way (:func:`notebook_config`):
the working folder fixes where the cache, the run and the evaluation go
(:class:`~flare_helpers.data.layout.SeriesLayout`), a config YAML and
``section.key=value`` overrides set everything else. So the notebooks agree
without passing anything but files on disk. The papermill runner that executes
them in batch is :mod:`flare_helpers.series.runner`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flare_helpers.config import Config, load_config
from flare_helpers.data.cases import discover_cases
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.layout import SeriesLayout
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

    ``train`` holds the notebook's own training parameters (notebook 03's
    ``epochs``, ``batch_size``, ``learning_rate``). They are the only way to set
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


def ensure_data(paths: SeriesLayout, zip_path: str | Path, *, progress: bool = True) -> Path:
    """The extracted data set, re-extracted from the zip when a fresh runtime lost it.

    Colab keeps the extracted CTs on the runtime's local disk, which a disconnect
    wipes, while the zip stays on Drive. With the zip present this extracts it
    (with a progress bar; nothing to do when the extraction is complete); without
    it, an existing extracted folder is used as it is.

    Raises:
        FlareError: neither the extracted data nor the zip is there (one line
            saying what to run).
    """
    zip_path = Path(zip_path)
    if zip_path.is_file():
        return extract_zip(zip_path, paths.data_root, progress=progress)
    if (paths.data_dir / "images").is_dir():
        discover_cases(paths.data_dir)  # a clear error if the folder holds no images
        return paths.data_dir
    raise FlareError(
        f"no extracted data here and no zip at {zip_path}: run notebook 01 "
        f"(or flare-extract --zip FLARE22Train.zip --out {paths.data_root})",
        paths.data_dir,
    )
