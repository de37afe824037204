"""flare-visualize: per-case slice figures and 3D videos from a trained model.

The model is the untrained tiny VNet of ``tiny_run``: its predictions are noise,
so the checks are about files, geometry, scores and errors, not accuracy.
Videos are 1 s at 4 fps and 320×160 pixels to stay fast.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_viz import organ_pixels, read_mp4

from flare_helpers.cli import visualize_main
from flare_helpers.data.labels import DEFAULT_ORGANS, FLARE22_IDS
from flare_helpers.data.nifti import load_label
from flare_helpers.data.splits import select_cases
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.metrics import dice
from flare_helpers.infer import predict as infer
from flare_helpers.viz import plot_case
from flare_helpers.viz.render3d import Turntable
from flare_helpers.workflows import report
from flare_helpers.workflows.report import visualize_cases

TEST_CASES = ("FLARE22_Tr_0005", "FLARE22_Tr_0006")  # the test split of tiny_run
VIDEO = dict(seconds=1.0, fps=4, size=(320, 160))
N_FRAMES = 4


def spy_plot_case(calls: list):
    """``plot_case`` that records (kwargs, figure) of every call."""

    def spy(*args, **kwargs):
        figure = plot_case(*args, **kwargs)
        calls.append((kwargs, figure))
        return figure

    return spy


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def cli_args(model: Path | str, data: Path | str, out: Path) -> list[str]:
    """``flare-visualize`` arguments for a model, a data folder and an output folder."""
    return ["--model-path", str(model), "--data-path", str(data), "--output-path", str(out)]


def error_line(err: str) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flare-visualize: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def visualized(tiny_run, synthetic_data, tmp_path_factory):
    """One run over the test split: (output folder, files written, plot_case calls)."""
    out = tmp_path_factory.mktemp("visualize")
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "plot_case", spy_plot_case(calls))
        written = visualize_cases(
            tiny_run / "best.keras", synthetic_data, out, progress=False, **VIDEO
        )
    return out, written, calls


# --------------------------------------------------------------------------- outputs


def test_writes_prediction_figure_and_video_per_test_case(visualized):
    out, written, _ = visualized
    expected = [out / "predictions" / f"{c}.nii.gz" for c in TEST_CASES] + [
        out / f"{c}_{kind}" for c in TEST_CASES for kind in ("slices.png", "organs.mp4")
    ]
    assert written == expected
    assert files_under(out) == set(expected)  # nothing else, no temporary files


def test_figures_decode_and_show_dice(visualized, synthetic_data):
    out, _, calls = visualized
    assert [kwargs["title"] for kwargs, _ in calls] == list(TEST_CASES)
    for case_id, (kwargs, figure) in zip(TEST_CASES, calls, strict=True):
        with Image.open(out / f"{case_id}_slices.png") as png:
            width, height = np.round(figure.get_size_inches() * figure.dpi).astype(int)
            assert png.format == "PNG" and png.size == (width, height)
            assert np.asarray(png.convert("RGB")).std() > 10  # a picture, not a blank page
        assert len(figure.axes) == 9  # 3 planes × (CT, ground truth, prediction)
        gt = load_label(synthetic_data / "labels" / f"{case_id}.nii.gz").data
        pred = load_label(out / "predictions" / f"{case_id}.nii.gz").data
        expected = {o: dice(gt == FLARE22_IDS[o], pred == FLARE22_IDS[o]) for o in DEFAULT_ORGANS}
        assert kwargs["dice"] == pytest.approx(expected)
        for organ, value in expected.items():
            assert f"{organ.replace('_', ' ')} {value:.3f}" in figure.get_suptitle()


def test_videos_turn_and_show_every_ground_truth_organ(visualized, synthetic_data):
    out, _, _ = visualized
    width, height = VIDEO["size"]
    for case_id in TEST_CASES:
        size, frames = read_mp4(out / f"{case_id}_organs.mp4")
        assert size == (width, height)
        assert len(frames) == N_FRAMES
        for a, b in zip(frames, frames[1:], strict=False):
            assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0  # the camera moves
        gt = load_label(synthetic_data / "labels" / f"{case_id}.nii.gz").data
        truth_panel = [f[: int(0.88 * height), : width // 2] for f in frames]  # above the legend
        for organ in DEFAULT_ORGANS:
            assert (gt == FLARE22_IDS[organ]).sum() > 0
            assert max(organ_pixels(p, organ, 0.05).sum() for p in truth_panel) > 20, organ


def test_unlabelled_case_gets_prediction_only_pictures(tiny_run, synthetic_copy, tmp_path):
    (synthetic_copy / "labels" / "FLARE22_Tr_0005.nii.gz").unlink()
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "plot_case", spy_plot_case(calls))
        written = visualize_cases(
            tiny_run / "best.keras",
            synthetic_copy,
            tmp_path / "out",
            case_ids=["FLARE22_Tr_0005"],
            progress=False,
            **VIDEO,
        )
    assert [p.name for p in written] == [
        "FLARE22_Tr_0005.nii.gz",
        "FLARE22_Tr_0005_slices.png",
        "FLARE22_Tr_0005_organs.mp4",
    ]
    ((kwargs, figure),) = calls
    assert kwargs["dice"] is None and "Dice" not in figure.get_suptitle()
    assert len(figure.axes) == 6  # 3 planes × (CT, prediction)
    assert len(read_mp4(written[-1])[1]) == N_FRAMES


def test_nothing_to_render_warns_and_skips_the_video(
    tiny_run, synthetic_copy, tmp_path, monkeypatch
):
    (synthetic_copy / "labels" / "FLARE22_Tr_0006.nii.gz").unlink()

    def background(predictor, probs, box, canonical_shape):
        return np.zeros(tuple(canonical_shape), dtype=np.uint8)

    monkeypatch.setattr(infer, "labels_on_grid", background)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="FLARE22_Tr_0006: none of liver"):
        written = visualize_cases(
            tiny_run / "best.keras",
            synthetic_copy,
            out,
            case_ids="FLARE22_Tr_0006",
            progress=False,
            **VIDEO,
        )
    assert [p.name for p in written] == ["FLARE22_Tr_0006.nii.gz", "FLARE22_Tr_0006_slices.png"]
    assert files_under(out) == set(written)


def test_select_cases(tiny_run, synthetic_copy):
    model = tiny_run / "best.keras"
    (synthetic_copy / "labels" / "FLARE22_Tr_0001.nii.gz").unlink()

    def chosen(which, labelled=False):
        found = select_cases(synthetic_copy, which, model_path=model, labelled=labelled)
        return [case.case_id for case in found]

    assert chosen("all") == [f"FLARE22_Tr_{n:04d}" for n in range(1, 7)]  # unlabelled 0001 in
    assert chosen("all", labelled=True) == [f"FLARE22_Tr_{n:04d}" for n in range(2, 7)]
    assert chosen(None) == chosen("test", labelled=True) == list(TEST_CASES)
    assert chosen(["FLARE22_Tr_0003", "FLARE22_Tr_0003"]) == ["FLARE22_Tr_0003"]
    with pytest.raises(FlareError, match="no image for case.*FLARE22_Tr_0042"):
        chosen(["FLARE22_Tr_0042"])
    with pytest.raises(FlareError, match="no ground-truth label for case.*FLARE22_Tr_0001"):
        chosen(["FLARE22_Tr_0001"], labelled=True)
    with pytest.raises(FlareError, match="no cases chosen"):
        chosen([])


# --------------------------------------------------------------------------- command line


def test_cli_errors_are_one_line(tiny_run, synthetic_data, tmp_path, capsys):
    model, out = str(tiny_run / "best.keras"), tmp_path / "out"
    missing_model = str(tmp_path / "nope.keras")
    missing_data = str(tmp_path / "no_data")
    cases = {
        "model file not found": [missing_model, str(synthetic_data), missing_model],
        "data folder not found": [model, missing_data, missing_data],
    }
    for problem, (model_arg, data_arg, named) in cases.items():
        args = cli_args(model_arg, data_arg, out)
        assert visualize_main(args) == 2
        assert error_line(capsys.readouterr().err) == f"flare-visualize: error: {named}: {problem}"
    args = cli_args(model, synthetic_data, out)
    assert visualize_main([*args, "--fps", "0"]) == 2
    assert "fps >= 1" in error_line(capsys.readouterr().err)
    assert not out.exists()  # nothing started


def test_cli_refuses_existing_outputs_then_overwrites(
    visualized, tiny_run, synthetic_data, tmp_path, capsys
):
    out = Path(shutil.copytree(visualized[0], tmp_path / "out"))
    before = {p: p.stat().st_mtime_ns for p in files_under(out)}
    args = cli_args(tiny_run / "best.keras", synthetic_data, out)
    assert visualize_main(args) == 2
    line = error_line(capsys.readouterr().err)
    first = out / "predictions" / f"{TEST_CASES[0]}.nii.gz"
    assert line == (
        f"flare-visualize: error: {first}: output exists (and 5 more); pass --overwrite to replace"
    )
    assert {p: p.stat().st_mtime_ns for p in files_under(out)} == before

    small = ["--cases", TEST_CASES[0], "--seconds", "0.5", "--fps", "2", "--size", "64", "48"]
    assert visualize_main([*args, *small, "--overwrite"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"wrote {out / 'predictions' / f'{TEST_CASES[0]}.nii.gz'}",
        f"wrote {out / f'{TEST_CASES[0]}_slices.png'}",
        f"wrote {out / f'{TEST_CASES[0]}_organs.mp4'}",
    ]
    size, frames = read_mp4(out / f"{TEST_CASES[0]}_organs.mp4")
    assert size == (64, 48) and len(frames) == 1
    assert files_under(out) == set(before)


def test_cli_interrupted_render_leaves_no_partial_video(
    tiny_run, synthetic_data, tmp_path, capsys, monkeypatch
):
    drawn = []
    frame = Turntable.frame

    def interrupt_second_frame(self, azimuth):
        drawn.append(azimuth)
        if len(drawn) == 2:
            raise KeyboardInterrupt
        return frame(self, azimuth)

    monkeypatch.setattr(Turntable, "frame", interrupt_second_frame)
    out = tmp_path / "out"
    args = [
        *cli_args(tiny_run / "best.keras", synthetic_data, out),
        *("--cases", TEST_CASES[0], "--seconds", "1", "--fps", "4"),
    ]
    assert visualize_main(args) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "flare-visualize: interrupted"
    assert files_under(out) == {
        out / "predictions" / f"{TEST_CASES[0]}.nii.gz",
        out / f"{TEST_CASES[0]}_slices.png",
    }


def test_console_script_and_module_entry_point():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "flare-visualize"]
    assert script.value == "flare_helpers.cli:visualize_main"
    result = subprocess.run(
        [sys.executable, "-m", "flare_helpers", "visualize", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--output-path" in result.stdout and result.stderr == ""
