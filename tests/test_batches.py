"""FlareDataset: batches from the cache, epoch order, reproducibility with Keras workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

# Keras' own epoch loop (what fit() runs), to check the order seen through its worker pools.
from keras.src.trainers.epoch_iterator import EpochIterator

from flare_helpers.config import AugmentConfig, load_config
from flare_helpers.errors import FlareError
from flare_helpers.preprocess.pipeline import entry_dir, preprocess_dataset
from flare_helpers.train.batches import FlareDataset

SHAPE = (32, 32, 16)
N_CLASSES = 5
STRONG = AugmentConfig(
    rotation_probability=1.0,
    scale_probability=1.0,
    gamma_probability=1.0,
    noise_probability=1.0,
    lr_flip_probability=0.5,
)


@pytest.fixture(scope="module")
def cache(synthetic_data, tmp_path_factory):
    """The 6 synthetic cases preprocessed to 32×32×16; returns (cache_dir, case ids)."""
    cfg = load_config(None, ["preprocess.mode=resize", "preprocess.target_shape=[32,32,16]"])
    cache_dir = tmp_path_factory.mktemp("cache")
    summary = preprocess_dataset(synthetic_data, cache_dir, cfg, workers=1, progress=False)
    return cache_dir, sorted(c for ids in summary.splits.values() for c in ids)


def cached(cache_dir, case_id):
    folder = entry_dir(cache_dir, case_id)
    return np.load(folder / "image.npy"), np.load(folder / "label.npy")


def served_ids(ds: FlareDataset, cache_dir, ids) -> list[str]:
    """Case ids in the order the batches of the current epoch hold them (matched by bytes)."""
    by_bytes = {cached(cache_dir, c)[0].tobytes(): c for c in ids}
    out = []
    for i in range(len(ds)):
        x, _ = ds[i]
        out += [by_bytes[x[k, ..., 0].astype(np.float16).tobytes()] for k in range(len(x))]
    return out


def all_batches(ds: FlareDataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [ds[i] for i in range(len(ds))]


def assert_same_batches(got, want):
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(gx), wx)
        np.testing.assert_array_equal(np.asarray(gy), wy)


def test_batches_without_augmentation_are_the_cache(cache):
    cache_dir, ids = cache
    ds = FlareDataset(cache_dir, ids, N_CLASSES, 4)
    assert len(ids) == 6 and len(ds) == 2 and ds.volume_shape == SHAPE
    batches = all_batches(ds)
    assert [x.shape for x, _ in batches] == [(4, *SHAPE, 1), (2, *SHAPE, 1)]
    assert [y.shape for _, y in batches] == [(4, *SHAPE, N_CLASSES), (2, *SHAPE, N_CLASSES)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(axis=-1), 1.0)
    for k, case_id in enumerate(ids):
        image, label = cached(cache_dir, case_id)
        assert x[k, ..., 0].astype(np.float16).tobytes() == image.tobytes()
        np.testing.assert_array_equal(y[k].argmax(axis=-1), label)
    assert set(np.unique(y.argmax(axis=-1)).tolist()) == set(range(N_CLASSES))


def test_each_case_once_per_epoch_in_a_new_seeded_order(cache):
    cache_dir, ids = cache
    ds = FlareDataset(cache_dir, ids, N_CLASSES, 4, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        orders.append(served_ids(ds, cache_dir, ids))
        ds.on_epoch_end()
    assert ds.epoch == 3
    assert all(sorted(order) == ids for order in orders)
    assert orders[0] != orders[1] != orders[2]
    assert orders[0] != ids

    twin = FlareDataset(cache_dir, ids, N_CLASSES, 4, shuffle=True, seed=3)
    assert served_ids(twin, cache_dir, ids) == orders[0]
    resumed = FlareDataset(cache_dir, ids, N_CLASSES, 4, shuffle=True, seed=3, epoch=1)
    assert served_ids(resumed, cache_dir, ids) == orders[1]
    other_seed = FlareDataset(cache_dir, ids, N_CLASSES, 4, shuffle=True, seed=4)
    assert served_ids(other_seed, cache_dir, ids) != orders[0]
    assert [ids[i] for i in ds.order(epoch=1)] == orders[1]


def test_augmented_batches_do_not_depend_on_call_order_or_process(cache):
    cache_dir, ids = cache
    kw = {"augment": STRONG, "shuffle": True, "seed": 1}
    forward = FlareDataset(cache_dir, ids, N_CLASSES, 2, **kw)
    backward = FlareDataset(cache_dir, ids, N_CLASSES, 2, **kw)
    want = all_batches(forward)
    got = [backward[i] for i in reversed(range(len(backward)))][::-1]
    assert_same_batches(got, want)

    payload = pickle.dumps(forward)
    assert len(payload) < 5000  # paths and settings only, no voxels
    assert_same_batches(all_batches(pickle.loads(payload)), want)

    plain = all_batches(FlareDataset(cache_dir, ids, N_CLASSES, 2, shuffle=True, seed=1))
    for (x, y), (px, _) in zip(want, plain, strict=True):
        assert not np.array_equal(x, px)
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_array_equal(y.sum(axis=-1), 1.0)


@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["threads", "processes"])
def test_keras_workers_serve_the_single_process_batches(cache, use_multiprocessing):
    cache_dir, ids = cache
    kw = {"augment": STRONG, "shuffle": True, "seed": 2}
    parallel = FlareDataset(
        cache_dir, ids, N_CLASSES, 2, workers=2, use_multiprocessing=use_multiprocessing, **kw
    )
    reference = FlareDataset(cache_dir, ids, N_CLASSES, 2, **kw)
    iterator = EpochIterator(x=parallel, shuffle=False)
    for _ in range(2):
        got = [data[0] for _, _, data in iterator]
        assert_same_batches(got, all_batches(reference))
        reference.on_epoch_end()
    assert parallel.epoch == 2


def test_missing_case_is_named(cache):
    cache_dir, ids = cache
    with pytest.raises(FlareError, match="FLARE22_Tr_9999 is not in the cache") as info:
        FlareDataset(cache_dir, [*ids[:2], "FLARE22_Tr_9999"], N_CLASSES, 2)
    assert info.value.path == entry_dir(cache_dir, "FLARE22_Tr_9999")


def test_shape_mismatch_is_reported(tmp_path):
    for case_id, shape in (("a", (8, 8, 4)), ("b", (8, 8, 6))):
        folder = entry_dir(tmp_path, case_id)
        folder.mkdir(parents=True)
        np.save(folder / "image.npy", np.zeros(shape, np.float16))
        np.save(folder / "label.npy", np.zeros(shape, np.uint8))
    with pytest.raises(FlareError, match=r"shape \(8, 8, 6\) differs from \(8, 8, 4\)") as info:
        FlareDataset(tmp_path, ["a", "b"], N_CLASSES, 1)
    assert info.value.path == entry_dir(tmp_path, "b") / "image.npy"


def test_settings_that_cannot_work_are_refused(cache):
    cache_dir, ids = cache
    with pytest.raises(FlareError, match="n_classes is 3 but 4 organs give 5"):
        FlareDataset(cache_dir, ids, 3, 2)
    flips = AugmentConfig(lr_flip_probability=0.5)
    with pytest.raises(FlareError, match="right_kidney is listed without left_kidney"):
        FlareDataset(cache_dir, ids, 3, 2, organs=("liver", "right_kidney"), augment=flips)
    fewer = FlareDataset(cache_dir, ids, 3, 2, organs=("liver", "right_kidney"))
    with pytest.raises(FlareError, match="label holds class 4 but n_classes is 3") as info:
        fewer[0]
    assert info.value.path.name == "label.npy"


def test_cache_reads_from_many_threads_at_once(cache, tmp_path, monkeypatch):
    """Keras fills batches in threads. ``np.load`` parses each .npy header with
    ``ast.literal_eval``, and parses in several threads at once can crash CPython 3.11
    (cpython issue 106905, rare): no two threads may parse at once, and reads stay right."""
    import ast
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from flare_helpers.train.batches import _open

    parse, inside, most, guard = ast.literal_eval, [0], [0], threading.Lock()

    def watched_parse(text):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.0005)  # widen the window in which another thread could enter
        try:
            return parse(text)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(ast, "literal_eval", watched_parse)
    cache_dir, ids = cache
    # headers of many shapes and dtypes, so every parse has real work to do
    files = []
    for k in range(24):
        path = tmp_path / f"a{k}.npy"
        np.save(path, np.full((k + 1, 3, 2), k, dtype=[np.uint8, np.float32, np.int16][k % 3]))
        files.append(path)

    def read(k: int) -> int:
        array = _open(files[k % len(files)])
        assert array.shape == (k % len(files) + 1, 3, 2) and int(array[0, 0, 0]) == k % len(files)
        return k

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert sorted(pool.map(read, range(2000))) == list(range(2000))
    assert most[0] == 1  # one header parse at a time

    ds = FlareDataset(cache_dir, ids, N_CLASSES, 2, augment=STRONG, shuffle=True, seed=5)
    expected = [ds[i] for i in range(len(ds))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(pool.map(lambda i: ds[i % len(ds)], range(8 * len(ds))))
    for i, (x, y) in enumerate(served):
        np.testing.assert_array_equal(x, expected[i % len(ds)][0])
        np.testing.assert_array_equal(y, expected[i % len(ds)][1])
    assert len(ds._arrays) == 2 * len(ids)  # each memory map opened once
    assert pickle.loads(pickle.dumps(ds))._arrays == {}  # worker processes reopen their own


@pytest.mark.parametrize(("steps", "batch"), [(5, 2), (7, 4), (1, 3)])
def test_an_epoch_is_steps_per_epoch_batches_whatever_the_cases(cache, steps, batch):
    cache_dir, ids = cache
    ds = FlareDataset(cache_dir, ids, N_CLASSES, batch, shuffle=True, seed=2, steps_per_epoch=steps)
    assert len(ds) == steps and ds.n_samples == steps * batch
    for _ in range(2):
        order = ds.order()
        assert len(order) == steps * batch
        counts = np.bincount(order, minlength=len(ids))
        assert counts.max() - counts.min() <= 1  # each case equally often (±1)
        ds.on_epoch_end()
    assert not np.array_equal(ds.order(0), ds.order(1))


def test_steps_per_epoch_shares_an_epoch_by_case_weights(cache):
    cache_dir, ids = cache
    weights = [2.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    ds = FlareDataset(
        cache_dir, ids, N_CLASSES, 2, shuffle=True, steps_per_epoch=10, case_weights=weights
    )
    counts = np.bincount(ds.order(), minlength=len(ids))
    assert counts.tolist() == [10, 5, 5, 0, 0, 0]
