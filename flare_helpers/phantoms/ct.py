"""CT-like abdominal phantoms: the default family of ``flare-synth``.

One case is an abdomen of CT size (body 300–400 mm wide) on whatever voxel
grid is asked for: the grid's spacing follows from the drawn field of view, so
a 64×64×32 test phantom and a 512×512×110 one hold the same anatomy, coarser
or finer. Built in world millimetres in the canonical RAS frame (x → patient
right, y → anterior, z → superior), centred on the grid.

What makes it hard (each drawn per case from ``default_rng([seed, case, 26])``):

* organs that are not ellipsoids: a liver of right lobe, left lobe reaching
  across the midline, caudate lobe, a notch and the gallbladder fossa; bean
  kidneys with a hilum, renal pelvis and a cortex that enhances before the
  medulla; a crescent spleen against the ribs; surfaces dented by smooth random
  fields; sizes and positions varying between patients;
* the neighbours: stomach and colon and small bowel holding gas, fluid or oral
  contrast, pancreas, duodenum, gallbladder, adrenals, aorta, IVC, portal and
  hepatic veins inside the liver, renal vessels at the hilum, psoas and back
  muscles, abdominal wall, vertebrae with discs and canal, ribs, the table, and
  arms beside the body in some scans;
* intensity as scanners give it: non-contrast, arterial or portal-venous phase
  (:mod:`flare_helpers.phantoms.hu`, with sources), cysts and tumours in liver
  and kidneys, blur of the scanner's point spread and slice thickness
  (partial-volume edges), correlated plus white noise of per-case strength, a
  smooth low-frequency bias, and dark beam-hardening streaks from the spine.

Positions relative to the spine and organ sizes come from the real CT in
``flare_helpers/data/real_ct`` (case 9001: liver centre 68 mm right of and 79 mm in
front of the spine's centroid, kidneys 71–75 mm lateral, the right kidney 12 mm
lower, spleen 110 mm left; liver 1123 ml (top cut), spleen 261 ml, kidneys 189
and 139 ml; body 363 mm wide, 240–290 mm deep) and from published ranges:
liver 1000–2000 ml (P. A. Heinemann et al., *Liver Transpl Surg* 5 (1999)
366–368, standard liver volume), spleen 107–314 ml (P. Prassopoulos et al.,
*Eur Radiol* 7 (1997) 246–248), kidneys 100–125 mm long (N. A. Emamian et al.,
*AJR* 160 (1993) 83–86), the right kidney 1–2 cm lower than the left (same
source). The shapes are drawn, not copied from 9001: it is the check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from flare_helpers.data.labels import FLARE22_IDS
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.hu import PHASE_WEIGHTS, PHASES, TUMOUR_DROP, draw_hu
from flare_helpers.phantoms.shapes import (
    Grid,
    Wobble,
    axes_grid,
    box_union,
    ellipsoid_distance,
    rotation,
    smooth_min,
    tube_distance,
)

AIR_HU = -1000.0
#: Default SynthSeg-like per-tissue HU jitter (sd, HU) of the ``ct`` family.
DEFAULT_JITTER = 15.0


class _Canvas:
    """The image and label volumes being painted, with the case's HU table."""

    def __init__(self, grid: Grid, hu: dict[str, float]):
        self.grid = grid
        self.hu = hu
        self.image = np.full(grid.shape, AIR_HU, dtype=np.float32)
        self.labels = np.zeros(grid.shape, dtype=np.uint8)
        #: Where labelled organs may be painted (the abdominal cavity), once known.
        self.cavity: np.ndarray | None = None

    def paint(self, box, mask, hu, organ: str | None = None, where=None) -> None:
        """Set HU (a number or a tissue name) in ``mask``; labels too when ``organ`` is given.

        ``where`` (a function of the label box) restricts painting, e.g. to the body.
        """
        if mask.size == 0:
            return
        if where is not None:
            mask = mask & where(self.labels[box], self.image[box])
        if organ and self.cavity is not None:
            mask = mask & self.cavity[box]
        value = self.hu[hu] if isinstance(hu, str) else float(hu)
        self.image[box][mask] = value
        if organ is not None:
            self.labels[box][mask] = FLARE22_IDS[organ] if organ else 0


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _body(c: _Canvas, rng, a: float, b: float, yb: float) -> tuple[np.ndarray, dict]:
    """Skin, subcutaneous fat, abdominal wall muscle and visceral fat; returns the body mask.

    The cross-section is a superellipse, flattened at the back (table side),
    slightly wider toward the pelvis.
    """
    g = c.grid
    y = g.y - np.float32(yb)
    p = np.where(y < 0, 3.0, 2.0).astype(np.float32)[None, :]  # (1, Y)
    taper = (1.0 + np.float32(_u(rng, -0.05, 0.05)) * (g.z / 150.0)).astype(np.float32)
    stretch = taper[None, None, :] ** -p[..., None]  # (1, Y, Z)
    fat = _u(rng, 5, 15) + (a - 140) * 0.4  # subcutaneous fat (mm): thicker in wider bodies
    wall = _u(rng, 8, 15)  # abdominal wall muscle (mm)

    def inside(ha: float, hb: float) -> np.ndarray:
        across = (np.abs(g.x[:, None] / ha) ** p)[..., None]  # (X, Y, 1)
        depth = (np.abs(y / hb)[None, :] ** p)[..., None]  # (1, Y, 1)
        return across * stretch + depth <= 1.0

    body = inside(a, b)
    full = (slice(None),) * 3
    c.paint(full, body, "fat")
    c.paint(full, inside(a - fat, b - fat), "muscle")
    cavity = inside(a - fat - wall, b - fat - wall)
    c.paint(full, cavity, "fat")
    c.cavity = cavity
    return body, {"inner_a": a - fat - wall, "inner_b": b - fat - wall}


