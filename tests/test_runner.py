"""The notebook series 01 → 06 through papermill with the CI profile, as `flare-series` runs it.

The CI profile (``notebooks/params/ci.yaml``) is used as it is, with only its paths
moved into a temporary folder: a tiny synthetic set and a tiny VNet, about half a
minute per run on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from tiny_settings import NOTEBOOK_NAMES

from flare_helpers.errors import FlareError
from flare_helpers.series.runner import PROFILE_DIR, run_series
from flare_helpers.series.session import format_seconds

ORGANS = {"liver", "right_kidney", "left_kidney", "spleen"}


def _ci_profile(tmp_path: Path, **changes) -> Path:
    """The CI profile with its work folder under ``tmp_path`` (and ``changes`` to ``common``)."""
    profile = yaml.safe_load((PROFILE_DIR / "ci.yaml").read_text())
    work = tmp_path / "work"
    profile["common"].update(
        work_dir=str(work), data_root=str(work / "data"), zip_path=str(work / "FLARE22Train.zip")
    )
    if "06_pseudolabel" in profile:
        profile["06_pseudolabel"]["unlabelled_path"] = str(work / "FLARE_UnlabeledCase1-4.zip")
    profile["common"].update(changes)
    path = tmp_path / "ci.yaml"  # the profile's name, as the published notebooks state it
    path.write_text(yaml.safe_dump(profile))
    return path


def _digests(folder: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob(pattern))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def ci_series(tmp_path_factory) -> tuple[Path, Path]:
    """One run of the whole series with the CI profile: (profile file, notebooks folder).

    Run as Colab's badges run it: each notebook in a fresh runtime (``--fresh-runtimes``:
    a new, empty data_root per notebook; only work_dir and the zip shared). Its tests are
    named ``test_series_*``: conftest keeps them on one pytest-xdist worker.
    """
    tmp = tmp_path_factory.mktemp("series")
    profile = _ci_profile(tmp)
    return profile, run_series(profile, base=tmp, progress=False, fresh_runtimes=True)


def _printed(notebook_path: Path) -> str:
    """Everything a notebook printed (stdout and stderr streams)."""
    notebook = nbformat.read(notebook_path, as_version=4)
    return "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_series_writes_executed_notebooks_and_parameters(ci_series):
    profile, executed = ci_series
    assert sorted(p.stem for p in executed.glob("*.ipynb")) == NOTEBOOK_NAMES
    for name in NOTEBOOK_NAMES:
        notebook = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        errors = [
            out
            for cell in notebook.cells
            if cell.cell_type == "code"
            for out in cell.outputs
            if out.output_type == "error"
        ]
        assert errors == [], name
        injected = [
            c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])
        ]
        assert len(injected) == 1, name
    recorded = yaml.safe_load((executed / "parameters.yaml").read_text())
    assert list(recorded) == NOTEBOOK_NAMES
    assert recorded["01_extract"]["synthetic_cases"] == 6
    assert recorded["03_train"]["epochs"] == 2
    assert recorded["02_preprocess"]["work_dir"] == str(executed.parent)


@pytest.mark.slow
def test_series_leaves_model_metrics_figures_and_video(ci_series):
    _, executed = ci_series
    work = executed.parent
    assert (work / "model" / "best.keras").stat().st_size > 0
    history = pd.read_csv(work / "model" / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert np.isfinite(history["val_mean_dice"]).all()

    per_case = pd.read_csv(work / "evaluation" / "per_case.csv")
    test_cases = yaml.safe_load((work / "model" / "splits.json").read_text())["test"]
    assert sorted(per_case["case"].unique()) == sorted(test_cases)
    assert set(per_case["organ"]) == ORGANS
    assert per_case["dsc"].between(0, 1).all() and per_case["nsd"].between(0, 1).all()
    summary = pd.read_csv(work / "evaluation" / "summary.csv")
    assert summary["organ"].tolist()[-1] == "all organs"

    render = work / "render"
    (slices,) = render.glob("*_slices.png")
    assert iio.imread(slices).ndim == 3
    (video,) = render.glob("*_organs.mp4")
    frames = list(imageio_ffmpeg.read_frames(str(video)))[1:]  # first item: metadata
    assert len(frames) == 6  # 1 s at 6 frames/s (the CI profile)
    assert frames[0] != frames[len(frames) // 2]

    # 06: 4 phantoms pseudo-labelled, the top half kept, a student trained and compared.
    round1 = work / "pseudo" / "round1"
    confidence = pd.read_csv(round1 / "pseudolabels" / "confidence.csv")
    assert confidence["case_id"].tolist() == [f"Case_{k:05d}" for k in range(1, 5)]
    assert confidence["kept"].sum() == 2 and confidence["confidence"].between(0, 1).all()
    manifest = json.loads((work / "cache" / "manifest.json").read_text())
    kept = confidence.loc[confidence["kept"], "case_id"].tolist()
    assert manifest["pseudo"] == kept
    student_splits = json.loads((round1 / "student" / "splits.json").read_text())
    assert student_splits == json.loads((work / "model" / "splits.json").read_text())
    assert list(pd.read_csv(round1 / "student" / "history.csv")["epoch"]) == [0, 1]
    for name in ("teacher", "student"):
        scored = pd.read_csv(work / "pseudo" / "evaluation" / name / "per_case.csv")
        assert sorted(scored["case"].unique()) == sorted(test_cases)
    # the student met the teacher on the validation cases, and one line says who stayed
    val_cases = json.loads((work / "model" / "splits.json").read_text())["val"]
    means = {}
    for name in ("teacher", "student"):
        scored = pd.read_csv(round1 / "adoption" / name / "per_case.csv")
        assert sorted(scored["case"].unique()) == sorted(val_cases)
        means[name] = scored.groupby("organ")["dsc"].mean().mean()
    notebook = nbformat.read(executed / "06_pseudolabel.ipynb", as_version=4)
    text = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    adopted = means["student"] - means["teacher"] >= 0.02 - 1e-9  # pseudo.adopt_margin
    assert ("student adopted: " if adopted else "teacher kept") in text
    assert f"student {means['student']:.3f} vs teacher {means['teacher']:.3f}" in text


@pytest.mark.slow
def test_series_student_reuses_the_teachers_localiser_within_its_time_limit(ci_series):
    """06's student: the teacher's localiser byte for byte (none trained), its time limit from
    the notebook's parameter, and no confidence column that no case has a value in."""
    profile, executed = ci_series
    work = executed.parent
    teacher, student = work / "model", work / "pseudo" / "round1" / "student"
    # kept, or turned down by the validation Dice gate: the student takes the same file
    (model,) = [
        n for n in ("localizer.keras", "localizer_rejected.keras") if (teacher / n).exists()
    ]
    for name in (model, "localizer_history.csv", "localizer_done.json"):
        assert (student / name).read_bytes() == (teacher / name).read_bytes(), name
    assert not (student / "localizer_checkpoints").exists()  # no localiser epoch ran there
    assert len(pd.read_csv(student / "localizer_history.csv")) == 2  # the teacher's 2 epochs
    said = _printed(executed / "06_pseudolabel.ipynb")
    assert "localiser: the teacher's" in said and "the student trains its own" not in said
    limit = yaml.safe_load(profile.read_text())["06_pseudolabel"]["time_limit_minutes"]
    saved = yaml.safe_load((student / "config.yaml").read_text())
    assert saved["train"]["time_limit_minutes"] == limit > 0
    assert yaml.safe_load((teacher / "config.yaml").read_text())["train"]["epochs"] == 2
    # the confidence table: anatomy (not in pseudo.confidence) measured for no case, not shown
    notebook = nbformat.read(executed / "06_pseudolabel.ipynb", as_version=4)
    (table,) = [
        out.data["text/plain"]
        for cell in notebook.cells
        if "confidence_table" in cell.source
        for out in cell.outputs
        if out.output_type == "execute_result"
    ]
    assert "agreement" in table and "anatomy" not in table and "NaN" not in table
    csv = pd.read_csv(work / "pseudo" / "round1" / "pseudolabels" / "confidence.csv")
    assert csv["anatomy"].isna().all() and csv["agreement"].between(0, 1).all()


