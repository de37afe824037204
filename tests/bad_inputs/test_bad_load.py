"""Bad volumes and labels for the loaders; valid encodings load identically; hidden files."""

from __future__ import annotations

import shutil

import bad_matrix as bm
import nibabel as nib
import numpy as np
import pytest
from bad_matrix import (
    CASE1,
    CASE2,
    IMAGE_ENCODINGS,
    LABEL_DTYPES,
    SMALL,
    Workspace,
    encoded,
    hu_reference,
)

from flare_helpers.config import load_config
from flare_helpers.data import cases, nifti
from flare_helpers.infer import predict as infer
from flare_helpers.preprocess.pipeline import PreprocessParams, prepare_image


@pytest.mark.parametrize(("kind", "entry", "bad"), bm.matrix_for("load"))
def test_bad_input(kind: str, entry: str, bad: str, ws: bm.Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    bm.check_bad_input(kind, entry, bad, ws, capsys)


def test_valid_image_encodings_give_identical_volumes_and_network_input(tiny_set, tmp_path):
    hu, affine = hu_reference(tiny_set / "images" / f"{CASE1}_0000.nii.gz")
    params = PreprocessParams.from_config(load_config(None, SMALL))
    reference = nifti.load_image(encoded(hu, affine, tmp_path, "int16"))
    ref_x, ref_box = prepare_image(reference, params)
    assert reference.data.dtype == np.float32 and len(np.unique(reference.data)) > 20
    for how in IMAGE_ENCODINGS[1:]:
        volume = nifti.load_image(encoded(hu, affine, tmp_path, how))
        assert volume.data.dtype == np.float32, how
        np.testing.assert_array_equal(volume.data, reference.data, err_msg=how)
        np.testing.assert_array_equal(volume.geometry.affine, reference.geometry.affine)
        x, box = prepare_image(volume, params)
        assert box == ref_box and x.tobytes() == ref_x.tobytes(), how


def test_valid_label_dtypes_give_identical_labels(tiny_set, tmp_path):
    img = nib.load(tiny_set / "labels" / f"{CASE1}.nii.gz")
    ids = np.asarray(img.dataobj)
    assert len(np.unique(ids)) >= 8  # background and most organs
    loaded = {}
    for dtype in LABEL_DTYPES:
        path = tmp_path / f"{dtype}.nii.gz"
        nib.save(nib.Nifti1Image(ids.astype(dtype), img.affine, dtype=dtype), path)
        loaded[dtype] = nifti.load_label(path)
        assert loaded[dtype].data.dtype == np.uint8
        np.testing.assert_array_equal(loaded[dtype].data, loaded["uint8"].data, err_msg=dtype)


def test_hidden_and_temporary_files_are_never_taken_for_cases(ws: Workspace, capsys):
    """macOS ``._`` copies and a killed run's temporaries are skipped, not loaded."""
    (ws.data / "images" / f"._{CASE1}_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (ws.data / "labels" / f".{CASE1}.nii.gz.tmp-abcd1234.nii.gz").write_bytes(b"half")
    found = cases.discover_cases(ws.data)
    assert [c.case_id for c in found.labelled] == [CASE1, CASE2]
    assert found.orphan_labels == () and found.notes == ()
    folder = ws.tmp / "cts"
    folder.mkdir()
    shutil.copy(ws.good_image, folder / "a_0000.nii.gz")
    (folder / "._a_0000.nii.gz").write_bytes(b"junk")
    assert [p.name for _, p in infer.plan_outputs(folder, ws.tmp / "o")] == ["a.nii.gz"]
