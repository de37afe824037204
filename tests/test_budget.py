"""One time limit for the whole run, a model always left, and a plan measured before training.

``train.time_limit_minutes`` bounds the localiser and the VNet together, checked
after every step; a run it ends (or SIGTERM, or Ctrl-C) leaves a model that
``flare-predict`` loads; ``plan.json`` holds what a few real steps measured and the
run predicted from them, which the ETA lines never promise past the limit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from tiny_settings import TINY_LOCALIZER, TINY_MODEL, TINY_SPACING

from flare_helpers import cli
from flare_helpers.config import load_config
from flare_helpers.data.fileio import read_history
from flare_helpers.data.layout import RunLayout
from flare_helpers.infer.predict import load_predictor
from flare_helpers.preprocess.pipeline import preprocess_dataset
from flare_helpers.train.budget import (
    Deadline,
    MeasuredPlan,
    StepTimes,
    eta_seconds,
    tolerance_seconds,
)
from flare_helpers.train.callbacks import BudgetEnded, TimeLimit, TqdmProgress, eta_line
from flare_helpers.workflows.training import train

TINY_TRAIN = [
    *TINY_MODEL,
    "train.batch_size=2",
    "train.learning_rate=0.001",
    "train.workers=1",
    "train.plan_steps=3",  # the default: the plan is what these tests check
]


def _args(data: Path, cache: Path, run: Path, *extra: str) -> list[str]:
    return [
        f"data.data_dir={data}",
        f"data.cache_dir={cache}",
        f"train.output_dir={run}",
        *TINY_TRAIN,
        *extra,
    ]


def _preprocess(args: list[str]) -> None:
    """Fill the cache first, so that a timed run's clock measures training only."""
    cfg = load_config(None, args)
    preprocess_dataset(cfg.data.data_dir, cfg.data.cache_dir, cfg, progress=False)


# --------------------------------------------------------------------------- the measured plan


@pytest.mark.slow
def test_flare_train_writes_a_measured_plan_that_predicts_the_run(synthetic_data, tmp_path, capsys):
    """plan.json: measured seconds per step on this device; its predicted time within a factor
    of 3 of the time training then took. (That the plan's steps leave the result unchanged:
    ``test_train.py``'s killed-run test, whose uninterrupted run has a plan and the other not.)"""
    args = _args(
        synthetic_data,
        tmp_path / "cache",
        tmp_path / "run",
        "train.epochs=2",
        "train.steps_per_epoch=10",
    )
    assert cli.train_main(args) == 0
    out = capsys.readouterr().out
    assert "plan for best.keras, measured on this device (Keras" in out
    plan = json.loads(RunLayout(tmp_path / "run").plan.read_text())
    measured = plan["measured"]
    assert measured["steps_timed"] == 3 and measured["seconds_per_step"] > 0
    assert measured["warmup_seconds"] > measured["seconds_per_step"]  # it built the functions
    assert measured["validation_seconds"] > 0 and measured["save_seconds"] > 0
    assert measured["peak_host_mib"] > 100 and measured["peak_gpu_mib"] is None  # CPU only
    assert plan["device"].endswith("CPU only (no GPU found)")
    assert plan["steps_per_epoch"] == 10 and plan["epochs"] == 2
    predicted, took = plan["predicted"]["run_seconds"], plan["actual"]["fit_seconds"]
    print(f"predicted {predicted:.2f} s, training took {took:.2f} s")
    assert took / 3 <= predicted <= 3 * took
    assert plan["actual"]["steps_run"] == 20 and plan["actual"]["stopped_by"] == ""


def _plan(**changes) -> MeasuredPlan:
    measured = StepTimes(
        device="test",
        warmup_seconds=30.0,
        seconds_per_step=2.4,
        steps_timed=3,
        fit_overhead_seconds=1.0,
        validation_seconds=20.0,
        save_seconds=2.0,
        peak_host_mib=3000.0,
        peak_gpu_mib=4400.0,
    )
    settings = {"network": "best.keras", "measured": measured, "epochs": 100}
    return MeasuredPlan(**{**settings, "initial_epoch": 0, "steps_per_epoch": 250, **changes})


