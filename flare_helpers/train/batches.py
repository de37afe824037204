"""Training and validation batches streamed from the preprocessing cache.

:class:`FlareDataset` is a ``keras.utils.PyDataset``: Keras' ``fit`` can fill
its batches in worker threads or processes. Volumes are read from the cache
per access (memory-mapped ``.npy``), augmented on the fly and one-hot encoded;
nothing is held in RAM between batches. Whole cached volumes are served in
``resize`` mode; in ``spacing`` mode each sample is a random patch of its case
(:mod:`flare_helpers.train.patches`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from flare_helpers.config import AugmentConfig, TrainConfig
from flare_helpers.data.fileio import read_json
from flare_helpers.data.labels import DEFAULT_ORGANS, OrganSet, lr_swap_pairs, one_hot
from flare_helpers.data.layout import CacheLayout
from flare_helpers.errors import FlareError
from flare_helpers.train.augment import augment_patch
from flare_helpers.train.patches import cut_patch, organ_patch_starts, patch_start

#: ``np.load`` parses a ``.npy`` header with ``ast.literal_eval``; parses in several
#: threads at once can crash CPython 3.11 ("AST constructor recursion depth mismatch",
#: cpython issue 106905), so Keras' worker threads parse headers one at a time.
_HEADER_LOCK = threading.Lock()


def weighted_training_cases(
    cache_dir: str | Path, train_ids: Sequence[str], extra_weight: float
) -> tuple[list[str], list[float] | None]:
    """Training case ids (the split's, then the cache's training-only extras) and their weights.

    The manifest lists under ``pseudo`` the cases that only ever train (kept
    pseudo-labelled scans, :func:`flare_helpers.preprocess.pipeline.preprocess_dataset`'s
    ``training_only``); each is drawn ``extra_weight`` times as often as a
    case of the split. Returns ``(train_ids, None)`` when there are none, or when
    ``extra_weight`` is 0.

    Raises:
        FlareError: the cache has no manifest.
    """
    manifest_path = CacheLayout(Path(cache_dir)).manifest
    if not manifest_path.exists():
        raise FlareError(
            "no preprocessed cache here (run flare-preprocess or notebook 02 first)", cache_dir
        )
    split = set(train_ids)
    extra = [c for c in read_json(manifest_path).get("pseudo", []) if c not in split]
    if not extra or extra_weight == 0:
        return list(train_ids), None
    return [*train_ids, *extra], [1.0] * len(train_ids) + [extra_weight] * len(extra)


def _open(path: Path) -> np.ndarray:
    """Memory-map a cached array (header read now, voxels only when touched); thread-safe."""
    try:
        with _HEADER_LOCK:
            return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise FlareError("cached array is missing (run flare-preprocess again)", path) from exc
    except (OSError, ValueError) as exc:
        raise FlareError(f"not a readable .npy array ({exc}); run flare-preprocess", path) from exc


class FlareDataset(keras.utils.PyDataset):
    """Batches ``(x, y)`` of cached cases: x (B, X, Y, Z, 1) float32 in [0, 1],
    y one-hot (B, X, Y, Z, n_classes) float32; the last batch may be smaller.

    Args:
        cache_dir: the preprocessing cache (``cases/<case_id>/image.npy``, ``label.npy``).
        case_ids: cases to serve, e.g. ``read_splits(...)["train"]``.
        n_classes: background + one per organ (must match ``organs``).
        batch_size: volumes per batch.
        augment: training augmentation; ``None`` (validation) serves the cache as is.
        organs: training organs in class order; gives the left-right class pairs.
        shuffle: a new case order every epoch (else the order of ``case_ids``).
        seed: seeds the order and the augmentation.
        epoch: the epoch whose order and augmentation batches now use; when resuming,
            pass ``initial_epoch`` (see below).
        workers, use_multiprocessing, max_queue_size: how Keras' ``fit`` fills batches.
        drop_remainder: serve only full batches (needed when a batch is split over
            several devices); ignored when there are fewer cases than one batch.
        patch_shape: serve random ``patch_shape`` crops instead of whole volumes
            (``spacing`` mode; cases may then differ in shape); a sample is centred on
            an organ voxel with probability ``foreground_fraction``
            (:func:`patches.patch_start`).
        steps_per_epoch: batches per epoch whatever the number of cases (nnU-Net's
            250): ``steps_per_epoch × batch_size`` samples, the cases taken in a new
            seeded order each round, so each appears equally often (±1). 0: one
            sample per case per epoch.
        voxel_mm: the grid's voxel size, so that augmentation rotates the body in mm.
        organ_patches: validation patches instead: one centred on each organ present
            in each case (:func:`patches.organ_patch_starts`), the same every epoch,
            so every organ of every case is scored and scores compare across epochs.
        case_weights: how often each case is drawn relative to a weight-1 case
            (pseudo-labelled cases, ``pseudo.sample_weight``): case ``i`` appears
            ``weights[i] / sum(weights)`` of an epoch's samples (the fractional parts
            drawn per epoch); with ``steps_per_epoch=0`` an epoch has
            ``round(sum(weights))`` samples.

    Reproducibility, also with workers: batch ``i`` is a pure function of
    ``(seed, epoch, i)``. The case order of an epoch is
    ``default_rng([seed, epoch]).permutation(n)``; the sample at position ``p``
    of that order is augmented with ``default_rng([seed, epoch, p])``. No random
    state is shared or advanced between batches, so which thread or process
    computes a batch, and in what order, does not matter, and a run resumed
    with ``epoch=k`` sees the same data as one that never stopped.

    How the epoch reaches Keras' workers (Keras 3 ``PyDatasetAdapter`` and
    ``OrderedEnqueuer``): at each epoch start the adapter starts an enqueuer
    that registers this object and creates a fresh worker pool: threads share
    this very object; processes receive it as the pool initializer's argument,
    copied by ``fork`` (or pickled under ``spawn``/``forkserver``: the object
    holds only paths and settings, so no voxel data is copied). At the epoch end
    the adapter stops the enqueuer, having drained every pending batch, and only
    then calls :meth:`on_epoch_end`, which advances :attr:`epoch`. The next
    epoch's pool is therefore made from the advanced object. ``on_epoch_begin``
    would be too late for this: the adapter starts the pool before calling it.

    With ``fit``, pass ``shuffle=False`` (this class shuffles; Keras' own
    shuffle reorders batch indices with Python's ``random``) and leave
    ``steps_per_epoch`` unset or equal to ``len(dataset)``: with fewer steps
    Keras keeps one iterator running across epochs. ``fit`` also calls
    :meth:`on_epoch_end` once before its first epoch (``EpochIterator.reset``),
    so Keras epoch ``k`` serves dataset epoch ``epoch + k - initial_epoch + 1``.
    To resume, build the dataset with ``epoch=initial_epoch`` and call
    ``fit(..., initial_epoch=initial_epoch)``: every epoch then gets the data of
    the uninterrupted run (checked with ``workers=2, use_multiprocessing=True``).
    On the JAX backend prefer threads: JAX warns that forking its process may
    deadlock.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        case_ids: Sequence[str],
        n_classes: int,
        batch_size: int,
        *,
        augment: AugmentConfig | None = None,
        organs: Sequence[str] = DEFAULT_ORGANS,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 8,
        drop_remainder: bool = False,
        patch_shape: Sequence[int] | None = None,
        steps_per_epoch: int = 0,
        voxel_mm: Sequence[float] | None = None,
        foreground_fraction: float = TrainConfig.foreground_fraction,
        organ_patches: bool = False,
        case_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
        self.cache_dir = Path(cache_dir)
        self.case_ids = tuple(str(c) for c in case_ids)
        organ_set = OrganSet.from_names(organs)
        if not self.case_ids:
            raise FlareError("no cases to serve (is this split empty?)", self.cache_dir)
        if len(set(self.case_ids)) != len(self.case_ids):
            raise FlareError("a case is listed twice", self.cache_dir)
        if n_classes != organ_set.n_classes:
            raise FlareError(
                f"n_classes is {n_classes} but {len(organ_set.organs)} organs give "
                f"{organ_set.n_classes} classes (background + organs)"
            )
        if batch_size < 1 or seed < 0 or epoch < 0 or steps_per_epoch < 0:
            raise FlareError(
                "need batch_size >= 1, seed >= 0, epoch >= 0, steps_per_epoch >= 0; got "
                f"{batch_size}, {seed}, {epoch}, {steps_per_epoch}"
            )
        self.n_classes = int(n_classes)
        self.batch_size = int(batch_size)
        self.patch_shape = tuple(int(n) for n in patch_shape) if patch_shape else None
        self.steps_per_epoch = int(steps_per_epoch)
        self.voxel_mm = tuple(float(v) for v in voxel_mm) if voxel_mm is not None else None
        self.drop_remainder = bool(drop_remainder)
        self.foreground_fraction = float(foreground_fraction)
        self._arrays: dict[Path, np.ndarray] = {}
        self._order_cache: tuple[int, np.ndarray] | None = None
        self.augment = augment if augment is not None and augment.enabled else None
        flips = self.augment is not None and self.augment.lr_flip_probability > 0
        self.swap_classes = tuple(lr_swap_pairs(organ_set.organs)) if flips else ()
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = int(epoch)
        cache = CacheLayout(self.cache_dir)
        self._files = tuple((cache.image(c), cache.label(c)) for c in self.case_ids)
        shape = self._check_cache()
        self.volume_shape = self.patch_shape or shape
        #: (case index, patch corner) of each validation patch; empty for random patches.
        self.fixed_samples: tuple[tuple[int, tuple[int, int, int]], ...] = ()
        if organ_patches and self.patch_shape is not None:
            self.fixed_samples = tuple(
                (index, start)
                for index in range(len(self.case_ids))
                for start in organ_patch_starts(
                    self._array(self._files[index][1]), self.patch_shape
                )
            )
            if not self.fixed_samples:
                raise FlareError("no organ in any of these cases to validate on", self.cache_dir)
        by_steps = self.steps_per_epoch * self.batch_size
        self.n_samples = len(self.fixed_samples) or by_steps or len(self.case_ids)
        self.case_weights = None
        if case_weights is not None and not self.fixed_samples:
            weights = np.asarray(case_weights, dtype=np.float64)
            if weights.shape != (len(self.case_ids),) or (weights < 0).any() or weights.sum() <= 0:
                raise FlareError(
                    f"need one weight >= 0 per case ({len(self.case_ids)}), not all 0; "
                    f"got {list(weights)}"
                )
            if by_steps:
                self.case_weights = weights / weights.sum() * by_steps
            else:
                self.case_weights = weights
                self.n_samples = max(1, int(round(weights.sum())))
        self.drop_remainder = bool(drop_remainder) and self.n_samples >= self.batch_size

    def _check_cache(self) -> tuple[int, int, int]:
        """Every case present, 3D, image and label alike (one shape for all unless
        patches are cut); return the first case's shape."""
        shape = None
        for case_id, (image_path, label_path) in zip(self.case_ids, self._files, strict=True):
            if not image_path.parent.is_dir():
                raise FlareError(
                    f"case {case_id} is not in the cache (run flare-preprocess)", image_path.parent
                )
            image, label = self._array(image_path), self._array(label_path)
            if image.ndim != 3 or not np.issubdtype(image.dtype, np.floating):
                raise FlareError(
                    f"expected a 3D float image, got {image.dtype} {image.shape}", image_path
                )
            if label.shape != image.shape or label.dtype != np.uint8:
                raise FlareError(
                    f"label is {label.dtype} {label.shape}, image is {image.shape}", label_path
                )
            if shape is not None and image.shape != shape and self.patch_shape is None:
                raise FlareError(
                    f"shape {image.shape} differs from {shape} of case {self.case_ids[0]} "
                    "(rebuild the cache with one preprocess.target_shape)",
                    image_path,
                )
            shape = shape or image.shape
        return tuple(int(n) for n in shape)

    def _array(self, path: Path) -> np.ndarray:
        """The memory map of a cached array, opened once per dataset (and per process)."""
        array = self._arrays.get(path)
        if array is None:
            array = self._arrays.setdefault(path, _open(path))
        return array

    def __getstate__(self) -> dict:
        """Pickled for worker processes without the memory maps (they reopen them)."""
        return {**self.__dict__, "_arrays": {}}

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.n_samples // self.batch_size
        return math.ceil(self.n_samples / self.batch_size)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """Case indices (into ``case_ids``) in the order served in ``epoch`` (default: current);
        each case appears equally often (±1) unless weighted. Computed once per epoch (every
        sample of a batch asks for it); the array is read-only."""
        epoch = self.epoch if epoch is None else epoch
        cached = self._order_cache
        if cached is None or cached[0] != epoch:
            order = self._compute_order(epoch)
            order.setflags(write=False)
            cached = self._order_cache = (epoch, order)
        return cached[1]

    def _compute_order(self, epoch: int) -> np.ndarray:
        if self.fixed_samples:
            return np.array([index for index, _ in self.fixed_samples], dtype=np.int64)
        if self.case_weights is not None:
            return self._weighted_order(epoch)
        n_cases = len(self.case_ids)
        if not self.shuffle:
            return np.arange(self.n_samples) % n_cases
        if self.n_samples == n_cases:
            return np.random.default_rng([self.seed, epoch]).permutation(n_cases)
        rounds = -(-self.n_samples // n_cases)
        orders = [
            np.random.default_rng([self.seed, epoch, 3, k]).permutation(n_cases)
            for k in range(rounds)
        ]
        return np.concatenate(orders)[: self.n_samples]

    def _weighted_order(self, epoch: int) -> np.ndarray:
        """Each case ``floor(weight)`` times, the remaining samples drawn by the fractional parts."""
        counts = np.floor(self.case_weights).astype(np.int64)
        rest = self.n_samples - int(counts.sum())
        fractions = self.case_weights - counts
        if rest > 0:
            rng = np.random.default_rng([self.seed, epoch, 2])
            extra = rng.choice(len(counts), rest, replace=False, p=fractions / fractions.sum())
            counts[extra] += 1
        samples = np.repeat(np.arange(len(counts)), counts)
        if self.shuffle:
            samples = samples[np.random.default_rng([self.seed, epoch]).permutation(len(samples))]
        return samples

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Case ``case_ids[index]`` from the cache: float32 image, uint8 label (X, Y, Z)."""
        image_path, label_path = self._files[index]
        image = np.asarray(self._array(image_path), dtype=np.float32)
        label = np.array(self._array(label_path), dtype=np.uint8)
        if label.shape != image.shape or (
            self.patch_shape is None and image.shape != self.volume_shape
        ):
            raise FlareError(
                f"cache entry changed shape to {image.shape} (expected {self.volume_shape})",
                image_path,
            )
        return image, label

    def start(self, label: np.ndarray, position: int) -> tuple[int, int, int]:
        """Corner of the patch of ``position`` (same draw for a position and epoch, whatever
        the thread); ``(0, 0, 0)`` for whole volumes."""
        if self.patch_shape is None:
            return (0, 0, 0)
        if self.fixed_samples:
            return self.fixed_samples[position][1]
        rng = np.random.default_rng([self.seed, self.epoch, position, 1])
        return patch_start(label, self.patch_shape, rng, self.foreground_fraction)

    def sample(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and label at ``position`` of the current epoch's order, augmented if set.

        The patch is cut from the memory-mapped case; an augmented one is resampled
        from the case around the patch, so a rotation shows anatomy, not padding."""
        image_path, label_path = self._files[int(self.order()[position])]
        image, label = self._array(image_path), self._array(label_path)
        if label.shape != image.shape or (
            self.patch_shape is None and image.shape != self.volume_shape
        ):
            raise FlareError(
                f"cache entry changed shape to {image.shape} (expected {self.volume_shape})",
                image_path,
            )
        start = self.start(label, position)
        if self.augment is None:
            image_out = cut_patch(image, start, self.volume_shape).astype(np.float32, copy=False)
            return image_out, cut_patch(label, start, self.volume_shape).astype(np.uint8)
        rng = np.random.default_rng([self.seed, self.epoch, position])
        return augment_patch(
            image,
            label,
            start,
            self.volume_shape,
            rng,
            self.augment,
            self.swap_classes,
            self.voxel_mm,
        )

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        positions = range(
            index * self.batch_size, min((index + 1) * self.batch_size, self.n_samples)
        )
        x = np.empty((len(positions), *self.volume_shape, 1), dtype=np.float32)
        y = np.empty((len(positions), *self.volume_shape, self.n_classes), dtype=np.float32)
        for k, position in enumerate(positions):
            image, label = self.sample(position)
            x[k, ..., 0] = image
            try:
                one_hot(label, self.n_classes, out=y[k])
            except ValueError as exc:
                label_path = self._files[int(self.order()[position])][1]
                raise FlareError(f"{exc} (wrong organ list?)", label_path) from exc
        return x, y

    def on_epoch_end(self) -> None:
        """Advance to the next epoch's order and augmentation (see the class docstring)."""
        self.epoch += 1
