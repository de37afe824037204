"""Organ localiser: localised sliding windows, their guards and anatomy checks, training and
its Dice gate, old runs, bad files."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_settings import TINY_LOCALIZER, TINY_MODEL, TINY_SPACING

from flare_helpers.cli import predict_main
from flare_helpers.config import load_config, load_run_config, save_config
from flare_helpers.data.fileio import write_json_atomic
from flare_helpers.data.labels import OrganSet
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.errors import FlareError
from flare_helpers.infer import predict as infer
from flare_helpers.localize import localizer as localize
from flare_helpers.model.runtime import resolve_precision
from flare_helpers.model.sliding_window import WindowSum, sliding_window_probabilities, window_count
from flare_helpers.phantoms.synthetic import case_files
from flare_helpers.preprocess.pipeline import PreprocessParams, crop_box, prepare_label
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


@pytest.mark.filterwarnings("ignore:localiser box not used")  # an untrained localiser's box
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
        """Every organ boxed by the whole crop, centred on its side, of plausible volume."""
        box = tuple(slice(0, n) for n in x.shape)
        right, left = (0.75 * x.shape[0], 0, 0), (0.25 * x.shape[0], 0, 0)
        centres = {1: right, 2: right, 3: left, 4: left}
        volumes = {1: 1500.0, 2: 150.0, 3: 150.0, 4: 200.0}
        return localize.Region(dict.fromkeys(centres, box), box, volumes, centres)

    monkeypatch.setattr(localize.Localizer, "region", whole)
    crop = report.windows_crop
    with pytest.warns(UserWarning, match=f"box windows: needs {crop} windows, the whole crop"):
        boxed = _predict(localized_run, image, tmp_path / "boxed.nii.gz")
    np.testing.assert_array_equal(boxed, today)
    out = capsys.readouterr().out
    assert f"{crop} of {crop} windows" in out  # the guard: the whole crop
    assert f"box windows: needs {crop} windows, the whole crop {crop}" in out


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a box that fails its checks says why
        crop, region, rejected = infer.locate_on_ct(predictor, image)
    assert all(0 <= s.start < s.stop <= n for s, n in zip(crop, image.data.shape, strict=True))
    box = localize.Region({1: crop, 4: crop}, crop)
    fig = viz.plot_localizer_box(image, crop, box, predictor.organs.organs)
    assert len(fig.axes[0].patches) == 4  # body crop, two organ boxes, their union
    assert fig.axes[0].patches[-1].get_edgecolor()[:3] == (1.0, 1.0, 1.0)
    why = "localiser box not used (right_kidney: on the patient's left): predicting the whole crop"
    fig = viz.plot_localizer_box(image, crop, box, predictor.organs.organs, rejected=why)
    assert fig.axes[0].patches[-1].get_edgecolor()[:3] == (1.0, 0.0, 0.0)  # red: not used
    assert why in fig.axes[0].get_title()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig = report.localizer_figure(
            localized_run / "best.keras", synthetic_data, "FLARE22_Tr_0002"
        )
    drawn = 1 if region is None or region.box is None else 2 + len(region.organs)
    assert len(fig.axes[0].patches) == drawn
    title = fig.axes[0].get_title()
    assert rejected in title if rejected else "not used" not in title


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
    strict = cfg.replace(localizer={"min_val_dice": 1.0})  # the gate, on a trained localiser
    assert train_localizer(strict, splits, progress=False).best_model == paths.localizer_rejected
    assert not paths.localizer_model.exists()
    assert train_localizer(cfg, splits, progress=False).best_model == paths.localizer_model
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


# --------------------------------------------------------------------------- anatomy checks

#: Training classes of the default organs.
LIVER, RIGHT_KIDNEY, LEFT_KIDNEY, SPLEEN = 1, 2, 3, 4


@pytest.fixture
def real_9001_truth(real_ct_whole):
    """Real CT 9001's ground-truth region on its body crop (3 mm voxels), that grid's affine."""
    image = load_image(real_ct_whole / "images" / "FLARE22_Tr_9001_0000.nii.gz")
    labels = load_label(real_ct_whole / "labels" / "FLARE22_Tr_9001.nii.gz")
    crop = crop_box(image, PreprocessParams.from_config(load_config(None, [])))
    classes = OrganSet().to_classes(labels.data)[crop]
    region = localize.region_from_classes(classes, classes.shape, image.spacing, 0.0, 5)
    affine = localize.grid_affine(image.geometry.canonical_affine, crop, classes.shape)
    return region, affine, classes.shape


def test_the_ground_truth_organs_of_real_ct_9001_pass_every_check(real_9001_truth):
    region, affine, shape = real_9001_truth
    assert shape == (122, 100, 112)  # the body crop, 3 mm voxels
    assert region.organs == {
        LIVER: (slice(36, 106), slice(25, 87), slice(70, 112)),
        RIGHT_KIDNEY: (slice(70, 94), slice(29, 55), slice(66, 102)),
        LEFT_KIDNEY: (slice(23, 45), slice(27, 50), slice(72, 105)),
        SPLEEN: (slice(10, 44), slice(22, 57), slice(82, 112)),
    }
    verdict = localize.check_region(region, affine, shape, OrganSet().organs, patch=(32, 32, 16))
    assert verdict.ok and verdict.reason == ""
    # centre of mass, world x minus the body crop's centre (+ = the patient's right)
    assert verdict.offsets_mm == pytest.approx(
        {"liver": 62.5, "right_kidney": 65.9, "left_kidney": -81.2, "spleen": -116.0}, abs=0.05
    )
    assert verdict.volumes_ml == pytest.approx(
        {"liver": 1123.3, "right_kidney": 188.8, "left_kidney": 138.9, "spleen": 261.3}, abs=0.05
    )
    assert (verdict.windows_box, verdict.windows_crop) == (48, 180)
    # the sides come from the affine: the same voxels with +x pointing left all fail
    flipped = localize.check_region(
        region, affine @ np.diag([-1.0, 1, 1, 1]), shape, OrganSet().organs
    )
    assert [(p.organ, p.check) for p in flipped.problems] == [
        ("liver", "side"),
        ("right_kidney", "side"),
        ("left_kidney", "side"),
        ("spleen", "side"),
    ]


def test_planted_bad_boxes_fail_naming_the_organ_and_the_check(real_9001_truth):
    region, affine, shape = real_9001_truth
    organs = OrganSet().organs
    x = region.organs[RIGHT_KIDNEY][0]
    centre = region.centres[RIGHT_KIDNEY]
    mirrored = dataclasses.replace(  # the right kidney mirrored onto the patient's left
        region,
        organs={
            **region.organs,
            RIGHT_KIDNEY: (
                slice(shape[0] - x.stop, shape[0] - x.start),
                *region.organs[RIGHT_KIDNEY][1:],
            ),
        },
        centres={**region.centres, RIGHT_KIDNEY: (shape[0] - 1 - centre[0], *centre[1:])},
    )
    verdict = localize.check_region(mirrored, affine, shape, organs)
    assert not verdict.ok
    assert verdict.reason == (
        "right_kidney side: centre 66 mm on the patient's left of the body midline, expected right"
    )
    assert mirrored.organs[RIGHT_KIDNEY][0] == slice(28, 52)
    absurd = dataclasses.replace(region, volumes_ml={**region.volumes_ml, SPLEEN: 5000.0})
    assert localize.check_region(absurd, affine, shape, organs).reason == (
        "spleen size: 5000 ml, outside 30–1500 ml"
    )
    missing = localize.region_from_classes(
        np.zeros(shape, np.uint8), shape, (3.0, 3.0, 3.0), 0.0, 5
    )
    verdict = localize.check_region(missing, affine, shape, organs)
    assert [str(p) for p in verdict.problems] == [
        f"{organ} size: not found (0 ml)" for organ in organs
    ]
    whole = tuple(slice(0, n) for n in shape)
    wide = dataclasses.replace(region, box=whole)
    assert localize.check_region(wide, affine, shape, organs, patch=(32, 32, 16)).reason == (
        "box windows: needs 180 windows, the whole crop 180"
    )


@pytest.fixture(scope="module")
def ct_phantom_run(tmp_path_factory, tiny_spacing_run) -> tuple[Path, Path, Path]:
    """A CT-sized phantom (``ct`` family, 64×64×24 voxels of 7×7×13 mm, stored LPS) and a
    run of the tiny VNet on an 8 mm grid (32×32×16 windows): (run, image, label)."""
    folder = tmp_path_factory.mktemp("ct_phantom")
    paths = []
    for name, payload in case_files(3, 1, (64, 64, 24), family="ct").items():
        path = folder / Path(name).name
        path.write_bytes(payload)
        paths.append(path)
    run = folder / "run"
    run.mkdir()
    shutil.copy(tiny_spacing_run / "best.keras", run / "best.keras")
    cfg = _spacing_cfg(run, "preprocess.target_spacing=[8.0,8.0,8.0]", "infer.precision=float32")
    save_config(cfg, run / "config.yaml")
    image, label = sorted(paths, key=lambda p: "_0000" not in p.name)
    return run, image, label


class PlantedLocalizer(localize.Localizer):
    """A deliberately poor localiser: it answers a planted class map of the fine grid."""

    def __init__(self, classes: np.ndarray, settings) -> None:
        super().__init__(None, settings, (8.0, 8.0, 8.0), 5, Path("planted"))
        self.classes = classes

    def coarse_classes(self, x: np.ndarray) -> np.ndarray:
        assert x.shape == self.classes.shape
        return self.classes


class BackgroundNet:
    """A stand-in VNet that finds no organ (so the box never grows)."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((*batch.shape[:4], 5), dtype=np.float32)
        out[..., 0] = 1.0
        return out


