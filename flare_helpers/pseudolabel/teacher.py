"""Pseudo-labels: a trained teacher labels unlabelled CTs; confident ones train a student.

``flare-pseudolabel --model-path RUN/best.keras --images ZIP_OR_DIR --out P``
(:func:`pseudolabel`) predicts each scan with the run's own preprocessing
(:func:`flare_helpers.infer.predict.predict_volume`, so the fast path when there is one),
scores it (:mod:`flare_helpers.pseudolabel.confidence`) and writes::

    P/predictions/<case>.nii.gz    every predicted case: FLARE22 ids on the CT's own grid
    P/masked/<case>.nii.gz         the same, 255 (ignored in training) where the test-time
                                   prediction (``pseudo.tta``) disagrees
    P/images/<case>_0000.nii.gz    the kept cases' CTs   } the FLARE22 layout:
    P/labels/<case>.nii.gz         the kept cases' labels } data.pseudo_dirs reads it
    P/confidence.csv               per case: confidence, kept, reason

Resumable: a case is finished once its row is in ``confidence.csv``; a rerun
skips it. A CT that cannot be read is recorded as failed with a one-line
reason and the others go on. Selection (``pseudo.confidence``'s product of the
recorded signals, ``pseudo.min_confidence``, top ``pseudo.keep_fraction``) runs
over all finished cases at the end, so a rerun with other thresholds or signals,
or with ``pseudo.ignore_disagreement`` switched, only moves files.

For training, ``data.pseudo_dirs: [P, …]`` names the folders whose kept cases
(:func:`flare_helpers.data.pseudo_folder.pseudo_cases`) the training workflow hands to preprocessing as
training-only cases, drawn ``pseudo.sample_weight`` times as often as a
labelled case. The split of the labelled cases is unchanged. The teacher →
pseudo-labels → student round is :mod:`flare_helpers.workflows.pseudo_round`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from flare_helpers.config import PseudoConfig, load_run_config
from flare_helpers.data.cases import discover_cases
from flare_helpers.data.fileio import atomic_path, remove_stale_temps
from flare_helpers.data.labels import IGNORE, OrganSet, lr_swap_pairs
from flare_helpers.data.layout import RunLayout
from flare_helpers.data.nifti import Volume, load_image, load_label, save_like
from flare_helpers.data.pseudo_folder import PseudoLayout, read_rows, write_rows
from flare_helpers.data.splits import read_splits
from flare_helpers.data.unlabelled import ScanSource, copy_scan, list_scans, scan_file
from flare_helpers.errors import FlareError, one_line
from flare_helpers.infer.predict import (
    Predictor,
    labels_on_grid,
    load_predictor,
    volume_probabilities,
)
from flare_helpers.model.postprocess import keep_largest_component
from flare_helpers.preprocess.pipeline import prepare_image
from flare_helpers.pseudolabel.confidence import (
    SIGNALS,
    AnatomyReference,
    ProbabilityRecorder,
    TransformedModel,
    case_confidence,
    disagreement,
    organ_geometry,
    signal_product,
)


def select(confidences: dict[str, float], settings: PseudoConfig) -> dict[str, str]:
    """Why each case is kept or not: ``"kept: …"`` or ``"dropped: …"``.

    A case is kept when its confidence is ≥ ``min_confidence`` and it is among the
    ``ceil(keep_fraction × n)`` most confident of the ``n`` predicted cases.
    """
    ranked = sorted(confidences, key=lambda c: (-confidences[c], c))
    n_top = math.ceil(settings.keep_fraction * len(ranked) - 1e-9)
    reasons = {}
    for rank, case_id in enumerate(ranked, start=1):
        value = confidences[case_id]
        if value < settings.min_confidence:
            reasons[case_id] = f"dropped: confidence below min_confidence {settings.min_confidence}"
        elif rank > n_top:
            reasons[case_id] = f"dropped: rank {rank} of {len(ranked)}, outside the top {n_top}"
        else:
            reasons[case_id] = f"kept: rank {rank} of {len(ranked)}"
    return reasons


@dataclass(frozen=True)
class PseudoResult:
    """What :func:`pseudolabel` did."""

    root: Path
    predicted: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[str, ...]
    kept: tuple[str, ...]
    rows: dict[str, dict]

    def __str__(self) -> str:
        return (
            f"{self.root}: {len(self.predicted)} predicted now, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed; {len(self.kept)} of {len(self.rows)} kept"
        )


def pseudolabel(
    model_path: str | Path,
    images: str | Path,
    out_dir: str | Path,
    settings: PseudoConfig | None = None,
    *,
    max_cases: int = 0,
    first: int = 1,
    last: int = 0,
    reference: AnatomyReference | None = None,
    progress: bool = True,
) -> PseudoResult:
    """Pseudo-label the chosen unlabelled scans of ``images`` (zip or folder) into ``out_dir``.

    Args:
        model_path: the teacher, ``RUN/best.keras`` (its ``config.yaml`` beside it).
        images: FLARE22's unlabelled zip or folder (``Case_00001_0000.nii.gz`` …).
        out_dir: the pseudo-label folder ``P`` (see the module docstring).
        settings: selection thresholds (default: the teacher run's ``pseudo`` section).
        max_cases, first, last: which scans (:func:`flare_helpers.data.unlabelled.list_scans`).
        reference: the labelled cases' organs for the ``anatomy`` signal (default:
            :func:`teacher_reference` when ``pseudo.confidence`` uses it).

    Raises:
        FlareError: bad model, missing input, or no scan at all could be predicted.
    """
    source = list_scans(images, max_cases=max_cases, first=first, last=last)
    settings = settings or teacher_settings(model_path)
    layout = PseudoLayout(Path(out_dir))
    for note in source.notes:
        print(f"note: {note}")
    layout.root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(layout.root, recursive=True)  # left by a killed run
    rows = read_rows(layout.csv)
    todo = [s for s in source.scans if s.case_id not in rows]
    predicted, failed = [], []
    if todo:
        predictor = load_predictor(model_path)
        if reference is None and "anatomy" in settings.confidence:
            reference = teacher_reference(model_path)
        teacher = _teacher(predictor, settings)
        for scan in tqdm(todo, desc="pseudo-label", unit="case", disable=not progress):
            start = time.perf_counter()
            try:
                with scan_file(source, scan, layout.scratch) as path:
                    image = load_image(path)
                    score = _predict_case(teacher, image, layout, scan.case_id, settings, reference)
                    if score.confidence >= settings.min_confidence:
                        copy_scan(source, scan, layout.image(scan.case_id))
                row = {"status": "ok", **score.row(), "reason": "pending selection"}
                predicted.append(scan.case_id)
            except FlareError as exc:
                reason = one_line(exc)
                tqdm.write(f"skipped {scan.image_name}: {reason}", file=sys.stderr)
                row = {"status": "failed", "reason": f"failed: {reason}"}
                failed.append(scan.case_id)
            row.update(case_id=scan.case_id, kept="False")
            row["seconds"] = round(time.perf_counter() - start, 2)
            rows[scan.case_id] = row
            write_rows(layout.csv, rows)
    if layout.scratch.is_dir() and not any(layout.scratch.iterdir()):
        layout.scratch.rmdir()
    if not any(r["status"] == "ok" for r in rows.values()):
        raise FlareError("no scan could be predicted (see the reasons above)", layout.csv)
    kept = finalize(layout, rows, settings, source)
    skipped = [s.case_id for s in source.scans if s.case_id not in predicted + failed]
    return PseudoResult(
        layout.root, tuple(predicted), tuple(skipped), tuple(failed), tuple(kept), rows
    )


@dataclass(frozen=True)
class _Teacher:
    """The teacher as pseudo-labelling runs it: ``plain`` records its probabilities in
    ``recorder`` and leaves the cleaning (``clean``: largest component) for later;
    ``tta`` is its test-time twin (None with ``pseudo.tta`` none)."""

    plain: Predictor
    recorder: ProbabilityRecorder
    tta: Predictor | None
    clean: bool


def _teacher(predictor: Predictor, settings: PseudoConfig) -> _Teacher:
    raw = predictor.model
    recorder = ProbabilityRecorder(raw)
    plain = dataclasses.replace(
        predictor,
        model=recorder,
        settings=dataclasses.replace(predictor.settings, largest_component=False),
    )
    tta = None
    if settings.tta != "none":
        swap = lr_swap_pairs(predictor.organs.organs)
        tta = dataclasses.replace(plain, model=TransformedModel(raw, settings.tta, swap))
    return _Teacher(plain, recorder, tta, predictor.settings.largest_component)


def _classes(predictor: Predictor, x, box, shape) -> np.ndarray:
    probs = volume_probabilities(predictor, x)
    return predictor.organs.to_classes(labels_on_grid(predictor, probs, box, shape))


def _predict_case(
    teacher: _Teacher,
    image: Volume,
    layout: PseudoLayout,
    case_id: str,
    settings: PseudoConfig,
    reference: AnatomyReference | None,
):
    """Predict one CT (and its test-time twin), write its prediction(s), return its confidence."""
    plain, recorder, tta = teacher.plain, teacher.recorder, teacher.tta
    organs = plain.organs
    x, box = prepare_image(image, plain.params)
    recorder.reset()
    classes = _classes(plain, x, box, image.data.shape)
    twin = None if tta is None else _classes(tta, x, box, image.data.shape)
    score = case_confidence(
        recorder.mean_probability,
        classes,
        organs.n_classes,
        tta_classes=twin,
        spacing=image.spacing,
        reference=reference,
        signals=settings.confidence,
    )
    for labels in (classes, twin):
        if labels is not None and teacher.clean:
            keep_largest_component(labels, organs.n_classes)
    save_like(organs.to_flare(classes), image, layout.prediction(case_id))
    if twin is not None:
        classes[disagreement(classes, twin)] = IGNORE
        save_like(organs.to_flare(classes), image, layout.masked_prediction(case_id))
    return score


def teacher_reference(model_path: str | Path) -> AnatomyReference | None:
    """The organs of the teacher run's labelled training cases (None where they are not here).

    Reads ``data.data_dir``'s labels of the run's training split (``splits.json``).
    """
    run = RunLayout(Path(model_path).parent)
    if not run.config.exists() or not run.splits.exists():
        return None
    cfg = load_run_config(run.config)
    if not Path(cfg.data.data_dir).is_dir():
        return None
    train = set(read_splits(run.splits)["train"])
    organs = OrganSet.from_names(cfg.data.organs)
    labels = [c.label for c in discover_cases(cfg.data.data_dir).labelled if c.case_id in train]
    return reference_from_labels(labels, organs) if labels else None


def reference_from_labels(label_paths: Sequence[str | Path], organs: OrganSet) -> AnatomyReference:
    """:class:`AnatomyReference` of labelled cases (FLARE22 label files)."""
    geometries = []
    for path in label_paths:
        label = load_label(path)
        geometries.append(
            organ_geometry(organs.to_classes(label.data), label.spacing, organs.n_classes)
        )
    return AnatomyReference.from_cases(geometries)


def row_confidence(row: dict, signals: Sequence[str]) -> float:
    """A ``confidence.csv`` row's confidence: the product of its ``signals`` that were measured
    (:func:`~flare_helpers.pseudolabel.confidence.signal_product`; an empty cell was not measured)."""
    values = {name: float(row[name]) for name in signals if str(row.get(name, "")) != ""}
    return signal_product(values, signals)


def teacher_settings(model_path: str | Path) -> PseudoConfig:
    """The ``pseudo`` section of the teacher run's ``config.yaml`` (defaults without one)."""
    config_path = RunLayout(Path(model_path).parent).config
    return load_run_config(config_path).pseudo if config_path.exists() else PseudoConfig()


