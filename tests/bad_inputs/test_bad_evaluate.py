"""Bad labels, predictions, data folders, models and targets for flare-evaluate."""

from __future__ import annotations

import bad_matrix as bm
import pytest


@pytest.mark.parametrize(("kind", "entry", "bad"), bm.matrix_for("evaluate"))
def test_bad_input(kind: str, entry: str, bad: str, ws: bm.Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    bm.check_bad_input(kind, entry, bad, ws, capsys)
