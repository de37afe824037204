"""A pseudo-label folder ``P`` on disk: its files, its ``confidence.csv`` and its kept cases.

``flare-pseudolabel`` (:mod:`flare_helpers.pseudolabel.teacher`) writes such a folder;
training reads its kept cases (``data.pseudo_dirs``, :func:`pseudo_cases`).
Reading it needs no network, so this module imports nothing heavy: the
commands that only read the folder (``flare-preprocess``) start fast.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flare_helpers.data.cases import Case, discover_cases, image_name, prediction_path
from flare_helpers.data.fileio import write_text_atomic
from flare_helpers.errors import FlareError

CONFIDENCE_CSV = "confidence.csv"
COLUMNS = (
    "case_id",
    "status",
    "confidence",
    "mean_probability",
    "component_share",
    "agreement",
    "anatomy",
    "organs_found",
    "kept",
    "reason",
    "seconds",
)
_SCRATCH = ".scratch"


@dataclass(frozen=True)
class PseudoLayout:
    """The files of one pseudo-label folder ``P``."""

    root: Path

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def masked(self) -> Path:
        return self.root / "masked"

    @property
    def csv(self) -> Path:
        return self.root / CONFIDENCE_CSV

    @property
    def scratch(self) -> Path:
        """Where one CT from a zip lies while it is predicted."""
        return self.root / _SCRATCH

    def image(self, case_id: str) -> Path:
        return self.images / image_name(case_id)

    def label(self, case_id: str) -> Path:
        return prediction_path(self.labels, case_id)

    def prediction(self, case_id: str) -> Path:
        return prediction_path(self.predictions, case_id)

    def masked_prediction(self, case_id: str) -> Path:
        return prediction_path(self.masked, case_id)


def read_rows(path: str | Path) -> dict[str, dict]:
    """``confidence.csv`` as case id → row (strings as written); {} when absent."""
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "case_id" not in reader.fieldnames:
            raise FlareError("not a flare-pseudolabel confidence.csv (no case_id column)", path)
        return {row["case_id"]: row for row in reader}


def write_rows(path: str | Path, rows: dict[str, dict]) -> Path:
    """Write the rows (sorted by case id) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case_id in sorted(rows):
        writer.writerow({key: rows[case_id].get(key, "") for key in COLUMNS})
    return write_text_atomic(path, buffer.getvalue())


def pseudo_cases(pseudo_dirs: Sequence[str | Path]) -> list[Case]:
    """The kept cases of the pseudo-label folders, as labelled cases to cache.

    Raises:
        FlareError: a folder without ``confidence.csv`` or a case id in two folders.
    """
    cases: dict[str, Case] = {}
    for folder in map(Path, pseudo_dirs):
        layout = PseudoLayout(folder)
        if not layout.csv.exists():
            raise FlareError("not a flare-pseudolabel folder (no confidence.csv)", folder)
        rows = read_rows(layout.csv)
        if not layout.images.is_dir() or not any(layout.images.iterdir()):
            continue
        for case in discover_cases(folder).labelled:
            if rows.get(case.case_id, {}).get("kept") != "True":
                continue
            if case.case_id in cases:
                raise FlareError(f"pseudo-labelled case {case.case_id} is in two folders", folder)
            cases[case.case_id] = case
    return [cases[c] for c in sorted(cases)]