def test_a_plan_says_what_does_not_fit_and_the_settings_that_would():
    plan = _plan()  # 250 steps × 2.4 s + 1 + 20 + 2 × 2 = 625 s an epoch
    assert plan.epoch_seconds == pytest.approx(625.0)
    assert plan.run_seconds == pytest.approx(62_500.0) and plan.left_seconds == plan.run_seconds
    assert plan.fits_time_limit and not plan.fits_colab_session  # 17.4 h
    (colab,) = plan.advice()
    # 69 epochs of 625 s fit in 12 h; or 100 epochs of 169 steps (43,200 / 100 - 25) / 2.4
    assert "free Colab session (about 12 h)" in colab and "train.epochs=69," in colab
    assert "train.steps_per_epoch=169;" in colab and "train.time_limit_minutes=690" in colab
    limited = _plan(
        time_limit_seconds=3 * 3600.0, budget_left_seconds=3 * 3600.0 - 60, initial_epoch=10
    )
    assert limited.epochs_in_budget == 17 and not limited.fits_time_limit  # 10,740 s // 625
    (line,) = limited.advice()  # 3 h are less than a Colab session: no second note
    assert "after about 17 of the 90 epochs left" in line and "train.epochs=27" in line
    assert "train.steps_per_epoch=39" in line  # (10,740 / 90 - 25) / 2.4
    short = _plan(time_limit_seconds=300.0, budget_left_seconds=250.0, steps_per_epoch=250)
    assert short.epochs_in_budget == 0
    assert "shorter than one epoch (10 min 25 s)" in short.advice()[0]
    text = "\n".join(plan.lines())
    assert "2.4 s per step (median of 3, after a 30 s warm-up step" in text
    assert "predicted: 100 epochs ≈ 17 h 21 min" in text and "GPU 4.30 GiB" in text
    assert plan.to_dict()["time_limit_seconds"] is None  # no limit: JSON null, not Infinity


# --------------------------------------------------------------------------- ETA


def test_eta_comes_from_step_times_and_never_passes_the_time_limit():
    noon = time.mktime((2026, 1, 1, 12, 0, 0, 0, 0, -1))
    # a 10-minute epoch: 250 steps of 2.4 s; each epoch end costs 5 s more
    assert eta_seconds(3 * 250, 2.4, 3, 5.0) == pytest.approx(3 * 605.0)
    line = eta_line(
        0, 4, 610.0, seconds_per_step=2.4, steps_per_epoch=250, epoch_fixed_seconds=5.0, now=noon
    )
    assert (
        line
        == "epoch 1/4 took 10 min 10 s (2.4 s/step); 3 to go: about 30 min 15 s (done at 12:30)"
    )
    limited = eta_line(
        0,
        4,
        610.0,
        seconds_per_step=2.4,
        steps_per_epoch=250,
        epoch_fixed_seconds=5.0,
        time_left=900.0,
        now=noon,
    )
    assert limited.endswith(
        "3 to go, but the time limit ends the run in 15 min 00 s (at 12:15), after about 1 more"
    )
    assert "done at" not in limited
    for left in (0.0, 1.0, 59.0, 3600.0, 1e6):
        for steps, step, epochs in ((1, 0.01, 0), (10**6, 3.0, 4000), (250, 2.4, 1)):
            assert eta_seconds(steps, step, epochs, 7.0, time_left=left) <= left
    # a stalled estimate (an hour a step) is not stated as a forecast of thousands of hours
    absurd = eta_line(0, 1000, 5.0, seconds_per_step=3600.0, steps_per_epoch=250, now=noon)
    assert absurd.endswith("999 to go: more than 99 h")