def _table(c: _Canvas, rng, y_back: float) -> None:
    """The patient table: two thin carbon sheets with foam between, below the back."""
    g = c.grid
    top = y_back - _u(rng, 2, 15)
    x = g.x[:, None, None]
    y = g.y[None, :, None]
    curve = np.float32(top) + (x / 400.0) ** 2 * 30.0
    within = np.abs(x) < 240
    sheet = within & (np.abs(y - curve) < 2.0)
    foam = within & (y < curve - 2.0) & (y > curve - 35.0)
    bottom = within & (np.abs(y - (curve - 37.0)) < 2.0)
    full = (slice(None),) * 3
    for mask, hu in ((foam, -850.0), (sheet, 250.0), (bottom, 250.0)):
        c.paint(full, np.broadcast_to(mask, g.shape), hu)


def _arms(c: _Canvas, rng, a: float, yb: float) -> None:
    """Arms down beside the body (some scans): muscle and fat around a humerus."""
    g = c.grid
    for side in (1, -1):
        cx = side * (a + _u(rng, 25, 60))
        cy = yb + _u(rng, -30, 30)
        ra, rb = _u(rng, 38, 50), _u(rng, 42, 55)
        x, y = g.x[:, None, None] - cx, g.y[None, :, None] - cy
        full = (slice(None),) * 3
        shape = g.shape
        c.paint(full, np.broadcast_to((x / ra) ** 2 + (y / rb) ** 2 <= 1, shape), "fat")
        c.paint(
            full, np.broadcast_to((x / (ra - 8)) ** 2 + (y / (rb - 8)) ** 2 <= 1, shape), "muscle"
        )
        bone = x**2 + (y + _u(rng, -10, 10)) ** 2
        c.paint(full, np.broadcast_to(bone <= 12.0**2, shape), "cortical_bone")
        c.paint(full, np.broadcast_to(bone <= 8.0**2, shape), "cancellous_bone")


