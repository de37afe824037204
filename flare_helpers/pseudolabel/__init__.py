"""Pseudo-labels: a trained teacher labels unlabelled scans, with a confidence per case.

Takes: a trained run and unlabelled CTs (zip or folder). Gives: a folder in the FLARE22
layout with ``confidence.csv`` and the cases kept for training (``flare-pseudolabel``).
"""

from flare_helpers.pseudolabel.confidence import (
    SIGNALS,
    AnatomyReference,
    ProbabilityRecorder,
    TransformedModel,
    agreement_dice,
    case_confidence,
    component_shares,
    disagreement,
    organ_geometry,
    signal_product,
)
from flare_helpers.pseudolabel.teacher import (
    PseudoResult,
    best_and_worst,
    case_volumes,
    confidence_table,
    pseudolabel,
    reference_from_labels,
    row_confidence,
    select,
    teacher_settings,
)

__all__ = [
    "AnatomyReference",
    "ProbabilityRecorder",
    "PseudoResult",
    "SIGNALS",
    "TransformedModel",
    "agreement_dice",
    "best_and_worst",
    "case_confidence",
    "case_volumes",
    "component_shares",
    "confidence_table",
    "disagreement",
    "organ_geometry",
    "pseudolabel",
    "reference_from_labels",
    "row_confidence",
    "select",
    "signal_product",
    "teacher_settings",
]
