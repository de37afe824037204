"""The training recipe: precision policy per device, the moving average that picks the
best model, and the budget and time plan shown before training."""

from __future__ import annotations

import math

import keras
import pytest

from flare_helpers.config import Config, ModelConfig, load_config
from flare_helpers.model.runtime import resolve_mixed_precision
from flare_helpers.train import budget
from flare_helpers.train.callbacks import HistoryLog, ema_name, moving_average


@pytest.mark.parametrize(
    ("setting", "capabilities", "policy"),
    [
        ("auto", [], "float32"),  # CPU, whatever its bfloat16 support
        ("auto", [(7, 5)], "mixed_float16"),  # T4
        ("auto", [(7, 0)], "mixed_float16"),  # V100
        ("auto", [(8, 0)], "mixed_bfloat16"),  # A100
        ("auto", [(9, 0), (9, 0)], "mixed_bfloat16"),  # 2 × H100
        ("auto", [(8, 6), (7, 5)], "mixed_float16"),  # the oldest decides
        ("none", [(8, 0)], "float32"),
        ("mixed_float16", [], "mixed_float16"),
        ("mixed_bfloat16", [(7, 5)], "mixed_bfloat16"),
    ],
)
def test_precision_policy_per_device(setting, capabilities, policy):
    assert resolve_mixed_precision(setting, capabilities)[0] == policy


def test_auto_precision_here_is_float32_without_a_gpu(monkeypatch):
    monkeypatch.setattr("flare_helpers.model.runtime.gpu_capabilities", lambda: [])
    assert resolve_mixed_precision("auto") == (
        "float32",
        "auto: no GPU (half precision only pays on GPU tensor cores)",
    )


def test_moving_average_is_nnunets_ema():
    got = moving_average([0.5, 0.7, math.nan, 0.9], 0.9)
    want = [0.5, 0.9 * 0.5 + 0.1 * 0.7]
    want += [want[-1], 0.9 * want[-1] + 0.1 * 0.9]
    assert got == pytest.approx(want)
    assert moving_average([0.2, 0.4], 0.0) == [0.2, 0.4]


def _model():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    return model


def test_history_adds_the_ema_and_a_resumed_run_continues_it(tmp_path):
    path = tmp_path / "history.csv"
    log = HistoryLog(path, 0, smoothing=0.9)
    log.set_model(_model())
    for epoch, dice in enumerate([0.2, 0.6, 0.4]):
        log.on_epoch_end(epoch, {"val_mean_dice": dice, "mean_dice": 0.5})
    ema = [row[ema_name("val_mean_dice")] for row in log.rows]
    assert ema == pytest.approx([0.2, 0.24, 0.256])
    # a noisy best epoch does not win: the average peaks where Dice stays high
    assert log.best("val_mean_dice")[0] == 1 and log.best(ema_name("val_mean_dice"))[0] == 2

    resumed = HistoryLog(path, 2, smoothing=0.9)  # crashed before epoch 2's checkpoint
    resumed.set_model(log.model)
    resumed.on_epoch_end(2, {"val_mean_dice": 0.4})
    assert resumed.rows[-1][ema_name("val_mean_dice")] == pytest.approx(0.256)


def test_vnet_flops_by_hand():
    model = ModelConfig(base_filters=2, depth=1, convs_per_stage=(1, 1), kernel_size=3)
    shape, k3 = (4, 4, 2), 27
    v0, v1 = 32, 4
    macs = v0 * 1 * 2 * k3  # enc0 conv
    macs += v1 * 2 * 4 * 8 + v1 * 4 * 4 * k3  # down1, enc1
    macs += v0 * 4 * 2 + v0 * 4 * 4 * k3  # up0 (transposed), dec0 on 2 × 2 channels
    macs += v0 * 4 * 3  # logits
    assert budget.vnet_flops(model, shape, 3) == 2 * macs


def test_default_plan_on_a_t4():
    cfg = Config()
    plan = budget.plan_training(cfg, n_train_cases=35, n_val_samples=20)
    assert plan.steps == cfg.train.epochs * 250 and plan.patches == 2 * plan.steps
    assert plan.precision == "mixed_float16"
    assert plan.step_tflop == pytest.approx(3 * 2 * 1.0045, rel=1e-3)
    assert plan.time_line().startswith(f"about {plan.steps:,} steps, ≈ ")
    assert plan.time_line().endswith("resumes after a disconnect")
    assert "nnU-Net: 1000 × 250 × 2 = 500,000 patches" in plan.budget_line()
    assert plan.budget_line().endswith("(10 % of it)")
    short = budget.plan_training(cfg.replace(train={"epochs": 1}), 35)
    assert "≈ 4 min on a T4" in short.time_line() and "(0.1 % of it)" in short.budget_line()
    tiny = budget.plan_training(cfg.replace(train={"epochs": 1, "steps_per_epoch": 10}), 35)
    assert 5 <= tiny.hours * 3600 <= 15  # 10 steps of about 0.94 s
    # never "under a minute" from FLOPs alone: a figure, labelled as the estimate it is
    assert tiny.time_line().startswith(
        f"about 10 steps, at least {tiny.hours * 3600:.1f} s on a T4 (estimate, not measured: "
        "FLOPs at 10% of its mixed_float16 peak)"
    )
    float32 = budget.plan_training(cfg.replace(train={"mixed_precision": "none"}), 35)
    assert float32.hours == pytest.approx(plan.hours * (65 * 0.1) / (8.1 * 0.4), rel=0.05)


def test_seed_recipe_epoch_is_one_patch_per_case():
    cfg = load_config(None, ["train.recipe=seed", "train.batch_size=4"])
    plan = budget.plan_training(cfg, n_train_cases=35)
    assert plan.steps_per_epoch == 9 and plan.steps == 900  # the 900 steps of the old default


def test_generalisation_gap_per_organ_from_the_history(tmp_path):
    from flare_helpers.train.callbacks import gap_lines, generalisation_gap

    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,dice_liver,val_dice_liver,mean_dice,val_mean_dice\n"
        "0,0.1,0.1,0.1,0.1\n1,0.9,0.7,0.8,0.6\n2,0.7,0.5,0.6,0.4\n",
        encoding="utf-8",
    )
    table = generalisation_gap(path, ["liver"], last=2)
    assert [r["organ"] for r in table] == ["liver", "mean"]
    assert table[0]["train"] == pytest.approx(0.8) and table[0]["val"] == pytest.approx(0.6)
    assert table[0]["gap"] == pytest.approx(0.2) and table[1]["gap"] == pytest.approx(0.2)
    assert "+0.200" in gap_lines(table)