def test_a_box_that_fails_its_checks_falls_back_to_the_whole_crop_with_a_warning(
    ct_phantom_run, tmp_path
):
    run, image_path, label_path = ct_phantom_run
    predictor = infer.load_predictor(run / "best.keras")
    assert predictor.localizer is None  # the run has no localizer.keras: planted below
    image = load_image(image_path)
    assert image.geometry.axcodes == "LPS"  # sides come from the affine, not the file order
    x, crop = infer.prepare_image(image, predictor.params)
    truth = prepare_label(load_label(label_path), crop, predictor.params)
    assert x.shape == (51, 41, 38) and window_count(x.shape, (32, 32, 16), 0.25) == 12
    settings = load_run_config(run / "config.yaml").localizer
    predictor.model = BackgroundNet()  # no organ predicted: the box never grows

    def predict(classes: np.ndarray, name: str):
        predictor.localizer = PlantedLocalizer(classes, settings)
        reports: list = []
        out = tmp_path / f"{name}.nii.gz"
        infer.predict_files(predictor, [(image_path, out)], progress=False, reports=reports)
        return reports[0]

    # the ground truth as the localiser's answer: checked, used, a third of the windows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = predict(truth, "good")
        found = predictor.localizer.region(x, predictor.settings.roi_margin_mm)
    assert (good.windows_run, good.windows_crop, good.note) == (4, 12, "localised box")
    assert found.box == (slice(5, 46), slice(6, 36), slice(10, 38))  # organs ± 20 mm
    assert {k: round(v) for k, v in found.volumes_ml.items()} == {1: 1618, 2: 153, 3: 167, 4: 151}

    # the right kidney mirrored onto the patient's left (where the left kidney is not)
    mirrored = truth.copy()
    kidney = truth == RIGHT_KIDNEY
    mirrored[kidney] = 0
    mirrored[kidney[::-1] & (mirrored == 0)] = RIGHT_KIDNEY
    message = (
        "localiser box not used (right_kidney side: centre 70 mm on the patient's left of the "
        "body midline, expected right; right_kidney size: 48 ml, outside 50–400 ml): "
        "predicting the whole crop"
    )
    with pytest.warns(UserWarning) as caught:
        bad = predict(mirrored, "mirrored")
    assert [str(w.message) for w in caught] == [message]
    assert (bad.windows_run, bad.windows_crop, bad.note) == (12, 12, message)

    # a spleen of absurd size: the 20 leftmost voxel columns, the crop's depth and height
    huge = truth.copy()
    huge[huge == SPLEEN] = 0
    huge[:20][huge[:20] == 0] = SPLEEN
    message = (
        "localiser box not used (spleen size: 15733 ml, outside 30–1500 ml; box windows: "
        "needs 12 windows, the whole crop 12): predicting the whole crop"
    )
    with pytest.warns(UserWarning) as caught:
        absurd = predict(huge, "absurd")
    assert [str(w.message) for w in caught] == [message]
    assert (absurd.windows_run, absurd.windows_crop) == (12, 12)


