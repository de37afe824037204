"""Random training patches from a cached case: where to cut, and cutting with padding.

In ``spacing`` mode a cached case is larger than the network input, so each
training sample is a ``patch`` -sized crop of it. A fraction of the crops is
centred on a voxel of a randomly chosen organ present in the case (each
present organ equally likely), the rest are placed uniformly. nnU-Net forces
a third of its patches onto foreground; here the choice is drawn per sample
with probability ``foreground_fraction`` (default 0.33, from
``train.foreground_fraction``), so the share does not depend on the batch
size. Choosing the organ uniformly, not the voxel, gives a kidney as many
centred patches as the liver, which has ~10× its volume.

Arrays are (X, Y, Z) in canonical RAS order; labels are uint8 training classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def patch_start(
    label: np.ndarray,
    patch: Sequence[int],
    rng: np.random.Generator,
    foreground_fraction: float,
) -> tuple[int, int, int]:
    """Corner (x, y, z) of the next patch; the patch lies inside the volume where it fits.

    Draws, always in this order: whether to centre on foreground, then (if so
    and an organ is present) the organ and one of its voxels, else a uniform
    corner. A volume smaller than the patch along an axis gets corner 0 there
    (:func:`cut_patch` pads the rest).
    """
    room = [max(n - p, 0) for n, p in zip(label.shape, patch, strict=True)]
    if rng.random() < foreground_fraction:
        voxels = np.asarray(label).ravel()
        present = np.flatnonzero(np.bincount(voxels, minlength=2)[1:]) + 1
        if present.size:
            organ = int(rng.choice(present))
            flat = np.flatnonzero(voxels == organ)
            voxel = np.unravel_index(int(flat[rng.integers(flat.size)]), label.shape)
            return _centred_on(voxel, patch, room)
    return tuple(int(rng.integers(0, r + 1)) for r in room)


def organ_patch_starts(label: np.ndarray, patch: Sequence[int]) -> list[tuple[int, int, int]]:
    """Corners of one patch per organ present in ``label``, in class order: each patch
    centred on its organ's bounding box (kept inside the volume where it fits), so an
    organ larger than the patch shows its middle. Validation scores these patches."""
    label = np.asarray(label)
    room = [max(n - p, 0) for n, p in zip(label.shape, patch, strict=True)]
    starts = []
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=2)[1:]) + 1
    for organ in present:
        mask = label == organ
        centre = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            hits = np.flatnonzero(mask.any(axis=other))
            centre.append((int(hits[0]) + int(hits[-1])) // 2)
        starts.append(_centred_on(centre, patch, room))
    return starts


def _centred_on(
    voxel: Sequence[int], patch: Sequence[int], room: Sequence[int]
) -> tuple[int, int, int]:
    """Corner of the patch centred on ``voxel``, moved inside the volume (corner ≤ ``room``)."""
    return tuple(int(np.clip(v - p // 2, 0, r)) for v, p, r in zip(voxel, patch, room, strict=True))


def cut_patch(
    array: np.ndarray, start: Sequence[int], patch: Sequence[int], fill: float = 0
) -> np.ndarray:
    """``array[start : start + patch]`` as a new array, padded with ``fill`` past the edges."""
    out = np.full(tuple(patch), fill, dtype=array.dtype)
    src = tuple(slice(s, min(s + p, n)) for s, p, n in zip(start, patch, array.shape, strict=True))
    out[tuple(slice(0, s.stop - s.start) for s in src)] = array[src]
    return out
