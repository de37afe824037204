"""CT → network input: body crop, resize or resample, HU window → [0, 1]; and the on-disk cache.

Two modes (``preprocess.mode``) share every step but one:

- ``resize`` squeezes the body crop whole into ``target_shape`` (128×128×64 by
  default): one network pass per CT, but the voxel size then depends on the
  patient and on how much of the body the scan covers (a longer scan shrinks
  every organ along z).
- ``spacing`` resamples the body crop to ``target_spacing`` mm: an organ has
  the same size in voxels in every scan, the grid is as fine as the setting
  asks, and the network sees ``target_shape`` patches of it (sliding windows at
  inference, :mod:`flare_helpers.model.sliding_window`).

One code path serves training (through the cache) and inference
(:func:`prepare_image` on a freshly loaded CT), so the network always sees
inputs made the same way.

Default HU window [-160, 240] is the abdominal soft-tissue window (level 40,
width 400): liver (~60–160 HU with contrast), spleen (~50–150), kidneys
(~100–250 in the portal/nephrographic phase) and the surrounding fat (~-100)
all stay distinguishable, while bone and air, which carry no information for
these four organs, saturate.

The cache's files are named in :class:`flare_helpers.data.layout.CacheLayout`
(``manifest.json``, ``splits.json``, ``cases/<case_id>/image.npy`` float16 and
``label.npy`` uint8 on the network grid, ``meta.json``). Each case folder is
built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from flare_helpers.config import Config
from flare_helpers.data.cases import Case, discover_cases
from flare_helpers.data.fileio import atomic_path, read_json, remove_stale_temps, write_json_atomic
from flare_helpers.data.labels import OrganSet
from flare_helpers.data.layout import CacheLayout
from flare_helpers.data.lock import FolderLock
from flare_helpers.data.nifti import Volume, load_case
from flare_helpers.data.splits import load_or_make_splits
from flare_helpers.errors import FlareError
from flare_helpers.preprocess.resample import resize_linear, resize_nearest, shape_for_spacing

CACHE_VERSION = 2
_HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that determines a cache entry; a change rebuilds the entry.

    Built with :meth:`from_config`: the defaults are those of
    :class:`~flare_helpers.config.PreprocessConfig` and ``data.organs``.
    """

    target_shape: tuple[int, int, int]
    hu_window: tuple[float, float]
    crop_to_body: bool
    body_threshold_hu: float
    crop_margin_mm: float
    organs: tuple[str, ...]
    mode: str
    target_spacing: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: Config) -> PreprocessParams:
        """Take the preprocessing section and the organ list from a full config."""
        p = cfg.preprocess
        return cls(
            tuple(p.target_shape),
            tuple(p.hu_window),
            p.crop_to_body,
            p.body_threshold_hu,
            p.crop_margin_mm,
            tuple(OrganSet.from_names(cfg.data.organs).organs),
            p.mode,
            tuple(p.target_spacing),
        )

    def grid_shape(self, crop_shape: Sequence[int], spacing_mm: Sequence[float]) -> tuple:
        """Network grid (X, Y, Z) for a body crop of ``crop_shape`` voxels of ``spacing_mm``."""
        if self.mode == "spacing":
            return shape_for_spacing(crop_shape, spacing_mm, self.target_spacing)
        return tuple(self.target_shape)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def key(self) -> str:
        """Short hash of the parameters, stored with each entry."""
        text = json.dumps({"version": CACHE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- transforms


def body_box(
    hu: np.ndarray, spacing: Sequence[float], threshold_hu: float, margin_mm: float
) -> tuple[slice, slice, slice]:
    """Bounding box of the body: the largest connected region above ``threshold_hu``.

    Found on a coarse (~4 mm) copy for speed, which also drops thin objects
    such as the CT table's rails when they touch nothing else. Falls back to
    the whole volume when nothing is above the threshold.

    Returns:
        Three slices in the voxel grid of ``hu`` (canonical order), widened by
        ``margin_mm`` on each side.
    """
    step = [max(1, int(round(4.0 / s))) for s in spacing]
    coarse = hu[:: step[0], :: step[1], :: step[2]] > threshold_hu
    components, count = ndimage.label(coarse)
    if count == 0:
        return tuple(slice(0, n) for n in hu.shape)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    where = np.nonzero(components == int(np.argmax(sizes)))
    box = []
    for axis, (coords, n, s) in enumerate(zip(where, hu.shape, spacing, strict=True)):
        margin = int(np.ceil(margin_mm / s)) + step[axis]
        lo = max(int(coords.min()) * step[axis] - margin, 0)
        hi = min((int(coords.max()) + 1) * step[axis] + margin, n)
        box.append(slice(lo, hi))
    return tuple(box)


def window_to_unit(hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Clip HU to ``window = (low, high)`` and scale linearly to [0, 1] (float32)."""
    low, high = float(window[0]), float(window[1])
    out = np.clip(hu, low, high).astype(np.float32, copy=False)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def crop_box(image: Volume, params: PreprocessParams) -> tuple[slice, slice, slice]:
    """The part of the canonical grid the network sees: the body box, or everything."""
    if params.crop_to_body:
        return body_box(image.data, image.spacing, params.body_threshold_hu, params.crop_margin_mm)
    return tuple(slice(0, n) for n in image.data.shape)


def prepare_image(
    image: Volume, params: PreprocessParams
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Turn a loaded CT (canonical RAS, HU) into the network's input grid.

    Returns:
        ``(x, box)``: ``x`` is float32 in [0, 1] on the network grid
        (:meth:`PreprocessParams.grid_shape`); ``box`` is the crop (slices in the
        canonical grid) that ``x`` covers.
    """
    box = crop_box(image, params)
    crop = image.data[box]
    resized = resize_linear(crop, params.grid_shape(crop.shape, image.spacing))
    return window_to_unit(resized, params.hu_window), box


def prepare_label(
    label: Volume, box: tuple[slice, slice, slice], params: PreprocessParams
) -> np.ndarray:
    """FLARE22 ids (canonical) → training classes on the network grid (nearest, uint8)."""
    classes = OrganSet(params.organs).to_classes(label.data[box])
    return resize_nearest(classes, params.grid_shape(classes.shape, label.spacing))


# --------------------------------------------------------------------------- fingerprints


def file_fingerprint(path: Path, *, with_hash: bool = True) -> dict:
    """Size, mtime and (optionally) SHA-256 of a file, as stored in cache entries."""
    stat = path.stat()
    out = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if with_hash:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        out["sha256"] = digest.hexdigest()
    return out


def _same_file(saved: dict, path: Path) -> bool:
    """True when ``path`` still holds the bytes recorded in ``saved``.

    Unchanged size and mtime are trusted (as make and rsync do); otherwise the
    content hash decides, so a touched-but-identical file is not rebuilt.
    """
    try:
        now = file_fingerprint(path, with_hash=False)
    except OSError:
        return False
    if now["size"] != saved.get("size"):
        return False
    if now["mtime_ns"] == saved.get("mtime_ns"):
        return True
    return file_fingerprint(path)["sha256"] == saved.get("sha256")


# --------------------------------------------------------------------------- cache


def entry_dir(cache_dir: str | Path, case_id: str) -> Path:
    """Folder of one cached case."""
    return CacheLayout(cache_dir).case_dir(case_id)


def _entry_is_current(cache_dir: Path, case: Case, params: PreprocessParams) -> bool:
    cache = CacheLayout(cache_dir)
    meta_path = cache.meta(case.case_id)
    if not (
        meta_path.is_file()
        and cache.image(case.case_id).is_file()
        and cache.label(case.case_id).is_file()
    ):
        return False
    try:
        meta = read_json(meta_path)
    except FlareError:
        return False
    return (
        meta.get("params_key") == params.key
        and _same_file(meta.get("image_file", {}), case.image)
        and case.label is not None
        and _same_file(meta.get("label_file", {}), case.label)
    )


def build_entry(case: Case, cache_dir: str | Path, params: PreprocessParams) -> dict:
    """Preprocess one labelled case into its cache folder (atomically); return its meta."""
    if case.label is None:
        raise FlareError("no label file for this image", case.image)
    image, label = load_case(case)
    x, box = prepare_image(image, params)
    y = prepare_label(label, box, params)
    meta = {
        "case_id": case.case_id,
        "image_file": file_fingerprint(case.image),
        "label_file": file_fingerprint(case.label),
        "geometry": image.geometry.to_dict(),
        "canonical_shape": list(image.data.shape),
        "canonical_spacing_mm": list(image.spacing),
        "crop": [[s.start, s.stop] for s in box],
        "grid_shape": list(x.shape),
        "classes_present": sorted(int(c) for c in np.unique(y)),
        "params": params.to_dict(),
        "params_key": params.key,
        "cache_version": CACHE_VERSION,
    }
    with atomic_path(entry_dir(cache_dir, case.case_id), directory=True) as tmp:
        np.save(tmp / CacheLayout.IMAGE, x.astype(np.float16), allow_pickle=False)
        y = np.ascontiguousarray(y, dtype=np.uint8)
        np.save(tmp / CacheLayout.LABEL, y, allow_pickle=False)
        write_json_atomic(tmp / CacheLayout.META, meta)
    return meta


def _run_entries(
    todo: list[Case], cache_dir: Path, params: PreprocessParams, workers: int, progress: bool
):
    """Build entries, in parallel processes when it pays; collect per-case errors."""
    errors: list[FlareError] = []
    bar = tqdm(total=len(todo), desc="preprocess", unit="case", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        for case in todo:
            try:
                build_entry(case, cache_dir, params)
            except FlareError as exc:
                errors.append(exc)
            bar.update()
    else:
        # "spawn": forking a process that already runs TensorFlow threads can deadlock.
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(build_entry, case, cache_dir, params) for case in todo]
            for future in as_completed(futures):
                try:
                    future.result()
                except FlareError as exc:
                    errors.append(exc)
                bar.update()
    bar.close()
    return errors


def build_cache(
    data_dir: str | Path,
    cache_dir: str | Path,
    params: PreprocessParams,
    *,
    workers: int = 0,
    progress: bool = True,
    pseudo: Sequence[Case] = (),
) -> dict:
    """Fill or update the cache for every labelled case in ``data_dir``; return the manifest.

    ``pseudo`` cases (training-only ones, e.g. kept pseudo-labelled scans)
    are cached the same way and listed in the manifest under ``pseudo``.

    Entries whose source files and parameters are unchanged are kept as they
    are; only new or affected cases are (re)built, ``workers`` at a time
    (0 = one per CPU core). A bad case does not stop the others: its error is
    raised after the rest are done, and its entry is never left half-written.

    Raises:
        FlareError: no labelled cases, or one line per the first failing case
            (with a count of any further failures).
    """
    cache_dir = Path(cache_dir)
    found = discover_cases(data_dir)
    cases = found.labelled
    if not cases:
        raise FlareError(
            "no labelled cases (is the labels/ folder empty?)", Path(data_dir) / "labels"
        )
    clash = sorted({c.case_id for c in cases} & {c.case_id for c in pseudo})
    if clash:
        raise FlareError(f"pseudo-labelled case {clash[0]} has a labelled case's id", data_dir)
    cases = (*cases, *pseudo)
    # Temporaries of a run that was killed (a Colab disconnect) are never reused.
    remove_stale_temps(cache_dir)
    remove_stale_temps(CacheLayout(cache_dir).cases_dir)
    todo = [c for c in cases if not _entry_is_current(cache_dir, c, params)]
    if todo:
        # The manifest vouches for every entry. Until all are current again there is
        # none, so a run killed midway never leaves old and new entries under it.
        try:
            CacheLayout(cache_dir).manifest.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise FlareError(f"cannot update the cache ({exc.strerror})", cache_dir) from exc
        errors = _run_entries(todo, cache_dir, params, workers or os.cpu_count() or 1, progress)
        if errors:
            more = f" (and {len(errors) - 1} more failing cases)" if len(errors) > 1 else ""
            raise FlareError(f"{errors[0].problem}{more}", errors[0].path)
    manifest = {
        "cache_version": CACHE_VERSION,
        "params": params.to_dict(),
        "params_key": params.key,
        "data_dir": str(Path(data_dir).resolve()),
        "rebuilt": [c.case_id for c in todo],
        "cases": {c.case_id: str(entry_dir(cache_dir, c.case_id)) for c in cases},
        "pseudo": [c.case_id for c in pseudo],
        "unlabelled": [str(p) for p in found.unlabelled],
        "orphan_labels": [str(p) for p in found.orphan_labels],
        "statistics": dataset_statistics(cache_dir, [c.case_id for c in cases]),
    }
    write_json_atomic(CacheLayout(cache_dir).manifest, manifest)
    return manifest


def dataset_statistics(cache_dir: str | Path, case_ids: Sequence[str]) -> dict:
    """Spacing, grid-size and disk statistics of cached cases, as stored in the manifest.

    ``spacing_mm`` is the source CTs' voxel size (R, A, S) and ``grid_shape`` the
    network grid each case got; each has the per-axis ``min``, ``median`` and ``max``.
    ``cache_mb`` is the size of the cached arrays, so a user can extrapolate the
    disk a data set needs at these settings.
    """
    cache = CacheLayout(cache_dir)
    metas = [read_json(cache.meta(c)) for c in case_ids]
    arrays = [path for c in case_ids for path in (cache.image(c), cache.label(c))]

    def summary(key: str) -> dict[str, list[float]]:
        values = np.array([m[key] for m in metas], dtype=np.float64)
        return {
            "min": values.min(axis=0).tolist(),
            "median": np.median(values, axis=0).tolist(),
            "max": values.max(axis=0).tolist(),
        }

    return {
        "spacing_mm": summary("canonical_spacing_mm"),
        "grid_shape": summary("grid_shape"),
        "cache_mb": round(sum(p.stat().st_size for p in arrays) / 2**20, 2),
    }


def read_manifest(cache_dir: str | Path, params: PreprocessParams | None = None) -> dict:
    """Load ``manifest.json``; if ``params`` is given, check the cache was built with them."""
    cache_dir = Path(cache_dir)
    path = CacheLayout(cache_dir).manifest
    manifest = read_json(path) if path.exists() else None
    if manifest is None:
        raise FlareError(
            "no preprocessed cache here (run flare-preprocess or notebook 02 first)", cache_dir
        )
    if params is not None and manifest.get("params_key") != params.key:
        raise FlareError(
            "cache was built with other preprocessing settings; run flare-preprocess again",
            cache_dir,
        )
    return manifest


@dataclass(frozen=True)
class CacheSummary:
    """What :func:`preprocess_dataset` did: case counts and the split."""

    cache_dir: Path
    n_cases: int
    rebuilt: tuple[str, ...]
    splits: dict[str, list[str]]
    pseudo: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {len(ids)}" for name, ids in self.splits.items())
        extra = f" + {len(self.pseudo)} pseudo-labelled (training only)" if self.pseudo else ""
        return (
            f"cache {self.cache_dir}: {self.n_cases} cases, {len(self.rebuilt)} (re)built, "
            f"{self.n_cases - len(self.rebuilt)} up to date; split: {parts}{extra}"
        )


def preprocess_dataset(
    data_dir: str | Path,
    cache_dir: str | Path,
    cfg: Config,
    *,
    training_only: Sequence[Case] = (),
    workers: int | None = None,
    progress: bool = True,
) -> CacheSummary:
    """Bring the cache up to date and make (or reuse) the train/val/test split.

    This is the one call behind ``flare-preprocess``, notebook 02 and the
    start of training. ``training_only`` cases (e.g. kept pseudo-labelled scans) are
    cached too and listed in the manifest under ``pseudo``: they never enter the
    split, only training. It holds the cache's lock meanwhile: a second process
    updating the same cache is refused (:mod:`flare_helpers.data.lock`).

    Raises:
        FlareError: the cache is in use, or :func:`build_cache`'s errors.
    """
    with FolderLock(CacheLayout(cache_dir).lock, "cache"):
        return _update_cache(data_dir, cache_dir, cfg, training_only, workers, progress)


def _update_cache(
    data_dir: str | Path,
    cache_dir: str | Path,
    cfg: Config,
    pseudo: Sequence[Case],
    workers: int | None,
    progress: bool,
) -> CacheSummary:
    params = PreprocessParams.from_config(cfg)
    workers = cfg.preprocess.workers if workers is None else workers
    manifest = build_cache(
        data_dir, cache_dir, params, workers=workers, progress=progress, pseudo=pseudo
    )
    splits = load_or_make_splits(  # labelled cases only: pseudo-labelled ones only ever train
        CacheLayout(cache_dir).splits,
        [c for c in manifest["cases"] if c not in set(manifest["pseudo"])],
        cfg.data.val_fraction,
        cfg.data.test_fraction,
        cfg.data.split_seed,
    )
    return CacheSummary(
        Path(cache_dir),
        len(manifest["cases"]),
        tuple(manifest["rebuilt"]),
        splits,
        tuple(manifest["pseudo"]),
    )
