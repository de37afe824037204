"""Predict CTs with a trained VNet and write labels onto each input's own grid.

The image goes through exactly the training preprocessing
(:func:`flare_helpers.preprocess.pipeline.prepare_image`, parameters read from the
run folder's ``config.yaml``). The network then predicts class probabilities
on that grid: in one pass in ``resize`` mode (the grid is the network input),
or with Gaussian-weighted sliding windows in ``spacing`` mode
(:mod:`flare_helpers.model.sliding_window`, ``infer.overlap``; optional left-right
mirroring, ``infer.tta``). Probabilities are mapped back into the body crop on
the CT's canonical grid and then into the file's own voxel order, so the
written labels have the input's shape, affine and orientation.

Mapping back resamples the *probabilities* linearly and takes the argmax on
the fine grid (``infer.resample: probabilities``, the default, as nnU-Net
does): boundaries then fall between coarse voxels instead of following a 4×
staircase, which is measurably more accurate than nearest-neighbour upsampling
of the coarse labels (``labels``, kept for comparison).

In spacing mode a run folder with a ``localizer.keras`` first finds the organs
on a coarse grid, and the windows cover only their box plus
``infer.roi_margin_mm`` (:mod:`flare_helpers.localize.localizer`; ``infer.localize``),
once the box passes :func:`~flare_helpers.localize.localizer.check_region` in the
CT's world coordinates (organ sides, volumes, fewer windows); a box that fails is
not used: the whole crop is predicted, with a one-line warning.
The network computes in ``infer.precision`` (``auto``: bfloat16 only where the
CPU has it natively); every prediction reports the precision it used, the
windows it ran and the seconds of each stage (:class:`CaseReport`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from flare_helpers.config import Config, InferConfig, load_run_config
from flare_helpers.data.cases import NIFTI_EXTENSIONS, discover_cases, nifti_files, prediction_name
from flare_helpers.data.fileio import refuse_existing, remove_stale_temps_of
from flare_helpers.data.labels import OrganSet, lr_swap_pairs
from flare_helpers.data.layout import RunLayout
from flare_helpers.data.nifti import Volume, load_image, save_like
from flare_helpers.errors import FlareError, one_line
from flare_helpers.localize.localizer import (
    Localizer,
    Region,
    box_on_ct,
    check_region,
    grid_affine,
    load_localizer,
)
from flare_helpers.localize.localizer import localized_probabilities as _localized
from flare_helpers.model.modelfile import check_model_file, load_model_file
from flare_helpers.model.postprocess import keep_largest_component
from flare_helpers.model.runtime import resolve_precision
from flare_helpers.model.sliding_window import PredictFn, mirrored
from flare_helpers.model.vnet import vnet_from_config
from flare_helpers.preprocess.pipeline import PreprocessParams, prepare_image
from flare_helpers.preprocess.resample import resize_nearest, resize_probabilities_argmax


@dataclass
class StageTimer:
    """Wall-clock seconds spent per stage (load, preprocess, network, resample, write)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, other: StageTimer, share: float = 1.0) -> None:
        """Add ``share`` of another timer's seconds to this one's."""
        for name, seconds in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + share * seconds


@dataclass
class CaseReport:
    """Where one CT's prediction time went: windows run against the body crop's, per stage.

    ``windows_crop`` is what a sliding window over the whole body crop would
    run; ``windows_run`` what ran (fewer inside the localiser's box). Resize mode
    runs one network pass (1 of 1). ``seconds`` has load, preprocess, localize,
    network, resample (mapping back to the CT grid) and write.
    """

    image: Path
    precision: str
    windows_run: int
    windows_crop: int
    seconds: dict[str, float]
    note: str = ""

    def line(self) -> str:
        """One console line, e.g. for ``flare-predict``."""
        stages = ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items())
        note = f"; {self.note}" if self.note else ""
        return (
            f"{self.image.name}: {self.windows_run} of {self.windows_crop} windows "
            f"({self.precision}); seconds: {stages}{note}"
        )


def timing_table(reports: Sequence[CaseReport]):
    """One row per CT: windows run, the body crop's windows, seconds per stage (a DataFrame)."""
    return pd.DataFrame(
        [
            {
                "image": r.image.name,
                "windows run": r.windows_run,
                "body-crop windows": r.windows_crop,
                **{f"{k} s": round(v, 2) for k, v in r.seconds.items()},
                "precision": r.precision,
            }
            for r in reports
        ]
    )


