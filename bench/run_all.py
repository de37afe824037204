"""Run every benchmark in bench/ (``make bench``); each prints its table and appends to BENCHMARKS.md.

The CPU benchmarks run one after the other (they time the same cores), each
in its own interpreter. ``--gpu`` adds the GPU ones (``gpu_vnet_vs_monai.py``),
which need a CUDA GPU with torch and monai installed; without them they are
skipped with the reason. ``--smoke`` runs every script at a toy size and
appends nothing: a quick check that they all still work.

    python bench/run_all.py                      # every CPU benchmark, real sizes
    python bench/run_all.py --smoke              # toy sizes, nothing appended (~3 min)
    python bench/run_all.py --only predict_ct preprocess_recipe
    python bench/run_all.py --gpu                # on a CUDA machine with torch + monai
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import load_average

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
GPU_SCRIPTS = frozenset({"gpu_vnet_vs_monai"})
#: Toy-size arguments per script for ``--smoke`` (scripts not listed run with none).
SMOKE_ARGS: dict[str, str] = {
    "learning_checks": "--recipes resize",
    "input_pipeline": "--cases 2 --shape 64 64 32 --target 32 32 16 --epochs 1 --workers 1 "
    "--repeats 2",
    "vnet_memory": "--shape 32 32 16 --batches 1 --precisions float32",
    "render_video": "--shape 96 96 40 --seconds 1 --fps 4 --size 320 160",
    "preprocess_recipe": "--shape 96 96 40 --target 32 32 16 --repeats 1 --set-cases 2",
    "predict_ct": "--shape 96 96 40 --target 32 32 16 --set model.base_filters=4 --repeats 1 "
    "--cli-repeats 1 --backends tensorflow",
    "gpu_vnet_vs_monai": "--shape 32 32 16 --batches 2 --steps 2 --precisions fp32",
    "scan_range": "--minutes 0.2 --cases 6 --test-cases 2 --shape 64 64 32",
    "pseudolabel_few_labels": "--minutes 0.2 --labelled 3 --unlabelled 4 --test-cases 2 "
    "--shape 64 64 32 --variants scratch",
    "pseudolabel_throughput": "--cases 1 --shape 96 96 40 --set model.base_filters=4 "
    "preprocess.target_shape=[32,32,16]",
    "sliding_window_speed": "--shape 96 96 40 --set model.base_filters=4 "
    "--set preprocess.target_shape=[32,32,16]",
    "predict_localized": "--shape 160 160 40 --train-cases 4 --loc-epochs 2 "
    "--set model.base_filters=4 preprocess.target_shape=[32,32,16]",
    "localized_accuracy": "--minutes 0.3 --cases 6 --test-cases 2 --shape 96 96 40 --loc-epochs 2",
}


def benchmarks() -> list[str]:
    """Names of the benchmark scripts in bench/ (``_*.py`` and this runner excluded)."""
    return sorted(
        p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.stem != "run_all"
    )


def gpu_missing() -> str | None:
    """Why the GPU benchmarks cannot run here, or None when torch, monai and CUDA are there."""
    missing = [m for m in ("torch", "monai") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (benchmark-only: pip install torch monai)"
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "True":
        return "no CUDA GPU visible to torch"
    return None


def run_script(name: str, extra: list[str]) -> tuple[int, float]:
    """Run ``bench/<name>.py extra…`` from the repository root; exit code and minutes."""
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    print(f"\n=== {name} {' '.join(extra)}  (load average {load_average()})", flush=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *extra], cwd=REPO, env=env, check=False
    )
    return done.returncode, (time.perf_counter() - start) / 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="also run the GPU benchmarks")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, append nothing")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="leave these out")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args(argv)

    names = benchmarks()
    unknown = sorted((set(args.only or []) | set(args.skip)) - set(names))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have {', '.join(names)})")
    selected = [n for n in names if (not args.only or n in args.only) and n not in args.skip]
    gpu_reason = gpu_missing() if args.gpu and GPU_SCRIPTS & set(selected) else None
    summary: list[tuple[str, str, float]] = []
    for name in selected:
        skip = None
        if name in GPU_SCRIPTS:
            skip = gpu_reason if args.gpu else "GPU benchmark (pass --gpu on a CUDA machine)"
        if skip:
            print(f"\n=== {name}: skipped, {skip}", flush=True)
            summary.append((name, f"skipped: {skip}", 0.0))
            continue
        extra = SMOKE_ARGS.get(name, "").split() if args.smoke else []
        extra += ["--output", str(args.output)]
        if args.smoke or args.no_append:
            extra.append("--no-append")
        code, minutes = run_script(name, extra)
        summary.append((name, "ok" if code == 0 else f"FAILED (exit code {code})", minutes))

    print("\n| benchmark | result | minutes |\n|---|---|---:|")
    for name, result, minutes in summary:
        print(f"| {name} | {result} | {minutes:.1f} |")
    print(f"load average at the end: {load_average()}")
    return 1 if any(result.startswith("FAILED") for _, result, _ in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
