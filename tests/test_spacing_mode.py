"""Spacing mode end to end below the network: grid sizes, patches, the ceiling, longer scans."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from flare_helpers.cli import evaluate_main, synth_main
from flare_helpers.config import load_config
from flare_helpers.data.cases import Case
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.labels import OrganSet
from flare_helpers.data.nifti import load_case
from flare_helpers.evaluate.metrics import score_case
from flare_helpers.phantoms.synthetic import make_phantom, write_synthetic_zip
from flare_helpers.preprocess import pipeline as pp
from flare_helpers.preprocess.resample import shape_for_spacing
from flare_helpers.train.batches import FlareDataset
from flare_helpers.train.patches import cut_patch, patch_start
from flare_helpers.workflows.ceiling import ceiling_labels, resolution_ceiling

SPACING = [
    "preprocess.mode=spacing",
    "preprocess.target_spacing=[1.5,1.5,3.0]",
    "preprocess.target_shape=[32,32,16]",
    "preprocess.workers=1",
]


def test_grid_follows_the_spacing_not_the_scan():
    assert shape_for_spacing((400, 300, 110), (0.8, 0.8, 2.5), (1.5, 1.5, 2.5)) == (213, 160, 110)
    assert shape_for_spacing((3, 500, 7), (1.0, 0.3, 0.2), (2.0, 2.0, 2.0)) == (2, 75, 1)
    params = pp.PreprocessParams.from_config(load_config(None, SPACING))
    assert params.grid_shape((100, 80, 40), (0.75, 0.75, 3.0)) == (50, 40, 40)
    resize = pp.PreprocessParams.from_config(load_config(None, ["preprocess.mode=resize"]))
    assert resize.grid_shape((100, 80, 40), (0.75, 0.75, 3.0)) == (128, 128, 64)


def test_prepare_image_and_label_resample_the_crop_to_the_target_spacing(synthetic_data):
    case = Case(
        "FLARE22_Tr_0003",
        synthetic_data / "images" / "FLARE22_Tr_0003_0000.nii.gz",
        synthetic_data / "labels" / "FLARE22_Tr_0003.nii.gz",
    )
    image, label = load_case(case)
    params = pp.PreprocessParams.from_config(load_config(None, SPACING))
    x, box = pp.prepare_image(image, params)
    crop = tuple(s.stop - s.start for s in box)
    # each axis keeps its physical extent within half a target voxel
    extent_in = np.array(crop) * np.array(image.spacing)
    extent_out = np.array(x.shape) * np.array(params.target_spacing)
    assert np.all(np.abs(extent_in - extent_out) <= np.array(params.target_spacing) / 2 + 1e-6)
    y = pp.prepare_label(label, box, params)
    assert y.shape == x.shape and y.dtype == np.uint8 and set(np.unique(y)) <= {0, 1, 2, 3, 4}
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_scan_range_does_not_change_organ_size_on_the_grid(tmp_path):
    """The same phantom scanned 1.8× longer: in spacing mode the liver keeps its voxel count."""
    files = {}
    for fov in (1.0, 1.8):
        img, lab, affine = make_phantom(5, 1, (64, 64, 32), fov=fov, family="simple")
        files[fov] = (tmp_path / f"ct{fov}.nii.gz", tmp_path / f"lab{fov}.nii.gz")
        nib.save(nib.Nifti1Image(img, affine), files[fov][0])
        nib.save(nib.Nifti1Image(lab, affine), files[fov][1])
    counts = {}
    for mode in ("spacing", "resize"):
        cfg = load_config(None, [f"preprocess.mode={mode}", *SPACING[1:]])
        params = pp.PreprocessParams.from_config(cfg)
        for fov, (image_path, label_path) in files.items():
            image, label = load_case(Case("x", image_path, label_path))
            _, box = pp.prepare_image(image, params)
            counts[mode, fov] = int((pp.prepare_label(label, box, params) == 1).sum())
    assert counts["spacing", 1.8] == pytest.approx(counts["spacing", 1.0], rel=0.03)
    assert counts["resize", 1.8] < 0.7 * counts["resize", 1.0]  # squeezed along z


def test_patch_start_keeps_patches_inside_and_oversamples_organs():
    label = np.zeros((60, 50, 40), np.uint8)
    label[50:55, 5:9, 30:34] = 2  # a small organ near a corner
    label[10:40, 20:45, 5:30] = 1  # a large one
    rng = np.random.default_rng(0)
    patch = (32, 32, 16)
    hits = {1: 0, 2: 0}
    for _ in range(300):
        start = patch_start(label, patch, rng, foreground_fraction=1.0)
        assert all(0 <= s <= n - p for s, n, p in zip(start, label.shape, patch, strict=True))
        cut = cut_patch(label, start, patch)
        present = set(np.unique(cut).tolist()) - {0}
        assert present, "every patch centred on an organ must contain it"
        for organ in present:
            hits[organ] += 1
    assert hits[2] >= 120  # the small organ is chosen about half the time, not by volume
    uniform = [patch_start(label, patch, rng, 0.0) for _ in range(300)]
    assert np.mean([s[0] for s in uniform]) == pytest.approx(14.0, abs=2.0)  # room 0..28


def test_cut_patch_pads_volumes_smaller_than_the_patch():
    small = np.arange(10 * 20 * 5, dtype=np.float32).reshape(10, 20, 5)
    out = cut_patch(small, (0, 4, 0), (16, 8, 8), fill=-1.0)
    assert out.shape == (16, 8, 8)
    np.testing.assert_array_equal(out[:10, :, :5], small[:, 4:12, :])
    assert np.all(out[10:] == -1.0) and np.all(out[:, :, 5:] == -1.0)


def test_patch_batches_from_a_spacing_cache(synthetic_data, tmp_path):
    cfg = load_config(None, SPACING)
    summary = pp.preprocess_dataset(synthetic_data, tmp_path / "cache", cfg, progress=False)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    stats = manifest["statistics"]
    assert stats["cache_mb"] > 0 and len(stats["spacing_mm"]["median"]) == 3
    shapes = {
        tuple(
            json.loads((pp.entry_dir(tmp_path / "cache", c) / "meta.json").read_text())[
                "grid_shape"
            ]
        )
        for c in summary.splits["train"]
    }
    assert len(shapes) > 1  # cases differ in size at a fixed spacing
    ids = summary.splits["train"]
    organs = OrganSet.from_names(cfg.data.organs)
    data = FlareDataset(
        tmp_path / "cache",
        ids,
        organs.n_classes,
        2,
        patch_shape=(32, 32, 16),
        steps_per_epoch=5,
        foreground_fraction=1.0,
        shuffle=True,
        seed=4,
    )
    assert len(data) == 5 and data.n_samples == 10
    x, y = data[0]
    assert x.shape == (2, 32, 32, 16, 1) and y.shape == (2, 32, 32, 16, 5)
    assert np.all(y[..., 1:].sum(axis=(1, 2, 3, 4)) > 0)  # organ-centred patches hold organ voxels
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    again_x, _ = data[0]
    np.testing.assert_array_equal(x, again_x)  # a batch is a pure function of (seed, epoch, i)
    data.on_epoch_end()
    assert not np.array_equal(data[0][0], x)
    fixed = FlareDataset(
        tmp_path / "cache", ids, organs.n_classes, 2, patch_shape=(32, 32, 16), organ_patches=True
    )
    first = fixed[0][0]
    fixed.on_epoch_end()
    np.testing.assert_array_equal(fixed[0][0], first)
    # one patch per organ present in each case, each holding its organ's centre
    assert fixed.n_samples == 4 * len(ids)  # every phantom has all four organs
    for position in range(fixed.n_samples):
        _, y = fixed[position // 2]
        assert y[position % 2, ..., position % 4 + 1].sum() > 0


def test_ceiling_of_a_label_against_itself_at_native_spacing_is_one(synthetic_data):
    case = Case(
        "FLARE22_Tr_0002",
        synthetic_data / "images" / "FLARE22_Tr_0002_0000.nii.gz",
        synthetic_data / "labels" / "FLARE22_Tr_0002.nii.gz",
    )
    image, label = load_case(case)
    native = ",".join(f"{s:.10f}" for s in image.spacing)
    cfg = load_config(
        None,
        [
            "preprocess.mode=spacing",
            f"preprocess.target_spacing=[{native}]",
            "infer.largest_component=false",
        ],
    )
    best = ceiling_labels(image, label, cfg)
    organs = OrganSet.from_names(cfg.data.organs)
    np.testing.assert_array_equal(best, organs.to_flare(organs.to_classes(label.data)))
    rows = score_case(label.data, best, label.spacing, organs.organs)
    assert [r["dsc"] for r in rows] == [1.0] * 4 and [r["nsd"] for r in rows] == [1.0] * 4


def test_coarser_grids_have_lower_ceilings_and_the_cli_writes_the_tables(synthetic_data, tmp_path):
    fine = resolution_ceiling(synthetic_data, load_config(None, SPACING), progress=False)
    coarse = resolution_ceiling(
        synthetic_data,
        load_config(None, ["preprocess.mode=spacing", "preprocess.target_spacing=[4.0,4.0,8.0]"]),
        progress=False,
    )
    assert len(fine.per_case) == 6 * 4
    f, c = fine.per_case["dsc"].mean(), coarse.per_case["dsc"].mean()
    assert 0.9 < f < 1.0 and c < f - 0.05
    config = tmp_path / "c.yaml"
    config.write_text("preprocess:\n  mode: spacing\n  target_spacing: [4.0, 4.0, 8.0]\n")
    out = tmp_path / "ceiling" / "per_case.csv"
    args = ["--ceiling", "--data-path", str(synthetic_data), "--config", str(config)]
    assert evaluate_main([*args, "--output", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["dsc"].mean() == pytest.approx(c, abs=1e-9)
    summary = pd.read_csv(out.parent / "summary.csv")
    assert set(summary["organ"]) >= {"liver", "right_kidney", "left_kidney", "spleen"}


def test_fov_scans_extend_z_around_the_same_organs(tmp_path, capsys):
    image, labels, affine = make_phantom(3, 2, (48, 48, 20), family="simple")
    long_image, long_labels, long_affine = make_phantom(
        3, 2, (48, 48, 20), fov=1.8, family="simple"
    )
    extra = (long_labels.shape[2] - 20) // 2
    assert long_labels.shape == (48, 48, 36) and extra == 8
    np.testing.assert_array_equal(long_labels[:, :, extra : extra + 20], labels)
    # same spacing, and voxel (i, j, k) of the normal scan is voxel (i, j, k + extra) in world
    np.testing.assert_allclose(np.diag(long_affine)[:3], np.diag(affine)[:3])
    np.testing.assert_allclose(long_affine @ [0, 0, extra, 1], affine @ [0, 0, 0, 1])
    body = long_image[:, :, :extra] > -500
    assert body.mean() > 0.3  # the body goes on above and below the organs
    assert (
        synth_main(
            ["--out", str(tmp_path), "--cases", "1", "--shape", "48", "48", "20", "--fov", "1.8"]
        )
        == 0
    )
    data = extract_zip(tmp_path / "FLARE22Train.zip", tmp_path / "d", progress=False)
    assert nib.load(data / "labels" / "FLARE22_Tr_0001.nii.gz").shape[2] == 36
    assert synth_main(["--out", str(tmp_path), "--cases", "1", "--fov", "0.5"]) == 2
    assert "--fov must be between 1 and 10" in capsys.readouterr().err


def test_fov_data_set_zip(tmp_path):
    normal = write_synthetic_zip(
        tmp_path / "a", 1, seed=2, shape=(32, 32, 16), progress=False, family="simple"
    )
    longer = write_synthetic_zip(
        tmp_path / "b", 1, seed=2, shape=(32, 32, 16), fov=2.0, progress=False, family="simple"
    )
    assert longer.stat().st_size > normal.stat().st_size


def test_compare_modes_and_against_ceiling_tables(synthetic_data):
    from flare_helpers.evaluate.evaluation import EvaluationResult
    from flare_helpers.workflows.ceiling import against_ceiling, compare_modes

    cfg = load_config(None, SPACING)
    table = compare_modes(synthetic_data, cfg, ["FLARE22_Tr_0001", "FLARE22_Tr_0002"])
    assert list(table.columns) == ["spacing (yours)", "resize"]
    direct = resolution_ceiling(synthetic_data, cfg, ["FLARE22_Tr_0001", "FLARE22_Tr_0002"])
    assert table.loc["liver", "spacing (yours)"] == pytest.approx(
        direct.per_case.query("organ == 'liver'")["dsc"].mean()
    )
    fake = direct.per_case.assign(dsc=direct.per_case["dsc"] - 0.1)
    gap = against_ceiling(EvaluationResult(fake), synthetic_data, cfg)
    np.testing.assert_allclose(gap["gap"].to_numpy(), 0.1, atol=1e-9)


def test_notebook_training_parameters_are_the_only_way_in(tmp_path):
    from flare_helpers.errors import FlareError
    from flare_helpers.series.session import notebook_config, series_paths

    paths = series_paths(tmp_path / "work", tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 7\n  batch_size: 8\n")
    cfg = notebook_config(paths, config, ["model.kernel_size=3"], train={"epochs": 3})
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.kernel_size) == (3, 8, 3)
    with pytest.raises(FlareError, match="set epochs = ... in the parameters cell"):
        notebook_config(paths, None, ["train.epochs=5"], train={"epochs": 3})


def test_teaching_figures_show_the_grid_and_the_batch(synthetic_data):
    from flare_helpers.viz import plot_batch, plot_preprocessing

    case = Case(
        "FLARE22_Tr_0003",
        synthetic_data / "images" / "FLARE22_Tr_0003_0000.nii.gz",
        synthetic_data / "labels" / "FLARE22_Tr_0003.nii.gz",
    )
    image, label = load_case(case)
    titles = {}
    for mode in ("resize", "spacing"):
        cfg = load_config(None, [f"preprocess.mode={mode}", *SPACING[1:]])
        fig = plot_preprocessing(image, label, cfg)
        titles[mode] = [ax.get_title() for ax in fig.axes]
        box = pp.crop_box(image, pp.PreprocessParams.from_config(cfg))
        (outline,) = fig.axes[0].patches
        assert outline.get_width() == box[0].stop - box[0].start  # coronal: columns are R-L
        assert outline.get_height() == box[2].stop - box[2].start  # rows are S-I
    assert "squeezed into 32×32×16" in titles["resize"][1]
    assert titles["spacing"][1].startswith("network grid, at 1.5×1.5×3 mm: ")
    y = np.zeros((2, 16, 12, 8, 5), np.float32)
    y[..., 0] = 1
    y[0, 4:8, 3:6, 5, :] = np.eye(5)[1]  # liver only on slice 6 of sample 1
    y[1, 2:4, 2:4, 2:4, :] = np.eye(5)[3]  # left kidney on slices 3-4 of sample 2
    x = np.random.default_rng(0).random((2, 16, 12, 8, 1), dtype=np.float32)
    fig = plot_batch(x, y, ("liver", "right_kidney", "left_kidney", "spleen"))
    tops = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert tops == ["sample 1, axial 6/8", "sample 2, axial 3/8"]
    assert len(fig.axes) == 4
