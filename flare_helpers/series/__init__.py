"""The notebook series: what a notebook needs at its start, papermill runs, published copies.

Takes: a profile (``notebooks/params/*.yaml``) or a notebook's parameters.
Gives: paths on Drive or disk, data re-created in a fresh runtime (:mod:`.session`),
executed notebooks (:mod:`.runner`, ``flare-series``) and the cleaned copies in
``docs/notebooks`` (:mod:`.docs`).
"""

from flare_helpers.series.session import (
    ensure_cache,
    ensure_data,
    ensure_model,
    ensure_predictions,
    notebook_config,
    resolve,
    series_paths,
    zip_file,
)

__all__ = [
    "ensure_cache",
    "ensure_data",
    "ensure_model",
    "ensure_predictions",
    "notebook_config",
    "resolve",
    "series_paths",
    "zip_file",
]
