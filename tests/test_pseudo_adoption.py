"""The student earns its place: the adoption rule, the ignore value, the confidence signals."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import spearmanr

from flare_helpers.config import load_config, save_config
from flare_helpers.data.labels import IGNORE, OrganSet, one_hot
from flare_helpers.data.nifti import load_label
from flare_helpers.pseudolabel.confidence import (
    AnatomyReference,
    TransformedModel,
    agreement_dice,
    case_confidence,
    organ_geometry,
)
from flare_helpers.pseudolabel.teacher import confidence_table, row_confidence
from flare_helpers.workflows import pseudo_round


@pytest.mark.parametrize(
    ("teacher", "student", "margin", "adopted"),
    [
        (0.900, 0.930, 0.005, True),
        (0.900, 0.905, 0.005, True),  # exactly the margin
        (0.900, 0.904, 0.005, False),
        (0.927, 0.884, 0.005, False),  # the student, 0.043 below
        (0.900, 0.901, 0.0, True),
        (0.900, 0.900, 0.0, True),
    ],
)
def test_adoption_rule_on_crafted_scores(teacher, student, margin, adopted):
    result = pseudo_round.decide("t/best.keras", "s/best.keras", teacher, student, margin, 4)
    assert result.adopted is adopted
    assert result.model_path == Path("s/best.keras" if adopted else "t/best.keras")
    line = str(result)
    assert "\n" not in line
    assert f"{student:.3f}" in line and f"{teacher:.3f}" in line
    assert line.startswith("student adopted" if adopted else "teacher kept")


def test_a_second_round_starts_from_the_winner(monkeypatch, tmp_path):
    """Round 1's student loses: round 2 is taught by the teacher; it wins: round 3 by it."""
    teachers = []
    scores = {1: 0.80, 2: 0.95, 3: 0.90}

    def fake_round(cfg, teacher, images, paths, **kwargs):
        teachers.append(Path(teacher))
        number = int(paths.root.name.removeprefix("round"))
        student = paths.model_path
        base = {"t.keras": 0.90}.get(Path(teacher).name, 0.95 if number == 3 else 0.90)
        return None, None, pseudo_round.decide(teacher, student, base, scores[number], 0.01, 2)

    monkeypatch.setattr(pseudo_round, "run_round", fake_round)
    adoptions = pseudo_round.run_rounds(None, tmp_path / "t.keras", "scans", tmp_path, 3)
    assert [a.adopted for a in adoptions] == [False, True, False]
    assert teachers == [
        tmp_path / "t.keras",
        tmp_path / "t.keras",
        pseudo_round.round_paths(tmp_path, 2).model_path,
    ]


def test_validation_cases_are_required(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "splits.json").write_text('{"train": ["a"], "val": [], "test": []}')
    with pytest.raises(Exception, match="no validation cases"):
        pseudo_round.validation_cases(tmp_path / "run" / "best.keras")


def test_ignore_value_survives_classes_and_becomes_an_empty_one_hot(tmp_path):
    organs = OrganSet.from_names(("liver", "right_kidney", "left_kidney", "spleen"))
    flare = np.array([[[0, 1, 2, 13, 3, IGNORE]]], np.uint8)
    classes = organs.to_classes(flare)
    assert classes.tolist() == [[[0, 1, 2, 3, 4, IGNORE]]]
    assert organs.to_flare(classes).tolist() == flare.tolist()
    encoded = one_hot(classes, 5)
    assert encoded[0, 0, 5].tolist() == [0.0] * 5
    assert encoded[0, 0, :5].argmax(-1).tolist() == [0, 1, 2, 3, 4]
    assert encoded.sum() == 5
    with pytest.raises(ValueError, match="class 4"):
        one_hot(classes, 4)
    path = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(flare, np.eye(4)), path)
    assert int(load_label(path).data.max()) == IGNORE  # a pseudo-label with ignored voxels loads


