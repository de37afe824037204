"""Bad volumes, labels, configs, data folders and targets for flare-preprocess."""

from __future__ import annotations

import shutil
from pathlib import Path

import bad_matrix as bm
import nibabel as nib
import numpy as np
import pytest
from bad_matrix import SMALL, encoded, hu_reference

from flare_helpers.config import load_config
from flare_helpers.data import cases
from flare_helpers.preprocess.pipeline import preprocess_dataset


@pytest.mark.parametrize(("kind", "entry", "bad"), bm.matrix_for("preprocess"))
def test_bad_input(kind: str, entry: str, bad: str, ws: bm.Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    bm.check_bad_input(kind, entry, bad, ws, capsys)


def test_real_process_exit_code_and_single_line(tmp_path) -> None:
    """Through a real interpreter: exit status 2, exactly one stderr line, no traceback."""
    bm.check_real_process(
        "preprocess",
        ["--data", "{tmp}/nowhere", "--cache", "{tmp}/cache", "train.epoch=3"],
        r"unknown key 'train\.epoch' \(did you mean 'train\.epochs'\?\)",
        tmp_path,
    )


def test_valid_encodings_make_byte_identical_cache_entries(tiny_set, tmp_path):
    """Same data stored as int16/uint8 and as float64/float32: the caches are the same bytes."""
    caches = {}
    for name, image_how, label_dtype in [("a", "int16", "uint8"), ("b", "float64", "float32")]:
        folder = Path(shutil.copytree(tiny_set, tmp_path / name / "FLARE22Train"))
        for case in cases.discover_cases(folder).labelled:
            hu, affine = hu_reference(case.image)
            written = encoded(hu, affine, case.image.parent, image_how)
            written.replace(case.image)
            label = nib.load(case.label)
            ids = np.asarray(label.dataobj).astype(label_dtype)
            nib.save(nib.Nifti1Image(ids, label.affine), case.label)
        preprocess_dataset(
            folder, tmp_path / name / "cache", load_config(None, SMALL), progress=False
        )
        caches[name] = {
            str(p.relative_to(tmp_path / name / "cache")): p.read_bytes()
            for p in sorted((tmp_path / name / "cache").rglob("*.npy"))
        }
    assert len(caches["a"]) == 4 and caches["a"] == caches["b"]
