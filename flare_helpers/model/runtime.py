"""What the code runs on: the Keras backend and the accelerator it will use."""

from __future__ import annotations


def gpu_names() -> list[str]:
    """The GPUs the Keras backend sees (empty: it runs on the CPU).

    Keras and the backends are imported here, not at the top: the CLI asks for
    this after its settings check, and only the active backend is installed or
    worth the seconds its import takes.
    """
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
    return gpus


def describe_device() -> str:
    """One line naming the Keras backend and the GPU(s) it sees, or that it runs on the CPU."""
    import keras  # seconds to import: only when asked (see gpu_names)

    gpus = gpu_names()
    where = f"GPU: {', '.join(gpus)}" if gpus else "CPU only (no GPU found)"
    return f"Keras {keras.__version__} on {keras.backend.backend()}; {where}"


#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 arithmetic: AVX512-BF16 and AMX.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """Which of :data:`BF16_FLAGS` the CPU has (from ``cpuinfo`` text, else ``/proc/cpuinfo``)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:  # not Linux: no way to tell, so no bfloat16 by default
            return ()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def resolve_precision(setting: str, cpuinfo: str | None = None, gpu: bool | None = None):
    """The network precision to use for ``infer.precision`` and why: ``(precision, reason)``.

    ``auto`` is bfloat16 only where it is native and the CPU runs the network
    (AVX512-BF16 or AMX, no GPU): about 2x faster there, and float32 elsewhere,
    where emulated bfloat16 would be slower and no more accurate. An explicit
    ``float32`` or ``bfloat16`` is kept as asked.
    """
    if setting != "auto":
        return setting, "as set (infer.precision)"
    flags = cpu_bf16_flags(cpuinfo)
    gpu = bool(gpu_names()) if gpu is None else gpu
    if gpu:
        return "float32", "auto: the network runs on a GPU"
    if flags:
        return "bfloat16", f"auto: the CPU computes bfloat16 natively ({', '.join(flags)})"
    return "float32", "auto: no native bfloat16 on this CPU (AVX512-BF16 or AMX)"


#: Compute capability from which a GPU has bfloat16 tensor cores (NVIDIA Ampere, 8.0).
BF16_GPU_CAPABILITY = (8, 0)


def gpu_capabilities() -> list[tuple[int, int]]:
    """CUDA compute capability ``(major, minor)`` of each GPU the Keras backend sees
    (``(0, 0)`` where the backend cannot tell; empty on the CPU)."""
    import keras

    backend = keras.backend.backend()
    found: list[tuple[int, int]] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            found.append(tuple(details.get("compute_capability") or (0, 0)))
    elif backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                text = str(getattr(device, "compute_capability", "0.0"))
                major, _, minor = text.partition(".")
                found.append((int(major or 0), int(minor or 0)))
    elif backend == "torch":
        import torch

        found = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    return [(int(major), int(minor)) for major, minor in found]


def resolve_mixed_precision(
    setting: str, capabilities: list[tuple[int, int]] | None = None
) -> tuple[str, str]:
    """The Keras dtype policy for ``train.mixed_precision`` and why: ``(policy, reason)``.

    ``auto``: ``mixed_bfloat16`` where every GPU has bfloat16 tensor cores (compute
    capability >= 8.0: A100, L4, H100), ``mixed_float16`` on older GPUs (a T4 is 7.5:
    its tensor cores compute float16, about 8x its float32 rate) and ``float32`` on
    the CPU (no tensor cores; emulated half precision is slower). An explicit
    setting is kept (``none`` → ``float32``). The model's softmax and the loss stay
    float32 in every policy.

    Args:
        capabilities: compute capabilities of the GPUs (default: asked of the backend,
            :func:`gpu_capabilities`); empty means the CPU.
    """
    if setting != "auto":
        policy = "float32" if setting == "none" else setting
        return policy, "as set (train.mixed_precision)"
    capabilities = gpu_capabilities() if capabilities is None else capabilities
    if not capabilities:
        return "float32", "auto: no GPU (half precision only pays on GPU tensor cores)"
    if all(tuple(c) >= BF16_GPU_CAPABILITY for c in capabilities):
        return (
            "mixed_bfloat16",
            "auto: the GPU has bfloat16 tensor cores (compute capability >= 8.0)",
        )
    oldest = min(tuple(c) for c in capabilities)
    return (
        "mixed_float16",
        f"auto: the GPU's tensor cores compute float16 (compute capability {oldest[0]}.{oldest[1]})",
    )


def host_peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage``; psutil's current
    RSS where ``resource`` is missing, e.g. on Windows; 0 where neither is)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes / KiB
    except ImportError:
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            return 0.0


def reset_gpu_peak() -> None:
    """Start a new GPU memory peak (:func:`gpu_peak_mib`); nothing on the CPU."""
    import keras

    if keras.backend.backend() == "tensorflow" and gpu_names():
        import tensorflow as tf

        for index in range(len(gpu_names())):
            tf.config.experimental.reset_memory_stats(f"GPU:{index}")
    elif keras.backend.backend() == "torch" and gpu_names():
        import torch

        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mib() -> float | None:
    """The backend's GPU memory peak in MiB (the largest over the GPUs), None on the CPU."""
    import keras

    if not gpu_names():
        return None
    backend = keras.backend.backend()
    peaks: list[int] = []
    if backend == "tensorflow":
        import tensorflow as tf

        peaks = [
            tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"]
            for i in range(len(gpu_names()))
        ]
    elif backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                stats = device.memory_stats() or {}
                peaks.append(int(stats.get("peak_bytes_in_use", 0)))
    elif backend == "torch":
        import torch

        peaks = [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())]
    return max(peaks) / 2**20 if peaks else None
