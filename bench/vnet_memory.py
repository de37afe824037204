"""Peak memory of one VNet training step (forward, backward, Adam update), estimated by XLA.

Question: does training the default VNet at 128×128×64, batch 4, fit a 16 GB GPU?
This machine has no GPU, so the script compiles the whole training step with
the JAX backend and reads XLA's buffer assignment
(``jax.jit(step).lower(...).compile().memory_analysis()``): argument bytes
(weights, Adam moments, the batch) + output bytes + temporaries − bytes that
the donated state shares with the outputs. XLA on CPU plans buffers like XLA on
GPU, but the GPU adds its own costs (CUDA context, cuDNN workspaces, allocator
fragmentation), so this is an estimate, not a GPU measurement. An analytic
estimate (every layer output stored once + 16 bytes per weight + the batch)
is printed beside it as a cross-check, and used alone if the XLA memory
analysis is unavailable. XLA on the CPU runs bfloat16 convolutions in float32,
so its mixed_bfloat16 figures overstate a GPU's.

    python bench/vnet_memory.py                 # 128×128×64, batch 4 and 2, fp32 and bf16
    python bench/vnet_memory.py --shape 64 64 32 --batches 1 --no-append
"""

from __future__ import annotations

import math
import os
import sys
import time

from _report import bench_parser, dated_heading, environment, finish

HEADING = "## VNet training memory (`bench/vnet_memory.py`)"
INTRO = (
    "Peak memory of one Adam training step (forward + backward + update, Dice+CE loss,\n"
    "float32 one-hot targets) of the default VNet (`ModelConfig()`, 5 classes), from XLA's\n"
    "buffer assignment of the compiled JAX step on the CPU. An estimate, not a GPU\n"
    "measurement: a GPU adds the CUDA context, cuDNN workspaces and allocator slack\n"
    "(budgeted below as 1.5 GiB)."
)
GIB = 2**30
GPU_OVERHEAD_GIB = 1.5
#: Usable memory of a "16 GB" card: a Colab T4 reports 15 GiB, a V100-16GB 15.8 GiB.
USABLE_16GB_GIB = 15.0


def use_jax_backend() -> None:
    """Select Keras' JAX backend; must run before the first ``import keras``."""
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != "jax":
        raise RuntimeError("keras was imported before the JAX backend was selected")
    os.environ["KERAS_BACKEND"] = "jax"


def analytic_bytes(model, batch: int, y_bytes: int) -> dict[str, int]:
    """Layer outputs stored once, weights + gradients + Adam moments (16 B/param), the batch."""
    activations = 0
    for layer in model.layers[1:]:
        size = math.prod(layer.output.shape[1:]) * batch
        activations += size * (4 if layer.compute_dtype == "float32" else 2)
    params = sum(math.prod(w.shape) for w in model.weights)
    return {"activations": activations, "state": 16 * params, "batch": y_bytes}


