"""Preprocessing: a case's CT and label on the network's grid, and the cache that holds them.

Takes: cases from :mod:`flare_helpers.data` and the ``preprocess`` settings.
Gives: volumes cropped to the body, resampled to ``target_spacing`` mm (``spacing``
mode) or squeezed into ``target_shape`` (``resize`` mode), CT windowed to [0, 1],
labels remapped to training classes; the cache folder with ``manifest.json``; and the
parameters that map a prediction back to the original grid (:class:`PreprocessParams`).
"""

from flare_helpers.preprocess.pipeline import (
    PreprocessParams,
    body_box,
    build_cache,
    build_entry,
    crop_box,
    entry_dir,
    file_fingerprint,
    prepare_image,
    prepare_label,
    preprocess_dataset,
    read_manifest,
    window_to_unit,
)
from flare_helpers.preprocess.resample import (
    resize_linear,
    resize_nearest,
    resize_probabilities_argmax,
    shape_for_spacing,
)

__all__ = [
    "PreprocessParams",
    "body_box",
    "build_cache",
    "build_entry",
    "crop_box",
    "entry_dir",
    "file_fingerprint",
    "prepare_image",
    "prepare_label",
    "preprocess_dataset",
    "read_manifest",
    "resize_linear",
    "resize_nearest",
    "resize_probabilities_argmax",
    "shape_for_spacing",
    "window_to_unit",
]
