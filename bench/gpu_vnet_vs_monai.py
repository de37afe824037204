"""Training and inference throughput of our Keras VNet against MONAI's VNet (PyTorch).

Both networks train with Adam (lr 1e-4) and a Dice + cross-entropy loss on random
volumes already on the device, after warm-up steps (compilation, cuDNN
autotuning) that are not timed. Each (network, batch, precision) runs in its
own subprocess, so peak GPU memory is that configuration's alone.

* ours: ``flare_helpers.model.vnet.vnet_from_config(ModelConfig())`` (Milletari conv
  counts, no batch norm), ``model.train_on_batch`` / ``model.predict_on_batch``
  on the chosen Keras backend (``--backend``, JAX by default), ``jit_compile="auto"``;
  bf16 = the ``mixed_bfloat16`` dtype policy.
* MONAI: ``monai.networks.nets.VNet(act="prelu")`` with dropout off (to match
  ours), ``monai.losses.DiceCELoss(softmax=True)``, cuDNN benchmark mode;
  bf16 = ``torch.autocast(dtype=torch.bfloat16)``.

A training step includes reading the loss back to the host; an inference step
returns softmax probabilities as float32 on the host, for both networks.
"float32" lets each framework use TF32 tensor cores where it does by default.
torch and monai are benchmark-only dependencies, not the project's.

    python bench/gpu_vnet_vs_monai.py                       # GPU: 128×128×64, batch 2 and 4
    python bench/gpu_vnet_vs_monai.py --device cpu --shape 32 32 16 --batches 2 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import bench_parser, dated_heading, environment, finish

HEADING = "## VNet vs MONAI VNet throughput (`bench/gpu_vnet_vs_monai.py`)"
INTRO = (
    "Adam training and inference throughput (volumes/s) and peak GPU memory of our Keras\n"
    "VNet (default `ModelConfig()`, 5 classes) and MONAI's `VNet(act='prelu')` in PyTorch\n"
    "at the same shape, batch and precision, in one run; random data already on the device."
)
REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


def random_batch(batch: int, shape: list[int], n_classes: int, seed: int = 0):
    """Channels-last float32 image ``(B, X, Y, Z, 1)`` and one-hot target ``(B, X, Y, Z, C)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *shape, 1)).astype("float32")
    y = np.eye(n_classes, dtype="float32")[rng.integers(0, n_classes, size=(batch, *shape))]
    return x, y


def timed_rate(step, batch: int, warmup: int, steps: int) -> float:
    """Volumes per second over ``steps`` calls of ``step()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def keras_peak_bytes() -> int | None:
    """Peak device memory the Keras backend's allocator has used, or None on the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.local_devices()[0]
        stats = device.memory_stats() if device.platform == "gpu" else None
        return int(stats["peak_bytes_in_use"]) if stats else None
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def run_ours(cfg: dict) -> dict:
    """Time our VNet on the Keras backend selected by ``KERAS_BACKEND``."""
    import keras

    from flare_helpers.config import ModelConfig
    from flare_helpers.model.losses import DiceCELoss
    from flare_helpers.model.runtime import describe_device
    from flare_helpers.model.vnet import count_parameters, vnet_from_config

    device = describe_device()
    if cfg["device"] == "gpu" and "GPU:" not in device:
        raise RuntimeError(f"--device gpu but {device}")
    keras.utils.set_random_seed(0)
    dtype = "mixed_bfloat16" if cfg["precision"] == "bf16" else None
    model = vnet_from_config(ModelConfig(), cfg["shape"], cfg["n_classes"], dtype=dtype)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=DiceCELoss(), jit_compile="auto")
    x, y = random_batch(cfg["batch"], cfg["shape"], cfg["n_classes"])
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    train = timed_rate(
        lambda: model.train_on_batch(x, y), cfg["batch"], cfg["warmup"], cfg["steps"]
    )
    peak = keras_peak_bytes()
    infer = timed_rate(lambda: model.predict_on_batch(x), cfg["batch"], cfg["warmup"], cfg["steps"])
    return {
        "train": train,
        "infer": infer,
        "peak": peak,
        "params": count_parameters(model),
        "device": f"ours: {device}",
    }