@dataclass
class Predictor:
    """A loaded model with the settings it was trained with.

    ``precision`` is the network's compute precision as resolved from
    ``settings.precision`` (``precision_reason`` says why); ``localizer`` is the
    run's organ localiser, or None (resize mode, none saved, or switched off).
    """

    model: object
    params: PreprocessParams
    organs: OrganSet
    settings: InferConfig
    model_path: Path
    precision: str = "float32"
    precision_reason: str = ""
    localizer: Localizer | None = None

    def describe(self) -> str:
        """One line: mode, precision and why, localiser."""
        loc = "none"
        if self.localizer is not None:
            loc = (
                f"{self.localizer.path.name}, margin {self.settings.roi_margin_mm:g} mm"
                if self.settings.localize
                else "off (infer.localize)"
            )
        return (
            f"{self.params.mode} mode; precision {self.precision} ({self.precision_reason}); "
            f"localiser: {loc}"
        )


def load_predictor(
    model_path: str | Path, config: Config | str | Path | None = None, **infer_overrides
) -> Predictor:
    """Load a ``.keras`` model and the settings of its run.

    Args:
        model_path: e.g. ``runs/vnet/best.keras``.
        config: a Config, a YAML path, or None to read ``config.yaml`` beside the model.
        infer_overrides: replace ``infer`` settings, e.g. ``largest_component=False``.

    Raises:
        FlareError: missing/invalid model file, no config beside it, or a model
            whose input/output does not fit the configured grid and organs.
    """
    model_path = Path(model_path)
    check_model_file(model_path)
    if not isinstance(config, Config):
        config_path = Path(config) if config is not None else RunLayout(model_path.parent).config
        if not config_path.exists():
            raise FlareError(
                "no config.yaml beside the model (the run folder's settings are needed "
                "to preprocess exactly as in training)",
                config_path,
            )
        config = load_run_config(config_path)
    if infer_overrides:
        config = config.replace(infer=infer_overrides)
    net = load_model_file(model_path)
    params = PreprocessParams.from_config(config)
    organs = OrganSet.from_names(config.data.organs)
    expected_in = (*params.target_shape, 1)
    if tuple(net.input_shape[1:]) != expected_in or net.output_shape[-1] != organs.n_classes:
        raise FlareError(
            f"model takes {net.input_shape[1:]} and gives {net.output_shape[-1]} classes, but its "
            f"config says {expected_in} and {organs.n_classes} classes",
            model_path,
        )
    precision, reason = resolve_precision(config.infer.precision)
    if precision != "float32":
        net = _with_precision(net, config, organs.n_classes, model_path, precision)
    localizer = load_localizer(model_path.parent, config)
    return Predictor(net, params, organs, config.infer, model_path, precision, reason, localizer)


def _with_precision(net, config: Config, n_classes: int, model_path: Path, precision: str):
    """The same VNet and weights computing in ``precision`` (float32 variables kept)."""
    policy = f"mixed_{precision}"
    try:
        fast = vnet_from_config(config.model, config.preprocess.target_shape, n_classes, policy)
        fast.set_weights(net.get_weights())
    except (ValueError, FlareError) as exc:
        raise FlareError(
            f"cannot rebuild the model in {precision} from its config.yaml "
            f"({one_line(exc)}); use infer.precision=float32",
            model_path,
        ) from exc
    return fast


def probabilities(predictor: Predictor, inputs: np.ndarray) -> np.ndarray:
    """Network softmax for a batch of network inputs (B, X, Y, Z) → (B, X, Y, Z, C) float32.

    With ``infer.tta`` the batch is also predicted left-right mirrored (kidney
    classes swapped back) and the two are averaged.
    """
    return _predict_fn(predictor)(inputs)


def _predict_fn(predictor: Predictor) -> PredictFn:
    def plain(batch: np.ndarray) -> np.ndarray:
        out = predictor.model.predict_on_batch(np.ascontiguousarray(batch[..., None], np.float32))
        return np.asarray(out, dtype=np.float32)

    if not predictor.settings.tta:
        return plain
    return mirrored(plain, lr_swap_pairs(predictor.organs.organs))


def uses_localizer(predictor: Predictor) -> bool:
    """Whether predictions find the organs first (spacing mode, a localiser, ``infer.localize``)."""
    return predictor.localizer is not None and predictor.settings.localize


def locate(predictor: Predictor, x: np.ndarray) -> Region | None:
    """The localiser's organ boxes and margined union on the fine grid of ``x``, or None."""
    if not uses_localizer(predictor):
        return None
    return predictor.localizer.region(x, predictor.settings.roi_margin_mm)


class LocatedOnCT(NamedTuple):
    """Where prediction looks in one CT, in voxels of its canonical grid (for figures).

    Attributes:
        crop: the body crop.
        region: the localiser's organ boxes and their margined union; None where
            predictions do not localise (resize mode, no localiser, ``infer.localize`` off).
        rejected: why prediction does not use that box (:func:`checked_box`: it
            predicts the whole crop); empty where it does.
    """

    crop: tuple[slice, ...]
    region: Region | None
    rejected: str = ""


