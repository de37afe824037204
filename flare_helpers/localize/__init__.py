"""The coarse localiser: a small network on a coarse grid that boxes the organs.

Takes: the cache (downsampled here) and ``localizer`` settings. Gives: organ boxes in
world coordinates, the checks a box must pass before prediction may rely on it, and the
localiser's training configuration (trained by :mod:`flare_helpers.train`).
"""

from flare_helpers.localize.localizer import (
    ORGAN_ML,
    ORGAN_SIDES,
    BoxProblem,
    BoxVerdict,
    Localizer,
    Region,
    box_on_ct,
    build_coarse_cache,
    check_region,
    gate_localizer,
    grid_affine,
    kept_localizer_dice,
    load_localizer,
    localized_probabilities,
    localizer_training_config,
    region_from_classes,
)

__all__ = [
    "ORGAN_ML",
    "ORGAN_SIDES",
    "BoxProblem",
    "BoxVerdict",
    "Localizer",
    "Region",
    "box_on_ct",
    "build_coarse_cache",
    "check_region",
    "gate_localizer",
    "grid_affine",
    "kept_localizer_dice",
    "load_localizer",
    "localized_probabilities",
    "localizer_training_config",
    "region_from_classes",
]
