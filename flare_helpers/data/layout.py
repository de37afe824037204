"""Every file and folder name the series writes or reads back, in one place.

Three folders hold everything the pipeline makes:

- a **run folder** (``train.output_dir``, :class:`RunLayout`): the model, its
  settings and split, the training history and the resume checkpoints;
- the **preprocessing cache** (``data.cache_dir``, :class:`CacheLayout`): one
  folder of arrays per case, a manifest and the data split;
- the notebooks' **working folder** (:class:`SeriesLayout`): the cache, the run
  folder (``model/``), the evaluation and the renders, side by side.

The FLARE22 data's own naming (``images/<case>_0000.nii.gz``,
``labels/<case>.nii.gz``) is read in :mod:`flare_helpers.data.cases`. Modules ask
these classes for a path instead of spelling a name, so a name changes here
only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Folder the FLARE22 training zip extracts into (the organisers' top folder name).
DATASET_DIRNAME = "FLARE22Train"
#: Lock file of a folder that one process at a time may write (:mod:`flare_helpers.data.lock`).
LOCK_NAME = ".flare-lock.json"


@dataclass(frozen=True)
class ModelFiles:
    """What one network of a run writes while it trains; the training loop
    (:mod:`flare_helpers.train.loop`) takes one of these, so the VNet and the
    localiser resume, log and pick their best model the same way.

    ``last_model`` holds the weights of a session that stopped inside an epoch (time
    limit, Ctrl-C, SIGTERM); ``plan`` the plan measured before training (JSON).
    """

    best_model: Path
    history: Path
    checkpoints: Path
    done: Path
    tensorboard: Path
    last_model: Path
    plan: Path


@dataclass(frozen=True)
class RunLayout:
    """Files of one training run folder (``train.output_dir``, may live on Google Drive)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The resolved settings; inference reads its preprocessing from here."""
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        """The train/val/test split this model was trained with."""
        return self.root / "splits.json"

    @property
    def vnet(self) -> ModelFiles:
        """What the main network writes while it trains (``best.keras``, ``history.csv`` …)."""
        return ModelFiles(
            best_model=self.root / "best.keras",
            history=self.root / "history.csv",
            checkpoints=self.root / "checkpoints",
            done=self.root / "training_done.json",
            tensorboard=self.root / "tensorboard",
            last_model=self.root / "last.keras",
            plan=self.root / "plan.json",
        )

    @property
    def localizer(self) -> ModelFiles:
        """What the organ localiser trained beside the VNet writes (``localizer.keras`` …)."""
        return ModelFiles(
            best_model=self.root / "localizer.keras",
            history=self.root / "localizer_history.csv",
            checkpoints=self.root / "localizer_checkpoints",
            done=self.root / "localizer_done.json",
            tensorboard=self.root / "tensorboard" / "localizer",
            last_model=self.root / "localizer_last.keras",
            plan=self.root / "localizer_plan.json",
        )

    @property
    def history(self) -> Path:
        """Every metric of every epoch of the VNet (CSV)."""
        return self.vnet.history

    @property
    def best_model(self) -> Path:
        """Best VNet by validation mean Dice (train mean Dice without a val split)."""
        return self.vnet.best_model

    @property
    def last_model(self) -> Path:
        """The VNet's weights when a session stopped inside an epoch (time limit, Ctrl-C)."""
        return self.vnet.last_model

    @property
    def plan(self) -> Path:
        """The VNet's training plan, measured on the device before training (JSON)."""
        return self.vnet.plan

    @property
    def checkpoints(self) -> Path:
        """``epoch_NNNN.keras``: the VNet's weights and optimizer state of the last finished epoch."""
        return self.vnet.checkpoints

    @property
    def done(self) -> Path:
        """Written when all of the VNet's epochs (or early stopping) completed."""
        return self.vnet.done

    @property
    def tensorboard(self) -> Path:
        """TensorBoard logs (``train.tensorboard``)."""
        return self.vnet.tensorboard

    @property
    def lock(self) -> Path:
        """Held by the one process that trains into this folder."""
        return self.root / LOCK_NAME

    @property
    def localizer_model(self) -> Path:
        """The organ localiser trained beside the VNet."""
        return self.localizer.best_model

    @property
    def localizer_checkpoints(self) -> Path:
        """Resume checkpoints of the localiser."""
        return self.localizer.checkpoints

    @property
    def localizer_history(self) -> Path:
        """The localiser's training history (CSV)."""
        return self.localizer.history

    @property
    def localizer_rejected(self) -> Path:
        """The localiser moved aside because its validation Dice stayed below
        ``localizer.min_val_dice`` (kept to look at; prediction never loads it)."""
        return self.root / "localizer_rejected.keras"

    @property
    def evaluation_dir(self) -> Path:
        """Where ``flare-evaluate --model-path`` writes by default."""
        return self.root / "evaluation"