@pytest.mark.slow
def test_series_fresh_runtimes_bring_back_what_each_notebook_needs(ci_series):
    """Each notebook in its own empty data_root (as Colab's badges open them): 02, 04, 05 and
    06 re-extract the CTs from the zip, and the series ends with the same kind of results."""
    _, executed = ci_series
    work = executed.parent
    assert sorted(p.stem for p in executed.glob("*.ipynb")) == NOTEBOOK_NAMES
    recorded = yaml.safe_load((executed / "parameters.yaml").read_text())
    roots = [Path(recorded[name]["data_root"]) for name in NOTEBOOK_NAMES]
    assert len(set(roots)) == 6 and not any(root.exists() for root in roots)  # removed after
    assert not (work / "data").exists()  # the profile's own data_root was never used
    for name in ("02_preprocess", "04_evaluate", "05_render", "06_pseudolabel"):
        said = _printed(executed / f"{name}.ipynb")
        root = recorded[name]["data_root"]
        line = re.search(rf"data: re-created {re.escape(root)}/FLARE22Train \(6 CTs\) from "
                         rf"\S+FLARE22Train\.zip in ([\d.]+) s", said)  # fmt: skip
        assert line is not None and 0 <= float(line.group(1)) < 60, (name, said[:500])
    assert "model: " in _printed(executed / "04_evaluate.ipynb")
    assert "cache: " in _printed(executed / "06_pseudolabel.ipynb")
    record = json.loads((executed / "series_run.json").read_text())["notebooks"]
    assert sorted(record) == NOTEBOOK_NAMES
    assert all(entry["fresh_runtime"] and entry["profile"] == "ci" for entry in record.values())

    per_case = pd.read_csv(work / "evaluation" / "per_case.csv")
    test_cases = json.loads((work / "model" / "splits.json").read_text())["test"]
    assert sorted(per_case["case"].unique()) == sorted(test_cases) and len(test_cases) >= 1
    assert len(per_case) == 4 * len(test_cases) and set(per_case["organ"]) == ORGANS
    assert per_case["dsc"].between(0, 1).all() and per_case["nsd"].between(0, 1).all()
    manifest = json.loads((work / "cache" / "manifest.json").read_text())
    assert len(manifest["cases"]) == 6 + len(manifest["pseudo"]) and manifest["pseudo"]
    assert list(pd.read_csv(work / "model" / "history.csv")["epoch"]) == [0, 1]
    assert (work / "pseudo" / "round1" / "student" / "best.keras").stat().st_size > 0
    for name in ("teacher", "student"):
        scored = pd.read_csv(work / "pseudo" / "evaluation" / name / "per_case.csv")
        assert sorted(scored["case"].unique()) == sorted(test_cases)
        assert scored["dsc"].between(0, 1).all()
    (video,) = (work / "render").glob("*_organs.mp4")
    assert len(list(imageio_ffmpeg.read_frames(str(video)))[1:]) == 6


