"""Result pictures of a trained model (a workflow: prediction, then the viz figures and video).

For each chosen case the model predicts the CT onto its own grid through
:mod:`flare_helpers.infer.predict`, then three files are written into the output folder:

- ``predictions/<case>.nii.gz``: FLARE22 ids, the CT's shape and affine;
- ``<case>_slices.png``: :func:`~flare_helpers.viz.plot_case` (axial, coronal,
  sagittal × CT, ground truth, prediction) with each organ's Dice in the title;
- ``<case>_organs.mp4``: :func:`~flare_helpers.viz.render_rotation_video`,
  ground truth and prediction side by side.

A case without a label gets a prediction-only figure and video. Every file is
written under a temporary name and renamed, so none is ever half-written.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from flare_helpers.data.cases import discover_cases, visualize_paths
from flare_helpers.data.fileio import refuse_existing
from flare_helpers.data.layout import RenderLayout
from flare_helpers.data.nifti import load_image
from flare_helpers.data.splits import select_cases
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.metrics import case_dice
from flare_helpers.infer.predict import load_predictor, locate_on_ct, predict_files
from flare_helpers.viz.loaders import case_loader
from flare_helpers.viz.planes import organ_ids
from flare_helpers.viz.render3d import VIDEO_SIZE, render_rotation_video
from flare_helpers.viz.slices import plot_case, save_figure
from flare_helpers.viz.steps import plot_localizer_box

#: ``cases`` values that name a group of cases rather than case ids.
CASE_GROUPS: tuple[str, ...] = ("test", "all")


def visualize_cases(
    model_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    case_ids: str | Sequence[str] | None = "test",
    seconds: float = 10.0,
    fps: int = 12,
    size: tuple[int, int] = VIDEO_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Predict the chosen cases with a trained model and write their figures and videos.

    Args:
        model_path: the run's ``.keras`` model (``config.yaml`` and, for ``"test"``,
            ``splits.json`` beside it).
        data_dir: the extracted data set (``images/``, ``labels/`` where known).
        out_dir: folder for ``predictions/``, ``<case>_slices.png`` and ``<case>_organs.mp4``.
        case_ids: ``"test"`` (the run's held-out split; also None), ``"all"`` images
            in ``data_dir``, or a list of case ids.
        seconds, fps: video length and frame rate (``round(seconds * fps)`` frames).
        size: video (width, height) in pixels.
        overwrite: replace existing outputs; otherwise any existing one is refused
            before anything is computed.
        progress: show progress bars.

    Returns:
        The files written: every prediction, then each case's slice figure and
        video (a ``.gif`` if MP4 writing failed). A case with no organ in its
        prediction or label gets no video (a warning says so).

    Raises:
        FlareError: bad settings, a missing or unusable model, data folder or case,
            or an existing output without ``overwrite`` (the message names the file).
    """
    if not (np.isfinite(seconds) and seconds > 0) or int(fps) < 1:
        raise FlareError(f"video needs seconds > 0 and fps >= 1, got {seconds} s at {fps} fps")
    predictor = load_predictor(model_path)
    cases = select_cases(data_dir, case_ids, model_path=model_path, labelled=False)
    planned = {case.case_id: visualize_paths(out_dir, case.case_id) for case in cases}
    if not overwrite:
        refuse_existing(p for paths in planned.values() for p in paths.values())

    organs = predictor.organs.organs
    pairs = [(case.image, planned[case.case_id]["prediction"]) for case in cases]
    written = predict_files(predictor, pairs, overwrite=True, progress=progress)
    load_case = case_loader(data_dir, RenderLayout(Path(out_dir)).predictions_dir)
    for case in tqdm(cases, desc="visualize", unit="case", disable=not progress):
        arrays = load_case(case.case_id)
        paths = planned[case.case_id]
        dice = case_dice(arrays.gt, arrays.pred, organs)
        figure = plot_case(
            arrays.image,
            arrays.spacing,
            arrays.gt,
            arrays.pred,
            organs=organs,
            dice=dice,
            title=case.case_id,
        )
        written.append(save_figure(figure, paths["slices"]))
        shown = [v for v in (arrays.gt, arrays.pred) if v is not None]
        if not any(np.isin(v, organ_ids(organs)).any() for v in shown):
            warnings.warn(
                f"{case.case_id}: none of {', '.join(organs)} is labelled or predicted; no video",
                stacklevel=2,
            )
            continue
        written.append(
            render_rotation_video(
                arrays.gt,
                arrays.pred,
                arrays.spacing,
                paths["video"],
                organs=organs,
                seconds=seconds,
                fps=fps,
                size=size,
                progress=progress,
            )
        )
    return written


def localizer_figure(
    model_path: str | Path, data_dir: str | Path, case_id: str, plane: str = "coronal"
):
    """The localiser's boxes on one case (:func:`flare_helpers.viz.plot_localizer_box`).

    Loads the model of ``model_path`` and its run's localiser, prepares the case's
    CT as a prediction would, and draws where the fine windows would go (and, where the
    box fails the localiser's checks, why the whole crop is predicted instead).
    """
    cases = {case.case_id: case for case in discover_cases(data_dir).cases}
    if case_id not in cases:
        raise FlareError(f"no case {case_id!r} here", Path(data_dir))
    predictor = load_predictor(model_path)
    image = load_image(cases[case_id].image)
    crop, region, rejected = locate_on_ct(predictor, image)
    organs = predictor.organs.organs
    return plot_localizer_box(image, crop, region, organs, plane, rejected=rejected)
