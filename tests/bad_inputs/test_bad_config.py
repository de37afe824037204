"""Bad configs and overrides (flare-train is covered through them), config writing."""

from __future__ import annotations

import re

import bad_matrix as bm
import pytest
from bad_matrix import error_line

from flare_helpers.cli import train_main


@pytest.mark.parametrize(("kind", "entry", "bad"), bm.matrix_for("config"))
def test_bad_input(kind: str, entry: str, bad: str, ws: bm.Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    bm.check_bad_input(kind, entry, bad, ws, capsys)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=5", r"unknown key 'train\.epoch' \(did you mean 'train\.epochs'\?\)"),
        ("epochs=5", "must look like section.key=value"),
        ("train.epochs=[1", "not valid YAML"),
        ("model.depth=0", "model.depth must be >= 1"),
    ],
)
def test_bad_override_names_the_key(override: str, message: str, capsys) -> None:
    """Command-line overrides have no file: the message names the key instead."""
    assert train_main([override]) == 2
    line = error_line(capsys.readouterr().err, "flare-train")
    assert re.search(message, line)
