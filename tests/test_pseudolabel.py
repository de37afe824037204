"""Unlabelled scans in, pseudo-labels out, confident ones into training only."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_settings import TINY_LOCALIZER, TINY_MODEL, TINY_SPACING

from flare_helpers.cli import extract_main, pseudolabel_main, synth_main
from flare_helpers.config import PseudoConfig, load_config
from flare_helpers.data.fileio import is_temp_name, read_history, read_json
from flare_helpers.data.pseudo_folder import pseudo_cases, read_rows
from flare_helpers.data.unlabelled import list_scans
from flare_helpers.errors import FlareError
from flare_helpers.infer import predict as infer
from flare_helpers.phantoms.synthetic import write_unlabelled
from flare_helpers.preprocess.pipeline import preprocess_dataset
from flare_helpers.pseudolabel.confidence import (
    ProbabilityRecorder,
    case_confidence,
    component_shares,
)
from flare_helpers.pseudolabel.teacher import pseudolabel, select

FLARE_IDS = {0, 1, 2, 3, 13}


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> tuple[Path, Path]:
    """Six unlabelled phantoms (all four orientations the generator cycles): (zip, truth)."""
    return write_unlabelled(
        tmp_path_factory.mktemp("unl"), 6, 5, (32, 32, 16), progress=False, family="simple"
    )


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        return {Path(i.filename).name: archive.read(i) for i in archive.infolist()}


def test_synth_writes_the_unlabelled_layout_with_truth_apart(tmp_path, capsys):
    assert (
        synth_main(["--out", str(tmp_path), "--unlabelled", "3", "--shape", "16", "16", "8"]) == 0
    )
    zip_path = tmp_path / "FLARE_UnlabeledCase1-3.zip"
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == [
            f"FLARE_UnlabeledCase1-3/Case_{k:05d}_0000.nii.gz" for k in (1, 2, 3)
        ]
    truth = sorted(p.name for p in (tmp_path / "FLARE_UnlabeledCase1-3_truth").iterdir())
    assert truth == [f"Case_{k:05d}.nii.gz" for k in (1, 2, 3)]
    assert not (tmp_path / "FLARE22Train.zip").exists()
    assert "ground truth" in capsys.readouterr().out


def test_unlabelled_extraction_takes_a_chosen_slice(unlabelled, tmp_path, capsys):
    zip_path, _ = unlabelled
    members = _members(zip_path)
    out = tmp_path / "out"
    assert extract_main(["--zip", str(zip_path), "--out", str(out), "--unlabelled",
                         "--range", "2-5", "--max-cases", "3"]) == 0  # fmt: skip
    images = out / "FLARE_UnlabeledCase1-6" / "images"
    names = sorted(p.name for p in images.iterdir())
    assert names == [f"Case_{k:05d}_0000.nii.gz" for k in (2, 3, 4)]
    assert all((images / n).read_bytes() == members[n] for n in names)
    assert "extracted 3 of 6 unlabelled scans" in capsys.readouterr().out
    before = {n: (images / n).stat().st_mtime_ns for n in names}
    assert extract_main(["--zip", str(zip_path), "--out", str(out), "--unlabelled",
                         "--max-cases", "4"]) == 0  # fmt: skip
    assert sorted(p.name for p in images.iterdir()) == [
        f"Case_{k:05d}_0000.nii.gz" for k in (1, 2, 3, 4)
    ]
    assert all((images / n).stat().st_mtime_ns == t for n, t in before.items())  # kept
    # The extracted folder is itself an unlabelled source.
    assert [s.case_id for s in list_scans(images.parent, first=4).scans] == ["Case_00004"]
    with pytest.raises(FlareError, match="case range starts at 9 but there are 6 scans"):
        list_scans(zip_path, first=9)


def test_a_label_file_in_an_unlabelled_set_is_ignored_with_a_message(unlabelled, tmp_path, capsys):
    zip_path, truth = unlabelled
    folder = tmp_path / "FLARE_UnlabeledCase1-6"
    folder.mkdir()
    for name, payload in _members(zip_path).items():
        (folder / name).write_bytes(payload)
    shutil.copy(truth / "Case_00001.nii.gz", folder / "Case_00001.nii.gz")
    source = list_scans(folder)
    assert [s.case_id for s in source.scans] == [f"Case_{k:05d}" for k in range(1, 7)]
    assert source.notes == ("ignored Case_00001.nii.gz: a label file in an unlabelled set",)
    code = extract_main(["--zip", str(folder), "--out", str(tmp_path / "x"), "--unlabelled"])
    assert code == 0
    out = capsys.readouterr().out
    assert "note: ignored Case_00001.nii.gz: a label file in an unlabelled set" in out
    assert not (tmp_path / "x" / folder.name / "labels").exists()


def test_pseudo_labels_lie_on_each_input_grid_in_every_orientation(unlabelled, tiny_run, tmp_path):
    zip_path, _ = unlabelled
    result = pseudolabel(
        tiny_run / "best.keras", zip_path, tmp_path / "P", PseudoConfig(keep_fraction=1.0),
        progress=False,
    )  # fmt: skip
    assert result.kept == tuple(f"Case_{k:05d}" for k in range(1, 7))
    # The recorder saw the network's output of every case (the confidence is not a default).
    assert all(0.2 < float(r["mean_probability"]) <= 1 for r in result.rows.values())
    predictor = infer.load_predictor(tiny_run / "best.keras")
    seen = set()
    for name, payload in _members(zip_path).items():
        src = tmp_path / name
        src.write_bytes(payload)
        case_id = name.removesuffix("_0000.nii.gz")
        ref = nib.load(src)
        label = nib.load(tmp_path / "P" / "labels" / f"{case_id}.nii.gz")
        assert label.shape == ref.shape
        np.testing.assert_array_equal(label.affine, ref.affine)
        seen.add(nib.aff2axcodes(ref.affine))
        expected = infer.predict_files(
            predictor, [(src, tmp_path / f"{case_id}.nii.gz")], progress=False
        )[0]
        np.testing.assert_array_equal(
            np.asarray(label.dataobj), np.asarray(nib.load(expected).dataobj)
        )
        assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= FLARE_IDS
        assert (tmp_path / "P" / "images" / name).read_bytes() == payload
    assert seen == {("L", "P", "S"), ("R", "A", "S"), ("L", "A", "S"), ("R", "P", "I")}


def test_a_corrupt_ct_is_skipped_and_the_rest_are_labelled(unlabelled, tiny_run, tmp_path, capsys):
    zip_path, _ = unlabelled
    folder = tmp_path / "scans"
    folder.mkdir()
    for name, payload in list(_members(zip_path).items())[:3]:
        (folder / name).write_bytes(payload[: len(payload) // 2] if "00002" in name else payload)
    code = pseudolabel_main(["--model-path", str(tiny_run / "best.keras"), "--images",
                             str(folder), "--out", str(tmp_path / "P"), "pseudo.keep_fraction=1"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and skipped[0].startswith("skipped Case_00002_0000.nii.gz: ")
    assert "truncated" in skipped[0]
    rows = read_rows(tmp_path / "P" / "confidence.csv")
    assert {c: r["status"] for c, r in rows.items()} == {
        "Case_00001": "ok", "Case_00002": "failed", "Case_00003": "ok"
    }  # fmt: skip
    assert rows["Case_00002"]["kept"] == "False" and "\n" not in rows["Case_00002"]["reason"]
    assert sorted(p.name for p in (tmp_path / "P" / "labels").iterdir()) == [
        "Case_00001.nii.gz", "Case_00003.nii.gz"
    ]  # fmt: skip


def test_selection_by_threshold_and_top_fraction():
    conf = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.2}
    reasons = select(conf, PseudoConfig(min_confidence=0.3, keep_fraction=0.5))
    assert {c for c, r in reasons.items() if r.startswith("kept")} == {"a", "c"}
    assert reasons["d"] == "dropped: confidence below min_confidence 0.3"
    assert reasons["b"] == "dropped: rank 3 of 4, outside the top 2"
    reasons = select(conf, PseudoConfig(min_confidence=0.6, keep_fraction=1.0))
    assert {c for c, r in reasons.items() if r.startswith("kept")} == {"a", "c"}


def test_confidence_numbers():
    classes = np.zeros((10, 10, 10), np.uint8)
    classes[1:4, 1:4, 1:4] = 1  # 27 voxels, one piece
    classes[6:8, 6:8, 6:8] = 1  # 8 more voxels, apart
    classes[5, 0, 0] = 2  # one voxel; class 3 absent
    assert component_shares(classes, 4) == pytest.approx([27 / 35, 1.0, 0.0])
    score = case_confidence(0.8, classes, 4)
    assert score.organs_found == 2
    assert score.confidence == pytest.approx(0.8 * (27 / 35 + 1.0) / 3)

    class Fixed:
        def predict_on_batch(self, x):
            out = np.zeros((*x.shape[:-1], 3), np.float32)
            out[..., 0] = 1.0
            out[0, 0, 0, 0] = [0.2, 0.7, 0.1]  # organ voxel, top 0.7
            out[0, 1, 0, 0] = [0.1, 0.3, 0.6]  # organ voxel, top 0.6
            return out

        input_shape = (None, 2, 2, 2, 1)

    recorder = ProbabilityRecorder(Fixed())
    recorder.predict_on_batch(np.zeros((1, 2, 2, 2, 1), np.float32))
    assert recorder.mean_probability == pytest.approx(0.65)
    assert recorder.input_shape == (None, 2, 2, 2, 1)
    recorder.reset()
    assert recorder.mean_probability == 0.0


def test_resume_after_sigkill(unlabelled, tiny_run, tmp_path):
    zip_path, _ = unlabelled
    out = tmp_path / "P"
    command = [sys.executable, "-m", "flare_helpers", "pseudolabel", "--model-path",
               str(tiny_run / "best.keras"), "--images", str(zip_path), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and not (out / "confidence.csv").exists():
            assert time.monotonic() < deadline, "no output within 120 s"
            time.sleep(0.001)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "pseudo-labelling finished before the kill"
    done = read_rows(out / "confidence.csv")
    assert 1 <= len(done) < 6
    first = out / "predictions" / f"{min(done)}.nii.gz"
    stamp = first.stat().st_mtime_ns

    result = pseudolabel(tiny_run / "best.keras", zip_path, out, progress=False)
    assert set(result.skipped) == set(done) and len(result.predicted) == 6 - len(done)
    assert first.stat().st_mtime_ns == stamp  # finished cases are not predicted again
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]
    fresh = pseudolabel(tiny_run / "best.keras", zip_path, tmp_path / "fresh", progress=False)
    assert {c: r["kept"] for c, r in fresh.rows.items()} == {
        c: r["kept"] for c, r in read_rows(out / "confidence.csv").items()
    }
    for case_id in fresh.rows:
        a = nib.load(out / "predictions" / f"{case_id}.nii.gz").get_fdata()
        b = nib.load(tmp_path / "fresh" / "predictions" / f"{case_id}.nii.gz").get_fdata()
        np.testing.assert_array_equal(a, b)
    with (out / "confidence.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_pseudo_labelled_cases_only_ever_train(unlabelled, tiny_run, synthetic_copy, tmp_path):
    from flare_helpers.train.loop import make_datasets

    zip_path, _ = unlabelled
    pseudo = tmp_path / "P"
    result = pseudolabel(
        tiny_run / "best.keras", zip_path, pseudo, PseudoConfig(keep_fraction=0.5), progress=False
    )
    assert len(result.kept) == 3
    base = [*TINY_MODEL, "data.val_fraction=0.2", "data.test_fraction=0.2"]
    plain = preprocess_dataset(
        synthetic_copy, tmp_path / "c0", load_config(None, base), progress=False
    )
    cfg = load_config(
        None,
        [*base, f"data.pseudo_dirs=[{pseudo}]", f"data.cache_dir={tmp_path / 'c1'}",
         "pseudo.sample_weight=0.5", "train.batch_size=1"],
    )  # fmt: skip
    kept = pseudo_cases(cfg.data.pseudo_dirs)
    assert [c.case_id for c in kept] == list(result.kept)
    summary = preprocess_dataset(
        synthetic_copy, tmp_path / "c1", cfg, training_only=kept, progress=False
    )
    assert summary.splits == plain.splits  # the labelled split is unchanged
    manifest = read_json(tmp_path / "c1" / "manifest.json")
    assert manifest["pseudo"] == list(result.kept)
    assert set(result.kept) <= set(manifest["cases"])
    assert "3 pseudo-labelled (training only)" in str(summary)
    held_out = set(summary.splits["val"]) | set(summary.splits["test"])
    assert not held_out & set(result.kept)
    train_data, val_data = make_datasets(cfg, summary.splits)
    assert train_data.case_ids == (*summary.splits["train"], *result.kept)
    assert set(val_data.case_ids) == set(summary.splits["val"])
    # 4 labelled cases × 1 + 3 pseudo-labelled × 0.5 → round(5.5) = 6 samples per epoch.
    counts = []
    for epoch in range(40):
        order = train_data.order(epoch)
        assert len(order) == 6 == len(train_data)
        assert np.bincount(order[order < 4], minlength=4).tolist() == [1, 1, 1, 1]
        counts.append(np.bincount(order[order >= 4] - 4, minlength=3))
    assert np.sum(counts, axis=0).sum() == 80 and np.sum(counts, axis=0).min() > 10
    x, y = train_data[0]
    assert x.shape == (1, 32, 32, 16, 1) and y.shape == (1, 32, 32, 16, 5)


def test_a_student_can_start_from_its_teacher(tiny_run):
    from flare_helpers.train.loop import build_and_compile, load_initial_weights

    cfg = load_config(None, [*TINY_MODEL, f"pseudo.init_from={tiny_run / 'best.keras'}"])
    student = build_and_compile(cfg, 5)
    load_initial_weights(student, cfg.pseudo.init_from)
    teacher = infer.load_predictor(tiny_run / "best.keras").model
    for a, b in zip(student.get_weights(), teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    wider = load_config(None, [*TINY_MODEL, "model.base_filters=8",
                               f"pseudo.init_from={tiny_run / 'best.keras'}"])  # fmt: skip
    with pytest.raises(FlareError, match="architecture differs"):
        load_initial_weights(build_and_compile(wider, 5), wider.pseudo.init_from)


def test_ignored_voxels_are_where_the_mirrored_prediction_disagrees(unlabelled, tiny_run, tmp_path):
    """With ignore_disagreement the kept labels are the predictions with 255 where the
    mirrored twin disagrees; a rerun without it only puts the plain predictions back."""
    zip_path, _ = unlabelled
    settings = PseudoConfig(
        keep_fraction=1.0, tta="mirror", ignore_disagreement=True, confidence=("agreement",)
    )
    folder = tmp_path / "P"
    result = pseudolabel(
        tiny_run / "best.keras", zip_path, folder, settings, max_cases=2, progress=False
    )
    assert len(result.kept) == 2
    ignored_any = False
    for case_id in result.kept:
        row = result.rows[case_id]
        assert float(row["confidence"]) == pytest.approx(float(row["agreement"]), abs=1e-5)
        plain = np.asarray(nib.load(folder / "predictions" / f"{case_id}.nii.gz").dataobj)
        label = np.asarray(nib.load(folder / "labels" / f"{case_id}.nii.gz").dataobj)
        ignored = label == 255
        ignored_any |= bool(ignored.any())
        np.testing.assert_array_equal(label[~ignored], plain[~ignored])
        assert set(np.unique(label[~ignored]).tolist()) <= FLARE_IDS
    assert ignored_any  # an untrained-ish tiny network is not mirror-symmetric
    pseudolabel(
        tiny_run / "best.keras", zip_path, folder,
        PseudoConfig(keep_fraction=1.0, tta="mirror", confidence=("agreement",)),
        max_cases=2, progress=False,
    )  # fmt: skip
    for case_id in result.kept:
        np.testing.assert_array_equal(
            np.asarray(nib.load(folder / "labels" / f"{case_id}.nii.gz").dataobj),
            np.asarray(nib.load(folder / "predictions" / f"{case_id}.nii.gz").dataobj),
        )


@pytest.mark.slow
def test_the_student_reuses_the_teachers_localiser_and_keeps_its_time_limit(
    unlabelled, synthetic_copy, tmp_path, capsys
):
    """Notebook 06's student (spacing mode): a byte-identical copy of the teacher's
    localiser and no localiser epoch of its own; ``train.time_limit_minutes`` cuts its
    epochs short; ``pseudo.retrain_localizer`` trains a localiser of its own."""
    from flare_helpers.data.layout import RunLayout
    from flare_helpers.workflows import pseudo_round, training

    zip_path, _ = unlabelled
    cfg = load_config(
        None,
        [*TINY_MODEL, *TINY_SPACING, *TINY_LOCALIZER, "train.epochs=1", "localizer.min_val_dice=0",
         "data.val_fraction=0.2", "data.test_fraction=0.2",
         f"data.data_dir={synthetic_copy}", f"data.cache_dir={tmp_path / 'cache'}",
         f"train.output_dir={tmp_path / 'teacher'}"],
    )  # fmt: skip
    teacher = training.train(cfg, progress=False).best_model
    taught = RunLayout(teacher.parent)
    first = pseudo_round.round_paths(tmp_path / "work", 1)
    labelled = pseudolabel(teacher, zip_path, first.pseudo_dir, cfg.pseudo, progress=False)
    assert len(labelled.kept) == 3
    capsys.readouterr()

    budget = cfg.replace(train={"epochs": 3, "time_limit_minutes": 0.0001})
    student = pseudo_round.train_student(budget, teacher, first, progress=False)
    assert student.epochs_completed < 3  # the 6 ms limit cut its 3 epochs short
    assert "localiser: the teacher's (" in capsys.readouterr().out
    run = RunLayout(first.run_dir)
    assert run.localizer_model.read_bytes() == taught.localizer_model.read_bytes()
    assert run.localizer_history.read_bytes() == taught.localizer_history.read_bytes()
    assert not run.localizer_checkpoints.exists()  # no localiser epoch ran in the student
    assert len(read_history(run.history)) < 3 and not run.done.exists()
    assert load_config(run.config).train.time_limit_minutes == 0.0001

    second = pseudo_round.round_paths(tmp_path / "work", 2)
    shutil.copytree(first.pseudo_dir, second.pseudo_dir)  # the same pseudo-labels
    retrain = cfg.replace(pseudo={"retrain_localizer": True})
    pseudo_round.train_student(retrain, teacher, second, progress=False)
    assert "the student trains its own" in capsys.readouterr().out
    own = RunLayout(second.run_dir)
    assert sorted(p.name for p in own.localizer_checkpoints.iterdir()) == ["epoch_0002.keras"]
    assert len(read_history(own.localizer_history)) == 2  # TINY_LOCALIZER's 2 epochs
