"""What the notebooks share: the working folder's layout and the data after a fresh runtime."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from flare_helpers.data.cases import discover_cases
from flare_helpers.data.layout import SeriesLayout
from flare_helpers.errors import FlareError
from flare_helpers.series import session as series


def test_the_working_folder_layout():
    paths = SeriesLayout(Path("/w"), Path("/d"))
    assert paths.data_dir == Path("/d/FLARE22Train")
    assert (paths.cache.manifest, paths.cache.image("c1")) == (
        Path("/w/cache/manifest.json"),
        Path("/w/cache/cases/c1/image.npy"),
    )
    assert (paths.run.config, paths.model_path, paths.run.history) == (
        Path("/w/model/config.yaml"),
        Path("/w/model/best.keras"),
        Path("/w/model/history.csv"),
    )
    assert paths.predictions_dir == Path("/w/evaluation/predictions")
    assert paths.evaluation.per_case == Path("/w/evaluation/per_case.csv")
    assert paths.render.slices("c1") == Path("/w/render/c1_slices.png")
    assert paths.render.video("c1") == Path("/w/render/c1_organs.mp4")
    assert paths.run.localizer_model == Path("/w/model/localizer.keras")


def test_a_fresh_runtime_gets_the_data_extracted_again(synthetic_zip, tmp_path, monkeypatch):
    """Notebook 04's first cell in a runtime whose local disk lost the extracted CTs."""
    for name in ("FLARE_WORK_DIR", "FLARE_DATA_ROOT", "FLARE_ZIP"):
        monkeypatch.delenv(name, raising=False)
    paths = series.series_paths(tmp_path / "drive" / "work", tmp_path / "content" / "data")
    assert not paths.data_root.exists()
    data_dir = series.ensure_data(paths, series.zip_file(synthetic_zip), progress=False)
    assert data_dir == paths.data_dir
    found = discover_cases(data_dir)
    assert len(found.labelled) == 6
    with zipfile.ZipFile(synthetic_zip) as archive:
        names = [i.filename for i in archive.infolist() if i.filename.endswith(".nii.gz")]
    for name in names:
        member = data_dir / Path(name).relative_to("FLARE22Train")
        with zipfile.ZipFile(synthetic_zip) as archive:
            assert member.read_bytes() == archive.read(name)
    stamp = found.labelled[0].image.stat().st_mtime_ns
    assert series.ensure_data(paths, synthetic_zip, progress=False) == data_dir  # nothing to do
    assert found.labelled[0].image.stat().st_mtime_ns == stamp
    # the zip gone (not on Drive), the extracted data still there: used as they are
    assert series.ensure_data(paths, tmp_path / "gone.zip", progress=False) == data_dir


def test_neither_data_nor_zip_says_what_to_run(tmp_path):
    paths = series.series_paths(tmp_path / "work", tmp_path / "data")
    with pytest.raises(FlareError) as info:
        series.ensure_data(paths, tmp_path / "FLARE22Train.zip")
    assert str(info.value) == (
        f"{tmp_path / 'data' / 'FLARE22Train'}: no extracted data here and no zip at "
        f"{tmp_path / 'FLARE22Train.zip'}: run notebook 01 "
        f"(or flare-extract --zip FLARE22Train.zip --out {tmp_path / 'data'})"
    )
