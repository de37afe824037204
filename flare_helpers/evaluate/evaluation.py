"""Per-case, per-organ evaluation tables, their summaries, box plots and report files.

Predictions are FLARE22-id label files named like the ground truth
(``<case_id>.nii.gz``) and must lie on the ground truth's grid (same shape and
affine, as written by ``nifti.save_like``). Metrics are computed on that original
grid with the header spacing (:func:`flare_helpers.evaluate.metrics.score_case`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from flare_helpers.data.cases import Case, prediction_file, prediction_path
from flare_helpers.data.fileio import atomic_path
from flare_helpers.data.labels import DEFAULT_ORGANS, NSD_TOLERANCE_MM, ORGAN_COLORS, OrganSet
from flare_helpers.data.layout import EvaluationLayout
from flare_helpers.data.nifti import AFFINE_TOLERANCE_MM, load_label
from flare_helpers.data.splits import select_cases
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.metrics import score_case
from flare_helpers.infer.predict import load_predictor, predict_files

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Columns of the per-case table, in order.
PER_CASE_COLUMNS: tuple[str, ...] = (
    "case",
    "organ",
    "dsc",
    "nsd",
    "hd95_mm",
    "gt_ml",
    "pred_ml",
    "volume_diff_ml",
)
#: Metrics that :func:`summarize` reports (mean, std, median each).
SUMMARY_METRICS: tuple[str, ...] = ("dsc", "nsd", "hd95_mm", "volume_diff_ml")
#: Name of the summary row that averages over organs first, then over cases.
ALL_ORGANS = "all organs"
_TITLES = {
    "dsc": "DSC",
    "nsd": "NSD",
    "hd95_mm": "HD95 (mm)",
    "gt_ml": "ground truth (ml)",
    "pred_ml": "prediction (ml)",
    "volume_diff_ml": "volume difference (ml)",
}


@dataclass(frozen=True)
class EvaluationResult:
    """Scores of a prediction folder.

    Attributes:
        per_case: one row per case and organ, columns :data:`PER_CASE_COLUMNS`.
        missing: case ids that have ground truth but no prediction (not scored).
    """

    per_case: pd.DataFrame
    missing: tuple[str, ...] = field(default=())

    @property
    def organs(self) -> tuple[str, ...]:
        """The organs scored, in row order (e.g. for :func:`flare_helpers.evaluate.case_dice`)."""
        return tuple(dict.fromkeys(self.per_case["organ"]))

    def summary(self) -> pd.DataFrame:
        """Per-organ statistics of :attr:`per_case` (see :func:`summarize`)."""
        return summarize(self.per_case)


# --------------------------------------------------------------------------- scoring


def _score_one(
    case: Case, pred_path: Path, organs: tuple[str, ...], tolerances: Mapping[str, float]
) -> list[dict]:
    gt = load_label(case.label)
    pred = load_label(pred_path)
    if pred.geometry.shape != gt.geometry.shape:
        raise FlareError(
            f"prediction shape {pred.geometry.shape} differs from the ground truth's "
            f"{gt.geometry.shape} ({case.label.name}); predictions must be on the label's grid",
            pred_path,
        )
    if not np.allclose(pred.geometry.affine, gt.geometry.affine, atol=AFFINE_TOLERANCE_MM):
        raise FlareError(
            f"prediction affine differs from the ground truth's ({case.label.name}): "
            "not on the label's grid",
            pred_path,
        )
    rows = score_case(gt.data, pred.data, gt.spacing, organs, tolerances)
    return [{"case": case.case_id, **row} for row in rows]


def score_prediction_dir(
    pred_dir: str | Path,
    data_dir: str | Path,
    case_ids: Sequence[str] | None = None,
    organs: Sequence[str] = DEFAULT_ORGANS,
    progress: bool = True,
    *,
    tolerances: Mapping[str, float] = NSD_TOLERANCE_MM,
) -> EvaluationResult:
    """Score saved predictions against ``data_dir/labels`` organ by organ.

    Args:
        pred_dir: folder of predictions ``<case_id>.nii.gz`` holding FLARE22 ids.
        data_dir: the extracted data set (``images/`` and ``labels/``).
        case_ids: cases to score (default: every labelled case).
        organs: organs to score, in row order.
        progress: show a progress bar.
        tolerances: NSD tolerance in mm per organ (FLARE22 values by default).

    Returns:
        An :class:`EvaluationResult`; cases without a prediction file are listed in
        ``missing`` and left out of the table.

    Raises:
        FlareError: a folder is missing, an unknown case id or organ, a prediction
            that is unreadable or not on its label's grid (the message names the
            prediction file), or no case has a prediction.
    """
    pred_dir, data_dir = Path(pred_dir), Path(data_dir)
    if not pred_dir.is_dir():
        raise FlareError("prediction folder not found", pred_dir)
    organ_names = OrganSet(tuple(organs)).organs
    cases = select_cases(data_dir, "all" if case_ids is None else case_ids)
    rows: list[dict] = []
    missing: list[str] = []
    for case in tqdm(cases, desc="score", unit="case", disable=not progress):
        pred_path = prediction_file(pred_dir, case.case_id)
        if pred_path is None:
            missing.append(case.case_id)
        else:
            rows += _score_one(case, pred_path, organ_names, tolerances)
    if not rows:
        raise FlareError(
            f"none of the {len(cases)} labelled case(s) has a prediction here "
            f"(expected e.g. {cases[0].case_id}.nii.gz)",
            pred_dir,
        )
    return EvaluationResult(pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS)), tuple(missing))


# --------------------------------------------------------------------------- summaries


def _stats(values: pd.Series) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and median, NaNs dropped."""
    values = values.dropna()
    return {"mean": values.mean(), "std": values.std(), "median": values.median()}


