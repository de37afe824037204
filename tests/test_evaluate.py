"""Scoring a prediction folder, summaries, box plots and report files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from test_metrics import OFFICIAL_TOLERANCE, official_flare22_scores

from flare_helpers.cli import format_summary
from flare_helpers.data.cases import discover_cases
from flare_helpers.data.labels import FLARE22_IDS, ORGAN_COLORS
from flare_helpers.data.nifti import load_label, save_like
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.evaluation import (
    ALL_ORGANS,
    PER_CASE_COLUMNS,
    EvaluationResult,
    plot_boxplots,
    score_prediction_dir,
    summarize,
    write_report,
)
from flare_helpers.phantoms.synthetic import reorient

LIVER = FLARE22_IDS["liver"]


def _write_predictions(data_dir: Path, pred_dir: Path, change, skip: tuple[str, ...] = ()):
    """Save ``change(canonical labels)`` for every labelled case onto its label's grid."""
    pred_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for case in discover_cases(data_dir).labelled:
        if case.case_id in skip:
            continue
        canonical = change(load_label(case.label).data.copy())
        save_like(canonical, case.label, pred_dir / f"{case.case_id}.nii.gz")
        written[case.case_id] = canonical
    return written


def _erode_liver(labels: np.ndarray) -> np.ndarray:
    liver = labels == LIVER
    labels[liver & ~ndimage.binary_erosion(liver)] = 0
    return labels


def test_ground_truth_as_prediction_is_perfect(synthetic_data, tmp_path):
    _write_predictions(synthetic_data, tmp_path / "pred", lambda labels: labels)
    result = score_prediction_dir(tmp_path / "pred", synthetic_data, progress=False)
    table = result.per_case
    assert list(table.columns) == list(PER_CASE_COLUMNS)
    assert len(table) == 6 * 4 and result.missing == ()
    assert table["case"].nunique() == 6
    assert (table["dsc"] == 1.0).all() and (table["nsd"] == 1.0).all()
    assert (table["hd95_mm"] == 0.0).all() and (table["volume_diff_ml"] == 0.0).all()
    assert (table["gt_ml"] > 0).all()


def test_eroded_liver_known_values_and_missing_case(synthetic_data, tmp_path):
    skip = ("FLARE22_Tr_0006",)
    written = _write_predictions(synthetic_data, tmp_path / "pred", _erode_liver, skip)
    result = score_prediction_dir(tmp_path / "pred", synthetic_data, progress=False)
    assert result.missing == skip
    assert sorted(result.per_case["case"].unique()) == sorted(written)
    cases = {c.case_id: c for c in discover_cases(synthetic_data).labelled}
    for case_id, pred in written.items():
        gt = load_label(cases[case_id].label)
        rows = result.per_case[result.per_case["case"] == case_id].set_index("organ")
        # Eroded liver ⊂ true liver: DSC = 2|P| / (|G| + |P|); other organs untouched.
        g, p = np.count_nonzero(gt.data == LIVER), np.count_nonzero(pred == LIVER)
        assert rows.loc["liver", "dsc"] == pytest.approx(2 * p / (g + p), abs=1e-6)
        assert rows.loc["liver", "dsc"] < 0.95
        voxel_ml = math.prod(gt.spacing) / 1000
        assert rows.loc["liver", "volume_diff_ml"] == pytest.approx((p - g) * voxel_ml)
        assert (rows.drop(index="liver")["dsc"] == 1.0).all()
        # Independent check: the official loop on the files' own voxel order and zooms.
        gt_file, pred_file = (
            nib.load(path)
            for path in (cases[case_id].label, tmp_path / "pred" / f"{case_id}.nii.gz")
        )
        reference = official_flare22_scores(
            np.uint8(gt_file.get_fdata()),
            np.uint8(pred_file.get_fdata()),
            gt_file.header.get_zooms(),
        )
        for organ, ref in reference.items():
            for key, value in ref.items():
                assert rows.loc[organ, key] == pytest.approx(value, abs=1e-12), (organ, key)
    assert set(result.per_case["organ"]) == set(OFFICIAL_TOLERANCE)


