"""Organ localiser: a small coarse network that says where to slide the fine windows.

A spacing-mode CT at 1.2×1.2×2.5 mm needs dozens of 128×128×64 windows of the
main VNet to cover its body crop, but the four organs fill only part of it. As
TotalSegmentator's ``--roi_subset`` and the FLARE two-stage winners do, a small
VNet (``localizer:`` settings) first segments the whole crop on a coarse grid
(6 mm by default, so one 64³ window spans 384 mm), and the fine windows then
cover only the union of its organ boxes plus ``infer.roi_margin_mm``. Outside
that box every voxel is background.

Guards (each tested): before its box is used, :func:`check_region` checks the
localiser's organs against anatomy in world coordinates: each lateral organ's
centre on its side of the body's midline (liver and right kidney on the
patient's right, spleen and left kidney on the left), each organ's volume within
plausible adult bounds (:data:`ORGAN_ML`), and the box needing fewer windows than
the whole crop. A box that fails any check (an organ not found included) → the
whole crop, exactly as without a localiser, with a one-line warning naming the
organ and the check (no organ found at all: the whole crop, without a warning).
A predicted organ touching a face of the box that is not the crop's edge → that
face grows by half a window and only the windows of the new slab run
(:class:`WindowSum` adds them to the running sum), until no organ touches an
inner face, or until growing would run as many windows as the whole crop (then
the whole crop, afresh).

Training uses the run's own cache: each fine cached case is resampled once to
the coarse grid into ``<cache_dir>/localizer/cases/<case_id>/`` (a few hundred
KB per case, rebuilt when its fine entry changes, :func:`build_coarse_cache`),
and :func:`localizer_training_config` turns the run's settings into the
localiser's, so the one training loop (:mod:`flare_helpers.train.loop`) trains it
exactly as it trains the VNet. The run folder gets ``localizer.keras`` (best by
validation mean Dice), ``localizer_checkpoints/``, ``localizer_history.csv`` and
``localizer_done.json``; a rerun resumes at the last finished epoch. A localiser
whose validation mean Dice stays below ``localizer.min_val_dice`` is not kept
(:func:`gate_localizer`: moved to ``localizer_rejected.keras``, so prediction uses
the whole crop). Resize-mode runs have no localiser.

Arrays are (X, Y, Z) in canonical RAS order; boxes are three slices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from flare_helpers.config import Config, InferConfig, LocalizerConfig
from flare_helpers.data.fileio import atomic_path, read_history, read_json, write_json_atomic
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
    training split only (pseudo-labelled cases have no coarse copy), from scratch.
    Its time limit is its share of the run's: ``localizer.time_share ×
    train.time_limit_minutes`` (none when the run has none); the VNet trains in
    what remains of the run's limit (:func:`flare_helpers.workflows.training.train`).
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
            "time_limit_minutes": loc.time_share * cfg.train.time_limit_minutes,
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
    widened by the margin (None when no organ was found). ``volumes_ml`` and
    ``centres`` (centre of mass, fine voxels (X, Y, Z)) per class are filled by
    :func:`region_from_classes`; a hand-made region may leave them empty (then
    :func:`check_region` uses each box's centre and skips the volume check).
    """

    organs: dict[int, Box]
    box: Box | None
    volumes_ml: dict[int, float] = field(default_factory=dict)
    centres: dict[int, tuple[float, float, float]] = field(default_factory=dict)


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
    Each organ's volume (ml: its coarse voxels × a coarse voxel's volume) and
    centre of mass (fine voxels) come with it. A label map on the fine grid itself
    (``coarse.shape == fine_shape``) gives the ground truth's region.
    """
    classes = keep_largest_component(np.array(coarse, dtype=np.uint8), n_classes)
    scale = [n / m for n, m in zip(fine_shape, classes.shape, strict=True)]
    voxel_ml = float(np.prod([s * f for s, f in zip(scale, fine_spacing, strict=True)])) / 1000.0
    counts = np.bincount(classes.ravel(), minlength=n_classes)
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
    found = sorted(organs)
    masses = ndimage.center_of_mass(np.ones(classes.shape, np.float32), classes, found)
    centres = {
        cls: tuple(float((c + 0.5) * f - 0.5) for c, f in zip(mass, scale, strict=True))
        for cls, mass in zip(found, masses, strict=True)
    }
    volumes = {cls: float(counts[cls]) * voxel_ml for cls in found}
    union = []
    for axis, (n, spacing) in enumerate(zip(fine_shape, fine_spacing, strict=True)):
        margin = math.ceil(margin_mm / spacing)
        lo = min(b[axis].start for b in organs.values()) - margin
        hi = max(b[axis].stop for b in organs.values()) + margin
        union.append(slice(max(lo, 0), min(hi, int(n))))
    return Region(organs, tuple(union), volumes, centres)


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
    organ touches an inner face. Growth that would bring the windows run to the
    whole crop's count stops: the whole volume is then predicted afresh (exactly
    as without a box; ``windows_run`` counts the windows before too), so a box never
    costs more than the windows it ran plus the whole crop's.
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
        slabs = []
        for axis, side in touching:  # one window deep: the new slab and the old face
            slab = list(grown)
            g = grown[axis]
            slab[axis] = (
                slice(g.start, g.start + patch[axis])
                if side == 0
                else slice(g.stop - patch[axis], g.stop)
            )
            slabs.append(fit_box(slab, patch, sums.shape))
        more = sum(window_count([s.stop - s.start for s in b], patch, overlap) for b in slabs)
        if sums.windows_run + more >= report.windows_crop:
            before = sums.windows_run
            sums = WindowSum(x, patch, predict, batch_size=batch_size)
            box = sums.whole
            sums.cover(box, overlap, progress)
            sums.windows_run += before
            report.whole_crop_because = (
                f"growing the box would run as many windows as the whole crop ({before} run before)"
            )
            break
        for slab in slabs:
            sums.cover(slab, overlap, progress)
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


# --------------------------------------------------------------------------- checks


#: Side of the body's midline each lateral organ's centre lies on (RAS+: world +x
#: points to the patient's right, as canonical axis 0 does).
ORGAN_SIDES: dict[str, str] = {
    "liver": "right",
    "right_kidney": "right",
    "left_kidney": "left",
    "spleen": "left",
}

#: Plausible adult organ volumes in ml, (low, high). Generous on purpose: a box that
#: fails falls back to the whole crop (slower, never less accurate), so the bounds
#: only have to catch a localiser that is plainly wrong. Typical adult volumes are
#: liver 1,000–2,000 ml (hepatomegaly to ~3,000), kidney 120–200 ml each, spleen
#: 100–250 ml (splenomegaly from ~500, massive above 1,000); the real CT 9001
#: measures liver 1,123, right kidney 189, left kidney 139, spleen 261 ml and the
#: ``ct`` phantoms liver 1,490–1,910, kidneys 108–166, spleen 170–209 ml. The bounds
#: leave room below for small, atrophic or partly scanned organs and above for
#: enlarged ones and for the coarse grid (a 6 mm voxel layer around a kidney is
#: about ±50 % of its volume). A localiser still learning the kidneys (31–43 ml of
#: left kidney on ``ct`` phantoms, validation Dice 0.2–0.3 for that organ) fails
#: here, and its cases are predicted whole.
ORGAN_ML: dict[str, tuple[float, float]] = {
    "liver": (500.0, 4000.0),
    "right_kidney": (50.0, 400.0),
    "left_kidney": (50.0, 400.0),
    "spleen": (30.0, 1500.0),
}


def grid_affine(
    canonical_affine: np.ndarray, crop: Sequence[slice], grid_shape: Sequence[int]
) -> np.ndarray:
    """4×4 voxel → world (mm) affine of a network grid of ``grid_shape`` voxels that
    resamples ``crop`` of a canonical CT grid with ``canonical_affine``.

    Edge-aligned, as :mod:`flare_helpers.preprocess.resample`: grid voxel ``i`` of
    ``n`` sits at canonical voxel ``start + (i + 0.5)·c/n − 0.5`` (``c`` crop voxels).
    """
    scale = np.eye(4)
    for axis, (s, n) in enumerate(zip(crop, grid_shape, strict=True)):
        step = (s.stop - s.start) / int(n)
        scale[axis, axis] = step
        scale[axis, 3] = s.start + 0.5 * step - 0.5
    return np.asarray(canonical_affine, dtype=np.float64) @ scale


@dataclass(frozen=True)
class BoxProblem:
    """One failed check: the organ (or ``box``), the check (``side``, ``size``,
    ``windows``) and what was measured."""

    organ: str
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.organ} {self.check}: {self.detail}"


@dataclass(frozen=True)
class BoxVerdict:
    """What :func:`check_region` measured and found wrong (nothing: the box may be used).

    ``offsets_mm``: world x of each organ's centre minus the body midline's (+ = the
    patient's right); ``volumes_ml``: each organ's volume; ``windows_box`` and
    ``windows_crop``: fine windows the box and the whole crop need (0: not counted).
    """

    problems: tuple[BoxProblem, ...]
    offsets_mm: dict[str, float]
    volumes_ml: dict[str, float]
    windows_box: int = 0
    windows_crop: int = 0

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems

    @property
    def reason(self) -> str:
        """The failed checks on one line (empty when all passed)."""
        return "; ".join(str(p) for p in self.problems)


def check_region(
    region: Region,
    affine: np.ndarray,
    grid_shape: Sequence[int],
    organs: Sequence[str],
    *,
    patch: Sequence[int] | None = None,
    overlap: float = InferConfig.overlap,
    sides: Mapping[str, str] = ORGAN_SIDES,
    bounds_ml: Mapping[str, tuple[float, float]] = ORGAN_ML,
) -> BoxVerdict:
    """Check a localiser's region against anatomy before prediction relies on it.

    Args:
        region: organ boxes on a grid of ``grid_shape`` voxels (X, Y, Z), the body
            crop (:meth:`Localizer.region`, or :func:`region_from_classes` of labels).
        affine: that grid's voxel → world (mm, RAS+) affine (:func:`grid_affine`).
        organs: organ names in class order (class ``i + 1`` is ``organs[i]``).
        patch: the fine network's window; given, the box must need fewer windows
            (at ``overlap``) than the whole grid.
        sides: expected side (``right``/``left``) per organ: its centre (of mass,
            else of its box) must lie on that side of the body midline, the world x
            of the grid's centre (the body crop spans the body, so its centre is the
            midline, as ``bench/real_ct.py`` takes it).
        bounds_ml: (low, high) volume per organ; an organ not found measures 0 ml.
    """
    affine = np.asarray(affine, dtype=np.float64)
    middle = [(int(n) - 1) / 2.0 for n in grid_shape]
    midline_x = float((affine @ [*middle, 1.0])[0])
    problems: list[BoxProblem] = []
    offsets: dict[str, float] = {}
    volumes: dict[str, float] = {}
    for cls, name in enumerate(organs, 1):
        box = region.organs.get(cls)
        if box is None:
            if name in bounds_ml or name in sides:
                problems.append(BoxProblem(name, "size", "not found (0 ml)"))
                volumes[name] = 0.0
            continue
        centre = region.centres.get(cls) or tuple((s.start + s.stop - 1) / 2.0 for s in box)
        offsets[name] = float((affine @ [*centre, 1.0])[0]) - midline_x
        side = sides.get(name)
        if side is not None and (offsets[name] > 0) != (side == "right"):
            where = "right" if offsets[name] > 0 else "left"
            problems.append(
                BoxProblem(
                    name,
                    "side",
                    f"centre {abs(offsets[name]):.0f} mm on the patient's {where} of the "
                    f"body midline, expected {side}",
                )
            )
        if cls in region.volumes_ml:
            volumes[name] = float(region.volumes_ml[cls])
            low, high = bounds_ml.get(name, (0.0, math.inf))
            if not low <= volumes[name] <= high:
                problems.append(
                    BoxProblem(name, "size", f"{volumes[name]:.0f} ml, outside {low:g}–{high:g} ml")
                )
    windows_box = windows_crop = 0
    if patch is not None and region.box is not None:
        padded = [max(int(n), int(p)) for n, p in zip(grid_shape, patch, strict=True)]
        fitted = fit_box(region.box, patch, padded)
        windows_box = window_count([s.stop - s.start for s in fitted], patch, overlap)
        windows_crop = window_count(grid_shape, patch, overlap)
        if windows_box >= windows_crop:
            problems.append(
                BoxProblem(
                    "box",
                    "windows",
                    f"needs {windows_box} windows, the whole crop {windows_crop}",
                )
            )
    return BoxVerdict(tuple(problems), offsets, volumes, windows_box, windows_crop)


# --------------------------------------------------------------------------- validation Dice gate


def kept_localizer_dice(run_dir: str | Path, best_epoch: int) -> tuple[float, str]:
    """The validation mean Dice of the localiser the run kept (its epoch ``best_epoch``,
    1-based), from ``localizer_history.csv``, and the column it came from
    (``val_mean_dice``; ``mean_dice``, the training Dice, in a run without a
    validation split).

    The raw value of that epoch, not its moving average: the average chose the
    epoch, but lags the Dice of a localiser still learning (at
    ``train.ema_smoothing`` 0.9 it still weighs the first epochs after 15).

    Raises:
        FlareError: no history, or no row for that epoch.
    """
    history = RunLayout(Path(run_dir)).localizer_history
    rows = [r for r in read_history(history, required=True) if r["epoch"] == best_epoch - 1]
    if not rows:
        raise FlareError(f"no row for the localiser's epoch {best_epoch}", history)
    for column in ("val_mean_dice", "mean_dice"):
        value = rows[0].get(column, math.nan)
        if math.isfinite(value):
            return float(value), column
    raise FlareError(f"no Dice logged for the localiser's epoch {best_epoch}", history)


def drop_localizer(run_dir: str | Path) -> Path:
    """Leave the run without a localiser: an earlier session's ``localizer.keras`` moves to
    ``localizer_rejected.keras`` (prediction then covers the whole crop); returns that path."""
    layout = RunLayout(Path(run_dir))
    if layout.localizer_model.exists():
        os.replace(layout.localizer_model, layout.localizer_rejected)
    return layout.localizer_rejected


def gate_localizer(
    run_dir: str | Path, best_epoch: int, min_val_dice: float, final_dice: float = math.nan
) -> Path:
    """Keep the run's trained localiser only if its validation mean Dice
    (:func:`kept_localizer_dice`) reaches ``min_val_dice``; returns where it now is.

    Below it, ``localizer.keras`` moves to ``localizer_rejected.keras``
    (:attr:`RunLayout.localizer_rejected`) and one line says so: the run then has no
    localiser and prediction covers the whole crop. At or above it a file rejected by
    an earlier, stricter gate comes back (a fresher ``localizer.keras`` wins), so a
    rerun gives the same answer. ``best_epoch`` 0 (its time share ended the first epoch):
    the one validation at the end gave ``final_dice``, and that decides.
    """
    layout = RunLayout(Path(run_dir))
    kept, rejected = layout.localizer_model, layout.localizer_rejected
    if best_epoch == 0:
        dice, column = (final_dice if math.isfinite(final_dice) else 0.0), "val_mean_dice"
    else:
        dice, column = kept_localizer_dice(run_dir, best_epoch)
    if dice >= min_val_dice:
        if rejected.exists():
            if kept.exists():
                rejected.unlink()
            else:
                os.replace(rejected, kept)
        return kept
    drop_localizer(run_dir)
    print(
        f"localiser not kept: {column} {dice:.3f} (epoch {best_epoch}, the best) < "
        f"localizer.min_val_dice {min_val_dice:g}; prediction covers the whole crop "
        f"({rejected.name})"
    )
    return rejected
