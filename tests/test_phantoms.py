"""The CT-like phantom family (``flare-synth``'s default): sizes, HU, sides, files.

The ranges asserted here are the calibrated ones of :mod:`flare_helpers.phantoms.ct`
and :mod:`flare_helpers.phantoms.hu`; the real CT of ``flare_helpers/data/real_ct`` must
fall inside them.
"""

from __future__ import annotations

import gzip
import io
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from flare_helpers.cli import synth_main
from flare_helpers.data import examples
from flare_helpers.data.examples import REAL_CT_DIR
from flare_helpers.phantoms import synthetic
from flare_helpers.phantoms.ct import make_ct_phantom
from flare_helpers.phantoms.hu import HU, PHASES

REAL = REAL_CT_DIR / "FLARE22Train"
LIVER, RKID, SPLEEN, LKID = 1, 2, 3, 13
SHAPE = (96, 96, 40)


@pytest.fixture(scope="module")
def cases():
    """Twelve cases at 96×96×40 with calibrated HU only (no randomisation)."""
    return [make_ct_phantom(4, n, SHAPE, jitter=0.0) for n in range(1, 13)]


def _ml(labels, affine, organ) -> float:
    return float((labels == organ).sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


def _centre_mm(labels, affine, organ) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(labels == organ).mean(0))


def test_bodies_are_ct_sized_at_any_grid():
    for shape in ((48, 48, 24), (96, 96, 40), (160, 160, 48)):
        image, _, affine, info = make_ct_phantom(2, 3, shape)
        body = ndimage.binary_opening(image > -400, iterations=1)  # the table is thin
        z = shape[2] // 2
        xs = np.flatnonzero(body[:, :, z].any(1))
        spacing = np.abs(np.diag(affine)[:3])
        width = (xs.max() - xs.min() + 1) * spacing[0]
        assert 260 <= width <= 520, (shape, width)  # arms may widen the outline
        assert 2 * info["body_half_width"] <= 370
        assert 250 <= spacing[2] * shape[2] <= 350  # scan range in mm, whatever the grid


def test_the_same_case_holds_the_same_anatomy_on_coarse_and_fine_grids():
    _, coarse, a_coarse, _ = make_ct_phantom(5, 2, (64, 64, 32))
    _, fine, a_fine, _ = make_ct_phantom(5, 2, (128, 128, 64))
    for organ in (LIVER, RKID, SPLEEN, LKID):
        v1, v2 = _ml(coarse, a_coarse, organ), _ml(fine, a_fine, organ)
        assert abs(v1 - v2) / v2 < 0.25, (organ, v1, v2)
        gap = np.linalg.norm(_centre_mm(coarse, a_coarse, organ) - _centre_mm(fine, a_fine, organ))
        assert gap < 12.0, (organ, gap)


def test_organ_volumes_are_adult_sized(cases):
    # Liver 1000–2000 ml (Heinemann 1999), spleen 107–314 ml (Prassopoulos 1997),
    # kidney ~100–250 ml; widened for cut-off tops and the drawn variation.
    for _, labels, affine, _ in cases:
        assert 700 <= _ml(labels, affine, LIVER) <= 2400
        assert 60 <= _ml(labels, affine, SPLEEN) <= 450
        for kidney in (RKID, LKID):
            assert 70 <= _ml(labels, affine, kidney) <= 260
    livers = [_ml(lab, aff, LIVER) for _, lab, aff, _ in cases]
    assert np.std(livers) > 100  # patients differ


def test_organs_sit_on_their_sides_relative_to_the_spine(cases):
    drops = []
    for _, labels, affine, info in cases:
        xs = info["spine"][0]
        liver, spleen = _centre_mm(labels, affine, LIVER), _centre_mm(labels, affine, SPLEEN)
        right, left = _centre_mm(labels, affine, RKID), _centre_mm(labels, affine, LKID)
        assert liver[0] - xs > 30 and spleen[0] - xs < -70  # RAS: +x is the patient's right
        assert 40 < right[0] - xs < 100 and 40 < xs - left[0] < 100
        # The liver's left lobe reaches across the midline.
        x_min = nib.affines.apply_affine(affine, np.argwhere(labels == LIVER))[:, 0].min()
        assert x_min < xs - 20
        drops.append(left[2] - right[2])
    assert np.mean(drops) > 5  # the right kidney lies lower, on average 5–25 mm


def test_organ_hu_follows_the_phase(cases):
    seen = set()
    for image, labels, _, info in cases:
        phase = PHASES.index(info["phase"])
        seen.add(phase)
        for organ, tissue in ((LIVER, "liver"), (SPLEEN, "spleen")):
            core = ndimage.binary_erosion(labels == organ, iterations=1)
            mean, sd = HU[tissue][phase]
            # 4 sd of patients, plus noise, lesions and vessels inside the organ
            assert abs(np.median(image[core]) - mean) < 4 * sd + 15, (tissue, info)
    assert seen == {0, 1, 2}, "all three phases among 12 cases"