def finalize(
    layout: PseudoLayout, rows: dict[str, dict], settings: PseudoConfig, source: ScanSource
) -> list[str]:
    """Select over all finished cases; put kept ones in images/ + labels/, remove the rest."""

    ok = {}
    for case_id, row in rows.items():
        if row["status"] == "ok":
            ok[case_id] = row_confidence(row, settings.confidence)
            row["confidence"] = round(ok[case_id], 5)
    reasons = select(ok, settings)
    scans = {s.case_id: s for s in source.scans}
    layout.images.mkdir(parents=True, exist_ok=True)
    layout.labels.mkdir(parents=True, exist_ok=True)
    kept = []
    for case_id, reason in reasons.items():
        keep = reason.startswith("kept")
        image, label = layout.image(case_id), layout.label(case_id)
        if keep and not image.exists():
            if case_id not in scans:
                reason = "dropped: its scan is not in this input any more"
                keep = False
            else:
                copy_scan(source, scans[case_id], image)
        if keep:
            masked = layout.masked_prediction(case_id)
            use = masked if settings.ignore_disagreement and masked.exists() else None
            if settings.ignore_disagreement and use is None:
                reason += " (no test-time prediction: nothing ignored)"
            with atomic_path(label) as tmp:
                shutil.copyfile(use or layout.prediction(case_id), tmp)
            kept.append(case_id)
        else:
            image.unlink(missing_ok=True)
            label.unlink(missing_ok=True)
        rows[case_id].update(kept=str(keep), reason=reason)
    write_rows(layout.csv, rows)
    return sorted(kept)