def _spine(c: _Canvas, rng, xs: float, ys: float) -> tuple[float, float]:
    """Vertebral bodies with discs, canal, posterior elements; back muscles and psoas."""
    g = c.grid
    full = (slice(None),) * 3
    rx, ry = _u(rng, 20, 25), _u(rng, 15, 19)
    x, y, z = g.x[:, None, None] - xs, g.y[None, :, None] - ys, g.z[None, None, :]
    shape = g.shape
    # Back muscles (erector spinae) either side of the spinous process, full length.
    for side in (1, -1):
        m = ((x - side * 32) / _u(rng, 24, 32)) ** 2 + ((y + 52) / _u(rng, 22, 28)) ** 2 <= 1
        c.paint(full, np.broadcast_to(m, shape), "muscle")
    period, disc, phase = _u(rng, 33, 38), _u(rng, 7, 10), _u(rng, 0, 40)
    in_disc = ((z - phase) % period) < disc
    r = (x / rx) ** 2 + (y / ry) ** 2
    c.paint(full, np.broadcast_to(r <= 1, shape), "cortical_bone")
    inner = np.broadcast_to(r <= (1 - 2.5 / rx) ** 2, shape)
    c.paint(full, inner & ~np.broadcast_to(in_disc, shape), "cancellous_bone")
    c.paint(full, inner & np.broadcast_to(in_disc, shape), "disc")
    # Posterior arch: ring around the canal, spinous process behind it.
    canal_y = -ry - 11
    rc = np.sqrt(x**2 + (y - canal_y) ** 2)
    arch = (rc <= 17) & (y < -ry + 4)
    spinous = (np.abs(x) < 4) & (y < canal_y - 10) & (y > canal_y - 42)
    bone = np.broadcast_to((arch | spinous), shape) & ~np.broadcast_to(in_disc, shape)
    c.paint(full, bone, "cortical_bone")
    c.paint(full, np.broadcast_to(rc <= 9, shape), "csf")
    return rx, ry


def _psoas(c: _Canvas, rng, xs: float, ys: float, z_k: float) -> None:
    """Psoas muscles beside the vertebral bodies, growing toward the pelvis."""
    for side in (1, -1):
        top, bottom = z_k + _u(rng, 30, 60), c.grid.z[0] - 10
        pts = [(xs + side * 32, ys + 2, top), (xs + side * 50, ys + 20, bottom)]
        radius = _u(rng, 14, 20)
        box, d = tube_distance(c.grid, pts, radius)
        zz = c.grid.z[box[2]][None, None, :]
        d = d + np.float32(radius) * np.clip((zz - (top - 60)) / 60.0, 0, 1) * 0.7
        c.paint(box, d < 0, "muscle")


def _ribs(c: _Canvas, rng, inner: dict, yb: float, z_k: float, xs: float) -> None:
    """Ribs as bands of a ring inside the body wall, sloping down toward the front."""
    g = c.grid
    a, b = inner["inner_a"] + 6, inner["inner_b"] + 6
    x, y = g.x[:, None, None] - xs, g.y[None, :, None] - np.float32(yb)
    ring = np.abs(np.sqrt((x / a) ** 2 + (y / b) ** 2) - 1.0) * min(a, b) < 5.0
    phi = np.arccos(np.clip(-y / np.maximum(np.sqrt(x**2 + y**2), 1e-3), -1, 1))  # 0 at back
    z = g.z[None, None, :]
    spacing = _u(rng, 28, 36)
    drop = _u(rng, 70, 110)
    lowest = z_k + _u(rng, -10, 25)
    ribs = np.zeros(g.shape, dtype=bool)
    for i in range(8):
        z_rib = lowest + i * spacing - drop * (1 - np.cos(phi)) / 2
        extent = phi < (0.5 + 0.04 * i) * np.pi
        ribs |= ring & extent & (np.abs(z - z_rib) < 4.5)
    c.paint((slice(None),) * 3, ribs, "cortical_bone")


def _bowel(c: _Canvas, rng, xs, ys, z_k, inner) -> None:
    """Colon frame and small-bowel loops with gas, fluid, faeces or oral contrast."""
    contrast = rng.random() < 0.35  # oral contrast given in about a third of scans
    yf = ys + inner["inner_b"] * 0.8  # toward the front wall
    colon = [
        (xs + _u(rng, 85, 115), ys + _u(rng, 10, 40), z_k - _u(rng, 130, 160)),
        (xs + _u(rng, 85, 115), ys + _u(rng, 20, 45), z_k - _u(rng, 0, 25)),
        (xs + _u(rng, 40, 70), yf - _u(rng, 20, 40), z_k + _u(rng, -10, 20)),
        (xs - _u(rng, 20, 60), yf - _u(rng, 10, 35), z_k - _u(rng, 10, 50)),
        (xs - _u(rng, 90, 120), ys + _u(rng, 20, 50), z_k + _u(rng, 10, 50)),
        (xs - _u(rng, 90, 120), ys + _u(rng, 10, 40), z_k - _u(rng, 130, 160)),
    ]
    _hollow(c, rng, colon, _u(rng, 16, 24), contrast, "faeces")
    for _ in range(int(rng.integers(5, 10))):
        start = np.array([xs + _u(rng, -80, 80), ys + _u(rng, 50, 120), z_k - _u(rng, 40, 160)])
        pts = [start]
        for _ in range(3):
            pts.append(pts[-1] + rng.normal(0, 30, size=3))
        _hollow(c, rng, pts, _u(rng, 9, 14), contrast, "water")