def _summary_row(organ: str, table: pd.DataFrame, n_cases: int, hd95_undefined: int) -> dict:
    row: dict = {"organ": organ, "n_cases": n_cases}
    for metric in SUMMARY_METRICS:
        for stat, value in _stats(table[metric]).items():
            row[f"{metric}_{stat}"] = float(value)
    row["hd95_undefined"] = hd95_undefined
    return row


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and median of each metric per organ, plus an all-organs row.

    Args:
        per_case: a per-case table with columns :data:`PER_CASE_COLUMNS`.

    Returns:
        One row per organ (in first-appearance order) and a last row
        :data:`ALL_ORGANS`, which first averages each case over its organs and then
        takes the statistics over cases. Columns: ``organ``, ``n_cases``,
        ``<metric>_mean`` / ``_std`` / ``_median`` for :data:`SUMMARY_METRICS`, and
        ``hd95_undefined``. HD95 is NaN when exactly one mask is empty; those values
        are left out of the HD95 statistics and counted in ``hd95_undefined``
        (for the all-organs row: over all rows). Standard deviations are sample
        ones (ddof=1), so NaN for a single case.

    Raises:
        FlareError: a required column is missing or the table is empty.
    """
    absent = [c for c in ("case", "organ", *SUMMARY_METRICS) if c not in per_case.columns]
    if absent:
        raise FlareError(f"per-case table lacks column(s) {', '.join(absent)}")
    if per_case.empty:
        raise FlareError("per-case table is empty: nothing to summarize")
    rows = [
        _summary_row(
            organ,
            table,
            int(table["case"].nunique()),
            int(table["hd95_mm"].isna().sum()),
        )
        for organ, table in per_case.groupby("organ", sort=False)
    ]
    by_case = per_case.groupby("case", sort=False)[list(SUMMARY_METRICS)].mean()
    rows.append(
        _summary_row(ALL_ORGANS, by_case, len(by_case), int(per_case["hd95_mm"].isna().sum()))
    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures, files


def plot_boxplots(
    per_case: pd.DataFrame, metrics: Sequence[str] = ("dsc", "nsd", "hd95_mm")
) -> Figure:
    """Box plots of per-case scores: one panel per metric, one box per organ.

    Boxes use the organ colours of ``labels.ORGAN_COLORS``; NaN values (HD95
    with one empty mask) are left out. The figure is built without pyplot, so
    nothing global changes; it is 4 × 4 inches per panel.

    Raises:
        FlareError: a metric that is not a column of ``per_case``.
    """
    from matplotlib.figure import Figure  # ~1 s to import; only figures need it

    absent = [m for m in metrics if m not in per_case.columns]
    if absent:
        raise FlareError(f"per-case table lacks column(s) {', '.join(absent)}")
    organs = list(dict.fromkeys(per_case["organ"]))
    fig = Figure(figsize=(4 * len(metrics), 4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        data = [per_case.loc[per_case["organ"] == o, metric].dropna().to_numpy() for o in organs]
        boxes = ax.boxplot(data, patch_artist=True, medianprops={"color": "black"})
        for patch, organ in zip(boxes["boxes"], organs, strict=True):
            patch.set_facecolor(ORGAN_COLORS.get(organ, (0.6, 0.6, 0.6)))
        ax.set_xticks(range(1, len(organs) + 1), [o.replace("_", " ") for o in organs])
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_title(_TITLES.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    return fig


def write_report(
    result: EvaluationResult, out_dir: str | Path, *, per_case_name: str | None = None
) -> dict[str, Path]:
    """Write ``per_case.csv``, ``summary.csv`` and ``boxplots.png`` into ``out_dir``, atomically.

    ``per_case_name`` renames the per-case table (``flare-evaluate --output FILE.csv``);
    the names are :class:`~flare_helpers.data.layout.EvaluationLayout`'s.

    Returns:
        Their paths under the keys ``"per_case"``, ``"summary"`` and ``"boxplots"``.

    Raises:
        FlareError: the folder cannot be written.
    """
    layout = EvaluationLayout(Path(out_dir))
    paths = {
        "per_case": layout.root / per_case_name if per_case_name else layout.per_case,
        "summary": layout.summary,
        "boxplots": layout.boxplots,
    }
    tables = {"per_case": result.per_case, "summary": result.summary()}
    for key, table in tables.items():
        with atomic_path(paths[key]) as tmp:
            table.to_csv(tmp, index=False)
    figure = plot_boxplots(result.per_case)
    with atomic_path(paths["boxplots"]) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return paths


# --------------------------------------------------------------------------- model → scores


def evaluate_model(
    model_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    which: str | Sequence[str] = "test",
    progress: bool = True,
    reports: list | None = None,
) -> EvaluationResult:
    """Predict the chosen cases with a trained model, then score the predictions.

    Predictions are written (and replaced on a rerun) to ``out_dir/predictions``
    on each CT's own grid; the model's own organ list is scored. ``reports`` gets
    each CT's :class:`~flare_helpers.infer.predict.CaseReport` (windows, seconds per stage).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    predictor = load_predictor(model_path)
    cases = select_cases(data_dir, which, model_path=model_path)
    pred_dir = EvaluationLayout(out_dir).predictions_dir
    pairs = [(case.image, prediction_path(pred_dir, case.case_id)) for case in cases]
    predict_files(predictor, pairs, overwrite=True, progress=progress, reports=reports)
    return score_prediction_dir(
        pred_dir,
        data_dir,
        [case.case_id for case in cases],
        predictor.organs.organs,
        progress=progress,
    )


def worst_case(result: EvaluationResult, metric: str = "dsc") -> str:
    """Case id with the lowest mean ``metric`` over organs (to look at first)."""
    return str(result.per_case.groupby("case")[metric].mean().idxmin())