def test_agreement_and_tta_wrappers():
    a = np.zeros((8, 8, 8), np.uint8)
    a[1:5, 1:5, 1:5] = 1  # 64 voxels
    b = a.copy()
    b[1:3, 1:5, 1:5] = 0  # 32 voxels left, all inside a
    assert agreement_dice(a, a, 3) == 1.0  # class 2 absent in both: 1
    assert agreement_dice(a, b, 3) == pytest.approx((2 * 32 / 96 + 1) / 2)

    class Echo:  # probabilities that follow the input voxel by voxel: an equivariant network
        def predict_on_batch(self, x):
            return np.concatenate([x, 2 * x, 1 - x], axis=-1)

    x = np.random.default_rng(0).random((1, 8, 6, 4, 1)).astype(np.float32)
    plain = Echo().predict_on_batch(x)
    shifted = TransformedModel(Echo(), "shift").predict_on_batch(x)
    np.testing.assert_allclose(shifted, plain)
    mirrored = TransformedModel(Echo(), "mirror", [(1, 2)]).predict_on_batch(x)
    np.testing.assert_allclose(mirrored, plain[..., [0, 2, 1]])  # kidneys swapped back


def test_anatomy_score_and_the_confidence_product():
    classes = np.zeros((20, 20, 20), np.uint8)
    classes[2:8, 2:8, 2:8] = 1  # 216 voxels
    classes[12:16, 12:16, 12:16] = 2  # 64 voxels
    geometry = organ_geometry(classes, (2.0, 2.0, 2.0), 3)
    np.testing.assert_allclose(geometry.volume_ml, [216 * 8 / 1000, 64 * 8 / 1000])
    reference = AnatomyReference.from_cases([geometry, geometry])
    assert reference.score(geometry) == pytest.approx(1.0)
    bigger = classes.copy()
    bigger[8:10, 2:8, 2:8] = 1  # liver 1/3 larger, and its centre moves
    assert 0 < reference.score(organ_geometry(bigger, (2.0, 2.0, 2.0), 3)) < 1
    missing = classes.copy()
    missing[missing == 2] = 0
    # kidney missing: it scores 0, and the liver alone sits off the organs' usual centre
    assert 0 < reference.score(organ_geometry(missing, (2.0, 2.0, 2.0), 3)) < 0.5

    score = case_confidence(
        0.8,
        classes,
        3,
        tta_classes=missing,
        spacing=(2.0, 2.0, 2.0),
        reference=reference,
        signals=("mean_probability", "agreement", "anatomy"),
    )
    assert score.agreement == pytest.approx(0.5)
    assert score.anatomy == pytest.approx(1.0)
    assert score.confidence == pytest.approx(0.8 * 0.5 * 1.0)
    row = score.row()
    assert row_confidence(row, ("agreement", "anatomy")) == pytest.approx(0.5)
    assert row_confidence(row, ("component_share",)) == pytest.approx(1.0)
    unmeasured = case_confidence(0.8, classes, 3, signals=("mean_probability", "agreement"))
    assert math.isnan(unmeasured.agreement) and unmeasured.confidence == pytest.approx(0.8)


def test_agreement_ranks_crafted_cases_by_their_true_dice():
    """Cases whose prediction is eroded more (true DSC lower) move more under the twin
    prediction: Spearman ρ(agreement, true DSC) is 1 on this crafted set."""
    truth = np.zeros((24, 24, 24), np.uint8)
    truth[4:20, 4:20, 4:20] = 1
    true_dsc, agreement = [], []
    for k in range(6):
        pred = truth.copy()
        pred[4 : 4 + k, :, :] = 0  # k slabs missed
        twin = pred.copy()
        twin[4 + k : 4 + 2 * k, :, :] = 0  # the twin misses k more where it is unsure
        true_dsc.append(agreement_dice(pred, truth, 2))
        agreement.append(agreement_dice(pred, twin, 2))
    assert spearmanr(agreement, true_dsc).statistic == pytest.approx(1.0)


