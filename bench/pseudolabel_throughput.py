"""Pseudo-labelling throughput: cases per hour on this CPU (measured) and on a T4 (estimated),
with the wall time and Drive space for 200 and 2,000 FLARE22 scans.

Issue "pseudo-labels". Saves an untrained VNet with the default settings (spacing mode,
128×128×64 windows; a window costs the same whatever the weights) in a temporary run
folder, writes ``--cases`` unlabelled CT-sized phantoms (512×512×110) as FLARE22's
unlabelled zip, and runs ``pseudolabel`` on them: the measured seconds per case give the
CPU rate. One case is also predicted with ``infer.StageTimer`` to split the network time
from the rest (load, preprocessing, mapping back, confidence, writing), which a Colab T4
runtime still does on its 2 CPU cores.

T4 estimate: the network's FLOPs per case (convolutions counted layer by layer × the
sliding windows the case needs) over an effective T4 rate (``--t4-tflops``, default 4: half
of the 8.1 TFLOPS fp32 peak), plus the measured CPU seconds outside the network.

Drive space per scan: the kept CT copied into ``P/images`` (``--ct-mb``, default 125 MB:
the 2,000 unlabelled scans are about 250 GB), its label and prediction (measured), and
its cache entry (measured on the phantom: float16 image + uint8 label on the network grid).

    python bench/pseudolabel_throughput.py                  # 3 CT-sized phantoms, appends
    python bench/pseudolabel_throughput.py --cases 1 --shape 96 96 40 --no-append   # smoke
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from pathlib import Path

from _report import bench_parser, dated_heading, environment, finish

from flare_helpers.config import PseudoConfig

HEADING = "## Pseudo-labelling throughput (`bench/pseudolabel_throughput.py`)"
INTRO = (
    "`pseudolabel` with the default VNet and settings (spacing mode, 128×128×64 windows,\n"
    "overlap 0.5) on CT-sized unlabelled phantoms read from their zip. CPU: measured. T4:\n"
    "network FLOPs over an effective rate plus the measured CPU time outside the network.\n"
    "Drive: the kept CT copy, its label and prediction, and its cache entry."
)


def conv_flops(model) -> float:
    """Multiply-adds × 2 of every 3D convolution (and transposed one) of one forward pass."""
    import math

    total = 0.0
    for layer in model._flatten_layers(include_self=False):
        kind = type(layer).__name__
        if kind not in ("Conv3D", "Conv3DTranspose"):
            continue
        kernel = math.prod(layer.kernel_size)
        in_ch = layer.input.shape[-1]
        out_shape = layer.output.shape
        if kind == "Conv3D":
            total += 2.0 * math.prod(out_shape[1:4]) * kernel * in_ch * out_shape[-1]
        else:  # every input voxel scatters a kernel
            total += 2.0 * math.prod(layer.input.shape[1:4]) * kernel * in_ch * out_shape[-1]
    return total


def run(args, tmp: Path) -> dict:
    from flare_helpers.config import PseudoConfig, load_config, save_config
    from flare_helpers.data.cases import Case
    from flare_helpers.data.nifti import load_image, save_like
    from flare_helpers.data.pseudo_folder import PseudoLayout
    from flare_helpers.infer.predict import StageTimer, load_predictor, predict_volume
    from flare_helpers.model.sliding_window import window_count
    from flare_helpers.phantoms.synthetic import write_unlabelled
    from flare_helpers.preprocess.pipeline import PreprocessParams, build_entry, prepare_image
    from flare_helpers.pseudolabel.teacher import pseudolabel
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile, set_determinism

    run_dir = tmp / "run"
    run_dir.mkdir()
    cfg = load_config(None, [*args.set, f"train.output_dir={run_dir}"])
    set_determinism(0, deterministic=True)
    net = build_and_compile(cfg, 5)
    save_model_atomic(net, run_dir / "best.keras")
    save_config(cfg, run_dir / "config.yaml")
    zip_path, _ = write_unlabelled(
        tmp / "unl", args.cases, 4, tuple(args.shape), progress=False, family="ct"
    )

    start = time.perf_counter()
    result = pseudolabel(
        run_dir / "best.keras", zip_path, tmp / "P", PseudoConfig(keep_fraction=1.0),
        progress=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    with (tmp / "P" / "confidence.csv").open() as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]

    layout = PseudoLayout(tmp / "P")
    case_id = result.kept[0]
    predictor = load_predictor(run_dir / "best.keras")
    timer = StageTimer()
    with timer.stage("load"):
        image = load_image(layout.image(case_id))
    labels = predict_volume(predictor, image, timer)  # the graph is traced already
    with timer.stage("write"):
        save_like(labels, image, tmp / "again.nii.gz")
    x, _ = prepare_image(image, predictor.params)
    windows = (
        window_count(x.shape, predictor.params.target_shape, predictor.settings.overlap)
        if predictor.params.mode == "spacing"
        else 1
    )
    entry = build_entry(
        Case(case_id, layout.image(case_id), layout.label(case_id)),
        tmp / "cache",
        PreprocessParams.from_config(cfg),
    )
    cache_mb = (
        sum(p.stat().st_size for p in (tmp / "cache" / "cases" / case_id).glob("*.npy")) / 2**20
    )
    return {
        "per_case_s": statistics.median(seconds),
        "wall_s": wall,
        "cases": len(seconds),
        "stages": timer.seconds,
        "windows": windows,
        "grid": entry["grid_shape"],
        "window_tflop": conv_flops(net) / 1e12,
        "ct_mb_phantom": layout.image(case_id).stat().st_size / 2**20,
        "label_mb": layout.label(case_id).stat().st_size / 2**20,
        "cache_mb": cache_mb,
    }


def report(out: dict, args) -> str:
    stages = out["stages"]
    network = stages["network"]
    other = sum(v for k, v in stages.items() if k != "network")
    passes = 1 if PseudoConfig().tta == "none" else 2  # the twin prediction behind agreement
    t4_network = passes * out["windows"] * out["window_tflop"] / args.t4_tflops
    t4_case = t4_network + other
    per_scan_mb = args.ct_mb + 2 * out["label_mb"] + out["cache_mb"]
    lines = [
        dated_heading(
            f"{out['cases']} unlabelled phantoms of {'×'.join(map(str, args.shape))}, "
            f"network grid {'×'.join(map(str, out['grid']))}, {out['windows']} windows per case"
        ),
        "",
        environment(),
        "",
        "| where | s per case | cases per hour | 200 scans | 2,000 scans |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds in (("this CPU (measured)", out["per_case_s"]), ("T4 (estimated)", t4_case)):
        lines.append(
            f"| {name} | {seconds:.1f} | {3600 / seconds:.0f} | {200 * seconds / 3600:.1f} h | "
            f"{2000 * seconds / 3600:.1f} h |"
        )
    lines += [
        "",
        f"- CPU per case: network {network:.1f} s, the rest {other:.1f} s "
        f"(stages of one case: {', '.join(f'{k} {v:.1f} s' for k, v in out['stages'].items())})",
        f"- network: {out['window_tflop']:.3g} TFLOP per window × {out['windows']} windows; "
        f"T4 at {args.t4_tflops:g} TFLOPS effective, {passes} passes: {t4_network:.1f} s per case",
        f"- Drive per kept scan: CT copy {args.ct_mb:g} MB (the phantom's: "
        f"{out['ct_mb_phantom']:.1f} MB) + label and prediction {2 * out['label_mb']:.2f} MB + "
        f"cache entry {out['cache_mb']:.1f} MB = {per_scan_mb:.0f} MB; 200 scans "
        f"{200 * per_scan_mb / 1024:.0f} GB, 2,000 scans {2000 * per_scan_mb / 1024:.0f} GB "
        "(all kept; keep_fraction 0.5 halves the CT copies and cache entries)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--cases", type=int, default=3, help="unlabelled phantoms")
    parser.add_argument("--ct-mb", type=float, default=125.0, help="MB of one real unlabelled CT")
    parser.add_argument("--t4-tflops", type=float, default=4.0, help="effective T4 TFLOPS")
    parser.add_argument("--set", nargs="*", default=[], help="section.key=value settings")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-pseudo-speed-") as tmp:
        out = run(args, Path(tmp))
    finish(report(out, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