def test_progress_takes_the_median_step_so_one_stall_does_not_skew_the_eta(monkeypatch):
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(time, "monotonic", lambda: clock.now)
    progress = TqdmProgress(3, seconds_per_step=9.9)
    progress.set_params({"steps": 250})
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    assert progress.seconds_per_step() == 9.9  # the plan's until steps are measured
    for step in range(250):
        clock.now += 3600.0 if step == 100 else 2.4  # one step stalls for an hour
        progress.on_train_batch_end(step)
    progress.on_train_end()
    assert progress.seconds_per_step() == pytest.approx(2.4)


def test_the_time_limit_is_checked_after_every_step():
    model = types.SimpleNamespace(stop_training=False)
    limit = TimeLimit(Deadline(0.0, end=time.monotonic() + 3600.0), end_seconds=1.0)
    limit.set_model(model)
    limit.set_params({"steps": 10})
    limit.on_epoch_begin(0)
    limit.on_train_batch_end(0)  # an hour left: goes on
    limit.deadline = Deadline(0.0, end=time.monotonic() - 1.0)
    with pytest.raises(BudgetEnded, match="epoch 1, step 2"):
        limit.on_train_batch_end(1)  # inside the epoch: ends fit at once
    assert limit.stopped_inside == (0, 2, 10) and limit.steps == 2
    limit.on_train_batch_end(9)  # the epoch's last step: let the epoch end and save
    limit.on_epoch_end(0)
    assert model.stop_training and limit.validated
    assert tolerance_seconds(600.0) == 60.0 and tolerance_seconds(12 * 3600.0) == 2160.0


# --------------------------------------------------------------------------- the time limit


@pytest.mark.slow
def test_a_limit_shorter_than_an_epoch_stops_inside_it_and_leaves_a_loadable_model(
    synthetic_data, tmp_path, capsys
):
    """1000 steps an epoch (about a minute here), 0.4 minutes: flare-train stops inside epoch 1,
    within the tolerance, exits 0 saying so; best.keras (one validation) and last.keras load."""
    run = tmp_path / "run"
    limit = 0.4 * 60
    args = _args(
        synthetic_data,
        tmp_path / "cache",
        run,
        "train.epochs=3",
        "train.steps_per_epoch=1000",
        "train.time_limit_minutes=0.4",
    )
    _preprocess(args)
    start = time.monotonic()
    assert cli.train_main(args) == 0
    took = time.monotonic() - start
    out = capsys.readouterr().out
    plan = json.loads(RunLayout(run).plan.read_text())
    epoch, steps, per_epoch = plan["actual"]["stopped_inside"]
    print(f"stopped after {steps} steps, {took:.1f} s for a {limit:.0f} s limit")
    assert epoch == 0 and 0 < steps < per_epoch == 1000 and plan["actual"]["steps_run"] == steps
    assert took <= limit + tolerance_seconds(limit) and took <= limit + 15.0
    assert plan["actual"]["session_seconds"] >= limit - 5.0  # it used its time
    assert "the time limit ended training inside epoch 1 after" in out
    assert "flare-train: the time limit (24 s) ended this run" in out
    assert f"model left: {run / 'best.keras'} (one validation when it stopped" in out
    assert not plan["fits_time_limit"] and "shorter than one epoch" in plan["advice"][0]
    paths = RunLayout(run)
    assert not paths.history.exists() and not paths.done.exists()
    for model in (paths.best_model, paths.last_model):
        assert load_predictor(model).organs.organs == (
            "liver",
            "right_kidney",
            "left_kidney",
            "spleen",
        )
    image = next((synthetic_data / "images").iterdir())
    out_file = tmp_path / "prediction.nii.gz"
    assert (
        cli.predict_main(
            [
                "--model-path",
                str(paths.last_model),
                "--input",
                str(image),
                "--output",
                str(out_file),
            ]
        )
        == 0
    )
    assert out_file.exists()


