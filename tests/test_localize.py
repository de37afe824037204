"""Organ localiser: localised sliding windows, their guards, training, old runs, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_settings import TINY_LOCALIZER, TINY_MODEL, TINY_SPACING

from flare_helpers.cli import predict_main
from flare_helpers.config import load_config, load_run_config
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.errors import FlareError
from flare_helpers.infer import predict as infer
from flare_helpers.localize import localizer as localize
from flare_helpers.model.runtime import resolve_precision
from flare_helpers.model.sliding_window import WindowSum, sliding_window_probabilities, window_count
from flare_helpers.workflows import report

PATCH = (16, 16, 8)


def _softmax_of_input(batch: np.ndarray) -> np.ndarray:
    """A stand-in network whose output depends on the window (so placement matters)."""
    ramp = np.linspace(0.0, 1.0, batch.shape[1], dtype=np.float32)[None, :, None, None]
    logits = np.stack([batch, 1.0 - batch + ramp, 0.5 * np.sin(7.0 * batch)], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _threshold(batch: np.ndarray) -> np.ndarray:
    """A voxel-wise stand-in network: class 1 where the input is bright, else background."""
    organ = (batch > 0.5).astype(np.float32)
    return np.stack([1.0 - 0.9 * organ, 0.9 * organ], axis=-1)


# --------------------------------------------------------------------------- windows


def test_a_box_equal_to_the_crop_gives_todays_output_bit_for_bit():
    x = np.random.default_rng(0).random((40, 37, 21), dtype=np.float32)
    today = sliding_window_probabilities(x, PATCH, _softmax_of_input, overlap=0.5, batch_size=3)
    whole = tuple(slice(0, n) for n in x.shape)
    for box in (whole, None, (slice(1, 40), slice(0, 37), slice(0, 21))):  # as many windows
        probs, report = localize.localized_probabilities(
            x, PATCH, _softmax_of_input, box, overlap=0.5, batch_size=3
        )
        assert np.array_equal(probs, today)
        assert report.windows_run == report.windows_crop == window_count(x.shape, PATCH, 0.5)
    _, report = localize.localized_probabilities(x, PATCH, _softmax_of_input, None)
    assert report.whole_crop_because == "no organ found"


@pytest.mark.parametrize(
    ("shape", "box"),
    [
        ((60, 50, 30), (slice(10, 35), slice(3, 9), slice(20, 30))),  # thinner than a patch
        ((60, 50, 30), (slice(0, 60), slice(49, 50), slice(0, 1))),  # at the edges
        ((12, 50, 30), (slice(2, 5), slice(10, 44), slice(5, 25))),  # volume < patch along x
        ((60, 50, 30), (slice(7, 48), slice(11, 40), slice(3, 27))),
    ],
)
def test_every_voxel_of_the_box_is_covered_by_a_window(shape, box):
    x = np.zeros(shape, dtype=np.float32)
    sums = WindowSum(x, PATCH, _threshold, batch_size=2)
    ran = sums.cover(box, 0.5)
    assert ran == sums.windows_run and ran < window_count(shape, PATCH, 0.5)
    assert np.all(sums.weight_sum[box] > 0)
    probs = sums.probabilities()
    assert probs.shape == (*shape, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    unseen = sums.weight_sum[: shape[0], : shape[1], : shape[2]] == 0
    assert unseen.any() and np.all(probs[unseen] == [1.0, 0.0])  # background outside


def test_the_growth_guard_recovers_an_organ_cut_by_a_small_box():
    x = np.zeros((64, 64, 32), dtype=np.float32)
    organ = (slice(10, 50), slice(12, 44), slice(6, 26))
    x[organ] = 1.0
    small = (slice(28, 36), slice(26, 32), slice(14, 18))
    probs, report = localize.localized_probabilities(x, PATCH, _threshold, small, overlap=0.5)
    labels = np.argmax(probs, axis=-1)
    np.testing.assert_array_equal(labels, x > 0.5)  # every organ voxel recovered, nothing else
    assert set(report.grown_faces) == {"-x", "+x", "-y", "+y", "-z", "+z"}
    assert report.windows_run < report.windows_crop  # still fewer windows than the crop
    assert all(
        b.start <= o.start and b.stop >= o.stop for b, o in zip(report.box, organ, strict=True)
    )
    # A box that holds the organ does not grow: its own windows are all that run.
    holding = (slice(2, 58), slice(4, 52), slice(0, 32))
    _, fitting = localize.localized_probabilities(x, PATCH, _threshold, holding, overlap=0.5)
    assert fitting.grown_faces == [] and fitting.box == holding
    assert fitting.windows_run == window_count((56, 48, 32), PATCH, 0.5)


def test_region_scales_coarse_boxes_to_the_fine_grid_with_the_margin():
    coarse = np.zeros((10, 8, 6), dtype=np.uint8)
    coarse[2:4, 1:3, 1:2] = 1
    coarse[6:8, 5:7, 3:5] = 2
    coarse[9, 0, 5] = 2  # a stray voxel: not the organ's largest piece
    region = localize.region_from_classes(coarse, (60, 40, 30), (1.0, 1.0, 2.5), 5.0, 5)
    assert region.organs == {
        1: (slice(12, 24), slice(5, 15), slice(5, 10)),
        2: (slice(36, 48), slice(25, 35), slice(15, 25)),
    }
    assert region.box == (slice(7, 53), slice(0, 40), slice(3, 27))
    empty = localize.region_from_classes(np.zeros_like(coarse), (60, 40, 30), (1, 1, 2.5), 5, 5)
    assert empty.box is None and empty.organs == {}


# --------------------------------------------------------------------------- runs


def _spacing_cfg(run: Path, *extra: str):
    return load_config(
        None, [*TINY_MODEL, *TINY_SPACING, *TINY_LOCALIZER, f"train.output_dir={run}", *extra]
    )


@pytest.fixture(scope="module")
def localized_run(tmp_path_factory, tiny_spacing_run) -> Path:
    """``tiny_spacing_run`` with an untrained tiny localiser and its settings."""
    from flare_helpers.config import save_config
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile

    run = Path(shutil.copytree(tiny_spacing_run, tmp_path_factory.mktemp("loc") / "run"))
    cfg = _spacing_cfg(run)
    save_config(cfg, run / "config.yaml")
    net = build_and_compile(localize.localizer_training_config(cfg), 5)
    save_model_atomic(net, run / "localizer.keras")
    return run


def _predict(run: Path, image: Path, out: Path, *flags: str) -> np.ndarray:
    args = ["--model-path", str(run / "best.keras"), "--input", str(image), "--output", str(out)]
    assert predict_main([*args, "--overwrite", *flags]) == 0
    return load_label(out).data


def test_localised_prediction_reports_windows_and_a_whole_crop_box_is_todays(
    localized_run, synthetic_data, tmp_path, monkeypatch, capsys
):
    image = synthetic_data / "images" / "FLARE22_Tr_0002_0000.nii.gz"
    predictor = infer.load_predictor(localized_run / "best.keras")
    assert predictor.localizer is not None and "localizer.keras" in predictor.describe()
    reports: list = []
    infer.predict_files(
        predictor, [(image, tmp_path / "a.nii.gz")], progress=False, reports=reports
    )
    (report,) = reports
    assert report.windows_run >= 1 and report.windows_crop > 1
    assert {"load", "preprocess", "localize", "network", "resample", "write"} <= set(report.seconds)
    today = _predict(localized_run, image, tmp_path / "today.nii.gz", "--no-localize")
    out = capsys.readouterr().out
    assert "localiser: off" in out and f"of {report.windows_crop} windows" in out
    assert f"{report.windows_crop} of {report.windows_crop} windows" in out

    def whole(self, x, margin_mm):
        box = tuple(slice(0, n) for n in x.shape)
        return localize.Region({1: box}, box)

    monkeypatch.setattr(localize.Localizer, "region", whole)
    boxed = _predict(localized_run, image, tmp_path / "boxed.nii.gz")
    np.testing.assert_array_equal(boxed, today)
    assert "as many windows as the whole crop" in capsys.readouterr().out  # the guard


def test_a_run_without_a_localiser_predicts_as_today(tiny_spacing_run, synthetic_data, tmp_path):
    image = synthetic_data / "images" / "FLARE22_Tr_0003_0000.nii.gz"
    predictor = infer.load_predictor(tiny_spacing_run / "best.keras", precision="float32")
    assert predictor.localizer is None and "localiser: none" in predictor.describe()
    x, _ = infer.prepare_image(load_image(image), predictor.params)
    report: dict = {}
    probs = infer.volume_probabilities(predictor, x, report=report)
    today = sliding_window_probabilities(
        x,
        predictor.params.target_shape,
        infer._predict_fn(predictor),
        overlap=predictor.settings.overlap,
    )
    assert np.array_equal(probs, today)
    assert report["windows_run"] == report["windows_crop"] > 1


def test_an_old_run_folder_still_predicts(tiny_spacing_run, synthetic_data, tmp_path):
    """A run saved before localisers: no localizer section, no infer.localize, float32 saved."""
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(tiny_spacing_run / "best.keras", old / "best.keras")
    settings = yaml.safe_load((tiny_spacing_run / "config.yaml").read_text())
    del settings["localizer"]
    for key in ("localize", "roi_margin_mm"):
        del settings["infer"][key]
    settings["infer"]["precision"] = "float32"
    (old / "config.yaml").write_text(yaml.safe_dump(settings))
    predictor = infer.load_predictor(old / "best.keras")
    assert predictor.localizer is None and predictor.precision == "float32"
    image = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    labels = _predict(old, image, tmp_path / "p.nii.gz")
    assert labels.shape == load_image(image).data.shape


def test_bad_localiser_files_are_one_line_errors(
    localized_run, tiny_spacing_run, synthetic_data, tmp_path, capsys
):
    image = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    corrupt = Path(shutil.copytree(localized_run, tmp_path / "corrupt"))
    (corrupt / "localizer.keras").write_text("not a zip")
    misfit = Path(shutil.copytree(localized_run, tmp_path / "misfit"))
    (misfit / "config.yaml").write_text((tiny_spacing_run / "config.yaml").read_text())
    for run, message in ((corrupt, "not a valid .keras file"), (misfit, "does not fit")):
        args = ["--model-path", str(run / "best.keras"), "--input", str(image)]
        assert predict_main([*args, "--output", str(tmp_path / "x.nii.gz")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(run / "localizer.keras") in err
        assert message in err or "localiser takes" in err
    with pytest.raises(FlareError, match="localiser takes"):
        localize.load_localizer(misfit, load_run_config(misfit / "config.yaml"))


def test_the_figure_draws_the_crop_the_organ_boxes_and_their_union(localized_run, synthetic_data):
    from flare_helpers import viz

    predictor = infer.load_predictor(localized_run / "best.keras")
    image = load_image(synthetic_data / "images" / "FLARE22_Tr_0002_0000.nii.gz")
    crop, region = infer.locate_on_ct(predictor, image)
    assert all(0 <= s.start < s.stop <= n for s, n in zip(crop, image.data.shape, strict=True))
    box = localize.Region({1: crop, 4: crop}, crop)
    fig = viz.plot_localizer_box(image, crop, box, predictor.organs.organs)
    assert len(fig.axes[0].patches) == 4  # body crop, two organ boxes, their union
    fig = report.localizer_figure(localized_run / "best.keras", synthetic_data, "FLARE22_Tr_0002")
    drawn = 1 if region is None or region.box is None else 2 + len(region.organs)
    assert len(fig.axes[0].patches) == drawn


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_spacing_runs_train_a_resumable_localiser_and_resize_runs_none(synthetic_data, tmp_path):
    from flare_helpers.data.fileio import read_history
    from flare_helpers.data.layout import RunLayout
    from flare_helpers.data.splits import read_splits
    from flare_helpers.workflows.training import open_run, train, train_localizer

    def localizer_alone(cfg):
        with open_run(cfg, progress=False) as folder:
            return train_localizer(cfg, folder.splits, progress=False)

    run = tmp_path / "run"
    cfg = _spacing_cfg(
        run,
        f"data.data_dir={synthetic_data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.epochs=1",
        "train.batch_size=2",
        "train.workers=1",
        "localizer.learning_rate=0.01",
    )
    train(cfg.replace(localizer={"epochs": 1}), progress=False)  # the hook in train()
    paths = RunLayout(run)
    assert paths.localizer_model.exists() and paths.best_model.exists()
    assert [p.name for p in paths.localizer_checkpoints.iterdir()] == ["epoch_0001.keras"]
    more = localizer_alone(cfg)  # localizer.epochs=2: resumes
    rows = read_history(paths.localizer_history)
    assert [r["epoch"] for r in rows] == [0, 1] and more.epochs_completed == 2
    assert all(0.0 <= r["val_mean_dice"] <= 1.0 for r in rows)  # validation Dice, logged
    # the moving average of the validation Dice picks the localiser, as it does the VNet
    assert more.monitor == "ema_val_mean_dice" and more.best_value == max(
        r["ema_val_mean_dice"] for r in rows
    )
    first_ema, second_ema = (r["ema_val_mean_dice"] for r in rows)
    assert first_ema == pytest.approx(rows[0]["val_mean_dice"])
    assert min(first_ema, rows[1]["val_mean_dice"]) <= second_ema
    assert second_ema <= max(first_ema, rows[1]["val_mean_dice"])
    stamp = paths.localizer_model.stat().st_mtime_ns
    done = localizer_alone(cfg)  # finished: nothing retrained
    assert (done.epochs_completed, done.best_value, done.resumed_from) == (2, more.best_value, -1)
    assert more.resumed_from == 1 and paths.localizer_model.stat().st_mtime_ns == stamp
    first = read_splits(paths.splits)["train"][0]
    coarse = np.load(tmp_path / "cache" / "localizer" / "cases" / first / "label.npy")
    assert max(coarse.shape) <= 16 * 2 and set(np.unique(coarse)) <= {0, 1, 2, 3, 4}
    splits = read_splits(paths.splits)
    assert train_localizer(cfg.replace(preprocess={"mode": "resize"}), splits) is None
    assert train_localizer(cfg.replace(localizer={"enabled": False}), splits) is None


# --------------------------------------------------------------------------- precision


AMD = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
INTEL_AMX = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
OLDER = "flags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it_natively():
    assert resolve_precision("auto", AMD, gpu=False)[0] == "bfloat16"
    assert resolve_precision("auto", INTEL_AMX, gpu=False)[0] == "bfloat16"
    assert "amx_bf16" in resolve_precision("auto", INTEL_AMX, gpu=False)[1]
    assert resolve_precision("auto", OLDER, gpu=False)[0] == "float32"
    assert resolve_precision("auto", "", gpu=False)[0] == "float32"
    assert resolve_precision("auto", AMD, gpu=True)[0] == "float32"
    assert resolve_precision("float32", AMD, gpu=False)[0] == "float32"
    assert resolve_precision("bfloat16", OLDER, gpu=False)[0] == "bfloat16"  # as asked


def test_every_prediction_says_its_precision(tiny_run, synthetic_data, tmp_path, capsys):
    image = synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz"
    expected = resolve_precision("auto")[0]  # this CPU's answer, with or without bf16
    _predict(tiny_run, image, tmp_path / "a.nii.gz")
    out = capsys.readouterr().out
    assert f"precision {expected} (auto:" in out and f"1 of 1 windows ({expected})" in out
    _predict(tiny_run, image, tmp_path / "b.nii.gz", "--precision", "float32")
    assert "precision float32 (as set" in capsys.readouterr().out
