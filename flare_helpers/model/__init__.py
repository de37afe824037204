"""The network and how it runs: the VNet, its losses and metrics, the model file.

Takes: ``model`` settings. Gives: a Keras 3 VNet (Milletari et al. 2016) written with
``keras.ops`` only, the Dice + cross-entropy loss, per-organ Dice metrics, safe
``.keras`` loading, the device and precision it runs with (:mod:`.runtime`), Gaussian-
weighted sliding windows over a volume and the largest-component clean-up.
"""

from flare_helpers.model.losses import DiceCELoss
from flare_helpers.model.metrics import MeanOrganDice, OrganDice, training_metrics
from flare_helpers.model.modelfile import check_model_file, load_model_file
from flare_helpers.model.postprocess import keep_largest_component
from flare_helpers.model.runtime import (
    cpu_bf16_flags,
    describe_device,
    gpu_capabilities,
    resolve_mixed_precision,
    resolve_precision,
)
from flare_helpers.model.sliding_window import (
    WindowSum,
    fit_box,
    gaussian_importance,
    mirrored,
    sliding_window_probabilities,
    window_boxes,
    window_count,
    window_starts,
)
from flare_helpers.model.vnet import build_vnet, count_parameters, vnet_from_config

__all__ = [
    "DiceCELoss",
    "MeanOrganDice",
    "OrganDice",
    "WindowSum",
    "build_vnet",
    "check_model_file",
    "count_parameters",
    "cpu_bf16_flags",
    "describe_device",
    "fit_box",
    "gaussian_importance",
    "gpu_capabilities",
    "keep_largest_component",
    "load_model_file",
    "mirrored",
    "resolve_mixed_precision",
    "resolve_precision",
    "sliding_window_probabilities",
    "training_metrics",
    "vnet_from_config",
    "window_boxes",
    "window_count",
    "window_starts",
]
