"""Shared fixtures: small synthetic FLARE22 sets and the real CT case.

Every fixture writes into pytest's temporary folders; nothing in the
repository is modified by the tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny_settings import TINY_MODEL, TINY_SPACING

from flare_helpers.data.examples import REAL_CT_DIR
from flare_helpers.data.extract import extract_zip
from flare_helpers.phantoms.synthetic import write_synthetic_zip

REAL_CT = REAL_CT_DIR / "FLARE22Train"

#: Tests sharing the one notebook-series run (test_runner.py's session fixture ``ci_series``).
SERIES_TESTS = "tests/test_runner.py::test_series_"


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` (no xdist, e.g. make test-colab) runs too
def pytest_xdist_make_scheduler(config, log):
    """Spread tests one by one over pytest-xdist workers, but the series tests onto one.

    Otherwise each worker would run the series (a minute) for its own share of them.
    """
    from xdist.scheduler import LoadScopeScheduling

    class SeriesOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SERIES_TESTS if nodeid.startswith(SERIES_TESTS) else nodeid

    return SeriesOnOneWorker(config, log)


@pytest.fixture(scope="session")
def synthetic_zip(tmp_path_factory) -> Path:
    """A 6-case synthetic FLARE22Train.zip (64×64×32, seed 7), made once per session."""
    return write_synthetic_zip(
        tmp_path_factory.mktemp("zip"), 6, seed=7, progress=False, family="simple"
    )


@pytest.fixture(scope="session")
def synthetic_data(synthetic_zip, tmp_path_factory) -> Path:
    """The extracted synthetic set (read-only by convention: copy before changing)."""
    return extract_zip(synthetic_zip, tmp_path_factory.mktemp("data"), progress=False)


@pytest.fixture
def synthetic_copy(synthetic_data, tmp_path) -> Path:
    """A private, writable copy of the extracted synthetic set."""
    return Path(shutil.copytree(synthetic_data, tmp_path / "FLARE22Train"))


def _copy_real_case(number: int, dest: Path) -> Path:
    """A writable FLARE22-layout folder holding only real case ``number`` (9001 or 9002)."""
    for kind, suffix in (("images", "_0000"), ("labels", "")):
        (dest / kind).mkdir(parents=True)
        name = f"FLARE22_Tr_{number}{suffix}.nii.gz"
        shutil.copyfile(REAL_CT / kind / name, dest / kind / name)
    return dest


@pytest.fixture
def real_ct(tmp_path) -> Path:
    """A writable copy of the real CT crop 9002 (FLARE22 layout, one case)."""
    return _copy_real_case(9002, tmp_path / "real" / "FLARE22Train")


@pytest.fixture
def real_ct_whole(tmp_path) -> Path:
    """A writable copy of the whole real CT 9001 (the same patient as 9002)."""
    return _copy_real_case(9001, tmp_path / "real_whole" / "FLARE22Train")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with an untrained tiny VNet (``best.keras``), its config and a split.

    Untrained weights are enough wherever a test checks geometry, files or
    determinism rather than accuracy.
    """
    from flare_helpers.config import load_config, save_config
    from flare_helpers.data.fileio import write_json_atomic
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile, set_determinism

    run = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(None, [*TINY_MODEL, f"train.output_dir={run}"])
    set_determinism(0, deterministic=True)
    save_model_atomic(build_and_compile(cfg, 5), run / "best.keras")
    save_config(cfg, run / "config.yaml")
    write_json_atomic(
        run / "splits.json",
        {"train": [], "val": [], "test": ["FLARE22_Tr_0005", "FLARE22_Tr_0006"]},
    )
    return run


@pytest.fixture(scope="session")
def tiny_spacing_run(tmp_path_factory) -> Path:
    """Like ``tiny_run``, but the run's config says spacing mode (sliding windows)."""
    from flare_helpers.config import load_config, save_config
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile, set_determinism

    run = tmp_path_factory.mktemp("tiny_spacing_run")
    cfg = load_config(None, [*TINY_MODEL, *TINY_SPACING, f"train.output_dir={run}"])
    set_determinism(0, deterministic=True)
    save_model_atomic(build_and_compile(cfg, 5), run / "best.keras")
    save_config(cfg, run / "config.yaml")
    return run
