"""What the code runs on: the Keras backend and the accelerator it will use."""

from __future__ import annotations


def describe_device() -> str:
    """One line naming the Keras backend and the GPU(s) it sees, or that it runs on the CPU."""
    import keras

    backend = keras.backend.backend()
    gpus: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif backend == "jax":
        import jax

        gpus = [str(d) for d in jax.devices() if d.platform == "gpu"]
    elif backend == "torch":
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    where = f"GPU: {', '.join(gpus)}" if gpus else "CPU only (no GPU found)"
    return f"Keras {keras.__version__} on {backend}; {where}"
