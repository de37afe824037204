"""End-to-end ``flare-predict`` of one CT-sized volume with the default VNet, per stage and in total.

Issue "inference speed". Saves an untrained VNet with the default settings
(``ModelConfig()``, 128×128×64 grid, 5 classes) and its ``config.yaml`` in a
temporary run folder, as ``tests/conftest.py``'s ``tiny_run`` does, writes one
512×512×110 int16 phantom CT (LPS order), then for each Keras backend:

* in a fresh interpreter: seconds of ``infer.load_predictor`` and, from
  ``infer.StageTimer``, of each stage of ``infer.predict_files`` (load,
  preprocess, network, resample, write) for the first prediction in the
  process (TensorFlow traces its graph, JAX compiles) and the median of
  ``--repeats`` later ones;
* the wall seconds and peak RSS of the real ``flare-predict`` command in a
  subprocess (Python start-up, imports, model load and one prediction),
  median of ``--cli-repeats``.

Target: ``flare-predict`` of one 512×512×110 CT in ≤ 10 s on the 2-core CPU
(TensorFlow, the default backend).

    python bench/predict_ct.py                       # TensorFlow, appends
    python bench/predict_ct.py --backends tensorflow jax
    python bench/predict_ct.py --shape 96 96 40 --target 32 32 16 \\
        --set model.base_filters=4 --repeats 1 --cli-repeats 1 --backends tensorflow --no-append
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _report import (
    bench_parser,
    cumulative_seconds,
    dated_heading,
    environment,
    finish,
    load_average,
    run_worker,
)

HEADING = "## CT inference end to end (`bench/predict_ct.py`)"
INTRO = (
    "`flare-predict` of one 512×512×110 int16 CT with the default VNet (`ModelConfig()`,\n"
    "128×128×64, 5 classes, untrained weights): per-stage seconds from `infer.StageTimer`\n"
    "inside one process, and the wall time of the whole command (start-up, imports, model\n"
    "load, one prediction) in a subprocess. Target: ≤ 10 s on the 2-core CPU (TensorFlow).\n"
    "Untrained weights predict organ classes scattered over the whole body crop, so the\n"
    "`resample` stage (which keeps each organ's largest connected component) labels more\n"
    "voxels than it would for a trained model's compact organs."
)
STAGES = ("load", "preprocess", "network", "resample", "write")
#: Parts of the resample stage, timed by cProfile in one more prediction.
RESAMPLE_PARTS = ("resize_probabilities_argmax", "keep_largest_component")
TARGET_S = 10.0
MB = 1e6


def make_run(run: Path, target: Sequence[int], overrides: Sequence[str]) -> dict:
    """Save an untrained VNet (``best.keras``) and its ``config.yaml`` in ``run``."""
    from flare_helpers.config import load_config, save_config
    from flare_helpers.data.labels import OrganSet
    from flare_helpers.model.vnet import count_parameters
    from flare_helpers.train.callbacks import save_model_atomic
    from flare_helpers.train.loop import build_and_compile, set_determinism

    cfg = load_config(
        None,
        [f"preprocess.target_shape={list(target)}", *overrides, f"train.output_dir={run}"],
    )
    set_determinism(0, deterministic=False)
    model = build_and_compile(cfg, OrganSet.from_names(cfg.data.organs).n_classes)
    save_model_atomic(model, run / "best.keras")
    save_config(cfg, run / "config.yaml")
    return {"params": count_parameters(model), "model_mb": (run / "best.keras").stat().st_size / MB}


def write_ct(folder: Path, shape: Sequence[int], seed: int) -> Path:
    """Write the image of phantom case 1 (LPS order) and return its path."""
    from flare_helpers.phantoms.synthetic import case_files

    name, payload = next(iter(case_files(seed, 1, shape, family="simple").items()))
    path = folder / Path(name).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def stage_worker(cfg: dict) -> dict:
    """In a fresh interpreter: import, model load and per-stage prediction seconds."""
    from flare_helpers.infer.predict import StageTimer, load_predictor, plan_outputs, predict_files
    from flare_helpers.model.runtime import describe_device

    start = time.perf_counter()
    import keras  # noqa: F401  (what load_predictor imports first: the backend)

    from flare_helpers.model import losses, metrics, vnet  # noqa: F401

    imports_s = time.perf_counter() - start
    start = time.perf_counter()
    predictor = load_predictor(cfg["model"])
    load_s = time.perf_counter() - start
    pairs = plan_outputs(cfg["input"], cfg["output"])
    runs = []
    for _ in range(1 + cfg["repeats"]):
        timer = StageTimer()
        start = time.perf_counter()
        predict_files(predictor, pairs, overwrite=True, progress=False, timer=timer)
        runs.append({**timer.seconds, "total": time.perf_counter() - start})
    warm = {key: statistics.median(r[key] for r in runs[1:]) for key in runs[0]} if runs[1:] else {}
    profile = cProfile.Profile()
    profile.runcall(predict_files, predictor, pairs, overwrite=True, progress=False)
    stats = pstats.Stats(profile).stats
    for name in RESAMPLE_PARTS:
        seconds = cumulative_seconds(stats, "flare_helpers/", name, None)
        if seconds is not None:
            warm[name] = seconds
    return {
        "imports": imports_s,
        "load_model": load_s,
        "first": runs[0],
        "warm": warm,
        "device": describe_device(),
    }


def backend_env(backend: str) -> dict[str, str]:
    """This environment with ``KERAS_BACKEND=backend``."""
    return {**os.environ, "KERAS_BACKEND": backend}


def predict_command() -> list[str]:
    """The installed ``flare-predict`` next to this Python, else its module form."""
    script = Path(sys.executable).with_name("flare-predict")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flare_helpers", "predict"]


def run_cli(args: list[str], backend: str, log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``flare-predict`` run; raises if it fails."""
    with log.open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            [*predict_command(), *args], env=backend_env(backend), stdout=out, stderr=out
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"flare-predict failed on {backend}: {log.read_text()[-800:]}")
    return seconds, usage.ru_maxrss * 1024 / MB


