"""Organ localiser: a small coarse network that says where to slide the fine windows.

A spacing-mode CT at 1.2×1.2×2.5 mm needs dozens of 128×128×64 windows of the
main VNet to cover its body crop, but the four organs fill only part of it. As
TotalSegmentator's ``--roi_subset`` and the FLARE two-stage winners do, a small
VNet (``localizer:`` settings) first segments the whole crop on a coarse grid
(6 mm by default, so one 64³ window spans 384 mm), and the fine windows then
cover only the union of its organ boxes plus ``infer.roi_margin_mm``. Outside
that box every voxel is background.

Guards (each tested): no organ found, or a box that needs as many windows as
the whole crop → the whole crop, exactly as without a localiser; a predicted
organ touching a face of the box that is not the crop's edge → that face grows
by half a window and only the windows of the new slab run (:class:`WindowSum`
adds them to the running sum), until no organ touches an inner face.

Training uses the run's own cache: each fine cached case is resampled once to
the coarse grid into ``<cache_dir>/localizer/cases/<case_id>/`` (a few hundred
KB per case, rebuilt when its fine entry changes, :func:`build_coarse_cache`),
and :func:`localizer_training_config` turns the run's settings into the
localiser's, so the one training loop (:mod:`flare_helpers.train.loop`) trains it
exactly as it trains the VNet. The run folder gets ``localizer.keras`` (best by
validation mean Dice), ``localizer_checkpoints/``, ``localizer_history.csv`` and
``localizer_done.json``; a rerun resumes at the last finished epoch. Resize-mode
runs have no localiser.

Arrays are (X, Y, Z) in canonical RAS order; boxes are three slices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from flare_helpers.config import Config, InferConfig, LocalizerConfig
from flare_helpers.data.fileio import atomic_path, read_json, write_json_atomic
from flare_helpers.data.labels import OrganSet
from flare_helpers.data.layout import CacheLayout, RunLayout
from flare_helpers.errors import FlareError
from flare_helpers.model.modelfile import load_model_file
from flare_helpers.model.postprocess import keep_largest_component
from flare_helpers.model.sliding_window import (
    Box,
    PredictFn,
    WindowSum,
    fit_box,
    sliding_window_probabilities,
    window_count,
)
from flare_helpers.preprocess.resample import resize_linear, resize_nearest, shape_for_spacing

#: Overlap of the localiser's own windows (most crops fit in one window anyway).
LOCALIZER_OVERLAP = 0.5


# --------------------------------------------------------------------------- coarse grid


def coarse_shape(
    fine_shape: Sequence[int], fine_spacing: Sequence[float], cfg: LocalizerConfig
) -> tuple[int, int, int]:
    """The localiser's grid for a fine grid of ``fine_shape`` voxels of ``fine_spacing`` mm."""
    return shape_for_spacing(fine_shape, fine_spacing, cfg.target_spacing)


def to_coarse(x: np.ndarray, fine_spacing: Sequence[float], cfg: LocalizerConfig) -> np.ndarray:
    """A prepared fine network input (X, Y, Z) in [0, 1] on the localiser's grid (float32)."""
    return resize_linear(x, coarse_shape(x.shape, fine_spacing, cfg))


def _coarse_entry_meta(fine: CacheLayout, case_id: str, cfg: Config) -> dict:
    """What a coarse entry is made from: its fine entry's files and both spacings."""
    stat = [path.stat() for path in (fine.image(case_id), fine.label(case_id))]
    return {
        "fine_params_key": read_json(fine.meta(case_id)).get("params_key"),
        "fine_files": [[s.st_size, s.st_mtime_ns] for s in stat],
        "fine_spacing": list(cfg.preprocess.target_spacing),
        "target_spacing": list(cfg.localizer.target_spacing),
    }


def build_coarse_cache(cfg: Config, case_ids: Sequence[str], *, progress: bool = True) -> Path:
    """Resample the cached fine cases to the localiser's grid (only new or changed ones).

    Returns the coarse cache folder (:attr:`CacheLayout.localizer`, laid out like the
    fine cache, so :class:`~flare_helpers.train.batches.FlareDataset` reads it as it is).
    """
    fine = CacheLayout(Path(cfg.data.cache_dir))
    coarse = fine.localizer
    for case_id in tqdm(case_ids, desc="localiser grid", unit="case", disable=not progress):
        if not fine.meta(case_id).is_file():
            raise FlareError(
                f"case {case_id} is not in the cache (run flare-preprocess)", fine.case_dir(case_id)
            )
        meta = _coarse_entry_meta(fine, case_id, cfg)
        if coarse.meta(case_id).is_file() and read_json(coarse.meta(case_id)) == meta:
            continue
        image = np.load(fine.image(case_id), allow_pickle=False).astype(np.float32)
        label = np.load(fine.label(case_id), allow_pickle=False)
        shape = coarse_shape(image.shape, cfg.preprocess.target_spacing, cfg.localizer)
        target = coarse.case_dir(case_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, directory=True) as tmp:
            np.save(tmp / CacheLayout.IMAGE, resize_linear(image, shape).astype(np.float16))
            label = np.ascontiguousarray(resize_nearest(label, shape))
            np.save(tmp / CacheLayout.LABEL, label)
            write_json_atomic(tmp / CacheLayout.META, meta)
    return coarse.root