def test_permuted_voxel_order_uses_matching_spacing(synthetic_data, tmp_path):
    # Store one case with its slice axis first ("SPL"): the spacing must follow the axes,
    # as in the official loop on the file's own voxel order and header zooms.
    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    case = discover_cases(data).labelled[0]
    for path in (case.image, case.label):
        ras = nib.as_closest_canonical(nib.load(path))
        voxels, affine = reorient(np.asarray(ras.dataobj), ras.affine, "SPL")
        nib.save(nib.Nifti1Image(voxels, affine), path)
    stored = nib.load(case.label)
    assert nib.aff2axcodes(stored.affine) == ("S", "P", "L")
    assert stored.header.get_zooms()[0] > 2 * stored.header.get_zooms()[2]
    _write_predictions(data, tmp_path / "pred", _erode_liver)
    result = score_prediction_dir(
        tmp_path / "pred", data, case_ids=[case.case_id], progress=False
    ).per_case.set_index("organ")
    pred = nib.load(tmp_path / "pred" / f"{case.case_id}.nii.gz")
    reference = official_flare22_scores(
        np.uint8(stored.get_fdata()), np.uint8(pred.get_fdata()), stored.header.get_zooms()
    )
    swapped = official_flare22_scores(
        np.uint8(stored.get_fdata()), np.uint8(pred.get_fdata()), stored.header.get_zooms()[::-1]
    )
    assert abs(swapped["liver"]["hd95_mm"] - result.loc["liver", "hd95_mm"]) > 0.1
    for organ, ref in reference.items():
        for key, value in ref.items():
            assert result.loc[organ, key] == pytest.approx(value, abs=1e-12), (organ, key)


def test_case_ids_and_organs_select(synthetic_data, tmp_path):
    _write_predictions(synthetic_data, tmp_path / "pred", lambda labels: labels)
    result = score_prediction_dir(
        tmp_path / "pred",
        synthetic_data,
        case_ids=["FLARE22_Tr_0002", "FLARE22_Tr_0004"],
        organs=("spleen", "liver"),
        progress=False,
    )
    assert list(result.per_case["case"]) == ["FLARE22_Tr_0002"] * 2 + ["FLARE22_Tr_0004"] * 2
    assert list(result.per_case["organ"]) == ["spleen", "liver"] * 2
    with pytest.raises(FlareError, match="no ground-truth label for case.*FLARE22_Tr_0099"):
        score_prediction_dir(tmp_path / "pred", synthetic_data, case_ids=["FLARE22_Tr_0099"])


def test_prediction_on_another_grid_is_named(synthetic_data, tmp_path):
    data = Path(shutil.copytree(synthetic_data, tmp_path / "data"))
    case = discover_cases(data).labelled[0]
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    label = nib.load(case.label)
    pred_path = pred_dir / f"{case.case_id}.nii.gz"
    labels = np.asarray(label.dataobj)

    nib.save(nib.Nifti1Image(labels[:-2], label.affine), pred_path)
    with pytest.raises(FlareError, match="prediction shape") as info:
        score_prediction_dir(pred_dir, data, case_ids=[case.case_id], progress=False)
    assert info.value.path == pred_path

    moved = label.affine.copy()
    moved[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(labels, moved), pred_path)
    with pytest.raises(FlareError, match="prediction affine") as info:
        score_prediction_dir(pred_dir, data, case_ids=[case.case_id], progress=False)
    assert info.value.path == pred_path


def test_no_prediction_at_all(synthetic_data, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlareError, match="none of the 6 labelled case"):
        score_prediction_dir(tmp_path / "empty", synthetic_data, progress=False)
    with pytest.raises(FlareError, match="prediction folder not found"):
        score_prediction_dir(tmp_path / "nope", synthetic_data, progress=False)


# --------------------------------------------------------------------------- summaries


def hand_table() -> pd.DataFrame:
    rows = [
        ("c1", "liver", 0.9, 0.8, 4.0, 100.0, 110.0, 10.0),
        ("c2", "liver", 0.7, 0.6, 8.0, 120.0, 100.0, -20.0),
        ("c3", "liver", 0.8, 0.7, 6.0, 90.0, 91.0, 1.0),
        ("c1", "spleen", 0.6, 0.5, 2.0, 30.0, 33.0, 3.0),
        ("c2", "spleen", 0.0, 0.0, math.nan, 25.0, 0.0, -25.0),
        ("c3", "spleen", 0.9, 0.95, 0.0, 20.0, 20.0, 0.0),
    ]
    return pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS))


