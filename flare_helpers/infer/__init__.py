"""Prediction: a CT in, labels on the CT's own grid out.

Takes: a trained run (``.keras`` + ``config.yaml``), NIfTI files and optionally the
localiser's box (an argument, never a guess). Gives: the same preprocessing as training,
one pass or Gaussian sliding windows, post-processing, the inverse mapping to the input's
grid, and a NIfTI with the input's affine (``flare-predict``).
"""

from flare_helpers.infer.predict import (
    CaseReport,
    Predictor,
    StageTimer,
    checked_box,
    labels_from_probabilities,
    labels_on_grid,
    load_predictor,
    locate_on_ct,
    plan_outputs,
    predict_files,
    predict_volume,
    probabilities,
    timing_table,
    volume_probabilities,
)

__all__ = [
    "CaseReport",
    "Predictor",
    "StageTimer",
    "checked_box",
    "labels_from_probabilities",
    "labels_on_grid",
    "load_predictor",
    "locate_on_ct",
    "plan_outputs",
    "predict_files",
    "predict_volume",
    "probabilities",
    "timing_table",
    "volume_probabilities",
]
