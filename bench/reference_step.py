"""A fixed CPU reference workload, so that times from different machines can be compared.

Prints the median time of one training step of four 3×3×3 convolutions (8 filters, ReLU)
on a batch of 2 × 48×48×32×1 (the light VNet's patch size), with Adam and a squared error
loss, in TensorFlow: the step the README and BENCHMARKS.md quote beside every time they
report ("reference step"). Machines of the same size differ 3× and more: a slow 2-core
AMD EPYC reads 540–730 ms, a 2-core EPYC with AVX-512 BF16 about 56 ms.

    python bench/reference_step.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402


def reference_step_ms(warmup: int = 3, repeats: int = 15) -> float:
    """Median milliseconds of the reference training step (after ``warmup`` steps)."""
    images = tf.random.normal((2, 48, 48, 32, 1), seed=0)
    targets = tf.random.normal((2, 48, 48, 32, 8), seed=1)
    convs = [tf.keras.layers.Conv3D(8, 3, padding="same", activation="relu") for _ in range(4)]
    model = tf.keras.Sequential([tf.keras.Input((48, 48, 32, 1)), *convs])
    optimizer = tf.keras.optimizers.Adam()

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(images) - targets))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


if __name__ == "__main__":
    print(
        f"reference step: {reference_step_ms():.1f} ms (median of 15, 2×48×48×32 conv3d train step)"
    )