def run_monai(cfg: dict) -> dict:
    """Time MONAI's VNet in PyTorch (eager, cuDNN benchmark mode)."""
    import monai
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import VNet

    use_gpu = cfg["device"] == "gpu"
    if use_gpu and not torch.cuda.is_available():
        raise RuntimeError("--device gpu but torch sees no CUDA device")
    device = torch.device("cuda" if use_gpu else "cpu")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    net = VNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=cfg["n_classes"],
        act="prelu",
        dropout_prob_down=None,
        dropout_prob_up=(None, 0.0),
    ).to(device)
    loss_fn = DiceCELoss(softmax=True, include_background=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = random_batch(cfg["batch"], cfg["shape"], cfg["n_classes"])
    x = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous().to(device)
    y = torch.from_numpy(y).permute(0, 4, 1, 2, 3).contiguous().to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")

    def train_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def infer_step():
        with torch.inference_mode(), autocast:
            return torch.softmax(net(x), dim=1).float().cpu().numpy()

    if use_gpu:
        torch.cuda.reset_peak_memory_stats()
    net.train()
    train = timed_rate(train_step, cfg["batch"], cfg["warmup"], cfg["steps"])
    peak = int(torch.cuda.max_memory_allocated()) if use_gpu else None
    net.eval()
    infer = timed_rate(infer_step, cfg["batch"], cfg["warmup"], cfg["steps"])
    return {
        "train": train,
        "infer": infer,
        "peak": peak,
        "params": sum(p.numel() for p in net.parameters()),
        "device": f"MONAI: torch {torch.__version__}, monai {monai.__version__} on "
        + (torch.cuda.get_device_name(0) if use_gpu else "the CPU"),
    }


def worker_env(device: str, backend: str) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_worker(cfg: dict, backend: str, timeout: int) -> dict:
    """Run one configuration in a fresh interpreter; return its result or its error."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    try:
        done = subprocess.run(
            command,
            env=worker_env(cfg["device"], backend),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        oom = "out of memory" in done.stderr.lower() or "RESOURCE_EXHAUSTED" in done.stderr
        return {"error": "out of memory" if oom else tail[:200]}
    return json.loads(lines[-1])


def environment_line(results: list[dict], backend: str, device: str) -> str:
    """Host, versions and the devices each network reported running on."""
    seen = "; ".join(dict.fromkeys(r["device"] for r in results if "device" in r))
    gpu = "GPU run" if device == "gpu" else "no GPU used (CPU run)"
    return environment(seen, backend=backend, gpu=gpu)


def _rate(result: dict, key: str) -> str:
    return f"{result[key]:.2f}" if key in result else result.get("error", "n/a")


def _ratio(ours: dict, monai: dict, key: str) -> str:
    return f"{ours[key] / monai[key]:.2f}×" if key in ours and key in monai else "n/a"


def _count(n: int | None) -> str:
    return f"{n:,}" if n else "n/a"


def _peak(result: dict) -> str:
    peak = result.get("peak")
    return f"{peak / GIB:.2f}" if peak else "n/a"


def report(args, rows: list[tuple[int, str, dict, dict]]) -> str:
    shape = "×".join(map(str, args.shape))
    smoke = args.device == "cpu"
    title = "CPU smoke check, not a result" if smoke else "GPU"
    params = {}
    for _, _, ours, monai in rows:
        params.setdefault("ours", ours.get("params"))
        params.setdefault("monai", monai.get("params"))
    lines = [
        dated_heading(
            f"{title}, {shape}×1, {args.n_classes} classes, {args.steps} timed steps after "
            f"{args.warmup} warm-up, ours on {args.backend}"
        ),
        "",
        environment_line([r for row in rows for r in row[2:]], args.backend, args.device),
        "",
        f"Parameters: ours {_count(params['ours'])} · MONAI {_count(params['monai'])}",
        "",
        "| batch | precision | train ours | train MONAI | ours/MONAI | peak GiB ours "
        "| peak GiB MONAI | infer ours | infer MONAI | ours/MONAI |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, precision, ours, monai in rows:
        lines.append(
            f"| {batch} | {precision} | {_rate(ours, 'train')} | {_rate(monai, 'train')} "
            f"| {_ratio(ours, monai, 'train')} | {_peak(ours)} | {_peak(monai)} "
            f"| {_rate(ours, 'infer')} | {_rate(monai, 'infer')} | {_ratio(ours, monai, 'infer')} |"
        )
    lines += ["", "Throughput in volumes/s (higher is better)."]
    if smoke:
        lines.append(
            "This ran on the CPU at a toy size to check that the script works end to end; "
            "its numbers say nothing about GPU throughput."
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (128, 128, 64))
    parser.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--backend", choices=["jax", "tensorflow", "torch"], default="jax")
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first (default 3 on a GPU, 1 on the CPU)"
    )
    parser.add_argument("--n-classes", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 3 if args.device == "gpu" else 1

    if args.worker:
        cfg = json.loads(args.worker)
        result = run_ours(cfg) if cfg["network"] == "ours" else run_monai(cfg)
        print(json.dumps(result), flush=True)
        return 0

    rows = []
    for precision in args.precisions:
        for batch in args.batches:
            results = []
            for network in ("ours", "monai"):
                cfg = {
                    "network": network,
                    "device": args.device,
                    "shape": args.shape,
                    "batch": batch,
                    "precision": precision,
                    "n_classes": args.n_classes,
                    "steps": args.steps,
                    "warmup": args.warmup,
                }
                result = run_worker(cfg, args.backend, args.timeout)
                results.append(result)
                summary = result.get("error") or (
                    f"train {result['train']:.2f} vol/s, infer {result['infer']:.2f} vol/s"
                )
                print(f"{network} batch {batch} {precision}: {summary}", flush=True)
            rows.append((batch, precision, *results))
    finish(report(args, rows), args.output, HEADING, INTRO, append=not args.no_append)
    return 0 if all("error" not in r for row in rows for r in row[2:]) else 1


if __name__ == "__main__":
    sys.exit(main())
