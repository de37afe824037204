"""Extraction, case discovery, orientation-aware loading and label checks."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from flare_helpers.cli import extract_main
from flare_helpers.data import cases, extract, nifti
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.synthetic import case_files, make_phantom


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return path


def _write_nifti(path: Path, array: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


# --------------------------------------------------------------------------- extraction


def test_extract_layout_and_case_table(synthetic_zip, tmp_path, capsys):
    assert extract_main(["--zip", str(synthetic_zip), "--out", str(tmp_path)]) == 0
    target = tmp_path / "FLARE22Train"
    assert len(list((target / "images").glob("*_0000.nii.gz"))) == 6
    assert len(list((target / "labels").glob("*.nii.gz"))) == 6
    out = capsys.readouterr().out
    assert "FLARE22_Tr_0006" in out and "64×64×32" in out and "LPS" in out and "RAS" in out


def test_extract_is_idempotent_and_repairs_interrupted_runs(synthetic_zip, tmp_path):
    target = extract.extract_zip(synthetic_zip, tmp_path, progress=False)
    image = target / "images" / "FLARE22_Tr_0002_0000.nii.gz"
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*.nii.gz")}
    extract.extract_zip(synthetic_zip, tmp_path, progress=False)
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.nii.gz")} == before

    # Simulate a crash: no completion marker, one file cut short, one missing.
    good = image.read_bytes()
    (target / ".extracted.json").unlink()
    image.write_bytes(good[: len(good) // 2])
    (target / "labels" / "FLARE22_Tr_0003.nii.gz").unlink()
    extract.extract_zip(synthetic_zip, tmp_path, progress=False)
    assert image.read_bytes() == good
    assert (target / "labels" / "FLARE22_Tr_0003.nii.gz").exists()
    assert not list(target.rglob(".*tmp-*"))


def test_extract_same_size_corruption_without_marker_is_not_trusted(synthetic_zip, tmp_path):
    target = extract.extract_zip(synthetic_zip, tmp_path, progress=False)
    label = target / "labels" / "FLARE22_Tr_0001.nii.gz"
    good = label.read_bytes()
    (target / ".extracted.json").unlink()
    label.write_bytes(bytes(len(good)))  # same size, wrong content
    extract.extract_zip(synthetic_zip, tmp_path, progress=False)
    assert label.read_bytes() == good


@pytest.mark.parametrize("prefix", ["FLARE22Train/FLARE22Train/", "", "some/dir/FLARE22Train/"])
def test_extract_handles_nested_or_flat_zips(tmp_path, prefix):
    files = case_files(1, 1, (16, 16, 8), family="simple")
    members = {prefix + name.split("/", 1)[1]: payload for name, payload in files.items()}
    members["__MACOSX/._junk"] = b"x"
    zip_path = _zip_with(tmp_path / "nested.zip", members)
    target = extract.extract_zip(zip_path, tmp_path / "out", progress=False)
    found = cases.discover_cases(target)
    assert [c.case_id for c in found.labelled] == ["FLARE22_Tr_0001"]
    assert not (tmp_path / "out" / "__MACOSX").exists()


@pytest.mark.parametrize(
    "member", ["../evil.nii.gz", "FLARE22Train/images/../../evil.nii.gz", "/abs/evil.nii.gz"]
)
def test_extract_refuses_members_escaping_the_target(tmp_path, member):
    files = case_files(1, 1, (16, 16, 8), family="simple")
    zip_path = _zip_with(tmp_path / "evil.zip", {**files, member: b"payload"})
    with pytest.raises(FlareError, match="refusing"):
        extract.extract_zip(zip_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.nii.gz").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii.gz"))


def test_extract_cli_errors_are_one_line(tmp_path, capsys):
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("hello")
    empty = _zip_with(tmp_path / "empty.zip", {})
    cases = [
        (tmp_path / "missing.zip", "file not found"),
        (not_zip, "not a zip file"),
        (empty, "empty"),
    ]
    for path, message in cases:
        assert extract_main(["--zip", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and message in err


def test_extract_zip_without_images_folder(tmp_path):
    zip_path = _zip_with(tmp_path / "other.zip", {"readme.txt": b"hi"})
    with pytest.raises(FlareError, match="no images/ folder"):
        extract.extract_zip(zip_path, tmp_path / "out", progress=False)


# --------------------------------------------------------------------------- discovery


def test_discover_reports_unpaired_files(synthetic_copy):
    (synthetic_copy / "labels" / "FLARE22_Tr_0002.nii.gz").unlink()
    (synthetic_copy / "images" / "FLARE22_Tr_0005_0000.nii.gz").unlink()
    found = cases.discover_cases(synthetic_copy)
    assert [c.case_id for c in found.labelled] == [
        "FLARE22_Tr_0001",
        "FLARE22_Tr_0003",
        "FLARE22_Tr_0004",
        "FLARE22_Tr_0006",
    ]
    assert [p.name for p in found.unlabelled] == ["FLARE22_Tr_0002_0000.nii.gz"]
    assert [p.name for p in found.orphan_labels] == ["FLARE22_Tr_0005.nii.gz"]


def test_discover_missing_folders(tmp_path):
    with pytest.raises(FlareError, match="data folder not found"):
        cases.discover_cases(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(FlareError, match="no images/ folder"):
        cases.discover_cases(tmp_path / "d")


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("case_number", [1, 2, 3, 4])
def test_loading_reorients_to_ras_exactly(synthetic_data, case_number):
    """Whatever the file order (LPS, RAS, LAS, RPI), the canonical array is the phantom's RAS array."""
    image, label, affine = make_phantom(7, case_number, (64, 64, 32), family="simple")
    case = cases.Case(
        f"FLARE22_Tr_{case_number:04d}",
        synthetic_data / "images" / f"FLARE22_Tr_{case_number:04d}_0000.nii.gz",
        synthetic_data / "labels" / f"FLARE22_Tr_{case_number:04d}.nii.gz",
    )
    img, lab = nifti.load_case(case)
    assert img.data.dtype == np.float32 and lab.data.dtype == np.uint8
    np.testing.assert_array_equal(img.data, image.astype(np.float32))
    np.testing.assert_array_equal(lab.data, label)
    np.testing.assert_allclose(img.spacing, np.diag(affine)[:3], rtol=1e-6)
    raw = np.asarray(nib.load(case.image).dataobj)
    assert img.geometry.shape == raw.shape
    np.testing.assert_array_equal(img.geometry.from_canonical(img.data), raw)
    assert img.geometry.axcodes == "".join(nib.aff2axcodes(nib.load(case.image).affine))