def _hollow(c: _Canvas, rng, pts, radius, contrast: bool, filling: str, organ=None) -> None:
    """A tube of bowel wall with contents: gas above (anterior) a fluid level."""
    wob = Wobble.draw(rng, radius * 0.15, 40.0)
    box, d = tube_distance(c.grid, pts, radius, wob)
    if box[0].stop <= box[0].start or box[1].stop <= box[1].start or box[2].stop <= box[2].start:
        return
    c.paint(box, d < 0, "bowel_wall", organ if organ else None)
    content = "oral_contrast" if contrast and rng.random() < 0.7 else filling
    inside = d < -3.0
    c.paint(box, inside, content)
    if rng.random() < 0.5:  # gas rises to the front in a supine patient
        level = np.float32(np.mean([p[1] for p in pts]) + _u(rng, -0.3, 0.8) * radius)
        gas = inside & (c.grid.y[box[1]][None, :, None] > level)
        c.paint(box, gas, "gas")


def _liver(c: _Canvas, rng, xs, ys, z_k, sy: float) -> dict:
    """Right, left and caudate lobes blended, a notch and the gallbladder fossa; vessels, lesions."""
    g = c.grid
    zr = z_k + _u(rng, 55, 85)
    right = (xs + _u(rng, 55, 80), ys + sy * _u(rng, 50, 75), zr)
    r_right = (_u(rng, 58, 72), sy * _u(rng, 62, 78), _u(rng, 60, 80))
    left = (xs - _u(rng, 5, 35), ys + sy * _u(rng, 95, 120), zr + _u(rng, 10, 35))
    r_left = (_u(rng, 55, 75), sy * _u(rng, 28, 42), _u(rng, 35, 50))
    caudate = (xs + _u(rng, 10, 22), ys + sy * _u(rng, 32, 45), zr + _u(rng, 0, 20))
    wob = Wobble.draw(rng, _u(rng, 5, 9), _u(rng, 70, 120))
    box_r, _ = ellipsoid_distance(g, right, np.array(r_right) + 12)
    box_l, _ = ellipsoid_distance(g, left, np.array(r_left) + 12)
    box = box_union(box_r, box_l)
    if min(s.stop - s.start for s in box) <= 0:
        return {}
    _, dr = ellipsoid_distance(g, right, r_right, rotation(_u(rng, -0.2, 0.2)), wob, box=box)
    _, dl = ellipsoid_distance(g, left, r_left, rotation(_u(rng, -0.35, 0.1)), wob, box=box)
    _, dc = ellipsoid_distance(g, caudate, (18, 18, 32), None, wob, box=box)
    d = smooth_min(smooth_min(dr, dl, 25.0), dc, 10.0)
    notch = (xs + _u(rng, -5, 20), ys + sy * _u(rng, 120, 150), zr - _u(rng, 30, 60))
    _, dn = ellipsoid_distance(g, notch, (15, 30, 30), box=box)
    d = np.maximum(d, -dn)
    # Gallbladder under the right lobe, in its fossa.
    gb = (xs + _u(rng, 35, 55), ys + sy * _u(rng, 85, 110), zr - r_right[2] * _u(rng, 0.45, 0.7))
    gb_r = (_u(rng, 13, 20), _u(rng, 13, 20), _u(rng, 28, 42))
    gb_rot = rotation(0.0, _u(rng, -0.5, -0.2), _u(rng, -0.2, 0.2))
    _, dg = ellipsoid_distance(g, gb, gb_r, gb_rot, box=box)
    d = np.maximum(d, -(dg - 3.0))
    liver = d < 0
    c.paint(box, liver, "liver", "liver")
    # Hepatic veins fanning from the IVC at the dome; portal vein entering at the hilum.
    ivc_top = (xs + 22, ys + 30, zr + r_right[2] * 0.6)
    for tip in (
        (right[0] + 50, right[1] + 20, zr + 10),
        (xs + 25, right[1] + 40, zr + 15),
        (left[0] - 20, left[1], left[2]),
    ):
        vb, vd = tube_distance(g, [ivc_top, tip], _u(rng, 3.5, 6.5))
        c.paint(vb, vd < 0, "hepatic_vein", where=lambda lab, img: lab == FLARE22_IDS["liver"])
    hilum = (xs + _u(rng, 30, 45), ys + sy * _u(rng, 55, 70), zr - _u(rng, 10, 25))
    trunk = (xs + _u(rng, 5, 15), ys + sy * _u(rng, 45, 60), z_k + _u(rng, 0, 15))
    vb, vd = tube_distance(g, [trunk, hilum], _u(rng, 6, 8))
    c.paint(vb, vd < 0, "portal_vein")
    for tip in ((right[0] + 30, right[1], zr - 10), (left[0], left[1] - 10, left[2] - 10)):
        vb, vd = tube_distance(g, [hilum, tip], _u(rng, 3.5, 5.5))
        c.paint(vb, vd < 0, "portal_vein", where=lambda lab, img: lab == FLARE22_IDS["liver"])
    _lesions(c, rng, box, liver, "liver", float(rng.poisson(0.8)), (5, 25))
    gbox, gd = ellipsoid_distance(g, gb, gb_r, gb_rot)
    c.paint(gbox, gd < 0, "bile", "gallbladder")
    return {"right": right, "r_right": r_right}


