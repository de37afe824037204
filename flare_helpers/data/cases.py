"""Pairing CT images with their labels (or none: unlabelled scans), and FLARE22's naming of cases.

FLARE22 names an image ``<case>_0000.nii.gz`` (in ``images/``) and its label
and any prediction ``<case>.nii.gz`` (in ``labels/`` or a prediction folder).
Those per-case names are made here, one function each; the folders and the
other files the series writes are named in :mod:`flare_helpers.data.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flare_helpers.data.layout import RenderLayout
from flare_helpers.errors import FlareError

IMAGE_SUFFIX = "_0000"
NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def labelled_case_id(number: int) -> str:
    """FLARE22's id of labelled case ``number``: 1 → ``FLARE22_Tr_0001``."""
    return f"FLARE22_Tr_{number:04d}"


def unlabelled_case_id(number: int) -> str:
    """FLARE22's id of unlabelled scan ``number``: 1 → ``Case_00001``."""
    return f"Case_{number:05d}"


def image_name(case_id: str) -> str:
    """A case's CT file name: ``<case>_0000.nii.gz``."""
    return f"{case_id}{IMAGE_SUFFIX}{NIFTI_EXTENSIONS[0]}"


def label_name(case_id: str) -> str:
    """A case's label (or prediction) file name: ``<case>.nii.gz``."""
    return f"{case_id}{NIFTI_EXTENSIONS[0]}"


@dataclass(frozen=True)
class Case:
    """One training case: its id, image file and (optional) label file."""

    case_id: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class CaseList:
    """Cases found in a data folder, plus files that could not be paired."""

    cases: tuple[Case, ...]
    unlabelled: tuple[Path, ...] = ()
    orphan_labels: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def labelled(self) -> tuple[Case, ...]:
        """Cases that have both an image and a label."""
        return tuple(c for c in self.cases if c.label is not None)


def nifti_stem(path: str | Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def nifti_files(folder: str | Path) -> list[Path]:
    """The ``.nii.gz`` / ``.nii`` files in ``folder``, sorted; hidden files are skipped.

    Hidden names are macOS ``._*`` metadata copies and temporaries of interrupted
    writes (``.<name>.tmp-…``), never volumes to use.
    """
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.name.endswith(NIFTI_EXTENSIONS) and not p.name.startswith(".")
    )


def discover_cases(data_dir: str | Path) -> CaseList:
    """Pair ``images/<id>_0000.nii.gz`` with ``labels/<id>.nii.gz`` under ``data_dir``.

    Images without a label are kept (they can still be predicted) and listed in
    ``unlabelled``; labels without an image are listed in ``orphan_labels``.

    Raises:
        FlareError: ``data_dir`` or its ``images/`` folder is missing, or holds no NIfTI.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FlareError("data folder not found", data_dir)
    images_dir, labels_dir = data_dir / "images", data_dir / "labels"
    if not images_dir.is_dir():
        raise FlareError("no images/ folder here (run flare-extract first?)", data_dir)
    images = nifti_files(images_dir)
    if not images:
        raise FlareError("no .nii.gz images in this folder", images_dir)
    labels = {nifti_stem(p): p for p in nifti_files(labels_dir)} if labels_dir.is_dir() else {}
    cases, unlabelled, notes = [], [], []
    for image in images:
        stem = nifti_stem(image)
        if not stem.endswith(IMAGE_SUFFIX):
            notes.append(f"skipped {image.name}: image names end in {IMAGE_SUFFIX}.nii.gz")
            continue
        case_id = stem[: -len(IMAGE_SUFFIX)]
        label = labels.pop(case_id, None)
        cases.append(Case(case_id, image, label))
        if label is None:
            unlabelled.append(image)
    return CaseList(tuple(cases), tuple(unlabelled), tuple(sorted(labels.values())), tuple(notes))


def image_case_id(name: str) -> str | None:
    """``Case_00001_0000.nii.gz`` → ``Case_00001``; None for a name that is not an image's."""
    if not name.endswith(NIFTI_EXTENSIONS) or name.startswith("."):
        return None
    stem = nifti_stem(name)
    return stem[: -len(IMAGE_SUFFIX)] if stem.endswith(IMAGE_SUFFIX) else None


def discover_unlabelled(folder: str | Path) -> CaseList:
    """The scans of an unlabelled folder (FLARE22's ``FLARE_UnlabeledCase1-1000/``), sorted.

    Every ``<case>_0000.nii.gz`` below ``folder`` is a case without a label.
    Label files there (any other NIfTI name, or a ``labels/`` folder) are
    ignored, each with a note: an unlabelled set is used without labels.

    Raises:
        FlareError: ``folder`` is missing, holds no scans, or names a case twice.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FlareError("unlabelled folder not found", folder)
    cases: dict[str, Case] = {}
    notes = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not path.name.endswith(NIFTI_EXTENSIONS) or path.name.startswith("."):
            continue
        case_id = image_case_id(path.name)
        if case_id is None or "labels" in path.relative_to(folder).parts[:-1]:
            notes.append(f"ignored {path.name}: a label file in an unlabelled set")
            continue
        if case_id in cases:
            raise FlareError(f"case {case_id} is in the folder twice", path)
        cases[case_id] = Case(case_id, path)
    if not cases:
        raise FlareError("no <case>_0000.nii.gz scans in this folder", folder)
    ordered = tuple(cases[c] for c in sorted(cases))
    return CaseList(ordered, tuple(c.image for c in ordered), (), tuple(notes))


# --------------------------------------------------------------------------- output names


def prediction_name(image_path: str | Path) -> str:
    """Prediction file name for an image: ``X_0000.nii.gz`` → ``X.nii.gz`` (FLARE22 naming)."""
    stem = nifti_stem(image_path)
    if stem.endswith(IMAGE_SUFFIX):
        stem = stem[: -len(IMAGE_SUFFIX)]
    return f"{stem}.nii.gz"


def prediction_path(pred_dir: str | Path, case_id: str) -> Path:
    """Where a case's prediction is written: ``pred_dir/<case_id>.nii.gz``."""
    return Path(pred_dir) / f"{case_id}.nii.gz"


def prediction_file(pred_dir: str | Path, case_id: str) -> Path | None:
    """``pred_dir/<case_id>.nii.gz`` (or ``.nii``) if it exists: FLARE22 prediction naming."""
    for ext in NIFTI_EXTENSIONS:
        path = Path(pred_dir) / f"{case_id}{ext}"
        if path.is_file():
            return path
    return None


def predicted_cases(pred_dir: str | Path) -> list[str]:
    """Case ids that have a prediction file in ``pred_dir`` (sorted)."""
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise FlareError("prediction folder not found (run notebook 04 or flare-evaluate)", folder)
    ids = sorted(
        p.name[: -len(ext)]
        for p in folder.iterdir()
        for ext in NIFTI_EXTENSIONS
        if p.is_file() and p.name.endswith(ext)
    )
    if not ids:
        raise FlareError("no predictions here", folder)
    return ids


def visualize_paths(out_dir: str | Path, case_id: str) -> dict[str, Path]:
    """Where one case's ``prediction``, ``slices`` figure and ``video`` go under ``out_dir``.

    ``out_dir/predictions/<case>.nii.gz``, ``out_dir/<case>_slices.png`` and
    ``out_dir/<case>_organs.mp4`` (``flare-visualize``, :class:`~flare_helpers.data.layout.RenderLayout`).
    """
    render = RenderLayout(Path(out_dir))
    return {
        "prediction": prediction_path(render.predictions_dir, case_id),
        "slices": render.slices(case_id),
        "video": render.video(case_id),
    }