# --------------------------------------------------------------------------- training


def localizer_training_config(cfg: Config) -> Config:
    """The run's settings with the localiser's grid, network and optimiser in their place.

    With them the one training loop (:func:`flare_helpers.train.loop.train_network`)
    builds the localiser, its batches and its callbacks. It trains on the labelled
    training split only (pseudo-labelled cases have no coarse copy), from scratch,
    with no time limit of its own.
    """
    loc = cfg.localizer
    return cfg.replace(
        data={
            "cache_dir": str(CacheLayout(Path(cfg.data.cache_dir)).localizer.root),
            "pseudo_dirs": [],
        },
        preprocess={"target_shape": loc.target_shape, "target_spacing": loc.target_spacing},
        model={
            "base_filters": loc.base_filters,
            "depth": loc.depth,
            "convs_per_stage": loc.convs_per_stage,
            "kernel_size": loc.kernel_size,
            "normalization": loc.normalization,
            "dropout": 0.0,
        },
        train={
            "epochs": loc.epochs,
            "batch_size": loc.batch_size,
            "learning_rate": loc.learning_rate,
            "lr_schedule": "constant",
            "steps_per_epoch": 0,
            "distribution": "none",
            "early_stopping_patience": 0,
            "time_limit_minutes": 0.0,
        },
        pseudo={"init_from": ""},
    )


# --------------------------------------------------------------------------- prediction


@dataclass
class Localizer:
    """A loaded localiser with the grids it maps between."""

    model: object
    settings: LocalizerConfig
    fine_spacing: tuple[float, float, float]
    n_classes: int
    path: Path

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Softmax of a batch of coarse windows (B, X, Y, Z) → (B, X, Y, Z, C) float32."""
        out = self.model.predict_on_batch(np.ascontiguousarray(batch[..., None], np.float32))
        return np.asarray(out, dtype=np.float32)

    def coarse_classes(self, x: np.ndarray) -> np.ndarray:
        """Training classes (uint8) of a prepared fine input ``x`` on the coarse grid."""
        coarse = to_coarse(x, self.fine_spacing, self.settings)
        probs = sliding_window_probabilities(
            coarse, self.settings.target_shape, self.predict, overlap=LOCALIZER_OVERLAP
        )
        return np.argmax(probs, axis=-1).astype(np.uint8)

    def region(self, x: np.ndarray, margin_mm: float) -> Region:
        """Organ boxes and their union plus ``margin_mm``, on the fine grid of ``x``."""
        return region_from_classes(
            self.coarse_classes(x), x.shape, self.fine_spacing, margin_mm, self.n_classes
        )


@dataclass(frozen=True)
class Region:
    """Where the localiser put the organs, in voxels of the fine grid.

    ``organs`` maps each training class found to its box; ``box`` is their union
    widened by the margin (None when no organ was found).
    """

    organs: dict[int, Box]
    box: Box | None


def region_from_classes(
    coarse: np.ndarray,
    fine_shape: Sequence[int],
    fine_spacing: Sequence[float],
    margin_mm: float,
    n_classes: int,
) -> Region:
    """Per-organ boxes of a coarse class map, scaled to the fine grid, and their margined union.

    Each organ keeps its largest connected piece first, so a stray coarse voxel
    far away does not stretch the box. Coarse voxel ``i`` of ``m`` covers fine
    voxels ``[i·n/m, (i+1)·n/m)`` (the edge-aligned grids of :mod:`resample`).
    """
    classes = keep_largest_component(np.array(coarse, dtype=np.uint8), n_classes)
    organs: dict[int, Box] = {}
    for cls, found in enumerate(ndimage.find_objects(classes, max_label=n_classes - 1), 1):
        if found is None:
            continue
        organs[cls] = tuple(
            slice(math.floor(s.start * n / m), math.ceil(s.stop * n / m))
            for s, n, m in zip(found, fine_shape, classes.shape, strict=True)
        )
    if not organs:
        return Region(organs, None)
    union = []
    for axis, (n, spacing) in enumerate(zip(fine_shape, fine_spacing, strict=True)):
        margin = math.ceil(margin_mm / spacing)
        lo = min(b[axis].start for b in organs.values()) - margin
        hi = max(b[axis].stop for b in organs.values()) + margin
        union.append(slice(max(lo, 0), min(hi, int(n))))
    return Region(organs, tuple(union))


@dataclass
class WindowReport:
    """What a localised prediction did: windows run against the whole crop's, box growth."""

    windows_run: int = 0
    windows_crop: int = 0
    box: Box | None = None
    grown_faces: list[str] = field(default_factory=list)
    whole_crop_because: str = ""


