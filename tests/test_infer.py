"""Prediction onto each input's own grid: orientation, headers, files, errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from flare_helpers.cli import evaluate_main, predict_main
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.metrics import dice
from flare_helpers.infer import predict as infer
from flare_helpers.phantoms.synthetic import make_phantom
from flare_helpers.preprocess import pipeline as preprocess
from flare_helpers.preprocess.resample import resize_nearest, resize_probabilities_argmax

FLARE_IDS = {0, 1, 2, 3, 13}


def _error_line(err: str, prog: str) -> str:
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error:") and "Traceback" not in err
    return line


def _rewrite(src: Path, dst: Path, axcodes: str, permute: tuple[int, int, int] = (0, 1, 2)) -> Path:
    """Store the same anatomy in another voxel order: permute axes, then reorient."""
    img = nib.load(src)
    data = np.asarray(img.dataobj)
    affine = img.affine
    if permute != (0, 1, 2):
        data = np.transpose(data, permute)
        perm = np.zeros((4, 4))
        for new_axis, old_axis in enumerate(permute):
            perm[old_axis, new_axis] = 1
        perm[3, 3] = 1
        affine = affine @ perm
    current = nib.io_orientation(affine)
    ornt = ornt_transform(current, axcodes2ornt(tuple(axcodes)))
    out = apply_orientation(data, ornt)
    out_affine = affine @ inv_ornt_aff(ornt, data.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(out), out_affine), dst)
    return dst


def test_prediction_matches_each_input_grid(tiny_run, synthetic_data, tmp_path, capsys):
    out = tmp_path / "pred"
    code = predict_main(
        [
            "--model-path",
            str(tiny_run / "best.keras"),
            "--input",
            str(synthetic_data),
            "--output",
            str(out),
        ]
    )
    assert code == 0
    written = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in written] == [f"FLARE22_Tr_{n:04d}.nii.gz" for n in range(1, 7)]
    for path in written:
        ref = nib.load(synthetic_data / "images" / path.name.replace(".nii.gz", "_0000.nii.gz"))
        pred = nib.load(path)
        assert pred.shape == ref.shape
        np.testing.assert_array_equal(pred.affine, ref.affine)
        assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(ref.affine)
        assert pred.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= FLARE_IDS
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("run", ["tiny_run", "tiny_spacing_run"])
def test_same_anatomy_in_any_voxel_order_gives_the_same_prediction(
    run, synthetic_data, tmp_path, request
):
    src = synthetic_data / "images" / "FLARE22_Tr_0002_0000.nii.gz"  # stored RAS
    variants = {
        "ras": src,
        "lps": _rewrite(src, tmp_path / "lps.nii.gz", "LPS"),
        "permuted": _rewrite(src, tmp_path / "perm.nii.gz", "ILA", permute=(1, 0, 2)),
        "feet_first": _rewrite(src, tmp_path / "ff.nii.gz", "LAI"),
    }
    predictor = infer.load_predictor(request.getfixturevalue(run) / "best.keras")
    outputs = {}
    for name, path in variants.items():
        dst = tmp_path / f"{name}_pred.nii.gz"
        infer.predict_files(predictor, [(path, dst)], progress=False)
        written, ref = nib.load(dst), nib.load(path)
        assert written.shape == ref.shape
        np.testing.assert_array_equal(written.affine, ref.affine)
        outputs[name] = written
    assert nib.aff2axcodes(outputs["permuted"].affine) == ("I", "L", "A")
    # compare in world space: map every voxel of the RAS prediction through the affines
    ras = outputs["ras"]
    ijk = np.indices(ras.shape).reshape(3, -1)
    world = ras.affine[:3, :3] @ ijk + ras.affine[:3, 3:4]
    reference = np.asarray(ras.dataobj).reshape(-1)
    assert set(reference.tolist()) - {0}, "the prediction should contain some organ voxels"
    for name in ("lps", "permuted", "feet_first"):
        other = outputs[name]
        inv = np.linalg.inv(other.affine)
        other_ijk = np.rint(inv[:3, :3] @ world + inv[:3, 3:4]).astype(int)
        values = np.asarray(other.dataobj)[tuple(other_ijk)]
        np.testing.assert_array_equal(values, reference)


def test_real_ct_prediction_and_pred_dir_scoring(tiny_run, real_ct, tmp_path, capsys):
    image = real_ct / "images" / "FLARE22_Tr_9002_0000.nii.gz"
    pred_dir = tmp_path / "pred"
    code = predict_main(
        [
            "--model-path",
            str(tiny_run / "best.keras"),
            "--input",
            str(image),
            "--output",
            str(pred_dir),
        ]
    )
    assert code == 0
    written = pred_dir / "FLARE22_Tr_9002.nii.gz"
    ref, pred = nib.load(image), nib.load(written)
    assert pred.shape == ref.shape == (122, 101, 30)
    np.testing.assert_array_equal(pred.affine, ref.affine)
    assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(ref.affine)
    assert int(pred.header["sform_code"]) == int(ref.header["sform_code"])
    csv = tmp_path / "scores.csv"
    assert (
        evaluate_main(
            ["--pred-dir", str(pred_dir), "--data-path", str(real_ct), "--output", str(csv)]
        )
        == 0
    )
    table = csv.read_text().splitlines()
    assert table[0].startswith("case,organ,dsc,nsd,hd95_mm")
    assert len(table) == 1 + 4  # one row per organ
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "boxplots.png").exists()
    # perfect prediction → Dice 1 for every organ
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    (perfect / "FLARE22_Tr_9002.nii.gz").write_bytes(
        (real_ct / "labels" / "FLARE22_Tr_9002.nii.gz").read_bytes()
    )
    assert evaluate_main(["--pred-dir", str(perfect), "--data-path", str(real_ct)]) == 0
    rows = (perfect / "per_case.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[2]) for r in rows] == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.slow
def test_ct_sized_input_keeps_its_shape_and_affine(tiny_run, tmp_path):
    image, _, affine = make_phantom(4, 1, (512, 512, 110), family="simple")
    src = tmp_path / "big_0000.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), src)
    predictor = infer.load_predictor(tiny_run / "best.keras")
    timer = infer.StageTimer()
    (out,) = infer.predict_files(
        predictor, [(src, tmp_path / "big.nii.gz")], progress=False, timer=timer
    )
    written = nib.load(out)
    assert written.shape == (512, 512, 110)
    np.testing.assert_array_equal(written.affine, nib.load(src).affine)
    assert set(timer.seconds) == {"load", "preprocess", "network", "resample", "write"}


def test_probability_resampling_beats_nearest_labels():
    """Upsampling soft outputs then taking argmax follows curved boundaries better."""
    fine_shape = (96, 96, 48)
    grid = np.indices(fine_shape).astype(np.float32)
    centre = np.array(fine_shape, np.float32)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / np.array([30, 22, 14])[:, None, None, None]) ** 2).sum(0))
    truth = radius <= 1.0
    # coarse "network output": the fraction of each 4×4×4 block inside the organ
    coarse = truth.reshape(24, 4, 24, 4, 12, 4).mean(axis=(1, 3, 5)).astype(np.float32)
    probs = np.stack([1 - coarse, coarse], axis=-1)
    via_probs = resize_probabilities_argmax(probs, fine_shape) == 1
    via_labels = resize_nearest((coarse > 0.5).astype(np.uint8), fine_shape) == 1
    assert dice(truth, via_probs) > dice(truth, via_labels) + 0.01
    assert dice(truth, via_probs) > 0.97


def test_largest_component_drops_islands():
    classes = np.zeros((20, 20, 20), np.uint8)
    classes[2:10, 2:10, 2:10] = 1
    classes[15, 15, 15] = 1  # island
    classes[12:14, 12:14, 12:14] = 2
    infer.keep_largest_component(classes, 3)
    assert classes[15, 15, 15] == 0 and (classes == 1).sum() == 512 and (classes == 2).sum() == 8


def test_largest_component_is_a_setting(tiny_run, synthetic_data, tmp_path):
    src = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    a = infer.load_predictor(tiny_run / "best.keras")
    b = infer.load_predictor(tiny_run / "best.keras", largest_component=False)
    assert a.settings.largest_component and not b.settings.largest_component
    infer.predict_files(a, [(src, tmp_path / "a.nii.gz")], progress=False)
    infer.predict_files(b, [(src, tmp_path / "b.nii.gz")], progress=False)
    with_lcc = load_label(tmp_path / "a.nii.gz").data
    without = load_label(tmp_path / "b.nii.gz").data
    assert np.all((with_lcc == without) | (with_lcc == 0))  # only removes voxels


def test_bfloat16_precision_computes_in_bfloat16_and_agrees_with_float32(tiny_run, synthetic_data):
    image = load_image(synthetic_data / "images" / "FLARE22_Tr_0002_0000.nii.gz")
    exact = infer.load_predictor(tiny_run / "best.keras", precision="float32")
    fast = infer.load_predictor(tiny_run / "best.keras", precision="bfloat16")
    convs = [layer for layer in fast.model.layers if layer.name.endswith("_conv0")]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    for a, b in zip(exact.model.get_weights(), fast.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x, _ = preprocess.prepare_image(image, exact.params)
    p32 = infer.probabilities(exact, x[None])
    p16 = infer.probabilities(fast, x[None])
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16, p32, atol=0.05)  # bfloat16 keeps ~3 significant digits
    # An untrained network has tiny class margins, and how many voxels flip depends
    # on the CPU (native AVX512-BF16 or emulated). Where float32 is decided by more
    # than bfloat16's error bound (0.05), the class must not change on any CPU.
    top2 = np.sort(p32, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) > 0.05
    assert decided.mean() > 0.2  # the check covers a good share of the volume
    agree = np.argmax(p16, -1)[decided] == np.argmax(p32, -1)[decided]
    assert agree.mean() >= 0.999


# --------------------------------------------------------------------------- bad input


def test_bad_model_files(tiny_run, synthetic_data, tmp_path, capsys):
    image = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip")
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", "{}")
    (tmp_path / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    cases = {
        tmp_path / "missing.keras": "model file not found",
        text: "not a .keras model file",
        fake: "not a valid .keras file",
        broken: "cannot load the model",
    }
    for model, message in cases.items():
        out = tmp_path / f"out_{model.stem}.nii.gz"
        code = predict_main(
            ["--model-path", str(model), "--input", str(image), "--output", str(out)]
        )
        line = _error_line(capsys.readouterr().err, "flare-predict")
        assert code == 2 and str(model) in line and message in line
        assert not out.exists()


def test_model_without_config_is_refused(tiny_run, tmp_path):
    lonely = tmp_path / "m.keras"
    lonely.write_bytes((tiny_run / "best.keras").read_bytes())
    with pytest.raises(FlareError, match="no config.yaml beside the model"):
        infer.load_predictor(lonely)


def test_leftovers_of_a_killed_prediction_are_removed(tiny_run, synthetic_data, tmp_path):
    src = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".FLARE22_Tr_0001.nii.gz.tmp-abcd1234.nii.gz"
    stale.write_bytes(b"half a file")
    other = out / ".someone_else.nii.gz.tmp-abcd1234.nii.gz"
    other.write_bytes(b"not ours")
    predictor = infer.load_predictor(tiny_run / "best.keras")
    infer.predict_files(predictor, [(src, out / "FLARE22_Tr_0001.nii.gz")], progress=False)
    assert sorted(p.name for p in out.iterdir()) == [other.name, "FLARE22_Tr_0001.nii.gz"]


def test_bad_inputs_and_existing_outputs(tiny_run, synthetic_data, tmp_path, capsys):
    model = str(tiny_run / "best.keras")
    not_nifti = tmp_path / "scan.nii.gz"
    not_nifti.write_text("hello")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), flat)
    four_d = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)), four_d)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    cases = {
        not_nifti: "corrupt gzip",
        flat: "expected a 3D volume",
        four_d: "expected a 3D volume",
        tmp_path / "nothing.nii.gz": "input not found",
        empty_dir: "no .nii.gz images",
    }
    for source, message in cases.items():
        out = (
            tmp_path / "o" / "x.nii.gz"
            if source.is_file() or not source.exists()
            else tmp_path / "o2"
        )
        code = predict_main(["--model-path", model, "--input", str(source), "--output", str(out)])
        line = _error_line(capsys.readouterr().err, "flare-predict")
        assert code == 2 and message in line and str(source) in line
        assert not out.exists()

    image = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"keep me")
    args = ["--model-path", model, "--input", str(image), "--output", str(existing)]
    assert predict_main(args) == 2
    assert "--overwrite" in _error_line(capsys.readouterr().err, "flare-predict")
    assert existing.read_bytes() == b"keep me"
    assert predict_main([*args, "--overwrite"]) == 0
    assert nib.load(existing).shape == nib.load(image).shape


def test_pred_dir_with_missing_cases_scores_the_rest(synthetic_data, tmp_path, capsys):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for n in (1, 3):
        name = f"FLARE22_Tr_{n:04d}.nii.gz"
        (pred_dir / name).write_bytes((synthetic_data / "labels" / name).read_bytes())
    assert evaluate_main(["--pred-dir", str(pred_dir), "--data-path", str(synthetic_data)]) == 0
    out = capsys.readouterr().out
    assert "no prediction for FLARE22_Tr_0002" in out and "no prediction for FLARE22_Tr_0006" in out
    rows = (pred_dir / "per_case.csv").read_text().splitlines()[1:]
    assert len(rows) == 8 and {r.split(",")[0] for r in rows} == {
        "FLARE22_Tr_0001",
        "FLARE22_Tr_0003",
    }