@dataclass(frozen=True)
class CacheLayout:
    """Files of the preprocessing cache (``data.cache_dir``)::

    manifest.json              parameters + one entry per case (rebuilt each run)
    splits.json                train/val/test case ids (see flare_helpers.data.splits)
    cases/<case_id>/image.npy  float16 (X, Y, Z) in [0, 1], RAS order, the network grid
    cases/<case_id>/label.npy  uint8 (X, Y, Z) training classes 0..K on the same grid
    cases/<case_id>/meta.json  source files + fingerprints, geometry, crop, parameters
    localizer/                 the same layout on the organ localiser's coarse grid
    """

    root: Path

    #: Names of the files in each case folder.
    IMAGE = "image.npy"
    LABEL = "label.npy"
    META = "meta.json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def cases_dir(self) -> Path:
        """Parent of the per-case folders."""
        return self.root / "cases"

    @property
    def lock(self) -> Path:
        """Held by the one process that fills or updates the cache."""
        return self.root / LOCK_NAME

    @property
    def localizer(self) -> CacheLayout:
        """The cases resampled to the organ localiser's coarse grid, laid out like this cache."""
        return CacheLayout(self.root / "localizer")

    def case_dir(self, case_id: str) -> Path:
        """Folder of one cached case."""
        return self.cases_dir / case_id

    def image(self, case_id: str) -> Path:
        return self.case_dir(case_id) / self.IMAGE

    def label(self, case_id: str) -> Path:
        return self.case_dir(case_id) / self.LABEL

    def meta(self, case_id: str) -> Path:
        return self.case_dir(case_id) / self.META


@dataclass(frozen=True)
class EvaluationLayout:
    """Files of an evaluation folder (notebook 04, ``flare-evaluate``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def per_case(self) -> Path:
        """One row per case and organ: DSC, NSD, HD95, volumes."""
        return self.root / "per_case.csv"

    @property
    def summary(self) -> Path:
        """Mean, std and median per organ."""
        return self.root / "summary.csv"

    @property
    def boxplots(self) -> Path:
        return self.root / "boxplots.png"

    @property
    def predictions_dir(self) -> Path:
        """``<case>.nii.gz`` predictions on each CT's own grid (FLARE22 naming)."""
        return self.root / "predictions"


@dataclass(frozen=True)
class RenderLayout:
    """Pictures of a case (notebook 05, ``flare-visualize``), and predictions made for them."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def slices(self, case_id: str) -> Path:
        """The axial / coronal / sagittal slice figure."""
        return self.root / f"{case_id}_slices.png"

    def video(self, case_id: str) -> Path:
        """The rotating 3D video of the organs."""
        return self.root / f"{case_id}_organs.mp4"


@dataclass(frozen=True)
class SeriesLayout:
    """Where the notebook series keeps its files: one working folder and the data root.

    ``work_dir`` (on Drive in Colab) holds ``cache/``, ``model/`` (the run folder),
    ``evaluation/`` and ``render/``; ``data_root`` (the runtime's local disk) holds
    the extracted ``FLARE22Train/``.
    """

    work_dir: Path
    data_root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir))
        object.__setattr__(self, "data_root", Path(self.data_root))

    @property
    def data_dir(self) -> Path:
        """Extracted FLARE22Train folder (images/, labels/)."""
        return self.data_root / DATASET_DIRNAME

    @property
    def cache_dir(self) -> Path:
        return self.work_dir / "cache"

    @property
    def cache(self) -> CacheLayout:
        return CacheLayout(self.cache_dir)

    @property
    def run_dir(self) -> Path:
        """Training run folder: model, checkpoints, history."""
        return self.work_dir / "model"

    @property
    def run(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def model_path(self) -> Path:
        return self.run.best_model

    @property
    def evaluation_dir(self) -> Path:
        return self.work_dir / "evaluation"

    @property
    def evaluation(self) -> EvaluationLayout:
        return EvaluationLayout(self.evaluation_dir)

    @property
    def predictions_dir(self) -> Path:
        return self.evaluation.predictions_dir

    @property
    def render_dir(self) -> Path:
        return self.work_dir / "render"

    @property
    def render(self) -> RenderLayout:
        return RenderLayout(self.render_dir)