@pytest.mark.slow
def test_a_notebook_run_first_says_which_notebook_it_needs(tmp_path):
    """04 in a fresh runtime before 01 ran: one line naming the notebook to run first."""
    profile = _ci_profile(tmp_path)
    with pytest.raises(FlareError) as caught:
        run_series(profile, only=["04"], base=tmp_path, progress=False, fresh_runtimes=True)
    message = str(caught.value)
    assert "run notebook 01_extract first" in message and "\n" not in message


@pytest.mark.slow
def test_series_rerun_changes_nothing(ci_series, tmp_path):
    """A second run of the notebooks that write them (02–04) finds everything done: the
    cache, model and scores stay byte-identical."""
    profile, executed = ci_series
    work = executed.parent
    before = {
        "cache": _digests(work / "cache", "cases/*/*.npy"),
        "model": _digests(work / "model", "*.keras"),
        "scores": _digests(work / "evaluation", "*.csv"),
        "predictions": _digests(work / "evaluation" / "predictions", "*.nii.gz"),
    }
    first_run = tmp_path / "first_run"
    shutil.copytree(executed, first_run)  # the other series tests read the first run's copies
    try:
        run_series(profile, only=["02", "03", "04"], base=tmp_path, progress=False)
        rerun = nbformat.read(executed / "03_train.ipynb", as_version=4)
    finally:
        shutil.rmtree(executed)
        shutil.copytree(first_run, executed)
    said = "".join(out.get("text", "") for cell in rerun.cells for out in cell.get("outputs", []))
    assert "best.keras: already trained (2 epochs)" in said
    after = {
        "cache": _digests(work / "cache", "cases/*/*.npy"),
        "model": _digests(work / "model", "*.keras"),
        "scores": _digests(work / "evaluation", "*.csv"),
        "predictions": _digests(work / "evaluation" / "predictions", "*.nii.gz"),
    }
    assert all(before.values()) and after == before