def test_growth_stops_at_the_whole_crops_windows_and_predicts_it_afresh():
    x = np.zeros((64, 64, 32), dtype=np.float32)
    x[2:62, 2:62, 1:31] = 1.0  # an organ filling the volume, a small box inside it
    small = (slice(28, 36), slice(26, 32), slice(14, 18))
    probs, grown = localize.localized_probabilities(x, PATCH, _threshold, small, overlap=0.5)
    today = sliding_window_probabilities(x, PATCH, _threshold, overlap=0.5)
    assert np.array_equal(probs, today)  # the whole crop, exactly
    assert grown.windows_crop == window_count(x.shape, PATCH, 0.5) == 343
    assert grown.windows_run == 205 + 343  # the growing box's windows, then the whole crop's
    assert grown.whole_crop_because == (
        "growing the box would run as many windows as the whole crop (205 run before)"
    )
    assert grown.grown_faces == ["-x", "+x", "-y", "+y", "-z", "+z"] * 3


# --------------------------------------------------------------------------- Dice gate


def _finished_localizer(run: Path, val_dice: float) -> None:
    """Mark ``run``'s localiser as trained: 2 epochs, the second the best at ``val_dice``."""
    rows = [
        "epoch,mean_dice,val_mean_dice,ema_val_mean_dice",
        "0,0.05,0.04,0.04",
        f"1,0.30,{val_dice},{0.9 * 0.04 + 0.1 * val_dice}",
    ]
    (run / "localizer_history.csv").write_text("\n".join(rows) + "\n")
    done = {"epochs": 2, "epochs_completed": 2, "best_epoch": 2, "best_value": 0.1}
    write_json_atomic(run / "localizer_done.json", {**done, "monitor": "ema_val_mean_dice"})