def test_real_ct_loads_with_organs_on_the_right_sides(real_ct):
    case = cases.discover_cases(real_ct).labelled[0]
    img, lab = nifti.load_case(case)
    assert img.data.shape == (122, 101, 30) and img.spacing == (3.0, 3.0, 3.0)
    assert img.data.min() >= -1100 and img.data.max() <= 1207

    def x_of(label_id: int) -> float:
        return float(np.argwhere(lab.data == label_id)[:, 0].mean())

    # canonical axis 0 increases toward the patient's right
    assert x_of(2) > x_of(13)  # right kidney right of left kidney
    assert x_of(1) > x_of(3)  # liver right of spleen


def test_save_like_overlays_the_reference(synthetic_data, tmp_path):
    image_path = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    label = nifti.load_label(synthetic_data / "labels" / "FLARE22_Tr_0001.nii.gz")
    out = nifti.save_like(label.data, image_path, tmp_path / "pred.nii.gz")
    ref, written = nib.load(image_path), nib.load(out)
    assert written.shape == ref.shape
    np.testing.assert_array_equal(written.affine, ref.affine)
    assert int(written.header["qform_code"]) == int(ref.header["qform_code"])
    assert int(written.header["sform_code"]) == int(ref.header["sform_code"])
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(
        np.asarray(written.dataobj),
        np.asarray(nib.load(synthetic_data / "labels" / "FLARE22_Tr_0001.nii.gz").dataobj),
    )
    with pytest.raises(FlareError, match="overwrite"):
        nifti.save_like(label.data, image_path, out, overwrite=False)


