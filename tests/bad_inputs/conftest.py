"""Fixtures of the bad-input tests: a tiny two-case set, the tiny model, a fresh workspace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bad_matrix import CASE1, Workspace

from flare_helpers.data import extract
from flare_helpers.infer import predict as infer
from flare_helpers.phantoms.synthetic import write_synthetic_zip

# --------------------------------------------------------------------------- workspace


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory) -> Path:
    """A 2-case synthetic FLARE22Train.zip of 24×24×12 volumes."""
    return write_synthetic_zip(
        tmp_path_factory.mktemp("bad_zip"), 2, seed=5, shape=(24, 24, 12), family="simple"
    )


@pytest.fixture(scope="module")
def tiny_set(tiny_zip, tmp_path_factory) -> Path:
    """The extracted 2-case set (pristine; tests copy it)."""
    return extract.extract_zip(tiny_zip, tmp_path_factory.mktemp("bad_data"), progress=False)


@pytest.fixture(scope="module")
def predictor(tiny_run) -> infer.Predictor:
    """The tiny untrained VNet, loaded once."""
    return infer.load_predictor(tiny_run / "best.keras")


@pytest.fixture
def ws(tmp_path, tiny_zip, tiny_set, tiny_run, predictor) -> Workspace:
    """A fresh workspace per matrix case."""
    return Workspace(
        tmp=tmp_path,
        zip=tiny_zip,
        data=Path(shutil.copytree(tiny_set, tmp_path / "FLARE22Train")),
        good_image=tiny_set / "images" / f"{CASE1}_0000.nii.gz",
        good_label=tiny_set / "labels" / f"{CASE1}.nii.gz",
        run=tiny_run,
        predictor=predictor,
    )
