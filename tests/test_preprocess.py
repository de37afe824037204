"""HU window, resampling, body crop, the cache (rebuild rules, atomicity) and splits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from flare_helpers.cli import preprocess_main
from flare_helpers.config import load_config
from flare_helpers.data.cases import Case, discover_cases
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.nifti import Geometry, Volume, load_case
from flare_helpers.data.splits import load_or_make_splits, make_splits
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.preprocess import pipeline as pp
from flare_helpers.preprocess.resample import (
    resize_linear,
    resize_nearest,
    resize_probabilities_argmax,
)

SMALL = ["preprocess.mode=resize", "preprocess.target_shape=[32,32,16]", "preprocess.workers=1"]


def _params(*overrides: str) -> pp.PreprocessParams:
    return pp.PreprocessParams.from_config(load_config(None, [*SMALL, *overrides]))


def _volume(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Volume:
    affine = np.diag([*spacing, 1.0])
    return Volume(array, Geometry(array.shape, affine, "RAS", tuple(spacing)), Path("x.nii.gz"))


# --------------------------------------------------------------------------- transforms


def test_window_to_unit_values():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0], np.float32)
    np.testing.assert_allclose(pp.window_to_unit(hu, (-160, 240)), [0, 0, 0.5, 1, 1])


@pytest.mark.parametrize(
    "shape_in,shape_out", [((37, 20, 11), (16, 8, 4)), ((8, 6, 5), (17, 13, 9))]
)
def test_resize_linear_equals_scipy_zoom(shape_in, shape_out):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape_in).astype(np.float32)
    zoom = np.array(shape_out) / np.array(shape_in)
    for layout in (volume, np.asfortranarray(volume), volume[::-1, :, ::-1]):
        expected = ndimage.zoom(layout, zoom, order=1, grid_mode=True, mode="nearest")
        np.testing.assert_allclose(resize_linear(layout, shape_out), expected, atol=1e-5)


def test_resize_nearest_never_invents_labels():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([0, 2, 7], np.uint8), size=(13, 11, 7))
    for shape in [(5, 4, 3), (26, 22, 14), (13, 11, 7)]:
        out = resize_nearest(labels, shape)
        assert out.shape == shape and set(np.unique(out)) <= {0, 2, 7}
        expected = ndimage.zoom(
            labels, np.array(shape) / labels.shape, order=0, grid_mode=True, mode="nearest"
        )
        np.testing.assert_array_equal(out, expected)


def test_probability_resize_agrees_with_dense_interpolation():
    rng = np.random.default_rng(2)
    probs = rng.random((6, 5, 4, 3)).astype(np.float32)
    out_shape = (23, 17, 9)
    dense = np.stack([resize_linear(probs[..., c], out_shape) for c in range(3)], axis=-1)
    got = resize_probabilities_argmax(probs, out_shape, chunk=4)
    np.testing.assert_array_equal(got, np.argmax(dense, axis=-1))


def test_body_box_ignores_a_separate_table():
    hu = np.full((60, 50, 20), -1000, np.float32)
    hu[10:50, 20:45, :] = 40  # body
    hu[5:55, 2:4, :] = 300  # table, separated from the body by air
    box = pp.body_box(hu, (1.0, 1.0, 1.0), -500, margin_mm=2)
    assert 4 < box[1].start <= 18  # the table is not in the crop, the margin is
    assert box[0].start <= 8 and box[0].stop >= 52 and box[1].stop >= 47


def test_prepare_image_and_label_share_the_crop(synthetic_data):
    case = discover_cases(synthetic_data).labelled[0]
    image, label = load_case(case)
    params = _params()
    x, box = pp.prepare_image(image, params)
    y = pp.prepare_label(label, box, params)
    assert x.shape == y.shape == (32, 32, 16)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(y)) == {0, 1, 2, 3, 4}
    # liver class (1) sits in the right half (high axis-0 index), spleen (4) in the left
    assert np.argwhere(y == 1)[:, 0].mean() > 16 > np.argwhere(y == 4)[:, 0].mean()


def test_real_ct_becomes_four_classes_on_the_right_sides(real_ct, tmp_path):
    cfg = load_config(
        None,
        ["preprocess.mode=resize", "preprocess.target_shape=[64,64,16]", "preprocess.workers=1"],
    )
    summary = pp.preprocess_dataset(real_ct, tmp_path / "cache", cfg, progress=False)
    assert summary.n_cases == 1
    folder = pp.entry_dir(tmp_path / "cache", "FLARE22_Tr_9002")
    y = np.load(folder / "label.npy")
    assert set(np.unique(y)) == {0, 1, 2, 3, 4}

    def x_of(cls: int) -> float:
        return float(np.argwhere(y == cls)[:, 0].mean())

    assert x_of(2) > x_of(3)  # right kidney on the patient's right of the left kidney
    assert x_of(1) > x_of(4)  # liver right, spleen left
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["geometry"]["shape"] == [122, 101, 30] and meta["geometry"]["axcodes"] == "RAS"


# --------------------------------------------------------------------------- cache


def _snapshot(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*.npy"))}


def _mtimes(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("meta.json")}


def test_cache_rebuilds_only_what_changed(synthetic_copy, tmp_path):
    cache = tmp_path / "cache"
    cfg = load_config(None, SMALL)
    first = pp.preprocess_dataset(synthetic_copy, cache, cfg, progress=False)
    assert len(first.rebuilt) == 6
    meta = json.loads((pp.entry_dir(cache, "FLARE22_Tr_0001") / "meta.json").read_text())
    assert meta["params"]["target_shape"] == [32, 32, 16] and meta["image_file"]["sha256"]
    x = np.load(pp.entry_dir(cache, "FLARE22_Tr_0001") / "image.npy")
    assert x.dtype == np.float16 and x.shape == (32, 32, 16)

    assert pp.preprocess_dataset(synthetic_copy, cache, cfg, progress=False).rebuilt == ()

    # touched but identical: the hash says unchanged
    image = synthetic_copy / "images" / "FLARE22_Tr_0002_0000.nii.gz"
    os.utime(image, ns=(1, 1))
    assert pp.preprocess_dataset(synthetic_copy, cache, cfg, progress=False).rebuilt == ()

    # one file really changed: only that case is rebuilt
    label = synthetic_copy / "labels" / "FLARE22_Tr_0003.nii.gz"
    img = nib.load(label)
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 1] = 0  # drop the liver
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), label)
    before = _mtimes(cache)
    summary = pp.preprocess_dataset(synthetic_copy, cache, cfg, progress=False)
    assert summary.rebuilt == ("FLARE22_Tr_0003",)
    after = _mtimes(cache)
    assert [k for k in before if before[k] != after[k]] == ["cases/FLARE22_Tr_0003/meta.json"]
    assert 1 not in np.load(pp.entry_dir(cache, "FLARE22_Tr_0003") / "label.npy")

    # a parameter change rebuilds everything
    cfg2 = load_config(None, [*SMALL, "preprocess.hu_window=[-100,200]"])
    assert len(pp.preprocess_dataset(synthetic_copy, cache, cfg2, progress=False).rebuilt) == 6


def test_parallel_cache_is_byte_identical_to_serial(synthetic_data, tmp_path):
    cfg = load_config(None, SMALL)
    pp.preprocess_dataset(synthetic_data, tmp_path / "serial", cfg, workers=1, progress=False)
    pp.preprocess_dataset(synthetic_data, tmp_path / "parallel", cfg, workers=2, progress=False)
    assert _snapshot(tmp_path / "serial") == _snapshot(tmp_path / "parallel")


def test_a_bad_case_fails_cleanly_and_the_rest_is_cached(synthetic_copy, tmp_path, capsys):
    bad = synthetic_copy / "images" / "FLARE22_Tr_0004_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:2000])
    cache = tmp_path / "cache"
    code = preprocess_main(["--data", str(synthetic_copy), "--cache", str(cache), *SMALL])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert line.startswith("flare-preprocess: error:") and str(bad) in line and "truncated" in line
    cached = sorted(p.name for p in (cache / "cases").iterdir())
    assert cached == [
        "FLARE22_Tr_0001",
        "FLARE22_Tr_0002",
        "FLARE22_Tr_0003",
        "FLARE22_Tr_0005",
        "FLARE22_Tr_0006",
    ]
    assert not list(cache.rglob("*tmp-*"))


def test_unwritable_cache_gives_a_clear_error(synthetic_data, tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; use a path below a regular file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        cache = blocker / "cache"
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(0o500)
    with pytest.raises(FlareError) as info:
        pp.preprocess_dataset(synthetic_data, cache, load_config(None, SMALL), progress=False)
    assert "cannot write" in str(info.value) or "could not write" in str(info.value)


def test_disk_full_while_writing_leaves_no_partial_entry(synthetic_data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path, array, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # second case, first file
            raise OSError(28, "No space left on device", str(path))
        return real_save(path, array, **kwargs)

    monkeypatch.setattr(pp.np, "save", failing_save)
    with pytest.raises(FlareError, match="No space left"):
        pp.preprocess_dataset(synthetic_data, cache, load_config(None, SMALL), progress=False)
    entries = [p for p in (cache / "cases").iterdir()]
    assert not [p for p in entries if "tmp" in p.name]
    for entry in entries:  # whatever exists is complete
        assert {f.name for f in entry.iterdir()} == {"image.npy", "label.npy", "meta.json"}


def test_no_labels_is_an_error(synthetic_copy, tmp_path):
    shutil.rmtree(synthetic_copy / "labels")
    (synthetic_copy / "labels").mkdir()
    with pytest.raises(FlareError, match="no labelled cases"):
        pp.preprocess_dataset(
            synthetic_copy, tmp_path / "c", load_config(None, SMALL), progress=False
        )


def test_read_manifest_checks_parameters(synthetic_data, tmp_path):
    cfg = load_config(None, SMALL)
    pp.preprocess_dataset(synthetic_data, tmp_path / "c", cfg, progress=False)
    assert len(pp.read_manifest(tmp_path / "c", _params())["cases"]) == 6
    with pytest.raises(FlareError, match="other preprocessing settings"):
        pp.read_manifest(tmp_path / "c", _params("preprocess.crop_to_body=false"))
    with pytest.raises(FlareError, match="no preprocessed cache"):
        pp.read_manifest(tmp_path / "nothing")


def test_build_entry_needs_a_label(synthetic_data, tmp_path):
    case = Case("x", synthetic_data / "images" / "FLARE22_Tr_0001_0000.nii.gz", None)
    with pytest.raises(FlareError, match="no label"):
        pp.build_entry(case, tmp_path, _params())


# --------------------------------------------------------------------------- splits


def test_splits_are_seeded_disjoint_and_complete():
    ids = [f"c{i:02d}" for i in range(50)]
    a = make_splits(ids, 0.1, 0.2, seed=3)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (35, 5, 10)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert a == make_splits(list(reversed(ids)), 0.1, 0.2, seed=3)
    assert a != make_splits(ids, 0.1, 0.2, seed=4)
    tiny = make_splits(["a", "b"], 0.1, 0.2, seed=0)
    assert tiny == {"train": ["a", "b"], "val": [], "test": []}


def test_split_is_the_one_scikit_learn_made():
    """Pinned: the draw of train_test_split(random_state=3) twice, so old splits stay valid."""
    ids = [f"c{i:03d}" for i in range(20)]
    assert make_splits(ids, 0.1, 0.2, seed=3) == {
        "train": [f"c{i:03d}" for i in (0, 3, 4, 5, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19)],
        "val": ["c008", "c011"],
        "test": ["c001", "c002", "c014", "c017"],
    }


def test_saved_split_is_reused_and_new_cases_join_training(tmp_path):
    path = tmp_path / "splits.json"
    ids = [f"c{i}" for i in range(10)]
    first = load_or_make_splits(path, ids, 0.1, 0.2, 1)
    again = load_or_make_splits(path, ids + ["new"], 0.1, 0.2, 1)
    assert again["test"] == first["test"] and again["val"] == first["val"]
    assert again["train"] == sorted(first["train"] + ["new"])
    other = load_or_make_splits(path, ids, 0.3, 0.2, 1)
    assert len(other["val"]) == 3


def test_preprocess_cli_end_to_end(tmp_path, capsys):
    zip_path = write_synthetic_zip(
        tmp_path, 3, seed=2, shape=(32, 32, 16), progress=False, family="simple"
    )
    data_dir = extract_zip(zip_path, tmp_path / "data", progress=False)
    code = preprocess_main(["--data", str(data_dir), "--cache", str(tmp_path / "cache"), *SMALL])
    assert code == 0
    assert "3 cases, 3 (re)built" in capsys.readouterr().out
    splits = json.loads((tmp_path / "cache" / "splits.json").read_text())
    assert sum(len(splits[k]) for k in ("train", "val", "test")) == 3
    assert preprocess_main(["--data", str(tmp_path / "nope"), "--cache", str(tmp_path / "c")]) == 2
    assert (
        preprocess_main(["--data", str(data_dir), "--cache", str(tmp_path / "c"), "train.epoch=3"])
        == 2
    )
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