def locate_on_ct(predictor: Predictor, image: Volume) -> LocatedOnCT:
    """The body crop, the localiser's boxes in CT voxels, and whether prediction uses them."""
    x, crop = prepare_image(image, predictor.params)
    region = locate(predictor, x)
    if region is None:
        return LocatedOnCT(crop, None)
    rejected = ""
    if region.box is not None:
        affine = grid_affine(image.geometry.canonical_affine, crop, x.shape)
        rejected = checked_box(predictor, region, x, affine)[1]

    def on_ct(box):
        return box_on_ct(box, x.shape, crop)

    organs = {cls: on_ct(box) for cls, box in region.organs.items()}
    union = on_ct(region.box) if region.box is not None else None
    return LocatedOnCT(crop, Region(organs, union, region.volumes_ml), rejected)


def checked_box(
    predictor: Predictor, region: Region, x: np.ndarray, affine: np.ndarray | None = None
) -> tuple[tuple[slice, ...] | None, str]:
    """The localiser's margined box on the grid of ``x`` if it passes
    :func:`~flare_helpers.localize.localizer.check_region`, else None and the reason
    (also warned, on one line).

    ``affine``: the grid's voxel → world (mm) affine
    (:func:`~flare_helpers.localize.localizer.grid_affine`); None takes the grid's
    spacing alone, which decides sides the same way (the grid is in canonical RAS
    order: axis 0 increases toward the patient's right whatever the file's orientation).
    """
    if affine is None:
        affine = np.diag([*predictor.localizer.fine_spacing, 1.0])
    verdict = check_region(
        region,
        affine,
        x.shape,
        predictor.organs.organs,
        patch=predictor.params.target_shape,
        overlap=predictor.settings.overlap,
    )
    if verdict.ok:
        return region.box, ""
    reason = f"localiser box not used ({verdict.reason}): predicting the whole crop"
    warnings.warn(reason, UserWarning, stacklevel=3)
    return None, reason


def volume_probabilities(
    predictor: Predictor,
    x: np.ndarray,
    *,
    affine: np.ndarray | None = None,
    progress: bool = False,
    timer: StageTimer | None = None,
    report: dict | None = None,
) -> np.ndarray:
    """Probabilities (X, Y, Z, C) for one prepared volume (X, Y, Z), in the model's mode.

    ``resize``: one network pass. ``spacing``: sliding windows of the network's
    input size, ``infer.batch_size`` windows per call, overlapping by ``infer.overlap``,
    over the localiser's box when the run has one and the box passes its checks
    (:func:`checked_box`, in the world coordinates of ``affine``, the grid of ``x``'s
    voxel → world affine), else over the whole body crop. ``timer`` gets the localize
    and network seconds; ``report`` (a dict) gets ``windows_run``, ``windows_crop``
    and a ``note``.
    """
    timer = timer or StageTimer()
    report = {} if report is None else report
    if predictor.params.mode != "spacing":
        with timer.stage("network"):
            report.update(windows_run=1, windows_crop=1)
            return probabilities(predictor, x[None])[0]
    region, box, rejected = None, None, ""
    if uses_localizer(predictor):
        with timer.stage("localize"):
            region = locate(predictor, x)
            if region.box is not None:
                box, rejected = checked_box(predictor, region, x, affine)
    with timer.stage("network"):
        probs, windows = _localized(
            x,
            predictor.params.target_shape,
            _predict_fn(predictor),
            box,
            overlap=predictor.settings.overlap,
            batch_size=predictor.settings.batch_size,
            progress=progress,
        )
    note = ""
    if region is not None:
        note = rejected or windows.whole_crop_because or "localised box"
        if windows.grown_faces:
            note += f", grown at {' '.join(windows.grown_faces)}"
    report.update(windows_run=windows.windows_run, windows_crop=windows.windows_crop, note=note)
    return probs


def labels_from_probabilities(
    probs: np.ndarray,
    box: tuple[slice, ...],
    canonical_shape: Sequence[int],
    organs: OrganSet,
    settings: InferConfig,
) -> np.ndarray:
    """Map network-grid probabilities (X, Y, Z, C) to FLARE22 ids on the CT's canonical grid.

    The inverse of the preprocessing: the probabilities are resized onto the body
    crop (linearly, then argmax; or the argmax by nearest neighbour, per
    ``settings.resample``), placed into an otherwise-background volume, and each
    organ is cut to its largest component if ``settings.largest_component``.
    """
    crop_shape = tuple(s.stop - s.start for s in box)
    if settings.resample == "probabilities":
        crop = resize_probabilities_argmax(probs, crop_shape)
    else:
        crop = resize_nearest(np.argmax(probs, axis=-1).astype(np.uint8), crop_shape)
    classes = np.zeros(tuple(canonical_shape), dtype=np.uint8)
    classes[box] = crop
    if settings.largest_component:
        keep_largest_component(classes, organs.n_classes)
    return organs.to_flare(classes)


