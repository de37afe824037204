"""The phantom generator: FLARE22 layout, anatomy in world space, spacing, determinism."""

from __future__ import annotations

import gzip
import time
import zipfile

import nibabel as nib
import numpy as np
import pytest

from flare_helpers.cli import synth_main
from flare_helpers.data.labels import FLARE22_IDS
from flare_helpers.phantoms import synthetic


def _load(payload: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(payload))


def _world_centroid(img: nib.Nifti1Image, label: int) -> np.ndarray:
    ijk = np.argwhere(np.asarray(img.dataobj) == label).mean(axis=0)
    return img.affine[:3, :3] @ ijk + img.affine[:3, 3]


@pytest.fixture(scope="module")
def cases() -> list[dict[str, nib.Nifti1Image]]:
    out = []
    for n in range(1, 7):
        files = synthetic.case_files(seed=3, case_number=n, shape=(64, 64, 32), family="simple")
        out.append({("image" if "/images/" in k else "label"): _load(v) for k, v in files.items()})
    return out


def test_zip_layout_matches_flare22(tmp_path):
    path = synthetic.write_synthetic_zip(tmp_path, 3, seed=1, progress=False, family="simple")
    assert path == tmp_path / "FLARE22Train.zip"
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    assert names == [
        "FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz",
        "FLARE22Train/images/FLARE22_Tr_0002_0000.nii.gz",
        "FLARE22Train/images/FLARE22_Tr_0003_0000.nii.gz",
        "FLARE22Train/labels/FLARE22_Tr_0001.nii.gz",
        "FLARE22Train/labels/FLARE22_Tr_0002.nii.gz",
        "FLARE22Train/labels/FLARE22_Tr_0003.nii.gz",
    ]


def test_dtypes_and_all_13_labels(cases):
    for case in cases:
        assert case["image"].get_data_dtype() == np.int16
        assert case["label"].get_data_dtype() == np.uint8
        assert case["image"].shape == case["label"].shape
        np.testing.assert_array_equal(case["image"].affine, case["label"].affine)
        ids = set(np.unique(np.asarray(case["label"].dataobj)).tolist())
        assert ids == set(range(14)), f"missing ids {set(range(14)) - ids}"


def test_hu_values_are_plausible(cases):
    for case in cases:
        hu = np.asarray(case["image"].dataobj)
        lab = np.asarray(case["label"].dataobj)
        assert hu.min() >= -1024 and (hu < -900).mean() > 0.02  # air around the body
        assert hu.max() > 400  # bone
        liver = hu[lab == FLARE22_IDS["liver"]].mean()
        kidney = hu[lab == FLARE22_IDS["right_kidney"]].mean()
        gallbladder = hu[lab == FLARE22_IDS["gallbladder"]].mean()
        assert 60 < liver < 150 and 120 < kidney < 230 and -20 < gallbladder < 40
        assert 8 < hu[lab == FLARE22_IDS["liver"]].std() < 25  # noise, not a flat fill


def test_anatomy_sides_in_world_coordinates(cases):
    """RAS world: +x is the patient's right, +y anterior, +z superior — whatever the file order."""
    for case in cases:
        img = case["label"]
        c = {name: _world_centroid(img, FLARE22_IDS[name]) for name in FLARE22_IDS}
        assert c["liver"][0] > 0 > c["spleen"][0]
        assert c["right_kidney"][0] > 0 > c["left_kidney"][0]
        assert c["right_kidney"][2] < c["left_kidney"][2]  # right kidney lower
        assert c["spleen"][1] < c["liver"][1]  # spleen posterior to the liver's centre
        assert c["right_kidney"][1] < c["pancreas"][1]  # kidneys behind the pancreas
        assert c["aorta"][0] < c["ivc"][0]  # aorta left of the IVC
        assert c["liver"][2] > c["right_kidney"][2]
        liver = np.sum(np.asarray(img.dataobj) == FLARE22_IDS["liver"])
        spleen = np.sum(np.asarray(img.dataobj) == FLARE22_IDS["spleen"])
        assert liver > 2 * spleen


def test_spacing_and_orientation_vary_per_case(cases):
    zooms = [case["image"].header.get_zooms() for case in cases]
    codes = {"".join(nib.aff2axcodes(case["image"].affine)) for case in cases}
    for case, z in zip(cases, zooms, strict=True):
        slice_axis = int(np.argmax(z))
        inplane = [z[i] for i in range(3) if i != slice_axis]
        assert all(0.6 <= s <= 0.9 for s in inplane)
        assert 2.5 <= z[slice_axis] <= 5.0
        # header zooms agree with the affine's column norms
        np.testing.assert_allclose(
            np.linalg.norm(case["image"].affine[:3, :3], axis=0), z, rtol=1e-5
        )
        assert case["image"].header["sform_code"] == 1 and case["image"].header["qform_code"] == 1
    assert len({round(float(max(z)), 3) for z in zooms}) == len(zooms)
    assert "RAS" in codes and len(codes - {"RAS"}) >= 2


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    a = synthetic.write_synthetic_zip(
        tmp_path / "a", 2, seed=5, progress=False, family="simple"
    ).read_bytes()
    b = synthetic.write_synthetic_zip(
        tmp_path / "b", 2, seed=5, progress=False, family="simple"
    ).read_bytes()
    c = synthetic.write_synthetic_zip(
        tmp_path / "c", 2, seed=6, progress=False, family="simple"
    ).read_bytes()
    assert a == b
    assert a != c


def test_organ_sizes_and_positions_vary_between_cases(cases):
    volumes = [np.sum(np.asarray(c["label"].dataobj) == FLARE22_IDS["liver"]) for c in cases]
    assert np.std(volumes) / np.mean(volumes) > 0.05


def test_small_case_is_fast():
    synthetic.case_files(0, 1, (64, 64, 32), family="simple")  # warm-up (imports, allocator)
    start = time.perf_counter()
    synthetic.case_files(0, 2, (64, 64, 32), family="simple")
    assert time.perf_counter() - start < 1.0


def test_cli_writes_zip(tmp_path, capsys):
    assert (
        synth_main(
            ["--out", str(tmp_path), "--cases", "2", "--seed", "1", "--shape", "32", "32", "16"]
        )
        == 0
    )
    with zipfile.ZipFile(tmp_path / "FLARE22Train.zip") as archive:
        img = _load(archive.read("FLARE22Train/images/FLARE22_Tr_0002_0000.nii.gz"))
    assert img.shape == (32, 32, 16)
    assert "wrote" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path), "--cases", "0"]) == 2
    assert "--cases must be at least 1" in capsys.readouterr().err
    assert synth_main(["--out", str(tmp_path), "--cases", "1", "--shape", "4", "4", "4"]) == 2
    assert not (tmp_path / "FLARE22Train.zip").exists()


def test_zip_members_have_fixed_timestamps(tmp_path):
    path = synthetic.write_synthetic_zip(tmp_path, 1, seed=1, progress=False, family="simple")
    with zipfile.ZipFile(path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.testzip() is None
