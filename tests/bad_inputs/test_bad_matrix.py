"""The matrix covers every entry point, each in exactly one stage's test file."""

from __future__ import annotations

import os

import pytest
from bad_matrix import ENTRIES, MATRIX, STAGES, matrix_for, unwritable


def test_matrix_size() -> None:
    """The matrix covers every entry point (the count is reported in the issue)."""
    assert len(MATRIX) >= 150
    entry_points = {(kind, entry) for kind, entries in ENTRIES.items() for entry in entries}
    assert len(entry_points) == 32
    assert {entry for _, entry in entry_points} >= {"extract", "preprocess", "predict", "evaluate"}
    assert len(ENTRIES["config"]) == 3  # flare-train is covered through its config errors


def test_every_matrix_case_runs_in_exactly_one_stage_file() -> None:
    by_stage = [param for stage in STAGES for param in matrix_for(stage)]
    assert sorted(p.id for p in by_stage) == sorted(p.id for p in MATRIX)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unwritable_helper_really_blocks_writes(tmp_path):
    """The matrix's unwritable folder is honest whoever runs the tests (root included)."""
    blocked = tmp_path / "blocked"
    unwritable(blocked)
    with pytest.raises(OSError):
        (blocked / "sub").mkdir(parents=True)