@pytest.mark.slow
def test_series_notebooks_publish_for_the_docs(ci_series, tmp_path):
    """``make docs``'s copying step on the CI run: code as in the sources, outputs kept,
    no PNG wider than 1000 pixels, well within the 10 MB budget."""
    import base64
    import io

    import jupytext
    from PIL import Image

    from flare_helpers.series.docs import publish_notebooks

    _, executed = ci_series
    written = publish_notebooks(executed, tmp_path / "docs")
    assert [p.stem for p in written] == NOTEBOOK_NAMES
    assert sum(p.stat().st_size for p in written) < 10 * 2**20
    sources = Path(PROFILE_DIR).parent
    pictures = 0
    for path in written:
        notebook = nbformat.read(path, as_version=4)
        code = [
            c.source.strip()
            for c in notebook.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", ())
        ]
        source = jupytext.read(sources / f"{path.stem}.py")
        assert code == [c.source.strip() for c in source.cells if c.cell_type == "code"]
        for cell in notebook.cells:
            for out in cell.get("outputs", []):
                for mime in ("image/png", "image/jpeg"):
                    if mime in out.get("data", {}):
                        image = Image.open(io.BytesIO(base64.b64decode(out["data"][mime])))
                        assert image.width <= 1000 and image.mode == "RGB"
                        pictures += 1
    assert pictures >= 8  # slices, batch, curves, boxplots, case figures …
    # for readers: paths relative to the working folder, no TensorFlow lines, bars at the end
    work = str(executed.parent)
    trained = nbformat.read(written[2], as_version=4)
    injected = trained.cells[4].source.splitlines()
    assert {'work_dir = "."', 'data_root = "data"'} <= set(injected), injected
    # each opens with how it ran: the profile, the injected parameters, machine, date, time
    for path in written:
        notebook = nbformat.read(path, as_version=4)
        header = notebook.cells[0]
        assert header.cell_type == "markdown" and header.metadata.tags == ["flare-run"]
        fields = dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", header.source, re.M))
        assert fields["profile"] == "`ci`", path.name
        assert "CPU cores" in fields["machine"] and "GPU" in fields["machine"]
        assert fields["date"].endswith(" UTC") and fields["date"][:4].isdigit()
        seconds = notebook.metadata.papermill.duration
        assert 0 < seconds < 600 and fields["wall time"] == format_seconds(seconds)
        assert '`work_dir = "."`' in fields["parameters papermill injected"]
    train_fields = nbformat.read(written[2], as_version=4).cells[0].source
    assert "`epochs = 2`" in train_fields and "`batch_size = 2`" in train_fields
    bars = [
        out.data["text/plain"]
        for cell in trained.cells
        for out in cell.get("outputs", [])
        if out.output_type == "display_data" and "epoch" in out.data.get("text/plain", "")
    ]
    assert [bar.split(" [")[0] for bar in bars] == [
        "epoch 1/2: 100%|██████████| 2/2",  # the localiser: 2 epochs of 2 steps
        "epoch 2/2: 100%|██████████| 2/2",
        "epoch 1/2: 100%|██████████| 16/16",  # the VNet: 2 epochs of 16 steps
        "epoch 2/2: 100%|██████████| 16/16",
    ]
    for path in written:
        text = path.read_text()
        assert work not in text and "absl::InitializeLog" not in text, path.name
        assert "widget-view+json" not in text and "widget-state" not in text, path.name