_FACES = ("-x", "+x", "-y", "+y", "-z", "+z")


def _touching_faces(sums: WindowSum, box: Box) -> list[tuple[int, int]]:
    """(axis, side) of each face of ``box`` inside the volume on which an organ was predicted."""
    touching = []
    for axis in range(3):
        for side, index in ((0, box[axis].start), (1, box[axis].stop - 1)):
            edge = index == 0 if side == 0 else index >= sums.volume_shape[axis] - 1
            if edge:
                continue
            layer = list(box)
            layer[axis] = slice(index, index + 1)
            if sums.classes(tuple(layer)).any():
                touching.append((axis, side))
    return touching


def localized_probabilities(
    x: np.ndarray,
    patch: Sequence[int],
    predict: PredictFn,
    box: Box | None,
    *,
    overlap: float = InferConfig.overlap,
    batch_size: int = 1,
    progress: bool = False,
) -> tuple[np.ndarray, WindowReport]:
    """Sliding-window probabilities over ``box`` of ``x`` only; background elsewhere.

    ``box`` (fine voxels, e.g. :attr:`Region.box`) None, or one needing as many
    windows as the whole volume, predicts the whole volume exactly as
    :func:`~flare_helpers.model.sliding_window.sliding_window_probabilities` does. Where a
    predicted organ touches a face of the box that is not the volume's edge, that
    face moves out by half a window and the windows of the new slab run, until no
    organ touches an inner face.
    """
    patch = tuple(int(p) for p in patch)
    sums = WindowSum(x, patch, predict, batch_size=batch_size)
    report = WindowReport(windows_crop=window_count(x.shape, patch, overlap))
    if box is None:
        report.whole_crop_because = "no organ found"
    else:
        box = fit_box(box, patch, sums.shape)
        size = [s.stop - s.start for s in box]
        if window_count(size, patch, overlap) >= report.windows_crop:
            report.whole_crop_because = "the box needs as many windows as the whole crop"
    if report.whole_crop_because:
        box = sums.whole
    sums.cover(box, overlap, progress)
    while touching := _touching_faces(sums, box):
        grown = list(box)
        for axis, side in touching:
            step = max(patch[axis] // 2, 1)
            s = grown[axis]
            grown[axis] = (
                slice(max(s.start - step, 0), s.stop)
                if side == 0
                else slice(s.start, min(s.stop + step, sums.shape[axis]))
            )
            report.grown_faces.append(_FACES[2 * axis + side])
        for axis, side in touching:  # one window deep: the new slab and the old face
            slab = list(grown)
            g = grown[axis]
            slab[axis] = (
                slice(g.start, g.start + patch[axis])
                if side == 0
                else slice(g.stop - patch[axis], g.stop)
            )
            sums.cover(tuple(slab), overlap, progress)
        box = tuple(grown)
    report.windows_run = sums.windows_run
    report.box = tuple(slice(s.start, min(s.stop, n)) for s, n in zip(box, x.shape, strict=True))
    return sums.probabilities(), report


def load_localizer(run_dir: str | Path, cfg: Config) -> Localizer | None:
    """The run folder's ``localizer.keras``, or None where the run has none (then the
    whole crop is predicted, as runs saved before localisers existed are).

    Raises:
        FlareError: the file is corrupt or does not fit the run's ``localizer:``
            settings and organs (one line naming the file).
    """
    path = RunLayout(Path(run_dir)).localizer_model
    if cfg.preprocess.mode != "spacing" or not cfg.localizer.enabled or not path.exists():
        return None
    net = load_model_file(path)
    n_classes = OrganSet.from_names(cfg.data.organs).n_classes
    expected = (*cfg.localizer.target_shape, 1)
    if tuple(net.input_shape[1:]) != expected or net.output_shape[-1] != n_classes:
        raise FlareError(
            f"localiser takes {tuple(net.input_shape[1:])} and gives {net.output_shape[-1]} "
            f"classes, but the run's config says {expected} and {n_classes} classes",
            path,
        )
    return Localizer(net, cfg.localizer, tuple(cfg.preprocess.target_spacing), n_classes, path)


def box_on_ct(
    box: Box, fine_shape: Sequence[int], crop: Sequence[slice]
) -> tuple[slice, slice, slice]:
    """A fine-grid box as voxels of the CT's canonical grid (``crop``: the body crop there)."""
    out = []
    for s, n, c in zip(box, fine_shape, crop, strict=True):
        scale = (c.stop - c.start) / n
        out.append(
            slice(c.start + math.floor(s.start * scale), c.start + math.ceil(s.stop * scale))
        )
    return tuple(out)