def measure(backend: str, run: Path, ct: Path, out: Path, args) -> dict:
    """Stage seconds in one process, then the CLI's wall seconds, for ``backend``."""
    cfg = {"model": str(run / "best.keras"), "input": str(ct), "output": str(out)}
    result = run_worker(__file__, {**cfg, "repeats": args.repeats}, backend_env(backend))
    cli = ["--model-path", cfg["model"], "--input", str(ct), "--output", str(out), "--overwrite"]
    runs = [run_cli(cli, backend, run / f"cli-{backend}.log") for _ in range(args.cli_repeats)]
    result["cli_s"] = [s for s, _ in runs]
    result["cli_rss_mb"] = max(m for _, m in runs)
    print(f"{backend}: flare-predict {result['cli_s']} s", flush=True)
    return result


def _row(label: str, cells: Sequence[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def report(args, made: dict, results: dict[str, dict], load_before: str) -> str:
    """Markdown block of one run."""
    shape, target = "×".join(map(str, args.shape)), "×".join(map(str, args.target))
    names = list(results)
    columns = [(b, kind) for b in names for kind in ("first", "warm")]
    overrides = f", overrides {' '.join(args.set)}" if args.set else ""
    lines = [
        dated_heading(
            f"one {shape} CT → {target}, {made['params']:,}-parameter VNet{overrides}, "
            f"{' and '.join(names)}"
        ),
        "",
        environment(backend=" / ".join(names)),
        f"(load average before the runs {load_before}); model file {made['model_mb']:.0f} MB; "
        + "; ".join(results[b]["device"] for b in names),
        "",
        _row(
            "seconds",
            [f"{b}, {'first call' if k == 'first' else 'later (median)'}" for b, k in columns],
        ),
        "|---|" + "---:|" * len(columns),
    ]
    labels = {"total": "predict_files total"}
    labels |= {name: f"resample: `{name}` (one profiled run)" for name in RESAMPLE_PARTS}
    for stage in (*STAGES[:4], *RESAMPLE_PARTS, *STAGES[4:], "total"):
        cells = [
            f"{results[b][k][stage]:.2f}" if stage in results[b][k] else "" for b, k in columns
        ]
        lines.append(_row(labels.get(stage, stage), cells))
    for key, label in (("imports", "`import keras` (backend)"), ("load_model", "`load_predictor`")):
        lines.append(
            _row(label, [f"{results[b][key]:.2f}" if k == "first" else "" for b, k in columns])
        )
    cli = {b: statistics.median(results[b]["cli_s"]) for b in names}
    lines += [
        "",
        _row("`flare-predict` command (fresh process)", names),
        "|---|" + "---:|" * len(names),
        _row("wall seconds, median", [f"**{cli[b]:.1f}**" for b in names]),
        _row(
            "wall seconds, all runs",
            [", ".join(f"{s:.1f}" for s in results[b]["cli_s"]) for b in names],
        ),
        _row("peak RSS, MB", [f"{results[b]['cli_rss_mb']:.0f}" for b in names]),
        _row(
            f"≤ {TARGET_S:g} s target", ["met" if cli[b] <= TARGET_S else "missed" for b in names]
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (512, 512, 110))
    parser.add_argument("--target", type=int, nargs=3, default=[128, 128, 64], metavar="N")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (smoke tests)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="predictions after the first")
    parser.add_argument("--cli-repeats", type=int, default=3, help="flare-predict runs")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["tensorflow"],
        choices=["tensorflow", "jax"],
        help="Keras backends, each in its own processes (jax: add it, ~10 min on 2 cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(stage_worker(json.loads(args.worker))), flush=True)
        return 0

    with tempfile.TemporaryDirectory(prefix="flare-bench-predict-") as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        made = make_run(run, args.target, args.set)
        print(f"model saved in {time.perf_counter() - start:.0f} s", flush=True)
        ct = write_ct(Path(tmp) / "ct", args.shape, args.seed)
        load_before = load_average()
        results = {b: measure(b, run, ct, Path(tmp) / "pred", args) for b in args.backends}
    block = report(args, made, results, load_before)
    finish(block, args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
