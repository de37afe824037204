"""Load cases for viewing: from the data folder (+ predictions), or from the cache."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from flare_helpers.data.cases import Case, discover_cases, prediction_file
from flare_helpers.data.fileio import read_json
from flare_helpers.data.labels import OrganSet
from flare_helpers.data.layout import CacheLayout
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.errors import FlareError
from flare_helpers.viz.planes import CaseArrays


def _load(cases: Mapping[str, Case], pred_dir: Path | None, case_id: str) -> CaseArrays:
    if case_id not in cases:
        raise FlareError(f"no case {case_id!r} here (known: {', '.join(list(cases)[:5])}, …)")
    case = cases[case_id]
    image = load_image(case.image)
    gt = load_label(case.label, image.geometry).data if case.label is not None else None
    pred_path = prediction_file(pred_dir, case_id) if pred_dir is not None else None
    pred = load_label(pred_path, image.geometry).data if pred_path is not None else None
    return CaseArrays(image.data, image.spacing, gt, pred)


def case_loader(
    data_dir: str | Path, pred_dir: str | Path | None = None
) -> Callable[[str], CaseArrays]:
    """A function ``case_id → CaseArrays`` (CT in HU, ground truth, prediction if any).

    Everything is in canonical RAS order on the CT's own voxel grid, as
    :func:`flare_helpers.viz.plot_case` and :func:`~flare_helpers.viz.slice_viewer` expect.
    """
    cases = {case.case_id: case for case in discover_cases(data_dir).cases}
    return functools.partial(_load, cases, None if pred_dir is None else Path(pred_dir))


def cached_case(cache_dir: str | Path, case_id: str, organs: Sequence[str]) -> CaseArrays:
    """What the network sees for a case: the cached [0, 1] image and its labels as FLARE22 ids.

    The spacing is that of the network grid (the body crop stretched to the
    target shape), so the figure keeps true proportions. Show it with
    ``hu_window=(0, 1)``.
    """
    cache = CacheLayout(cache_dir)
    if not cache.meta(case_id).is_file():
        raise FlareError(
            "not in the cache (run notebook 02 or flare-preprocess)", cache.case_dir(case_id)
        )
    meta = read_json(cache.meta(case_id))
    image = np.load(cache.image(case_id), allow_pickle=False).astype(np.float32)
    classes = np.load(cache.label(case_id), allow_pickle=False)
    crop = [stop - start for start, stop in meta["crop"]]
    spacing = tuple(
        s * n / m for s, n, m in zip(meta["canonical_spacing_mm"], crop, image.shape, strict=True)
    )
    return CaseArrays(image, spacing, OrganSet.from_names(organs).to_flare(classes))
