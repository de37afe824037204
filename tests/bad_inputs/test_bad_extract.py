"""Bad zips and unwritable targets for flare-extract / ``extract_zip``; a planted symlink."""

from __future__ import annotations

import bad_matrix as bm
import pytest
from bad_matrix import CASE1

from flare_helpers.data import extract, nifti


@pytest.mark.parametrize(("kind", "entry", "bad"), bm.matrix_for("extract"))
def test_bad_input(kind: str, entry: str, bad: str, ws: bm.Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    bm.check_bad_input(kind, entry, bad, ws, capsys)


def test_real_process_exit_code_and_single_line(tmp_path) -> None:
    """Through a real interpreter: exit status 2, exactly one stderr line, no traceback."""
    bm.check_real_process(
        "extract", ["--zip", "{bad_zip}", "--out", "{tmp}/out"], "refusing member", tmp_path
    )


def test_extraction_stays_inside_its_folder_even_with_a_planted_symlink(tiny_zip, tmp_path):
    """A symlink already sitting where a member goes is replaced, never followed."""
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(b"precious")
    images = tmp_path / "out" / "FLARE22Train" / "images"
    images.mkdir(parents=True)
    (images / f"{CASE1}_0000.nii.gz").symlink_to(outside)
    target = extract.extract_zip(tiny_zip, tmp_path / "out", progress=False)
    assert outside.read_bytes() == b"precious"
    member = target / "images" / f"{CASE1}_0000.nii.gz"
    assert not member.is_symlink() and nifti.read_geometry(member).shape == (24, 24, 12)
    assert all(p.resolve().is_relative_to(target.resolve()) for p in target.rglob("*"))
