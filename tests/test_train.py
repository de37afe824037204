"""Training: resume after a crash, reproducibility, run-folder rules, distribution, learning."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from tiny_settings import TINY_MODEL

from flare_helpers.config import load_config
from flare_helpers.data.layout import RunLayout
from flare_helpers.errors import FlareError
from flare_helpers.train.callbacks import latest_checkpoint, lr_schedule
from flare_helpers.workflows.training import train

TINY_TRAIN = [*TINY_MODEL, "train.batch_size=2", "train.learning_rate=0.001", "train.workers=1"]


def _cfg(data: Path, cache: Path, run: Path, *extra: str):
    return load_config(
        None,
        [
            f"data.data_dir={data}",
            f"data.cache_dir={cache}",
            f"train.output_dir={run}",
            *TINY_TRAIN,
            *extra,
        ],
    )


def _flare_train(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, "-m", "flare_helpers", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _weights(path: Path) -> list[np.ndarray]:
    model = keras.saving.load_model(path, compile=False)
    return [np.asarray(w) for w in model.get_weights()]


def _history_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_run(synthetic_data, tmp_path):
    """SIGKILL after epoch 1; the same command continues at epoch 2 and ends where an
    uninterrupted run ends (weights within float tolerance, identical curves: the same
    seed gives the same run). The uninterrupted run measures its plan first, the other
    does not: the plan's steps leave the result unchanged. A finished run is not retrained."""
    cache = tmp_path / "cache"
    common = TINY_TRAIN + [
        f"data.data_dir={synthetic_data}",
        f"data.cache_dir={cache}",
        "train.epochs=3",
    ]
    planned = [*common, f"train.output_dir={tmp_path / 'a'}", "train.plan_steps=3"]
    straight_cfg = load_config(None, planned)
    straight = train(straight_cfg, progress=False)
    assert straight.resumed_from == 0 and straight.epochs_completed == 3
    assert RunLayout(straight.run_dir).plan.exists()  # 4 steps trained, then put back
    assert {p.name for p in RunLayout(straight.run_dir).root.iterdir()} >= {
        "config.yaml",
        "splits.json",
        "history.csv",
        "best.keras",
        "checkpoints",
        "training_done.json",
    }
    stamp = straight.best_model.stat().st_mtime_ns
    again = train(straight_cfg, progress=False)
    assert again.resumed_from == -1 and straight.best_model.stat().st_mtime_ns == stamp

    run_b = tmp_path / "b"
    args = [*common, f"train.output_dir={run_b}"]
    proc = _flare_train(args)
    deadline = time.time() + 300
    while latest_checkpoint(run_b / "checkpoints") is None:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = latest_checkpoint(run_b / "checkpoints")[0]
    assert done_before < 3 and not (run_b / "training_done.json").exists()

    rerun = _flare_train(args)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert f"resumed at epoch {done_before + 1}" in output
    assert latest_checkpoint(run_b / "checkpoints")[0] == 3
    assert not RunLayout(run_b).plan.exists()
    for a, b in zip(
        _weights(straight.run_dir / "checkpoints" / "epoch_0003.keras"),
        _weights(run_b / "checkpoints" / "epoch_0003.keras"),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rows_a, rows_b = _history_rows(straight.history_csv), _history_rows(run_b / "history.csv")
    assert [r["epoch"] for r in rows_b] == ["0", "1", "2"]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("loss", "val_loss", "mean_dice", "val_mean_dice"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-6)


def test_a_run_folder_refuses_other_model_settings(synthetic_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(synthetic_data, tmp_path / "cache", run)
    (run / "config.yaml").write_text(
        "model:\n  base_filters: 32\npreprocess:\n  mode: resize\n  target_shape: [32, 32, 16]\n  workers: 1\n"
        "data:\n  organs: [liver, right_kidney, left_kidney, spleen]\n"
    )
    with pytest.raises(FlareError, match="different model settings"):
        train(cfg, progress=False)


def test_training_without_data_or_cache_is_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path / "nodata", tmp_path / "nocache", tmp_path / "run")
    with pytest.raises(FlareError, match="no preprocessed cache"):
        train(cfg, progress=False)


def test_learning_rate_schedules_are_pure_functions_of_the_epoch():
    assert lr_schedule("constant", 1e-3, 10) is None
    cosine = lr_schedule("cosine", 1e-3, 10)
    poly = lr_schedule("poly", 1e-3, 10)
    assert cosine(0) == pytest.approx(1e-3) and cosine(5) == pytest.approx(5e-4)
    assert cosine(10) == pytest.approx(0.0, abs=1e-12)
    assert poly(0) == pytest.approx(1e-3) and poly(5) == pytest.approx(1e-3 * 0.5**0.9)


_MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from flare_helpers.config import load_config
from flare_helpers.workflows.training import train
train(load_config(None, sys.argv[1:]), progress=False)  # one epoch
result = train(load_config(None, [*sys.argv[1:], "train.epochs=2"]), progress=False)
print("REPLICAS", result.replicas, "BEST", result.best_value, "RESUMED", result.resumed_from)
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_trains_and_resumes(synthetic_data, tmp_path):
    args = [
        *TINY_TRAIN,
        f"data.data_dir={synthetic_data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.epochs=1",
        "data.val_fraction=0.34",
        "train.distribution=mirrored",
        "train.deterministic=false",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("REPLICAS")][0]
    words = line.split()  # the second run resumed the first's checkpoint under the strategy
    assert words[1] == "2" and np.isfinite(float(words[3])) and words[5] == "1"


def test_jax_only_distribution_is_refused_on_tensorflow(synthetic_data, tmp_path):
    cfg = _cfg(
        synthetic_data, tmp_path / "cache", tmp_path / "run", "train.distribution=data_parallel"
    )
    with pytest.raises(FlareError, match="needs the JAX backend"):
        train(cfg, progress=False)


def test_a_time_limit_inside_an_epoch_keeps_a_model_and_a_rerun_goes_on(synthetic_data, tmp_path):
    """The limit passes after the first step of a 2-step epoch: training stops there, that epoch
    is not recorded, best.keras (one validation) and last.keras are left; a rerun without the
    limit trains the 3 epochs from the start and removes the stale last.keras."""
    cfg = _cfg(
        synthetic_data,
        tmp_path / "cache",
        tmp_path / "run",
        "train.epochs=3",
        "train.time_limit_minutes=0.0001",
    )
    first = train(cfg, progress=False)
    paths = RunLayout(tmp_path / "run")
    assert first.stopped_by == "time limit" and first.stopped_inside == (0, 1, 2)
    assert first.steps_run == 1 and first.epochs_completed == 0
    assert first.best_model == paths.best_model and first.last_model == paths.last_model
    assert 0.0 <= first.best_value <= 1.0 and first.monitor == "val_mean_dice"
    assert not paths.history.exists() and latest_checkpoint(paths.checkpoints) is None
    assert not paths.done.exists()
    second = train(cfg.replace(train={"time_limit_minutes": 0.0}), progress=False)
    assert second.resumed_from == 0 and second.epochs_completed == 3 and not second.stopped_by
    assert paths.done.exists() and not paths.last_model.exists()


def test_epoch_time_and_eta_lines():
    from flare_helpers.train.callbacks import eta_line, format_duration

    assert [format_duration(s) for s in (4.25, 42, 185, 7800)] == [
        "4.2 s",
        "42 s",
        "3 min 05 s",
        "2 h 10 min",
    ]
    noon = time.mktime((2026, 1, 1, 12, 0, 0, 0, 0, -1))
    # 97 epochs of 100 steps of 0.12 s and 0.4 s of validation and saving each
    line = eta_line(
        2, 100, 12.4, seconds_per_step=0.12, steps_per_epoch=100, epoch_fixed_seconds=0.4, now=noon
    )
    assert (
        line == "epoch 3/100 took 12 s (0.12 s/step); 97 to go: about 20 min 03 s (done at 12:20)"
    )
    assert eta_line(2, 3, 10.0, seconds_per_step=0.1, steps_per_epoch=100) == (
        "epoch 3/3 took 10 s (0.1 s/step)"
    )