def test_kidney_cortex_enhances_before_the_medulla():
    found = 0
    for n in range(1, 40):
        image, labels, affine, info = make_ct_phantom(6, n, (128, 128, 48), jitter=0.0)
        if info["phase"] != "arterial":
            continue
        found += 1
        kidney = labels == RKID
        shell = kidney & ~ndimage.binary_erosion(kidney, iterations=1)
        core = ndimage.binary_erosion(kidney, iterations=3)
        assert np.median(image[shell]) > np.median(image[core]) + 15
        if found == 2:
            break
    assert found == 2


def test_organs_are_not_ellipsoids(cases):
    """A crescent spleen and a lobed liver fill clearly less than their convex hull."""
    for _, labels, _, _ in cases[:4]:
        for organ, most in ((LIVER, 0.9), (SPLEEN, 0.85)):
            points = np.argwhere(labels == organ).astype(float)
            hull = ConvexHull(points)
            assert len(points) / hull.volume < most, organ


def test_neighbours_and_hard_parts_are_present(cases):
    for image, labels, _, _ in cases:
        present = set(np.unique(labels).tolist())
        assert {1, 2, 3, 4, 5, 6, 9, 11, 13} <= present
        assert (image > 500).sum() > 50  # vertebrae, ribs
    gas = [((image < -800) & ndimage.binary_fill_holes(image > -500)).sum() for image, *_ in cases]
    assert sum(g > 0 for g in gas) >= 3  # gas in bowel or stomach in several cases
    noise = [info["noise_sd"] for *_, info in cases]
    assert max(noise) - min(noise) > 8  # per-case noise


def test_the_real_ct_lies_inside_the_calibrated_ranges():
    image = np.asarray(nib.load(REAL / "images" / "FLARE22_Tr_9001_0000.nii.gz").dataobj)
    labels = np.asarray(nib.load(REAL / "labels" / "FLARE22_Tr_9001.nii.gz").dataobj)
    non_contrast = PHASES.index("non-contrast")
    for organ, tissue in ((LIVER, "liver"), (SPLEEN, "spleen"), (RKID, "kidney_cortex")):
        mean, sd = HU[tissue][non_contrast]
        measured = float(image[ndimage.binary_erosion(labels == organ)].mean())
        assert abs(measured - mean) < 2.5 * sd, (tissue, measured)
    ml = {k: (labels == k).sum() * 27 / 1000 for k in (LIVER, RKID, SPLEEN, LKID)}
    assert 700 <= ml[LIVER] <= 2400 and 60 <= ml[SPLEEN] <= 450
    assert 70 <= ml[RKID] <= 260 and 70 <= ml[LKID] <= 260


def test_files_are_byte_reproducible_and_load_back_to_ras(tmp_path):
    a = synthetic.write_synthetic_zip(tmp_path / "a", 2, seed=5, shape=(48, 48, 24), progress=False)
    b = synthetic.write_synthetic_zip(tmp_path / "b", 2, seed=5, shape=(48, 48, 24), progress=False)
    c = synthetic.write_synthetic_zip(tmp_path / "c", 2, seed=6, shape=(48, 48, 24), progress=False)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    for n in (1, 2):  # case 1 is stored LPS, case 2 RAS
        files = synthetic.case_files(5, n, (48, 48, 24))
        image, labels, affine = synthetic.make_phantom(5, n, (48, 48, 24))
        for payload, expected in zip(files.values(), (image, labels), strict=True):
            img = nib.Nifti1Image.from_bytes(gzip.GzipFile(fileobj=io.BytesIO(payload)).read())
            assert "".join(nib.aff2axcodes(img.affine)) == synthetic.ORIENTATIONS[n - 1]
            ras = nib.as_closest_canonical(img)
            np.testing.assert_allclose(ras.affine, affine, atol=1e-4)
            np.testing.assert_array_equal(np.asarray(ras.dataobj), expected)


def test_small_ct_case_is_fast():
    make_ct_phantom(0, 1, (64, 64, 32))
    start = time.perf_counter()
    make_ct_phantom(0, 2, (64, 64, 32))
    assert time.perf_counter() - start < 1.0


def test_cli_family_option(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path / "s"), "--cases", "1", "--family", "simple"]) == 0
    assert (
        synth_main(["--out", str(tmp_path / "c"), "--cases", "1", "--shape", "32", "32", "16"]) == 0
    )
    simple = (tmp_path / "s" / "FLARE22Train.zip").read_bytes()
    assert (
        simple
        == synthetic.write_synthetic_zip(
            tmp_path / "x", 1, progress=False, family="simple"
        ).read_bytes()
    )
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path), "--cases", "1", "--family", "nope"])
    with pytest.raises(synthetic.FlareError, match="family"):
        synthetic.make_phantom(0, 1, family="nope")
    with pytest.raises(synthetic.FlareError, match="voxel-scale"):
        synthetic.make_phantom(0, 1, voxel_scale=2.0)


def test_the_example_real_ct_is_the_whole_scan_9001():
    folder = examples.real_ct_folder()
    image = nib.load(folder / "images" / f"{examples.REAL_CT_CASE}_0000.nii.gz")
    assert image.shape == (122, 101, 112) and "".join(nib.aff2axcodes(image.affine)) == "RAS"
    assert (folder.parent / "LICENSE-TotalSegmentator.txt").is_file()
