"""One round of teacher → pseudo-labels → student, and the comparison of the two.

The teacher (a trained run's ``best.keras``) pseudo-labels unlabelled scans
(:func:`flare_helpers.pseudolabel.pseudolabel`); a student trains on the
labelled cases plus the kept pseudo-labelled ones
(:func:`flare_helpers.workflows.training.train`, ``data.pseudo_dirs``); both are
scored on the same labelled held-out cases (:func:`compare_models`).
Notebook 06 runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from flare_helpers.config import Config
from flare_helpers.evaluate import evaluate_model, write_report
from flare_helpers.layout import RunLayout
from flare_helpers.pseudolabel import pseudolabel
from flare_helpers.workflows import training


@dataclass(frozen=True)
class RoundPaths:
    """Where round ``r`` (1, 2, …) of teacher → student keeps its files: ``work_dir/pseudo/round<r>``."""

    root: Path

    @property
    def pseudo_dir(self) -> Path:
        """The pseudo-label folder ``P`` of this round."""
        return self.root / "pseudolabels"

    @property
    def run_dir(self) -> Path:
        """The student's run folder."""
        return self.root / "student"

    @property
    def model_path(self) -> Path:
        return RunLayout(self.run_dir).best_model


def round_paths(work_dir: str | Path, round_number: int) -> RoundPaths:
    """Paths of one round below the series' working folder."""
    return RoundPaths(Path(work_dir) / "pseudo" / f"round{round_number}")


def student_config(
    cfg: Config, teacher: str | Path, paths: RoundPaths, from_teacher: bool
) -> Config:
    """The student's settings: ``cfg`` plus this round's pseudo-labels and run folder.

    The labelled data, cache, split, preprocessing and architecture stay the
    teacher's; ``from_teacher`` starts the student from the teacher's weights
    (``pseudo.init_from``).
    """
    return cfg.replace(
        data={"pseudo_dirs": [str(paths.pseudo_dir)]},
        train={"output_dir": str(paths.run_dir)},
        pseudo={"init_from": str(teacher) if from_teacher else ""},
    )


def run_round(
    cfg: Config,
    teacher: str | Path,
    images: str | Path,
    paths: RoundPaths,
    *,
    from_teacher: bool = False,
    max_cases: int = 0,
    progress: bool = True,
):
    """One round: ``teacher`` pseudo-labels ``images`` into ``paths.pseudo_dir``, a student trains.

    Both steps resume where they stopped. Returns ``(PseudoResult, TrainResult)``.
    """
    labelled = pseudolabel(
        teacher, images, paths.pseudo_dir, cfg.pseudo, max_cases=max_cases, progress=progress
    )
    trained = training.train(student_config(cfg, teacher, paths, from_teacher), progress=progress)
    return labelled, trained


def compare_models(
    models: dict[str, str | Path],
    data_dir: str | Path,
    out_dir: str | Path,
    case_ids: Sequence[str],
):
    """Mean DSC and NSD per organ of each model on the same labelled cases (a DataFrame).

    Each model's predictions and per-case scores go to ``out_dir/<name>/``.
    """
    columns = {}
    for name, model_path in models.items():
        result = evaluate_model(model_path, data_dir, Path(out_dir) / name, which=list(case_ids))
        write_report(result, Path(out_dir) / name)
        summary = result.summary().set_index("organ")
        columns[f"{name} DSC"] = summary["dsc_mean"]
        columns[f"{name} NSD"] = summary["nsd_mean"]
    return pd.DataFrame(columns)


def plot_comparison(table):
    """Grouped bars: mean DSC per organ, one bar per model (from :func:`compare_models`).

    A Figure not registered with pyplot, as the ``viz`` figures: Jupyter shows it once.
    """
    dsc = table[[c for c in table.columns if c.endswith(" DSC")]]
    fig = Figure(figsize=(7, 3.2), dpi=100)
    ax = fig.subplots()
    width = 0.8 / len(dsc.columns)
    for k, column in enumerate(dsc.columns):
        xs = [i + k * width for i in range(len(dsc))]
        ax.bar(xs, dsc[column], width, label=column.removesuffix(" DSC"))
    ax.set_xticks([i + width * (len(dsc.columns) - 1) / 2 for i in range(len(dsc))])
    ax.set_xticklabels([str(o).replace("_", " ") for o in dsc.index])
    ax.set_ylabel("mean DSC (held-out cases)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
