"""Bad CTs, models and targets for flare-predict; oblique affines are kept exactly."""

from __future__ import annotations

import bad_matrix as bm
import nibabel as nib
import numpy as np
import pytest
from bad_matrix import Workspace

from flare_helpers.data import cases, nifti
from flare_helpers.evaluate.evaluation import score_prediction_dir
from flare_helpers.infer import predict as infer


@pytest.mark.parametrize(("kind", "entry", "bad"), bm.matrix_for("predict"))
def test_bad_input(kind: str, entry: str, bad: str, ws: bm.Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    bm.check_bad_input(kind, entry, bad, ws, capsys)


# --------------------------------------------------------------------------- oblique affines


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    z, x = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    out = np.eye(4)
    out[:3, :3] = rz @ rx
    return out


def test_oblique_affine_is_accepted_and_predictions_keep_it_exactly(ws: Workspace):
    """Decision: an oblique scan is accepted. The network sees it in the closest canonical
    voxel order (as nnU-Net and MONAI do); spacing is the true voxel size; the prediction
    is written on the file's own oblique grid, bit for bit the same affine."""
    case = cases.discover_cases(ws.data).labelled[0]
    image, label = nib.load(case.image), nib.load(case.label)
    oblique = _rotation(20, 10) @ image.affine
    obl_image, obl_label = ws.tmp / "obl_0000.nii.gz", ws.tmp / "obl_label.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), oblique), obl_image)
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), oblique), obl_label)

    straight, _ = nifti.load_case(case)
    tilted, tilted_label = nifti.load_case(cases.Case("obl", obl_image, obl_label))
    written_affine = nib.load(obl_image).affine
    np.testing.assert_array_equal(tilted.geometry.affine, written_affine)
    np.testing.assert_array_equal(tilted.data, straight.data)  # same canonical voxel order
    np.testing.assert_allclose(tilted.spacing, straight.spacing, rtol=1e-6)
    norms = np.linalg.norm(written_affine[:3, :3], axis=0)
    np.testing.assert_allclose(sorted(tilted.spacing), sorted(norms), rtol=1e-6)

    outputs = {}
    for name, path in (("straight", case.image), ("tilted", obl_image)):
        dest = ws.tmp / f"{name}_pred.nii.gz"
        infer.predict_files(ws.predictor, [(path, dest)], progress=False)
        outputs[name] = nib.load(dest)
    assert outputs["tilted"].shape == image.shape
    np.testing.assert_array_equal(outputs["tilted"].affine, written_affine)
    np.testing.assert_array_equal(
        np.asarray(outputs["tilted"].dataobj), np.asarray(outputs["straight"].dataobj)
    )
    # scores on the oblique grid equal those on the straight one (same spacing in mm)
    tables = {}
    for name, affine in (("straight", label.affine), ("tilted", oblique)):
        root = ws.tmp / f"{name}_set"
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        (root / "pred").mkdir()
        ids = np.asarray(label.dataobj)
        shifted = np.where(np.roll(ids == 1, 1, axis=0), 1, np.where(ids == 1, 0, ids))
        nib.save(
            nib.Nifti1Image(np.asarray(image.dataobj), affine), root / "images" / "c_0000.nii.gz"
        )
        nib.save(nib.Nifti1Image(ids, affine), root / "labels" / "c.nii.gz")
        nib.save(nib.Nifti1Image(shifted.astype(np.uint8), affine), root / "pred" / "c.nii.gz")
        tables[name] = score_prediction_dir(root / "pred", root, progress=False).per_case
    liver = tables["tilted"].iloc[0]
    assert liver["organ"] == "liver" and 0.5 < liver["dsc"] < 1 and liver["hd95_mm"] > 0
    numbers = ["dsc", "nsd", "hd95_mm", "gt_ml", "pred_ml", "volume_diff_ml"]
    np.testing.assert_allclose(
        tables["tilted"][numbers].to_numpy(float),
        tables["straight"][numbers].to_numpy(float),
        rtol=1e-6,
    )