def test_the_confidence_table_leaves_out_a_signal_measured_for_no_case():
    """``anatomy`` (not in ``pseudo.confidence``) is empty for every case: no NaN column."""
    rows = {
        f"Case_{k:05d}": {
            "case_id": f"Case_{k:05d}",
            "status": "ok",
            "confidence": str(0.5 + k / 10),
            "mean_probability": "0.9",
            "component_share": "1.0",
            "agreement": str(0.5 + k / 10),
            "anatomy": "",
            "organs_found": "4",
            "reason": "kept",
            "kept": "True",
            "seconds": "1.5",
        }
        for k in range(1, 4)
    }
    table = confidence_table(rows)
    assert "anatomy" not in table.columns and not table.isna().any().any()
    assert table["agreement"].tolist() == pytest.approx([0.6, 0.7, 0.8])
    rows["Case_00002"]["anatomy"] = "0.75"  # measured for one case: the column stays
    assert confidence_table(rows)["anatomy"].isna().sum() == 2


def _teacher_run(folder: Path, cfg) -> Path:
    """A teacher run folder as training leaves it: settings and a finished localiser."""
    folder.mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    (folder / "best.keras").write_bytes(b"vnet")
    (folder / "localizer.keras").write_bytes(bytes(range(256)) * 8)
    (folder / "localizer_history.csv").write_text("epoch,loss\n0,1.5\n1,1.2\n")
    (folder / "localizer_done.json").write_text(
        '{"epochs": 2, "epochs_completed": 2, "best_epoch": 2, "best_value": 0.5, '
        '"monitor": "ema_val_mean_dice"}'
    )
    return folder / "best.keras"


def test_the_student_gets_a_copy_of_a_matching_teacher_localiser(tmp_path):
    cfg = load_config(None, ["localizer.epochs=2"])
    teacher = _teacher_run(tmp_path / "teacher", cfg)
    student = tmp_path / "round1" / "student"
    said = pseudo_round.reuse_localizer(cfg, teacher, student)
    assert said.startswith("localiser: the teacher's (") and "2 epochs" in said
    for name in ("localizer.keras", "localizer_history.csv", "localizer_done.json"):
        assert (student / name).read_bytes() == (tmp_path / "teacher" / name).read_bytes()
    assert sorted(p.name for p in student.iterdir()) == [
        "localizer.keras", "localizer_done.json", "localizer_history.csv"
    ]  # fmt: skip
    assert "already there" in pseudo_round.reuse_localizer(cfg, teacher, student)
    # other localiser or grid settings, or resize mode: nothing copied
    for changed in (["localizer.epochs=3"], ["preprocess.target_spacing=[2.0,2.0,3.0]"]):
        other = tmp_path / f"other{len(changed[0])}"
        said = pseudo_round.reuse_localizer(load_config(None, changed), teacher, other)
        assert "other settings" in said and not other.exists()
    resize = load_config(None, ["preprocess.mode=resize"])
    assert "none in this run" in pseudo_round.reuse_localizer(resize, teacher, tmp_path / "r")
    # a teacher whose localiser the validation Dice gate turned down: the same verdict
    rejected = tmp_path / "teacher" / "localizer_rejected.keras"
    (tmp_path / "teacher" / "localizer.keras").rename(rejected)
    said = pseudo_round.reuse_localizer(cfg, teacher, tmp_path / "gated")
    assert "was not kept" in said and not (tmp_path / "gated" / "localizer.keras").exists()
    assert (tmp_path / "gated" / rejected.name).read_bytes() == rejected.read_bytes()
    (tmp_path / "teacher" / "localizer_done.json").unlink()  # the teacher's never finished
    said = pseudo_round.reuse_localizer(cfg, teacher, tmp_path / "unfinished")
    assert "the teacher has no finished one" in said and not (tmp_path / "unfinished").exists()
