"""Rounds of teacher → pseudo-labels → student, where a student must earn its place.

The teacher (a trained run's ``best.keras``) pseudo-labels unlabelled scans
(:func:`flare_helpers.pseudolabel.teacher.pseudolabel`); a student trains on the
labelled cases plus the kept pseudo-labelled ones (:func:`train_student`:
:func:`flare_helpers.workflows.training.train` with ``data.pseudo_dirs``,
``train.time_limit_minutes`` as given, and the teacher's organ localiser copied
rather than trained again unless ``pseudo.retrain_localizer``). Then
both are scored on the teacher run's labelled **validation** cases, whole
cases with the sliding window (:func:`flare_helpers.evaluate.evaluation.evaluate_model`),
and the student replaces the teacher only if its mean DSC is at least
``pseudo.adopt_margin`` higher (:func:`adopt`); otherwise the teacher stays,
and one line says so with both numbers. A next round starts from whichever
won (:func:`run_rounds`). :func:`compare_models` scores any models on the same
held-out test cases. Notebook 06 runs it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from flare_helpers.config import Config, load_run_config
from flare_helpers.data.fileio import atomic_path, read_json
from flare_helpers.data.layout import RunLayout
from flare_helpers.data.splits import read_splits
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.evaluation import evaluate_model, write_report
from flare_helpers.preprocess.pipeline import PreprocessParams
from flare_helpers.pseudolabel.teacher import PseudoResult, pseudolabel
from flare_helpers.train.loop import TrainResult
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


def reuse_localizer(cfg: Config, teacher: str | Path, student_run: str | Path) -> str:
    """Give the student's run folder a copy of the teacher run's organ localiser; say what
    happened in one line.

    The localiser finds the organs' box and does not learn from pseudo-labels, so
    the student keeps the teacher's: ``localizer.keras`` (byte for byte; or
    ``localizer_rejected.keras`` where the teacher's validation Dice gate turned it
    down, so the student has none either), its history and its
    ``localizer_done.json``, so that training finds it finished and trains only the
    VNet. Nothing is copied when the student already has one, when the teacher has
    no finished localiser (resize mode, none trained, or cut short) or when the
    student's ``preprocess``/``localizer`` settings differ from the teacher's (the
    student then trains its own).
    """
    source, target = RunLayout(Path(teacher).parent), RunLayout(Path(student_run))
    if cfg.preprocess.mode != "spacing" or not cfg.localizer.enabled:
        return "localiser: none in this run (resize mode, or localizer.enabled: false)"
    if target.localizer.done.is_file():
        return f"localiser: {target.localizer_model} already there"
    model = next(
        (p for p in (source.localizer_model, source.localizer_rejected) if p.is_file()), None
    )
    if model is None or not source.localizer.done.is_file():
        return (
            f"localiser: the teacher has no finished one ({source.localizer_model}); "
            "the student trains its own"
        )
    taught = load_run_config(source.config) if source.config.is_file() else None
    same = taught is not None and (
        PreprocessParams.from_config(taught).key == PreprocessParams.from_config(cfg).key
        and taught.localizer == cfg.localizer
    )
    if not same:
        return "localiser: the teacher's has other settings; the student trains its own"
    target.root.mkdir(parents=True, exist_ok=True)
    copies = [
        (model, target.root / model.name),
        (source.localizer_history, target.localizer_history),
        (source.localizer.done, target.localizer.done),  # last: it marks the copy complete
    ]
    for src, dest in copies:
        if src.is_file():
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
    epochs = read_json(source.localizer.done).get("epochs_completed", "?")
    if model == source.localizer_rejected:
        return (
            f"localiser: the teacher's was not kept ({model}, below localizer.min_val_dice); "
            "the student takes that verdict and trains none"
        )
    return f"localiser: the teacher's ({model}, {epochs} epochs), reused as it is"


def train_student(
    cfg: Config,
    teacher: str | Path,
    paths: RoundPaths,
    *,
    from_teacher: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume, or report) this round's student (:func:`student_config`).

    ``cfg.train`` sets its budget (``epochs``, ``time_limit_minutes``: a run stopped
    by the limit goes on when called again). The teacher's organ localiser is
    reused (:func:`reuse_localizer`) unless ``pseudo.retrain_localizer``; prints one
    line saying which.
    """
    student = student_config(cfg, teacher, paths, from_teacher)
    if student.pseudo.retrain_localizer:
        print("localiser: the student trains its own (pseudo.retrain_localizer)")
    else:
        print(reuse_localizer(student, teacher, paths.run_dir))
    return training.train(student, progress=progress)


