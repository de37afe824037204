"""The default run's budget and its estimated time on a Colab T4, from FLOPs (no GPU needed).

Counts the default VNet's convolution FLOPs at 128×128×64 (:func:`flare_helpers.train.budget.vnet_flops`)
and turns the run's steps into hours on a T4 from its published peak (65 TFLOP/s
float16 tensor cores, 8.1 TFLOP/s float32) at the assumed sustained share
(:data:`flare_helpers.train.budget.GPU_EFFICIENCY`), for batch 2 and 4 in both precisions,
beside nnU-Net's budget and the old default's (100 epochs of one patch per case).

    python bench/training_plan.py            # appends to BENCHMARKS.md
"""

from __future__ import annotations

from _report import bench_parser, dated_heading, environment, finish

from flare_helpers.config import Config, load_config
from flare_helpers.train.budget import GPU_EFFICIENCY, T4, plan_training, vnet_flops

HEADING = "## Training budget and T4 time, planned (`bench/training_plan.py`)"
INTRO = (
    "Steps and patches of a run, and its time on a Colab T4 estimated from the VNet's\n"
    "convolution FLOPs and the T4's published peak at an assumed sustained share; a\n"
    "plan to check against the first epoch's measured time, not a GPU measurement."
)
#: FLARE22's 50 labelled cases with the default 70/10/20 split.
TRAIN_CASES, VAL_CASES = 35, 5


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, Config().preprocess.target_shape)
    args = parser.parse_args(argv)
    val_patches = VAL_CASES * 4  # one validation patch per organ and case
    forward = vnet_flops(Config().model, args.shape, 5) / 1e12
    runs = [
        (
            "old default (100 epochs × 1 patch per case, batch 4, float32)",
            ["train.recipe=seed", "train.batch_size=4", "train.mixed_precision=none"],
        ),
        ("new default (batch 2, mixed_float16)", []),
        ("new, batch 2, float32", ["train.mixed_precision=none"]),
        ("new, batch 4, mixed_float16", ["train.batch_size=4"]),
        ("nnU-Net's budget (1000 epochs), batch 2, mixed_float16", ["train.epochs=1000"]),
    ]
    lines = [
        dated_heading(
            f"default VNet, {'×'.join(map(str, args.shape))}, FLARE22's 35 training cases"
        ),
        "",
        environment(),
        "",
        f"Forward pass: {forward:.3f} TFLOP per patch; a training step ≈ 3× per patch. "
        f"T4: {T4.half_tflops} TFLOP/s float16, {T4.float32_tflops} float32; "
        f"sustained share assumed: {GPU_EFFICIENCY['half']:.0%} in half precision, "
        f"{GPU_EFFICIENCY['float32']:.0%} in float32.",
        "",
        "| run | steps | patches | s/step | hours on a T4 | loader patches/s needed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, overrides in runs:
        plan = plan_training(load_config(None, overrides), TRAIN_CASES, val_patches)
        lines.append(
            f"| {name} | {plan.steps:,} | {plan.patches:,} | {plan.seconds_per_step:.2f} "
            f"| {plan.hours:.1f} | {plan.samples_per_second:.1f} |"
        )
    lines.append("")
    finish("\n".join(lines), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