def _lesions(c: _Canvas, rng, box, mask, organ: str, n: float, radius) -> None:
    """``n`` cysts or tumours (spheres) centred inside ``mask``; they keep the organ's label."""
    n = int(n)
    inside = np.argwhere(mask)
    if n == 0 or inside.size == 0:
        return
    g = c.grid
    base = c.hu["liver"] if organ == "liver" else c.hu["kidney_cortex"]
    for _ in range(n):
        i, j, k = inside[rng.integers(len(inside))]
        centre = (
            g.x[box[0]][i],
            g.y[box[1]][j],
            g.z[box[2]][k],
        )
        r = _u(rng, *radius)
        hu = c.hu["cyst"] if rng.random() < 0.5 else base - _u(rng, *TUMOUR_DROP)
        lb, ld = ellipsoid_distance(g, centre, (r, r * _u(rng, 0.8, 1.2), r * _u(rng, 0.8, 1.2)))
        c.paint(lb, ld < 0, hu, where=lambda lab, img, o=organ: lab == FLARE22_IDS[o])


def _kidney(c: _Canvas, rng, centre, side: int, organ: str) -> tuple:
    """A bean: ellipsoid minus the hilum's dent, cortex over medulla, pelvis at the hilum.

    ``side`` is +1 for the right kidney (patient right = +x), -1 for the left;
    the hilum faces the spine (medial, slightly anterior).
    """
    g = c.grid
    radii = (_u(rng, 26, 33), _u(rng, 19, 25), _u(rng, 52, 64))
    # Upper pole tilted toward the spine, hilum turned anteromedially.
    rot = rotation(side * _u(rng, 0.25, 0.55), 0.0, side * _u(rng, 0.1, 0.3))
    wob = Wobble.draw(rng, _u(rng, 1.5, 3.5), 50.0)
    box, d = ellipsoid_distance(g, centre, radii, rot, wob)
    if min(s.stop - s.start for s in box) <= 0:
        return box, centre
    medial = rot @ np.array([-side * radii[0], 0.0, 0.0], dtype=np.float32)
    hilum = np.asarray(centre) + medial * _u(rng, 0.95, 1.1)
    _, dh = ellipsoid_distance(g, hilum, (_u(rng, 11, 15), 12.0, _u(rng, 16, 22)), rot, box=box)
    kidney = (d < 0) & (dh > 0)
    cortex_mm = _u(rng, 5, 8)
    c.paint(box, kidney, "kidney_cortex", organ)
    c.paint(box, kidney & (d < -cortex_mm), "kidney_medulla")
    pelvis_c = np.asarray(centre) + medial * 0.45
    _, dp = ellipsoid_distance(g, pelvis_c, (7.0, 8.0, _u(rng, 14, 22)), rot, box=box)
    c.paint(box, kidney & (dp < 0), "renal_pelvis")
    _lesions(c, rng, box, kidney, organ, float(rng.poisson(0.3)), (5, 15))
    return box, tuple(hilum)


