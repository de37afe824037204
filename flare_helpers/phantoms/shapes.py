"""Solid shapes on a voxel grid in millimetres, for the CT-like phantoms.

A :class:`Grid` holds the world coordinates (mm) of a volume's voxel centres
as three broadcastable 1D arrays. Every shape is evaluated only inside its
bounding box, so a 512×512×110 volume costs what the organs cost, not what the
volume costs.

Coordinates follow the canonical RAS voxel frame of the rest of the package:
axis 0 toward the patient's right (``+x`` = right), axis 1 anterior, axis 2
superior. Shapes are implicit: a mask is where a signed, roughly metric
"distance" (mm, negative inside) is below zero, so a smooth random field added
to it dents and bulges the surface by about its amplitude in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates in mm: ``x`` (right), ``y`` (anterior), ``z`` (superior)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.size, self.y.size, self.z.size)

    def box(self, lo, hi) -> Box:
        """Voxel slices covering the world box ``lo``–``hi`` (mm), one voxel of margin."""
        out = []
        for axis, a, b in zip((self.x, self.y, self.z), lo, hi, strict=True):
            start = int(np.searchsorted(axis, a)) - 1
            stop = int(np.searchsorted(axis, b)) + 1
            out.append(slice(max(start, 0), max(min(stop, axis.size), 0)))
        return tuple(out)

    def local(self, box: Box, origin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates inside ``box`` relative to ``origin`` (mm), broadcastable."""
        x = self.x[box[0]] - np.float32(origin[0])
        y = self.y[box[1]] - np.float32(origin[1])
        z = self.z[box[2]] - np.float32(origin[2])
        return x[:, None, None], y[None, :, None], z[None, None, :]


def axes_grid(shape, spacing, extra_slices: int = 0) -> Grid:
    """Voxel centres of a volume of ``shape`` centred on the world origin.

    ``extra_slices`` more slices on each end of z continue the same spacing:
    the central ``shape[2] - 2 * extra_slices`` slices sit where a scan without
    them would be.
    """
    axes = [
        ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s))
        for n, s in zip(shape, spacing, strict=True)
    ]
    return Grid(*axes)


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """3×3 rotation (radians): ``yaw`` about z, ``pitch`` about x, ``roll`` about y."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return (rz @ rx @ ry).astype(np.float32)


@dataclass(frozen=True)
class Wobble:
    """A smooth random surface displacement: a sum of separable sinusoids (mm).

    ``amplitude`` mm at wavelengths of ``wavelength`` mm; each term is the
    product of one sine per axis, so it costs multiplications of 1D arrays.
    """

    amplitude: float
    phases: np.ndarray  # (terms, 3)
    freqs: np.ndarray  # (terms, 3), radians per mm

    @classmethod
    def draw(cls, rng: np.random.Generator, amplitude: float, wavelength: float, terms: int = 3):
        freqs = 2 * np.pi / (wavelength * rng.uniform(0.6, 1.4, size=(terms, 3)))
        return cls(
            float(amplitude),
            rng.uniform(0, 2 * np.pi, size=(terms, 3)).astype(np.float32),
            freqs.astype(np.float32),
        )

    def __call__(self, x, y, z) -> np.ndarray | float:
        if not self.amplitude:
            return 0.0
        total = 0.0
        for (px, py, pz), (fx, fy, fz) in zip(self.phases, self.freqs, strict=True):
            total = total + np.sin(fx * x + px) * np.sin(fy * y + py) * np.sin(fz * z + pz)
        return np.float32(self.amplitude / np.sqrt(len(self.phases) / 8.0)) * total


NO_WOBBLE = Wobble(0.0, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))


def ellipsoid_distance(grid: Grid, centre, radii, rot=None, wobble=NO_WOBBLE, box=None):
    """``(box, d)``: a signed pseudo-distance (mm, < 0 inside) to an ellipsoid.

    ``rot`` (3×3) turns the ellipsoid's axes into world axes; ``wobble``
    displaces its surface; ``box`` evaluates it on a given box (to combine
    shapes) instead of its own bounding box.
    """
    radii = np.asarray(radii, dtype=np.float32)
    centre = np.asarray(centre, dtype=np.float32)
    if box is None:
        reach = float(radii.max()) + wobble.amplitude * 1.5 + 1.0
        box = grid.box(centre - reach, centre + reach)
    x, y, z = grid.local(box, centre)
    if rot is not None:
        r = np.asarray(rot, dtype=np.float32).T  # world → ellipsoid axes
        x, y, z = (r[i, 0] * x + r[i, 1] * y + r[i, 2] * z for i in range(3))
    q = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    d = (q - 1.0) * np.float32(radii.min())
    d = d - wobble(x, y, z)
    return box, np.broadcast_to(d, tuple(s.stop - s.start for s in box))


def tube_distance(grid: Grid, points, radius: float, wobble=NO_WOBBLE, box=None):
    """``(box, d)``: signed distance (mm) to a tube of ``radius`` along a polyline."""
    pts = np.asarray(points, dtype=np.float32)
    if box is None:
        reach = radius + wobble.amplitude * 1.5 + 1.0
        box = grid.box(pts.min(0) - reach, pts.max(0) + reach)
    x, y, z = grid.local(box, (0.0, 0.0, 0.0))
    best = None
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        ab = b - a
        t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        best = d2 if best is None else np.minimum(best, d2)
    d = np.sqrt(best) - np.float32(radius) - wobble(x, y, z)
    return box, np.broadcast_to(d, tuple(s.stop - s.start for s in box))


def smooth_min(a, b, k: float):
    """Union of two distance fields, blended over ``k`` mm (no crease where they meet)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - np.float32(k) * h * (1 - h)


def box_union(a: Box, b: Box) -> Box:
    """The smallest box holding both."""
    return tuple(
        slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(a, b, strict=True)
    )
