"""VNet: shapes, probabilities, precision, parameter count, errors, saving, JAX training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from flare_helpers.config import ModelConfig
from flare_helpers.errors import FlareError
from flare_helpers.model.losses import DiceCELoss
from flare_helpers.model.metrics import training_metrics
from flare_helpers.model.vnet import build_vnet, count_parameters, vnet_from_config

TINY = {"base_filters": 4, "depth": 2, "convs_per_stage": (1, 1, 1), "kernel_size": 3}


def vnet_parameter_formula(base, depth, convs, kernel, n_classes, channels=1):
    """Hand-derived weight count: conv = k³·in·out + out bias; PReLU = one slope per channel."""

    def conv(c_in, c_out, k):
        return k**3 * c_in * c_out + c_out

    f = [base * 2**level for level in range(depth + 1)]
    total = conv(channels, f[0], kernel) + f[0]
    total += (convs[0] - 1) * (conv(f[0], f[0], kernel) + f[0])
    for level in range(1, depth + 1):
        total += conv(f[level - 1], f[level], 2) + f[level]
        total += convs[level] * (conv(f[level], f[level], kernel) + f[level])
    for level in range(depth - 1, -1, -1):
        c_in = f[depth] if level == depth - 1 else 2 * f[level + 1]
        total += conv(c_in, f[level], 2) + f[level]
        total += convs[level] * (conv(2 * f[level], 2 * f[level], kernel) + 2 * f[level])
    return total + conv(2 * f[0], n_classes, 1)


def test_output_shape_and_probabilities():
    model = build_vnet((16, 16, 16), 3, **TINY)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    assert model.name == "vnet"
    assert model.input_shape == (None, 16, 16, 16, 1)
    assert y.shape == (2, 16, 16, 16, 3)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    assert y.min() >= 0.0
    assert build_vnet((16, 16, 16, 1), 3, **TINY).input_shape == (None, 16, 16, 16, 1)


def test_non_cubic_input_and_two_channels():
    model = build_vnet((32, 16, 8, 2), 2, base_filters=4, depth=3, convs_per_stage=(1, 1, 1, 1))
    y = keras.ops.convert_to_numpy(model(np.zeros((1, 32, 16, 8, 2), "float32")))
    assert y.shape == (1, 32, 16, 8, 2)
    assert model.get_layer("enc0_repeat").repeats == 2
    any_size = build_vnet((None, None, None), 2, **TINY)
    assert keras.ops.convert_to_numpy(any_size(np.zeros((1, 8, 12, 4, 1), "float32"))).shape == (
        1,
        8,
        12,
        4,
        2,
    )


def test_mixed_float16_computes_in_half_but_outputs_float32():
    model = build_vnet((16, 16, 16), 3, dtype="mixed_float16", **TINY)
    assert model.get_layer("enc1_conv0").compute_dtype == "float16"
    assert model.get_layer("enc1_conv0").variable_dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float16"
    y = model(np.ones((1, 16, 16, 16, 1), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y).sum(axis=-1), 1.0, atol=1e-5)


def test_default_parameter_count_matches_formula():
    # the paper's VNet (no normalisation); instance normalisation adds a scale and a shift per channel
    model = vnet_from_config(ModelConfig(normalization="none"), (128, 128, 64), 5)
    expected = vnet_parameter_formula(16, 4, (1, 2, 3, 3, 3), 5, 5)
    assert expected == 65_175_413
    assert count_parameters(model) == expected
    assert model.get_layer("up0_concat").output.shape == (None, 128, 128, 64, 32)
    assert model.get_layer("dec3_conv2").output.shape == (None, 16, 16, 8, 256)
    assert model.get_layer("enc4_add").output.shape == (None, 8, 8, 4, 256)


def test_small_parameter_count_matches_formula():
    model = build_vnet(
        (16, 16, 16), 3, base_filters=4, depth=2, convs_per_stage=(2, 1, 3), normalization="none"
    )
    assert count_parameters(model) == vnet_parameter_formula(4, 2, (2, 1, 3), 5, 3)


def test_dropout_adds_layers_in_the_two_deepest_transitions():
    tiny = {**TINY, "depth": 3, "convs_per_stage": (1, 1, 1, 1)}
    model = build_vnet((16, 16, 16), 3, dropout=0.3, normalization="none", **tiny)
    names = sorted(layer.name for layer in model.layers if "dropout" in layer.name)
    assert names == ["down2_dropout", "down3_dropout", "up1_dropout", "up2_dropout"]
    assert count_parameters(model) == vnet_parameter_formula(4, 3, (1, 1, 1, 1), 3, 3)


@pytest.mark.parametrize(
    ("shape", "depth", "bad"),
    [((100, 128, 64), 4, "(100, 128, 64)"), ((16, 16, 12), 3, "(16, 16, 12)")],
)
def test_non_divisible_shape_is_a_flare_error(shape, depth, bad):
    with pytest.raises(FlareError, match=rf"divisible by 2\*\*depth = {2**depth}") as info:
        build_vnet(shape, 5, depth=depth, convs_per_stage=(1,) * (depth + 1))
    assert bad in str(info.value)
    assert "preprocess.target_shape" in str(info.value)


def test_wrong_convs_per_stage_is_a_flare_error():
    with pytest.raises(FlareError, match=r"needs depth \+ 1 = 5 entries"):
        build_vnet((32, 32, 32), 5, convs_per_stage=(1, 2, 3))
    with pytest.raises(FlareError, match="must be >= 1"):
        build_vnet((32, 32, 32), 5, depth=1, convs_per_stage=(1, 0))


def test_save_load_roundtrip_gives_identical_predictions(tmp_path):
    model = build_vnet((16, 16, 16), 3, dropout=0.2, **TINY)
    model.compile(
        optimizer="adam",
        loss=DiceCELoss(dice_weight=0.7, ce_weight=1.3),
        metrics=training_metrics(["liver", "spleen"]),
    )
    model.optimizer.build(model.trainable_variables)
    path = tmp_path / "vnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert count_parameters(loaded) == count_parameters(model)
    assert isinstance(loaded.loss, DiceCELoss)
    assert (loaded.loss.dice_weight, loaded.loss.ce_weight) == (0.7, 1.3)


JAX_TRAINING = textwrap.dedent(
    """
    import json
    import keras
    import numpy as np
    from flare_helpers.model.metrics import training_metrics
    from flare_helpers.model.losses import DiceCELoss
    from flare_helpers.model.vnet import build_vnet

    keras.utils.set_random_seed(0)
    model = build_vnet((16, 16, 16), 3, base_filters=4, depth=2, convs_per_stage=(1, 1, 1),
                       kernel_size=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=DiceCELoss(),
                  metrics=training_metrics(["liver", "spleen"]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 1)).astype("float32")
    labels = np.zeros((2, 16, 16, 16), "int64")
    labels[:, 2:8, 2:10, 3:9] = 1
    labels[:, 10:14, 9:15, 8:14] = 2
    x += 2.0 * labels[..., None]
    y = np.eye(3, dtype="float32")[labels]
    logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(5)]
    print(json.dumps({"backend": keras.backend.backend(),
                      "losses": [float(log["loss"]) for log in logs],
                      "keys": sorted(logs[-1])}))
    """
)


@pytest.mark.slow
def test_train_on_batch_on_jax_backend_reduces_the_loss():
    # XLA's CPU optimiser needs ~2 s per weight initialiser; level 0 keeps this test fast.
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }
    done = subprocess.run(
        [sys.executable, "-c", JAX_TRAINING], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    losses = result["losses"]
    assert result["backend"] == "jax"
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0]
    assert result["keys"] == [
        "accuracy",
        "dice_liver",
        "dice_spleen",
        "loss",
        "mean_dice",
    ]