def _spleen(c: _Canvas, rng, centre) -> None:
    """A crescent: an ellipsoid with its hollow (visceral) side dented toward the stomach."""
    g = c.grid
    radii = (_u(rng, 17, 24), _u(rng, 45, 62), _u(rng, 40, 55))
    rot = rotation(_u(rng, 0.4, 0.8), _u(rng, -0.2, 0.2))  # long axis along the ribs
    wob = Wobble.draw(rng, _u(rng, 3, 6), 60.0)
    box, d = ellipsoid_distance(g, centre, radii, rot, wob)
    if min(s.stop - s.start for s in box) <= 0:
        return
    dent = np.asarray(centre) + rot @ np.array([radii[0] * _u(rng, 1.2, 1.5), 0.0, 0.0])
    _, dd = ellipsoid_distance(
        g, dent, (radii[0] * 1.3, radii[1] * 0.75, radii[2] * 0.75), rot, box=box
    )
    c.paint(box, (d < 0) & (dd > 0), "spleen", "spleen")


def _vessels(c: _Canvas, rng, xs, ys, z_k, z_lo, z_hi) -> tuple:
    """Aorta (left, in front of the spine) splitting into iliacs, and the IVC (right)."""
    g = c.grid
    ax, ay, ar = xs - _u(rng, 10, 20), ys + _u(rng, 25, 35), _u(rng, 9, 13)
    split = z_k - _u(rng, 90, 120)
    box, d = tube_distance(g, [(ax, ay, split), (ax, ay + 5, z_hi + 20)], ar)
    c.paint(box, d < 0, "aorta", "aorta")
    for side in (1, -1):
        box, d = tube_distance(
            g, [(ax, ay, split), (xs + side * 60, ay - 10, split - 120)], ar * 0.6
        )
        c.paint(box, d < 0, "aorta")
    ix, iy = xs + _u(rng, 20, 30), ys + _u(rng, 25, 35)
    box, d = tube_distance(g, [(ix, iy, z_lo - 20), (ix + 3, iy + 5, z_k + 170)], _u(rng, 9, 13))
    c.paint(box, d < 0, "ivc", "ivc")
    return (ax, ay), (ix, iy)


def _pancreas_duodenum(c: _Canvas, rng, xs, ys, z_k, sy: float) -> None:
    g = c.grid
    head = (xs + _u(rng, 25, 40), ys + sy * _u(rng, 45, 60), z_k + _u(rng, -5, 15))
    pts = [
        head,
        (xs + _u(rng, -5, 10), ys + sy * _u(rng, 55, 70), z_k + _u(rng, 10, 20)),
        (xs - _u(rng, 35, 50), ys + sy * _u(rng, 45, 60), z_k + _u(rng, 20, 35)),
        (xs - _u(rng, 75, 95), ys + sy * _u(rng, 20, 40), z_k + _u(rng, 30, 50)),
    ]
    box, d = tube_distance(g, pts, _u(rng, 8, 12), Wobble.draw(rng, 2.5, 25.0))
    c.paint(box, d < 0, "pancreas", "pancreas")
    loop = [
        (head[0] - 5, head[1] + 30, head[2] + 25),
        (head[0] + 20, head[1] + 10, head[2] + 15),
        (head[0] + 22, head[1] - 5, head[2] - 15),
        (head[0] + 5, head[1] - 5, head[2] - 38),
        (head[0] - 35, head[1] - 5, head[2] - 42),
    ]
    _hollow(c, rng, loop, _u(rng, 8, 11), False, "water", "duodenum")