def test_a_failing_notebook_stops_the_series_with_its_error(tmp_path):
    profile = _ci_profile(tmp_path, zip_path=str(tmp_path / "missing.zip"))
    settings = yaml.safe_load(profile.read_text())
    settings["01_extract"]["synthetic_cases"] = 0
    profile.write_text(yaml.safe_dump(settings))
    with pytest.raises(FlareError) as caught:
        run_series(profile, base=tmp_path, progress=False)
    message = str(caught.value)
    assert "01_extract" in message and "missing.zip" in message
    assert "\n" not in message
    executed = tmp_path / "work" / "notebooks"
    assert [p.name for p in executed.glob("*.ipynb")] == ["01_extract.ipynb"]


def test_series_passes_paths_as_written_and_keeps_c_output_out_of_cells(tmp_path, monkeypatch):
    """The kernels get the profile's relative paths (they run in ``base``), so the executed
    notebooks show ``runs/demo/...``, not this machine's folders; TensorFlow's C++ start-up
    lines (which ignore TF_CPP_MIN_LOG_LEVEL) go to the terminal, not into the cells."""
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: calls.append((a, kw)))
    out = run_series("demo", only=["01", "03"], base=tmp_path, progress=False)
    assert out == tmp_path.resolve() / "runs" / "demo" / "notebooks"
    assert [Path(a[1]).name for a, _ in calls] == ["01_extract.ipynb", "03_train.ipynb"]
    extract, train = (kw for _, kw in calls)
    assert {k: extract["parameters"][k] for k in ("work_dir", "data_root", "zip_path")} == {
        "work_dir": "runs/demo",
        "data_root": "runs/demo/data",
        "zip_path": "runs/demo/FLARE22Train.zip",
    }
    assert train["parameters"]["epochs"] == 30 and train["parameters"]["work_dir"] == "runs/demo"
    assert extract["cwd"] == str(tmp_path.resolve())
    assert extract["extra_arguments"] == ["--IPKernelApp.capture_fd_output=False"]
    recorded = yaml.safe_load((out / "parameters.yaml").read_text())
    assert recorded["01_extract"]["zip_path"] == "runs/demo/FLARE22Train.zip"


def test_flare_series_fresh_runtimes_gives_each_notebook_a_new_empty_data_root(
    tmp_path, monkeypatch
):
    """``flare-series --fresh-runtimes``: each kernel gets its own empty data_root (the
    parameter and FLARE_DATA_ROOT, which wins in the notebooks), removed after it; the work
    folder and the zip stay the profile's."""
    import papermill

    from flare_helpers.cli import series_main

    seen = []

    def execute(source, target, parameters, **kwargs):
        root = Path(parameters["data_root"])
        seen.append((Path(source).stem, root, os.environ["FLARE_DATA_ROOT"], list(root.iterdir())))
        (root / "FLARE22Train").mkdir()  # what a notebook extracts there

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setenv("FLARE_DATA_ROOT", "/somewhere/else")
    monkeypatch.chdir(tmp_path)
    assert series_main(["--profile", "demo", "--only", "02", "04", "--fresh-runtimes"]) == 0
    assert [name for name, *_ in seen] == ["02_preprocess", "04_evaluate"]
    (_, first, env1, listed1), (_, second, env2, listed2) = seen
    assert first != second and (env1, env2) == (str(first), str(second))
    assert listed1 == listed2 == [] and not first.exists() and not second.exists()
    assert os.environ["FLARE_DATA_ROOT"] == "/somewhere/else"  # given back afterwards
    executed = tmp_path / "runs" / "demo" / "notebooks"
    recorded = yaml.safe_load((executed / "parameters.yaml").read_text())
    assert recorded["04_evaluate"]["zip_path"] == "runs/demo/FLARE22Train.zip"
    assert recorded["04_evaluate"]["work_dir"] == "runs/demo"
    record = json.loads((executed / "series_run.json").read_text())["notebooks"]
    assert record["02_preprocess"]["fresh_runtime"] is True
    assert record["02_preprocess"]["profile"] == "demo"
    assert "CPU cores" in record["04_evaluate"]["machine"]