def test_image_with_scaling_is_read_as_float32(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    vol = nifti.load_image(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, raw.astype(np.float32) * 2 - 1024)


# --------------------------------------------------------------------------- bad input


def test_bad_images_give_one_line_errors(tmp_path):
    good = case_files(1, 1, (16, 16, 8), family="simple")[
        "FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz"
    ]
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    not_nifti = tmp_path / "text.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"this is not a nifti file at all" * 20))
    plain_text = tmp_path / "plain.nii.gz"
    plain_text.write_text("hello")
    flat = _write_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.int16))
    four_d = _write_nifti(tmp_path / "four.nii.gz", np.zeros((8, 8, 4, 3), np.int16))
    empty = _write_nifti(tmp_path / "empty.nii.gz", np.zeros((8, 0, 4), np.int16))
    nan = _write_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    inf = np.zeros((4, 4, 4), np.float32)
    inf[1, 1, 1] = np.inf
    inf_path = _write_nifti(tmp_path / "inf.nii.gz", inf)
    expectations = {
        truncated: "truncated",
        not_nifti: "not a readable NIfTI",
        plain_text: "corrupt gzip",
        flat: "expected a 3D volume",
        four_d: "expected a 3D volume",
        empty: "empty dimension",
        nan: "NaN or Inf",
        inf_path: "NaN or Inf",
        tmp_path / "missing.nii.gz": "file not found",
        tmp_path / "image.png": "not a NIfTI file name",
    }
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    for path, message in expectations.items():
        with pytest.raises(FlareError, match=message) as info:
            nifti.load_image(path)
        text = str(info.value)
        assert str(path) in text and "\n" not in text


def test_singleton_fourth_dimension_is_accepted(tmp_path):
    path = _write_nifti(tmp_path / "t.nii.gz", np.ones((4, 5, 6, 1), np.int16))
    assert nifti.load_image(path).data.shape == (4, 5, 6)


def test_bad_labels_are_refused(tmp_path):
    ref = nifti.read_geometry(_write_nifti(tmp_path / "img.nii.gz", np.zeros((6, 6, 4), np.int16)))
    fractional = np.zeros((6, 6, 4), np.float32)
    fractional[0, 0, 0] = 0.5
    unexpected = np.zeros((6, 6, 4), np.int16)
    unexpected[1, 1, 1] = 14
    negative = np.zeros((6, 6, 4), np.int16)
    negative[1, 1, 1] = -1
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    cases = {
        "fractional": (fractional, None, "non-integer"),
        "unexpected": (unexpected, None, "unexpected label values 14"),
        "negative": (negative, None, "unexpected label values -1"),
        "shape": (np.zeros((6, 6, 5), np.uint8), None, "label shape"),
        "affine": (np.zeros((6, 6, 4), np.uint8), shifted, "affine differs"),
    }
    for name, (array, affine, message) in cases.items():
        path = _write_nifti(tmp_path / f"{name}.nii.gz", array, affine)
        with pytest.raises(FlareError, match=message):
            nifti.load_label(path, ref)


def test_integral_float_labels_are_accepted(tmp_path):
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1, 1, 1] = 13
    vol = nifti.load_label(_write_nifti(tmp_path / "l.nii.gz", labels))
    assert vol.data.dtype == np.uint8 and vol.data.max() == 13


def test_header_spacing_that_disagrees_with_the_affine_is_refused(tmp_path):
    """pixdim 1 mm but an sform of 2 mm voxels: mm metrics would be silently wrong."""
    voxels = np.zeros((8, 8, 4), np.int16)
    img = nib.Nifti1Image(voxels, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_zooms((1.0, 1.0, 3.0))
    img.set_sform(np.diag([2.0, 2.0, 3.0, 1.0]), code=1)
    path = tmp_path / "bad_spacing.nii.gz"
    nib.save(img, path)
    assert nib.load(path).header.get_zooms()[:3] == (1.0, 1.0, 3.0)
    with pytest.raises(FlareError, match=r"header voxel size 1 × 1 × 3 mm disagrees") as caught:
        nifti.load_image(path)
    assert str(caught.value).startswith(str(path))
    # within 1 %: accepted, spacing from the header
    img.header.set_zooms((2.01, 2.0, 3.0))
    nib.save(img, path)
    assert nifti.load_image(path).spacing == pytest.approx((2.01, 2.0, 3.0))