def _stomach(c: _Canvas, rng, xs, ys, z_k, sy: float) -> None:
    g = c.grid
    centre = (xs - _u(rng, 45, 75), ys + sy * _u(rng, 70, 105), z_k + _u(rng, 45, 75))
    radii = (_u(rng, 30, 50), _u(rng, 28, 42), _u(rng, 40, 60))
    rot = rotation(_u(rng, -0.6, -0.2), _u(rng, -0.3, 0.3))
    box, d = ellipsoid_distance(g, centre, radii, rot, Wobble.draw(rng, 4.0, 50.0))
    if min(s.stop - s.start for s in box) <= 0:
        return
    c.paint(box, d < 0, "bowel_wall", "stomach")
    inside = d < -4.0
    filling = "oral_contrast" if rng.random() < 0.3 else "water"
    c.paint(box, inside, filling)
    level = np.float32(centre[1] + _u(rng, -0.6, 0.6) * radii[1])
    c.paint(box, inside & (g.y[box[1]][None, :, None] > level), "gas")
    top = (centre[0] + 10, centre[1] - 20, centre[2] + radii[2] * 0.8)
    box, d = tube_distance(g, [top, (xs - 12, ys + 35, top[2] + 80)], _u(rng, 6, 9))
    c.paint(box, d < 0, "muscle", "esophagus")


def _adrenals(c: _Canvas, rng, kidneys) -> None:
    for (centre, side), organ in zip(kidneys, ("right_adrenal", "left_adrenal"), strict=True):
        pos = (centre[0] - side * 12, centre[1] + 12, centre[2] + _u(rng, 55, 70))
        box, d = ellipsoid_distance(
            c.grid, pos, (4.0, _u(rng, 12, 16), _u(rng, 14, 20)), rotation(side * 0.5)
        )
        c.paint(box, d < 0, "adrenal", organ)


def _streaks(grid: Grid, rng, xs, ys) -> np.ndarray | float:
    """Dark beam-hardening streaks fanning from the vertebral body (2D, all slices)."""
    if rng.random() < 0.3:
        return 0.0
    x, y = grid.x[:, None] - xs, grid.y[None, :] - ys
    theta = np.arctan2(y, x)
    r = np.sqrt(x**2 + y**2)
    n, phase, amp = int(rng.integers(2, 6)), _u(rng, 0, np.pi), _u(rng, 15, 60)
    fan = np.cos(n * theta + phase) ** 16
    return (-amp * fan * np.exp(-r / 90.0) * (r > 25)).astype(np.float32)[..., None]


def _blur_gain(sigmas) -> float:
    """How much ``gaussian_filter(sigmas, truncate=2.5)`` shrinks white noise's sd."""
    gain = 1.0
    for sd in sigmas:
        if sd <= 0:
            continue
        radius = int(2.5 * sd + 0.5)
        w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sd) ** 2)
        gain *= float(np.sqrt(np.sum((w / w.sum()) ** 2)))
    return gain