@dataclass(frozen=True)
class Adoption:
    """Teacher against student on the same labelled validation cases, and which one stays."""

    teacher: Path
    student: Path
    teacher_dsc: float
    student_dsc: float
    margin: float
    n_cases: int

    @property
    def adopted(self) -> bool:
        """The student is at least ``margin`` better (mean DSC; 1e-9 of float slack)."""
        return self.student_dsc - self.teacher_dsc >= self.margin - 1e-9

    @property
    def model_path(self) -> Path:
        """The winner: the student if adopted, else the teacher."""
        return self.student if self.adopted else self.teacher

    def __str__(self) -> str:
        gain = self.student_dsc - self.teacher_dsc
        numbers = (
            f"student {self.student_dsc:.3f} vs teacher {self.teacher_dsc:.3f} mean validation "
            f"DSC ({gain:+.3f}, margin {self.margin:g}, {self.n_cases} cases)"
        )
        if self.adopted:
            return f"student adopted: {numbers}"
        return f"teacher kept, the student is not better by the margin: {numbers}"


def decide(
    teacher: str | Path,
    student: str | Path,
    teacher_dsc: float,
    student_dsc: float,
    margin: float,
    n_cases: int,
) -> Adoption:
    """The adoption rule on two scores (:attr:`Adoption.adopted`)."""
    return Adoption(
        Path(teacher), Path(student), float(teacher_dsc), float(student_dsc), margin, n_cases
    )


def mean_dsc(result) -> float:
    """Mean over organs of the per-organ mean DSC of an evaluation."""
    return float(result.summary()["dsc_mean"].mean())


def validation_cases(model_path: str | Path) -> list[str]:
    """The labelled validation cases of the run that made ``model_path``.

    Raises:
        FlareError: the run has no validation cases (the rule needs labelled cases
            that neither model trained on: set ``data.val_fraction`` > 0).
    """
    split_file = RunLayout(Path(model_path).parent).splits
    cases = read_splits(split_file)["val"] if split_file.exists() else []
    if not cases:
        raise FlareError(
            "the teacher run has no validation cases to compare teacher and student on "
            "(set data.val_fraction > 0 and train it again)",
            split_file,
        )
    return list(cases)


def adopt(
    teacher: str | Path,
    student: str | Path,
    data_dir: str | Path,
    case_ids: Sequence[str],
    out_dir: str | Path,
    margin: float,
    *,
    progress: bool = True,
) -> Adoption:
    """Score teacher and student on the labelled ``case_ids`` (whole cases, sliding window;
    predictions and scores under ``out_dir/teacher`` and ``out_dir/student``) and decide."""
    scores = {}
    for name, model in (("teacher", teacher), ("student", student)):
        result = evaluate_model(
            model, data_dir, Path(out_dir) / name, which=list(case_ids), progress=progress
        )
        write_report(result, Path(out_dir) / name)
        scores[name] = mean_dsc(result)
    return decide(teacher, student, scores["teacher"], scores["student"], margin, len(case_ids))


def run_round(
    cfg: Config,
    teacher: str | Path,
    images: str | Path,
    paths: RoundPaths,
    *,
    from_teacher: bool = False,
    max_cases: int = 0,
    progress: bool = True,
) -> tuple[PseudoResult, TrainResult, Adoption]:
    """One round: ``teacher`` pseudo-labels ``images`` into ``paths.pseudo_dir``, a student
    trains, and the two meet on the teacher run's validation cases (:func:`adopt`).

    Every step resumes where it stopped. Prints the adoption line.
    """
    labelled = pseudolabel(
        teacher, images, paths.pseudo_dir, cfg.pseudo, max_cases=max_cases, progress=progress
    )
    trained = train_student(cfg, teacher, paths, from_teacher=from_teacher, progress=progress)
    adoption = adopt(
        teacher,
        trained.best_model,
        cfg.data.data_dir,
        validation_cases(teacher),
        paths.root / "adoption",
        cfg.pseudo.adopt_margin,
        progress=progress,
    )
    print(f"round {paths.root.name}: {adoption}")
    return labelled, trained, adoption


def run_rounds(
    cfg: Config,
    teacher: str | Path,
    images: str | Path,
    work_dir: str | Path,
    rounds: int,
    *,
    from_teacher: bool = False,
    max_cases: int = 0,
    progress: bool = True,
) -> list[Adoption]:
    """``rounds`` rounds (:func:`run_round`), each taught by the previous round's winner."""
    adoptions = []
    for number in range(1, rounds + 1):
        paths = round_paths(work_dir, number)
        *_, adoption = run_round(
            cfg,
            teacher,
            images,
            paths,
            from_teacher=from_teacher,
            max_cases=max_cases,
            progress=progress,
        )
        adoptions.append(adoption)
        teacher = adoption.model_path
    return adoptions


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
