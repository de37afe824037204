"""Does a time limit hold? ``flare-train`` with a limit on CT-sized phantoms, then ``flare-predict``.

12 CT-like phantoms of 256×256×96 (``flare-synth``'s ``ct`` family), the demo's light
VNet and grid (``notebooks/params/demo.yaml``), the default localiser (its share of the
limit: ``localizer.time_share``), ``train.time_limit_minutes=--minutes``. Measures the
wall time of ``flare-preprocess`` and of ``flare-train`` (a subprocess each, as a user
runs them), the lines that say how the run ended and which model it left, the plan's
prediction, and that ``flare-predict`` labels a CT with the model left.
Target: a 4-minute limit ends ``flare-train`` within 300 s on any machine.

    python bench/time_limit.py                 # 4 minutes, appends to BENCHMARKS.md
    python bench/time_limit.py --minutes 1 --cases 6 --shape 128 128 48 --no-append
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from _report import bench_parser, dated_heading, environment, finish

from flare_helpers.data.extract import extract_zip
from flare_helpers.phantoms.synthetic import write_synthetic_zip

HEADING = "## A time limit that holds (`bench/time_limit.py`)"
INTRO = (
    "`flare-train` with `train.time_limit_minutes` on CT-like phantoms (the demo's light VNet\n"
    "and 3×3×6 mm grid, the default localiser), timed as a subprocess after `flare-preprocess`;\n"
    "then `flare-predict` with the model it left. Target: a 4-minute limit ends within 300 s."
)
DEMO = Path(__file__).resolve().parents[1] / "notebooks" / "params" / "demo.yaml"
BIN = Path(sys.executable).parent


def timed(command: list[str]) -> tuple[float, str]:
    """Run a console command; (wall seconds, everything it printed). Fails on exit ≠ 0."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    said = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {said[-2000:]}")
    return seconds, said


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (256, 256, 96))
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--minutes", type=float, default=4.0)
    args = parser.parse_args(argv)
    demo = yaml.safe_load(DEMO.read_text())["common"]["overrides"]
    with tempfile.TemporaryDirectory(prefix="flare-bench-limit-") as tmp_name:
        tmp = Path(tmp_name)
        data = extract_zip(
            write_synthetic_zip(tmp, args.cases, seed=5, shape=tuple(args.shape), progress=False),
            tmp / "data",
            progress=False,
        )
        config = tmp / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data": {"data_dir": str(data), "cache_dir": str(tmp / "cache")},
                    "train": {"output_dir": str(tmp / "run")},
                }
            )
        )
        settings = [*demo, f"train.time_limit_minutes={args.minutes}", "train.epochs=100"]
        prep_s, _ = timed(
            [str(BIN / "flare-preprocess"), "--data", str(data), "--cache", str(tmp / "cache"),
             "--config", str(config)]
        )  # fmt: skip
        train_s, said = timed([str(BIN / "flare-train"), "--config", str(config), *settings])
        ended = [
            line
            for line in said.splitlines()
            if "%|" not in line
            and " took " not in line
            and any(
                k in line
                for k in ("time limit", "model left", "last weights", "localiser", "not trained")
            )
        ]
        plan = json.loads((tmp / "run" / "plan.json").read_text())
        image = sorted((data / "images").glob("*.nii.gz"))[0]
        predicted = tmp / "pred.nii.gz"
        model = tmp / "run" / "best.keras"
        predict_s, _ = timed(
            [str(BIN / "flare-predict"), "--model-path", str(model), "--input", str(image),
             "--output", str(predicted)]
        )  # fmt: skip
        labels = np.asarray(nib.load(predicted).dataobj)
        same_grid = np.allclose(nib.load(predicted).affine, nib.load(image).affine)
        found = sorted(int(v) for v in np.unique(labels) if v)
    block = "\n".join(
        [
            dated_heading(
                f"{args.cases} ct phantoms of {'×'.join(map(str, args.shape))}, "
                f"limit {args.minutes:g} min"
            ),
            "",
            environment(),
            "",
            f"- `flare-preprocess`: {prep_s:.0f} s; `flare-train`: **{train_s:.0f} s** wall "
            f"for a {args.minutes * 60:.0f} s limit "
            f"(target ≤ {args.minutes * 75:.0f} s: {'met' if train_s <= args.minutes * 75 else 'MISSED'})",
            f"- plan: {json.dumps({k: plan[k] for k in sorted(plan) if not isinstance(plan[k], dict | list)})}",
            *(f"- said: `{line.strip()}`" for line in ended),
            f"- `flare-predict` with best.keras: {predict_s:.0f} s, labels {found} on the input's "
            f"grid (affine equal: {same_grid})",
        ]
    )
    finish(block + "\n", args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
