"""Evaluation: FLARE22's DSC, NSD and HD95 per case and organ, on the original grid.

Takes: ground-truth labels and predictions (or a model to predict them).
Gives: per-case tables, summaries, box plots and the worst case (``flare-evaluate``).
"""

from flare_helpers.evaluate.evaluation import (
    ALL_ORGANS,
    PER_CASE_COLUMNS,
    EvaluationResult,
    evaluate_model,
    plot_boxplots,
    score_prediction_dir,
    summarize,
    worst_case,
    write_report,
)
from flare_helpers.evaluate.metrics import (
    case_dice,
    dice,
    hd95,
    normalized_surface_dice,
    organ_dice,
    score_case,
    volume_ml,
)

__all__ = [
    "ALL_ORGANS",
    "EvaluationResult",
    "PER_CASE_COLUMNS",
    "case_dice",
    "dice",
    "evaluate_model",
    "hd95",
    "normalized_surface_dice",
    "organ_dice",
    "plot_boxplots",
    "score_case",
    "score_prediction_dir",
    "summarize",
    "volume_ml",
    "worst_case",
    "write_report",
]