@pytest.mark.slow
def test_the_localiser_trains_within_its_share_and_the_run_within_the_limit(
    synthetic_data, tmp_path
):
    """50 s, localiser share 0.4 (20 s): the localiser (200 epochs asked) stops by its
    share, the VNet (100 epochs asked) by what remains of the run's limit."""
    limit, share = 50.0, 0.4
    args = _args(
        synthetic_data,
        tmp_path / "cache",
        tmp_path / "run",
        *TINY_SPACING,
        *TINY_LOCALIZER,
        "localizer.epochs=200",
        f"localizer.time_share={share}",
        "train.epochs=100",
        f"train.time_limit_minutes={limit / 60}",
    )
    cfg = load_config(None, args)
    _preprocess(args)
    start = time.monotonic()
    result = train(cfg, progress=False)
    took = time.monotonic() - start
    paths = RunLayout(tmp_path / "run")
    localizer = json.loads(paths.localizer.plan.read_text())
    vnet = json.loads(paths.plan.read_text())
    print(
        f"localiser {localizer['actual']['session_seconds']:.1f} s (warm-up "
        f"{localizer['measured']['warmup_seconds']:.1f} s, {localizer['actual']['steps_run']} "
        f"steps), VNet {vnet['actual']['session_seconds']:.1f} s, whole run {took:.1f} s"
    )
    assert localizer["actual"]["stopped_by"] == "time limit"
    # its share counts from before its coarse grid was built; its plan from after
    assert share * limit - 3.0 <= localizer["time_limit_seconds"] <= share * limit
    assert localizer["actual"]["session_seconds"] <= share * limit + 5.0
    assert 1 <= len(read_history(paths.localizer_history)) < 200
    # the VNet gets what the localiser left of the run's limit
    assert vnet["time_limit_seconds"] <= limit - localizer["actual"]["session_seconds"] + 1.0
    assert result.stopped_by == "time limit" and result.epochs_completed < 100
    assert took <= limit + tolerance_seconds(limit) and took <= limit + 15.0


@pytest.mark.slow
def test_a_localiser_whose_share_cannot_fit_its_epochs_is_not_trained(
    synthetic_data, tmp_path, capsys
):
    """A 10-minute limit gives the localiser 90 s: its measured plan fits far fewer than the
    1,000 epochs asked (``localizer.min_epochs`` 1,000), so it is not trained and the VNet
    trains in what is left of the limit; a localiser a rejected earlier run left is not used."""
    limit = 600.0
    args = _args(
        synthetic_data,
        tmp_path / "cache",
        tmp_path / "run",
        *TINY_SPACING,
        *TINY_LOCALIZER,
        "localizer.epochs=1000",
        "localizer.min_epochs=1000",
        "train.epochs=1",
        f"train.time_limit_minutes={limit / 60}",
    )
    _preprocess(args)
    paths = RunLayout(tmp_path / "run")
    paths.root.mkdir(parents=True)
    paths.localizer_model.write_bytes(b"an earlier session's localiser")
    result = train(load_config(None, args), progress=False)
    said = capsys.readouterr().out
    assert "localizer.keras: not trained: its time (" in said
    assert "fewer than the 1000 it needs: prediction covers the whole crop" in said
    assert not paths.localizer_model.exists() and paths.localizer_rejected.exists()
    assert not paths.localizer.history.exists()
    localizer = json.loads(paths.localizer.plan.read_text())
    assert localizer["time_limit_seconds"] == pytest.approx(0.15 * limit, abs=3.0)
    assert "actual" not in localizer  # nothing trained: the plan's prediction only
    assert result.epochs_completed == 1 and result.best_model.exists()
    vnet = json.loads(paths.plan.read_text())
    spent = limit - vnet["time_limit_seconds"]
    assert 0 < spent < 0.15 * limit  # the VNet got all but the localiser's few plan steps


# --------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
def test_sigterm_saves_the_last_weights_and_says_which_model_is_left(synthetic_data, tmp_path):
    run = tmp_path / "run"
    args = _args(
        synthetic_data, tmp_path / "cache", run, "train.epochs=50", "train.steps_per_epoch=1000"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flare_helpers", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not RunLayout(run).plan.exists():  # measured: training starts next
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, output
    assert "flare-train: interrupted" in output
    assert "model left: no validated model yet; last weights: " in output
    last = RunLayout(run).last_model
    assert f"last weights: {last}" in output and load_predictor(last).model_path == last
