"""The resolution ceiling: what a perfect network could score with given preprocessing settings.

A network predicts on its own grid (``resize``: the body crop squeezed into
``target_shape``; ``spacing``: the crop at ``target_spacing`` mm), and its
output is mapped back to the CT's grid. Even a network that is right on every
one of its voxels loses the detail that grid cannot hold. The ceiling measures
that loss: the ground truth is taken to the network grid exactly as training
labels are (:func:`~flare_helpers.preprocess.pipeline.prepare_label`), turned into
certain probabilities (one-hot), and sent back through the inference mapping
(:func:`~flare_helpers.infer.predict.labels_from_probabilities`, largest-component step
included), then scored against the original labels with the FLARE22 rules.
A trained model lands below this number; settings whose ceiling is low cap
every model trained with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from flare_helpers.config import Config
from flare_helpers.data.labels import NSD_TOLERANCE_MM, OrganSet, one_hot
from flare_helpers.data.nifti import Volume, load_case
from flare_helpers.data.splits import select_cases
from flare_helpers.evaluate.evaluation import PER_CASE_COLUMNS, EvaluationResult
from flare_helpers.evaluate.metrics import score_case
from flare_helpers.infer.predict import labels_from_probabilities
from flare_helpers.preprocess.pipeline import PreprocessParams, crop_box, prepare_label


def ceiling_labels(image: Volume, label: Volume, cfg: Config) -> np.ndarray:
    """FLARE22 ids (canonical order) of a perfect prediction on the network grid, mapped back.

    Args:
        image: the CT (its body crop decides the network grid, as at inference).
        label: its ground truth, on the same grid.
        cfg: the preprocessing and inference settings to measure.
    """
    params = PreprocessParams.from_config(cfg)
    organs = OrganSet.from_names(cfg.data.organs)
    box = crop_box(image, params)
    classes = prepare_label(label, box, params)
    probs = one_hot(classes, organs.n_classes)
    return labels_from_probabilities(probs, box, image.data.shape, organs, cfg.infer)


def resolution_ceiling(
    data_dir: str | Path,
    cfg: Config,
    case_ids: str | Sequence[str] = "all",
    *,
    progress: bool = True,
) -> EvaluationResult:
    """Ceiling scores of labelled cases: one row per case and organ, as a model evaluation.

    ``case_ids`` is ``"all"`` (every labelled case) or a list of case ids.

    Raises:
        FlareError: no labelled cases, an unknown case id, or an unreadable file.
    """
    organs = OrganSet.from_names(cfg.data.organs).organs
    rows: list[dict] = []
    for case in tqdm(
        select_cases(Path(data_dir), case_ids), desc="ceiling", unit="case", disable=not progress
    ):
        image, label = load_case(case)
        best = ceiling_labels(image, label, cfg)
        scores = score_case(label.data, best, label.spacing, organs, NSD_TOLERANCE_MM)
        rows += [{"case": case.case_id, **row} for row in scores]
    return EvaluationResult(pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS)))


def compare_modes(
    data_dir: str | Path, cfg: Config, case_ids: str | Sequence[str] = "all"
) -> pd.DataFrame:
    """Mean ceiling DSC per organ of ``cfg`` beside the same settings in the other mode.

    Returns:
        Rows per organ plus ``"all organs"``; columns ``"<mode> (yours)"`` and the
        other mode, so a notebook shows what its grid costs before any training.
    """
    mine = cfg.preprocess.mode
    columns = {}
    for mode in (mine, "resize" if mine == "spacing" else "spacing"):
        result = resolution_ceiling(
            data_dir, cfg.replace(preprocess={"mode": mode}), case_ids, progress=False
        )
        columns[f"{mode} (yours)" if mode == mine else mode] = _mean_dsc(result)
    return pd.DataFrame(columns)


def against_ceiling(result: EvaluationResult, data_dir: str | Path, cfg: Config) -> pd.DataFrame:
    """A model's mean DSC per organ beside the ceiling of its settings on the same cases.

    Args:
        result: the model's evaluation (its cases are scored for the ceiling too).
        data_dir: the data set the model was evaluated on.
        cfg: the model's run settings (``config.yaml`` beside it).

    Returns:
        Rows per organ plus ``"all organs"``; columns ``model``, ``ceiling`` and
        ``gap`` (ceiling − model): how much the network, not the grid, leaves on the table.
    """
    case_ids = list(dict.fromkeys(result.per_case["case"]))
    best = resolution_ceiling(data_dir, cfg, case_ids, progress=False)
    table = pd.DataFrame({"model": _mean_dsc(result), "ceiling": _mean_dsc(best)})
    table["gap"] = table["ceiling"] - table["model"]
    return table


def _mean_dsc(result: EvaluationResult) -> pd.Series:
    """Mean DSC per organ (and ``"all organs"``) of an evaluation's summary."""
    return result.summary().set_index("organ")["dsc_mean"]