def xla_step_memory(model, loss, x_spec, y_spec) -> dict[str, int] | None:
    """XLA's buffer sizes for one jitted Adam step on ``model``; None if not reported."""
    import jax
    import keras

    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, y_pred), non_trainable

    def step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (value, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, x, y
        )
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return value, (trainable, non_trainable, opt_vars)

    def specs(variables):
        return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in variables]

    state = (
        specs(model.trainable_variables),
        specs(model.non_trainable_variables),
        specs(optimizer.variables),
    )
    compiled = jax.jit(step, donate_argnums=0).lower(state, x_spec, y_spec).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    sizes = {
        "argument": stats.argument_size_in_bytes,
        "output": stats.output_size_in_bytes,
        "alias": stats.alias_size_in_bytes,
        "temp": stats.temp_size_in_bytes,
    }
    sizes["peak"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
    sizes["xla_peak"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    return sizes


def measure(shape: list[int], batch: int, precision: str, n_classes: int) -> dict:
    """Build the default VNet under ``precision`` and estimate one training step's memory."""
    import jax
    import keras

    from flare_helpers.config import ModelConfig
    from flare_helpers.model.losses import DiceCELoss
    from flare_helpers.model.vnet import count_parameters, vnet_from_config

    keras.backend.clear_session()
    dtype = None if precision == "float32" else precision
    model = vnet_from_config(ModelConfig(), shape, n_classes, dtype=dtype)
    x_spec = jax.ShapeDtypeStruct((batch, *shape, 1), "float32")
    y_spec = jax.ShapeDtypeStruct((batch, *shape, n_classes), "float32")
    y_bytes = (1 + n_classes) * batch * math.prod(shape) * 4
    start = time.perf_counter()
    xla = xla_step_memory(model, DiceCELoss(), x_spec, y_spec)
    return {
        "batch": batch,
        "precision": precision,
        "params": count_parameters(model),
        "xla": xla,
        "analytic": analytic_bytes(model, batch, y_bytes),
        "compile_s": time.perf_counter() - start,
    }


def environment_line() -> str:
    import jax

    return environment(f"jax {jax.__version__} on {jax.devices()[0].platform}", backend="jax")


def verdict(peak_gib: float) -> str:
    need = peak_gib + GPU_OVERHEAD_GIB
    fits = "yes" if need <= USABLE_16GB_GIB else "no"
    return f"{fits} ({need:.1f} of {USABLE_16GB_GIB:.0f} GiB)"


def report(args, rows: list[dict]) -> str:
    shape = "×".join(map(str, args.shape))
    lines = [
        dated_heading(f"default VNet, {shape}×1, {args.n_classes} classes"),
        "",
        environment_line(),
        "",
        "| batch | precision | params | XLA arguments | XLA temporaries | XLA outputs − aliased "
        "| **XLA peak** | analytic (activations + 16 B/param + batch) | fits 16 GB GPU? |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        a = row["analytic"]
        analytic = sum(a.values()) / GIB
        analytic_text = (
            f"{analytic:.2f} GiB ({a['activations'] / GIB:.2f} + {a['state'] / GIB:.2f} "
            f"+ {a['batch'] / GIB:.2f})"
        )
        xla = row["xla"]
        if xla is None:
            cells = "n/a | n/a | n/a | n/a"
            peak = analytic
        else:
            peak = xla["peak"] / GIB
            cells = (
                f"{xla['argument'] / GIB:.2f} GiB | {xla['temp'] / GIB:.2f} GiB | "
                f"{(xla['output'] - xla['alias']) / GIB:.2f} GiB | **{peak:.2f} GiB**"
            )
        lines.append(
            f"| {row['batch']} | {row['precision']} | {row['params']:,} | {cells} "
            f"| {analytic_text} | {verdict(peak)} |"
        )
    lines += [
        "",
        f"'Fits' means XLA peak + {GPU_OVERHEAD_GIB} GiB (CUDA context, cuDNN workspace, "
        f"allocator slack) ≤ {USABLE_16GB_GIB:.0f} GiB, the usable memory of a Colab T4. "
        "XLA peak = arguments + outputs − outputs aliased to donated arguments + temporaries. "
        "The analytic column is a rough cross-check (each layer output stored once, weights + "
        "gradients + Adam moments at 16 B/param, the batch); XLA's plan is higher because the "
        "backward pass also holds activation gradients and convolution temporaries. XLA on the "
        "CPU has no bfloat16 convolution and runs them in float32 (the optimised HLO shows "
        "every bf16 convolution converted to f32), so the mixed_bfloat16 rows overstate what "
        "a GPU, which convolves in bf16, needs; take the float32 rows as the upper bound.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (128, 128, 64))
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 2])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
    )
    parser.add_argument("--n-classes", type=int, default=5)
    args = parser.parse_args(argv)
    use_jax_backend()

    rows = []
    for precision in args.precisions:
        for batch in args.batches:
            row = measure(args.shape, batch, precision, args.n_classes)
            peak = row["xla"]["peak"] / GIB if row["xla"] else float("nan")
            print(
                f"batch {batch} {precision}: XLA peak {peak:.2f} GiB "
                f"(compiled in {row['compile_s']:.0f} s)",
                flush=True,
            )
            rows.append(row)
    finish(report(args, rows), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