def make_ct_phantom(
    seed: int,
    case_number: int,
    shape: Sequence[int] = (64, 64, 32),
    fov: float = 1.0,
    jitter: float = DEFAULT_JITTER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One CT-like case in canonical RAS voxel order.

    Args:
        seed: data-set seed.
        case_number: 1-based case number.
        shape: (X, Y, Z) voxels of the normal scan range; the field of view is
            drawn in mm (in-plane 340–500 mm, 250–350 mm along z) and the
            spacing follows from it.
        fov: scan range along z as a multiple of the normal one (more slices of
            the same spacing above and below, the same anatomy at the same place).
        jitter: sd (HU) of the per-tissue SynthSeg-like intensity randomisation
            added to the calibrated per-phase values (0 = calibrated only).

    Returns:
        ``(image, labels, affine, info)``: int16 HU, uint8 FLARE22 ids, the 4×4
        RAS affine (mm, centred on 0), and what was drawn (phase, spacing, noise,
        spine centre, kidney level) for tests and figures.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise FlareError(f"phantom shape must be three sizes >= 8, got {list(shape)}")
    if not (math.isfinite(fov) and 1.0 <= fov <= 10.0):
        raise FlareError(f"--fov must be between 1 and 10, got {fov}")
    rng = np.random.default_rng([int(seed), int(case_number), 26])
    a, b = _u(rng, 140, 185), _u(rng, 115, 150)  # body half-width, half-depth (mm)
    fov_xy = _u(rng, max(2 * a + 20, 340), 500)
    z_range = _u(rng, 250, 350)
    spacing = np.array([fov_xy / max(shape[:2])] * 2 + [z_range / shape[2]], dtype=np.float64)
    extra = int(round(shape[2] * (fov - 1.0) / 2.0))
    full_shape = (shape[0], shape[1], shape[2] + 2 * extra)
    grid = axes_grid(full_shape, spacing)
    phase = int(rng.choice(len(PHASES), p=PHASE_WEIGHTS))
    c = _Canvas(grid, draw_hu(rng, phase, jitter))

    yb = _u(rng, -25, 5)  # body centre (anterior +)
    xs = _u(rng, -8, 8)  # spine, left-right
    ys = yb - b + 2 * b * _u(rng, 0.3, 0.38)  # vertebral body centre (9001: 0.39 of the depth)
    z_top = z_range / 2
    z_k = _u(rng, z_top - 200, z_top - 120)  # left kidney centre (liver dome ≈ z_k + 150)
    body, inner = _body(c, rng, a, b, yb)
    if rng.random() < 0.8:
        _table(c, rng, yb - b)
    if rng.random() < 0.3:
        _arms(c, rng, a, yb)
    _spine(c, rng, xs, ys)
    _psoas(c, rng, xs, ys, z_k)
    _ribs(c, rng, inner, yb, z_k, xs)
    _bowel(c, rng, xs, ys, z_k, inner)
    # Anterior offsets scale with the room in front of the spine (150 mm nominal).
    sy = float(np.clip((yb + inner["inner_b"] - ys) / 150.0, 0.6, 1.3))
    _stomach(c, rng, xs, ys, z_k, sy)
    _pancreas_duodenum(c, rng, xs, ys, z_k, sy)
    aorta, ivc = _vessels(c, rng, xs, ys, z_k, float(grid.z[0]), float(grid.z[-1]))
    _liver(c, rng, xs, ys, z_k, sy)
    room = inner["inner_a"]  # half-width of the abdominal cavity
    lateral = min(_u(rng, 60, 80), room - 40)
    k_y = ys + _u(rng, -15, 10)
    kidneys = []
    for side, organ, dz in ((1, "right_kidney", -_u(rng, 5, 25)), (-1, "left_kidney", 0.0)):
        centre = (xs + side * (lateral + _u(rng, -6, 6)), k_y + _u(rng, -5, 5), z_k + dz)
        _, hilum = _kidney(c, rng, centre, side, organ)
        vessel = ivc if side == 1 else aorta
        vb, vd = tube_distance(grid, [(*vessel, centre[2]), hilum], _u(rng, 4, 6))
        c.paint(vb, vd < 0, "ivc" if side == 1 else "aorta", where=lambda lab, img: lab == 0)
        kidneys.append((centre, side))
    spleen = (xs - min(_u(rng, 95, 120), room - 28), ys + _u(rng, 0, 35), z_k + _u(rng, 35, 70))
    _spleen(c, rng, spleen)
    _adrenals(c, rng, kidneys)
    # Everything organ-like stays inside the body; air outside it.
    outside = ~body
    c.labels[outside] = 0

    image = c.image
    # Quantum noise, then the scanner's blur (in-plane point spread, slice profile): the
    # blur gives partial-volume edges and turns the noise into CT's correlated texture.
    sigma = _u(rng, 8, 30)  # noise sd (HU) after the blur
    thickness = spacing[2] * _u(rng, 1.0, 1.5)
    psf = np.array([_u(rng, 0.5, 0.9)] * 2 + [thickness / 2.355]) / spacing
    psf = np.where(psf > 0.25, psf, 0.0)
    share = 0.8  # of the noise variance correlated by the blur; the rest white
    image += np.float32(sigma * share / _blur_gain(psf)) * rng.standard_normal(
        full_shape, dtype=np.float32
    )
    image = ndimage.gaussian_filter(image, psf, truncate=2.5)
    image += np.float32(sigma * np.sqrt(1 - share**2)) * rng.standard_normal(
        full_shape, dtype=np.float32
    )
    image += _streaks(grid, rng, xs, ys) * body
    bias = Wobble.draw(rng, _u(rng, 3, 10), 150.0)
    image += bias(grid.x[:, None, None], grid.y[None, :, None], grid.z[None, None, :])
    np.clip(image, -1024, 3071, out=image)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(full_shape) - 1) / 2.0
    info = {
        "phase": PHASES[phase],
        "spacing": tuple(float(s) for s in spacing),
        "noise_sd": sigma,
        "spine": (xs, ys),
        "kidney_level": z_k,
        "body_half_width": a,
    }
    return np.rint(image).astype(np.int16), c.labels, affine, info