def case_volumes(images: str | Path, out_dir: str | Path, case_id: str):
    """One pseudo-labelled case for viewing: ``(CT, its prediction)`` as canonical Volumes."""
    layout = PseudoLayout(Path(out_dir))
    source = list_scans(images)
    scans = {s.case_id: s for s in source.scans}
    if case_id not in scans:
        raise FlareError(f"no scan {case_id} here", source.path)
    with scan_file(source, scans[case_id], layout.scratch) as path:
        image = load_image(path)
    return image, load_label(layout.prediction(case_id), image.geometry)


def confidence_table(rows: dict[str, dict]):
    """``confidence.csv`` rows as a DataFrame indexed by case, numbers as numbers.

    A signal measured for no case (``anatomy`` unless ``pseudo.confidence`` names it,
    ``agreement`` with ``pseudo.tta: none``) is left out rather than shown as a column
    of NaN; the CSV keeps it empty.
    """
    table = pd.DataFrame.from_dict(rows, orient="index").drop(columns="case_id", errors="ignore")
    for column in ("confidence", *SIGNALS, "organs_found", "seconds"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["kept"] = table["kept"] == "True"
    unmeasured = [name for name in SIGNALS if table[name].isna().all()]
    return table.drop(columns=unmeasured).sort_index()


def best_and_worst(table) -> list[str]:
    """The most and the least confident predicted case (one id if only one was predicted)."""
    ranked = table[table["status"] == "ok"].sort_values("confidence", ascending=False)
    return list(dict.fromkeys([ranked.index[0], ranked.index[-1]]))


# --------------------------------------------------------------------------- training