def labels_on_grid(
    predictor: Predictor, probs: np.ndarray, box: tuple[slice, ...], canonical_shape: Sequence[int]
) -> np.ndarray:
    """:func:`labels_from_probabilities` with the predictor's organs and settings."""
    return labels_from_probabilities(
        probs, box, canonical_shape, predictor.organs, predictor.settings
    )


def predict_volume(
    predictor: Predictor, image: Volume, timer: StageTimer | None = None
) -> np.ndarray:
    """Predict one loaded CT; returns uint8 FLARE22 ids in its canonical (RAS) order."""
    timer = timer or StageTimer()
    with timer.stage("preprocess"):
        x, box = prepare_image(image, predictor.params)
    affine = grid_affine(image.geometry.canonical_affine, box, x.shape)
    probs = volume_probabilities(predictor, x, affine=affine, timer=timer)
    with timer.stage("resample"):
        return labels_on_grid(predictor, probs, box, image.data.shape)


def plan_outputs(input_path: str | Path, output_path: str | Path) -> list[tuple[Path, Path]]:
    """Pair each input image with its output file.

    A file in → the output is that file (``.nii.gz``/``.nii``) or a file inside
    that folder. A folder in → every image in it (or in its ``images/``), each
    written to the output folder under its case name.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise FlareError("input not found", input_path)
    if input_path.is_file():
        if output_path.name.endswith(NIFTI_EXTENSIONS):
            return [(input_path, output_path)]
        return [(input_path, output_path / prediction_name(input_path))]
    if output_path.name.endswith(NIFTI_EXTENSIONS):
        raise FlareError("input is a folder, so the output must be a folder too", output_path)
    if (input_path / "images").is_dir():
        images = [case.image for case in discover_cases(input_path).cases]
    else:
        images = nifti_files(input_path)
    if not images:
        raise FlareError("no .nii.gz images in this folder", input_path)
    return [(image, output_path / prediction_name(image)) for image in images]


def predict_files(
    predictor: Predictor,
    pairs: Sequence[tuple[Path, Path]],
    *,
    overwrite: bool = False,
    progress: bool = True,
    timer: StageTimer | None = None,
    reports: list[CaseReport] | None = None,
) -> list[Path]:
    """Predict each (input, output) pair, ``infer.batch_size`` volumes per network call.

    Outputs that exist are refused up front (nothing is overwritten) unless
    ``overwrite``; each file is written atomically. ``timer`` adds up the stage
    seconds of all inputs; ``reports`` gets one :class:`CaseReport` per input.
    """
    if not overwrite:
        refuse_existing(out for _, out in pairs)
    for _, out in pairs:  # leftovers of a killed earlier run
        remove_stale_temps_of(out)
    timer = timer or StageTimer()
    written: list[Path] = []
    # resize mode: infer.batch_size whole volumes per network call;
    # spacing mode: one volume at a time, infer.batch_size windows per call.
    batch = max(1, predictor.settings.batch_size) if predictor.params.mode != "spacing" else 1
    with tqdm(
        total=len(pairs), desc="predict", unit="case", disable=not progress or len(pairs) < 2
    ) as bar:
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]
            shared, windows = StageTimer(), {}
            with shared.stage("load"):
                images = [load_image(src) for src, _ in chunk]
            with shared.stage("preprocess"):
                prepared = [prepare_image(image, predictor.params) for image in images]
            if batch == 1:
                x, crop = prepared[0]
                affine = grid_affine(images[0].geometry.canonical_affine, crop, x.shape)
                probs = [
                    volume_probabilities(
                        predictor,
                        x,
                        affine=affine,
                        progress=progress,
                        timer=shared,
                        report=windows,
                    )
                ]
            else:
                with shared.stage("network"):
                    probs = probabilities(predictor, np.stack([x for x, _ in prepared]))
            for (src, dst), image, (_, box), p in zip(chunk, images, prepared, probs, strict=True):
                own = StageTimer()
                own.add(shared, 1.0 / len(chunk))
                with own.stage("resample"):
                    labels = labels_on_grid(predictor, p, box, image.data.shape)
                with own.stage("write"):
                    written.append(save_like(labels, image, dst, overwrite=True))
                timer.add(own)
                if reports is not None:
                    reports.append(
                        CaseReport(
                            Path(src),
                            predictor.precision,
                            windows.get("windows_run", 1),
                            windows.get("windows_crop", 1),
                            own.seconds,
                            windows.get("note", ""),
                        )
                    )
                bar.update()
    return written
