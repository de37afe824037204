"""What the notebooks share: the working folder's layout and the data after a fresh runtime."""

from __future__ import annotations

import re
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
        f"{tmp_path / 'data' / 'FLARE22Train'}: no extracted CTs here and no zip at "
        f"{tmp_path / 'FLARE22Train.zip'} to re-create them from: run notebook 01_extract first "
        f"(or flare-extract --zip FLARE22Train.zip --out {tmp_path / 'data'})"
    )


#: What each notebook reads that an earlier one made, and the call that brings it back in a
#: fresh runtime (or names the notebook to run first).
NOTEBOOK_NEEDS = {
    "02_preprocess": ["ensure_data"],
    "03_train": ["ensure_cache"],
    "04_evaluate": ["ensure_data", "ensure_model"],
    "05_render": ["ensure_data", "ensure_model", "ensure_predictions"],
    "06_pseudolabel": ["ensure_data", "ensure_cache", "ensure_model"],
}


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_NEEDS))
def test_each_notebook_checks_what_it_needs_before_its_work(notebook):
    """In the code cell that loads the settings (before any work), and nothing else."""
    source = (Path(__file__).parents[1] / "notebooks" / f"{notebook}.py").read_text()
    cells = source.split("\n# %%")
    first = next(i for i, cell in enumerate(cells) if "series.series_paths(" in cell)
    assert re.findall(r"series\.(ensure_\w+)\(", cells[first]) == NOTEBOOK_NEEDS[notebook]
    assert not re.findall(r"series\.ensure_\w+\(", "".join(cells[first + 1 :]))


def test_each_need_says_in_one_line_what_came_back(synthetic_zip, tmp_path, monkeypatch, capsys):
    """The line a notebook prints per need in a fresh runtime, and what it prints when the
    notebook before it has not run: one line naming that notebook."""
    for name in ("FLARE_WORK_DIR", "FLARE_DATA_ROOT", "FLARE_ZIP"):
        monkeypatch.delenv(name, raising=False)
    paths = series.series_paths(tmp_path / "work", tmp_path / "runtime")
    for need, notebook in (
        (series.ensure_cache, "02_preprocess"),
        (series.ensure_model, "03_train"),
        (series.ensure_predictions, "04_evaluate"),
    ):
        with pytest.raises(FlareError) as info:
            need(paths)
        assert str(info.value).endswith(f": run notebook {notebook} first"), str(info.value)
        assert "\n" not in str(info.value)

    series.ensure_data(paths, synthetic_zip, progress=False)
    line = capsys.readouterr().out
    assert re.fullmatch(
        rf"data: re-created {re.escape(str(paths.data_dir))} \(6 CTs\) from "
        rf"{re.escape(str(synthetic_zip))} in \d+\.\d+ s\n",
        line,
    ), line
    series.ensure_data(paths, synthetic_zip, progress=False)
    assert capsys.readouterr().out == (
        f"data: {paths.data_dir} already holds the 6 CTs of {synthetic_zip.name}\n"
    )

    cache = paths.cache
    cache.root.mkdir(parents=True)
    cache.manifest.write_text('{"cases": {"a": {}, "b": {}, "c": {}}, "pseudo": []}')
    cache.splits.write_text('{"train": ["a"], "val": ["b"], "test": ["c"]}')
    assert series.ensure_cache(paths) == cache.root
    assert capsys.readouterr().out == (
        f"cache: {cache.root} (3 cases; split train 1, val 1, test 1) from work_dir\n"
    )
    run = paths.run
    run.root.mkdir(parents=True)
    run.best_model.write_bytes(b"0" * 3 * 2**20)
    run.config.write_text("{}\n")
    run.history.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    assert series.ensure_model(paths) == run.best_model
    assert capsys.readouterr().out == (
        f"model: {run.best_model} (2 epochs trained, 3.0 MB) from the run folder\n"
    )
    paths.predictions_dir.mkdir(parents=True)
    for case in ("FLARE22_Tr_0002", "FLARE22_Tr_0001"):
        (paths.predictions_dir / f"{case}.nii.gz").write_bytes(b"")
    assert series.ensure_predictions(paths) == ["FLARE22_Tr_0001", "FLARE22_Tr_0002"]
    assert capsys.readouterr().out == f"predictions: 2 cases in {paths.predictions_dir}\n"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.034, "0.03 s"),
        (4.25, "4.2 s"),
        (89.9, "89.9 s"),
        (125.5, "2 min 6 s"),
        (7800, "2 h 10 min"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds, shown):
    assert series.format_seconds(seconds) == shown