def test_unknown_profile_and_parameter_are_named(tmp_path):
    with pytest.raises(FlareError, match="no such profile"):
        run_series("nonexistent", base=tmp_path, progress=False)
    profile = _ci_profile(tmp_path)
    settings = yaml.safe_load(profile.read_text())
    settings["03_train"]["epoch"] = 3
    profile.write_text(yaml.safe_dump(settings))
    with pytest.raises(FlareError, match="03_train has no parameter"):
        run_series(profile, base=tmp_path, only=["03"], progress=False)


def test_every_profile_sets_only_declared_parameters():
    """Each shipped profile (ci, demo, colab, full) names parameters the notebooks declare."""
    import papermill

    notebooks = Path(PROFILE_DIR).parent
    declared = {
        name: set(papermill.inspect_notebook(str(notebooks / f"{name}.ipynb")))
        for name in NOTEBOOK_NAMES
    }
    every = set().union(*declared.values())
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        profile = yaml.safe_load(path.read_text())
        assert set(profile["common"]) <= every, path.name
        for name, params in profile.items():
            if name != "common":
                assert set(params) <= declared[name], (path.name, name)
    assert {p.stem for p in PROFILE_DIR.glob("*.yaml")} >= {"ci", "demo", "colab", "full"}


def test_without_papermill_the_series_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "papermill", None)  # makes `import papermill` fail
    with pytest.raises(FlareError) as caught:
        run_series(_ci_profile(tmp_path), base=tmp_path, progress=False)
    assert str(caught.value) == (
        'running the notebooks in batch needs papermill: pip install "flare-vnet[series]"'
    )


def test_a_wheel_install_finds_the_notebooks_and_profiles(tmp_path):
    """A plain (non-editable) install carries the series: flare-series needs no checkout."""
    repo = Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(repo)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-1500:]
    (wheel,) = (tmp_path / "wheel").glob("flare_vnet-*.whl")
    site = tmp_path / "site"
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-1500:]
    probe = (
        "from flare_helpers.series import runner\n"
        "print(runner.NOTEBOOK_DIR)\n"
        "print(*[p.name for p in runner.notebooks()])\n"
        "print(sorted(runner.load_profile('ci')))\n"
        "from flare_helpers import config\n"
        "print(repr(config.documented_yaml()))\n"
        "from flare_helpers.data import examples\n"
        "print(examples.real_ct_folder())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-1500:]
    folder, names, profile, documented, real_ct = done.stdout.splitlines()
    # notebook 02's real CT ships as the data package's own files, nothing from tests/
    assert Path(real_ct) == site / "flare_helpers" / "data" / "real_ct" / "FLARE22Train"
    assert sorted(p.name for p in (Path(real_ct) / "images").iterdir()) == [
        "FLARE22_Tr_9001_0000.nii.gz"
    ]
    assert (Path(real_ct) / "labels" / "FLARE22_Tr_9001.nii.gz").stat().st_size > 10_000
    assert (Path(real_ct).parent / "LICENSE-TotalSegmentator.txt").is_file()
    # the settings' comments ship with the package (the repository's config.yaml is not)
    assert eval(documented) == (repo / "config.yaml").read_text(encoding="utf-8")  # noqa: S307
    assert Path(folder) == site / "flare_helpers" / "notebooks"
    assert names.split() == [
        "01_extract.ipynb",
        "02_preprocess.ipynb",
        "03_train.ipynb",
        "04_evaluate.ipynb",
        "05_render.ipynb",
        "06_pseudolabel.ipynb",
    ]
    assert "common" in profile and "03_train" in profile