def test_a_localiser_below_the_dice_threshold_is_not_kept(localized_run, tmp_path, capsys):
    from flare_helpers.workflows.training import train_localizer

    run = Path(shutil.copytree(localized_run, tmp_path / "run"))
    kept, rejected = run / "localizer.keras", run / "localizer_rejected.keras"
    _finished_localizer(run, 0.221)  # the demo recipe's localiser after 15 epochs
    cfg = _spacing_cfg(run, f"data.cache_dir={tmp_path / 'cache'}", "localizer.min_val_dice=0.5")
    no_cases = {"train": [], "val": [], "test": []}
    result = train_localizer(cfg, no_cases, progress=False)  # finished: only reported, gated
    assert result.best_model == rejected and rejected.is_file() and not kept.exists()
    assert (result.best_epoch, result.epochs_completed) == (2, 2)
    assert capsys.readouterr().out.strip() == (
        "localiser not kept: val_mean_dice 0.221 (epoch 2, the best) < localizer.min_val_dice "
        "0.5; prediction covers the whole crop (localizer_rejected.keras)"
    )
    predictor = infer.load_predictor(run / "best.keras")
    assert predictor.localizer is None and "localiser: none" in predictor.describe()
    assert localize.kept_localizer_dice(run, 2) == (0.221, "val_mean_dice")
    # a rerun says the same; a lower threshold takes it back
    assert train_localizer(cfg, no_cases, progress=False).best_model == rejected
    assert "localiser not kept" in capsys.readouterr().out
    lenient = cfg.replace(localizer={"min_val_dice": 0.2})
    assert train_localizer(lenient, no_cases, progress=False).best_model == kept
    assert kept.is_file() and not rejected.exists() and capsys.readouterr().out == ""
    assert infer.load_predictor(run / "best.keras").localizer is not None
    # no validation split: the training Dice of that epoch decides
    (run / "localizer_history.csv").write_text("epoch,mean_dice\n0,0.05\n1,0.62\n")
    assert localize.kept_localizer_dice(run, 2) == (0.62, "mean_dice")
    assert localize.gate_localizer(run, 2, 0.5) == kept