def test_summarize_hand_numbers():
    summary = summarize(hand_table()).set_index("organ")
    assert list(summary.index) == ["liver", "spleen", ALL_ORGANS]
    liver, spleen, both = (summary.loc[name] for name in ("liver", "spleen", ALL_ORGANS))
    # liver DSC 0.9, 0.7, 0.8 → mean 0.8, sample std √((0.01 + 0.01 + 0) / 2) = 0.1.
    assert liver["dsc_mean"] == pytest.approx(0.8) and liver["dsc_std"] == pytest.approx(0.1)
    assert liver["dsc_median"] == pytest.approx(0.8) and liver["n_cases"] == 3
    assert liver["volume_diff_ml_mean"] == pytest.approx(-3.0)
    # spleen DSC 0.6, 0, 0.9 → mean 0.5, std √((0.01 + 0.25 + 0.16) / 2) = √0.21.
    assert spleen["dsc_mean"] == pytest.approx(0.5)
    assert spleen["dsc_std"] == pytest.approx(math.sqrt(0.21))
    assert spleen["dsc_median"] == pytest.approx(0.6)
    # spleen HD95 2, (undefined), 0 → mean 1, std √2, median 1; one undefined.
    assert spleen["hd95_mm_mean"] == pytest.approx(1.0)
    assert spleen["hd95_mm_std"] == pytest.approx(math.sqrt(2))
    assert spleen["hd95_undefined"] == 1 and liver["hd95_undefined"] == 0
    # All organs: per-case means 0.75, 0.35, 0.85 → mean 0.65, median 0.75, std √0.07.
    assert both["dsc_mean"] == pytest.approx(0.65)
    assert both["dsc_median"] == pytest.approx(0.75)
    assert both["dsc_std"] == pytest.approx(math.sqrt(0.07))
    # HD95 per case: (4 + 2)/2 = 3, 8 (spleen undefined, left out), (6 + 0)/2 = 3.
    assert both["hd95_mm_mean"] == pytest.approx(14 / 3)
    assert both["hd95_mm_median"] == pytest.approx(3.0)
    assert both["hd95_undefined"] == 1 and both["n_cases"] == 3


def test_summarize_rejects_bad_tables():
    with pytest.raises(FlareError, match="lacks column"):
        summarize(hand_table().drop(columns="nsd"))
    with pytest.raises(FlareError, match="empty"):
        summarize(hand_table().iloc[:0])


def test_format_summary():
    text = format_summary(summarize(hand_table()))
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:3] == ["organ", "DSC", "NSD"]
    assert lines[1].startswith("liver") and "0.800 ± 0.100" in lines[1]
    assert lines[2].startswith("spleen") and "1.00 ± 1.41" in lines[2]
    assert lines[3].startswith(ALL_ORGANS) and "0.650 ± 0.265" in lines[3]
    single = format_summary(summarize(hand_table().iloc[[0, 3]]))
    assert "0.900 " in single.splitlines()[1] and "±" not in single.splitlines()[1]


def test_plot_boxplots_panels_and_colours():
    fig = plot_boxplots(hand_table())
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["DSC", "NSD", "HD95 (mm)"]
    hd_axis = fig.axes[2]
    colours = [patch.get_facecolor()[:3] for patch in hd_axis.patches]
    np.testing.assert_allclose(colours, [ORGAN_COLORS["liver"], ORGAN_COLORS["spleen"]])
    # The spleen's undefined HD95 is dropped: its box spans 0..2 (whiskers).
    whiskers = [line.get_ydata() for line in hd_axis.lines if len(line.get_ydata()) == 2]
    spans = sorted({float(y) for data in whiskers for y in data})
    assert spans[0] == 0.0 and spans[-1] == 8.0
    with pytest.raises(FlareError, match="lacks column"):
        plot_boxplots(hand_table(), metrics=("dice",))


def test_write_report_round_trip(tmp_path):
    result = EvaluationResult(hand_table(), missing=("c4",))
    paths = write_report(result, tmp_path / "report")
    assert set(paths) == {"per_case", "summary", "boxplots"}
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "boxplots.png",
        "per_case.csv",
        "summary.csv",
    ]
    pd.testing.assert_frame_equal(pd.read_csv(paths["per_case"]), hand_table())
    pd.testing.assert_frame_equal(pd.read_csv(paths["summary"]), result.summary())
    image = matplotlib.image.imread(paths["boxplots"])
    assert image.shape == (400, 1200, 4)
