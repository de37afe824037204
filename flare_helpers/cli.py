"""Console entry points: thin argparse layers over one library function each.

Every command prints a one-line error naming the file and the problem and
exits with status 2 for bad input (1 for an unexpected failure, 130 when
interrupted); ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flare_helpers.errors import FlareError

if TYPE_CHECKING:
    import pandas

EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def _run(
    prog: str, parser: argparse.ArgumentParser, body: Callable, argv: Sequence[str] | None
) -> int:
    """Parse ``argv``, call ``body(args)`` and turn failures into one-line messages."""
    args = parser.parse_args(argv)
    try:
        body(args)
    except FlareError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: say so in one line, full trace with --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return 0


def format_table(rows: list[dict]) -> str:
    """Plain-text table of dict rows (same keys), columns aligned, for consoles and logs."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return os.linesep.join(lines)


def format_summary(summary_df: pandas.DataFrame) -> str:
    """Console table of a :func:`summarize` result: mean ± std of DSC, NSD and HD95 per organ."""

    def cell(row: pandas.Series, metric: str, digits: int) -> str:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        if not math.isfinite(mean):
            return "n/a"
        text = f"{mean:.{digits}f}"
        return f"{text} ± {std:.{digits}f}" if math.isfinite(std) else text

    rows = [
        {
            "organ": row["organ"],
            "DSC": cell(row, "dsc", 3),
            "NSD": cell(row, "nsd", 3),
            "HD95 mm": cell(row, "hd95_mm", 2),
            "vol diff ml": cell(row, "volume_diff_ml", 1),
            "cases": int(row["n_cases"]),
            "HD95 undefined": int(row["hd95_undefined"]),
        }
        for _, row in summary_df.iterrows()
    ]
    return format_table(rows)


# --------------------------------------------------------------------------- flare-synth


def synth_main(argv: Sequence[str] | None = None) -> int:
    """``flare-synth --out DIR --cases N [--seed S] [--shape X Y Z] [--fov F] [--family F]``."""
    parser = _parser("flare-synth", "Write DIR/FLARE22Train.zip with synthetic FLARE22-like cases.")
    parser.add_argument("--out", required=True, type=Path, help="folder for FLARE22Train.zip")
    parser.add_argument("--cases", type=int, default=0, help="number of labelled cases")
    parser.add_argument(
        "--unlabelled",
        type=int,
        default=0,
        metavar="M",
        help="also write M unlabelled phantoms as DIR/FLARE_UnlabeledCase1-M.zip, their "
        "ground truth apart in DIR/FLARE_UnlabeledCase1-M_truth/",
    )
    parser.add_argument("--seed", type=int, default=0, help="data-set seed (default 0)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[64, 64, 32],
        metavar=("X", "Y", "Z"),
        help="voxels per case (default 64 64 32; a real CT is about 512 512 110)",
    )
    parser.add_argument(
        "--fov",
        type=float,
        default=1.0,
        help="scan range along z as a multiple of the normal one: F × Z slices of the same "
        "spacing, same organs, more body above and below (default 1)",
    )
    parser.add_argument(
        "--family",
        choices=("ct", "simple"),
        default="ct",
        help="ct (default): CT-like anatomy, phases, noise, CT-sized at any --shape; "
        "simple: uniform ellipsoids, fast (for quick tests)",
    )

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.phantoms.synthetic import write_synthetic_zip, write_unlabelled

        shape = " × ".join(map(str, args.shape))
        family = {"family": args.family}
        if args.cases or not args.unlabelled:
            path = write_synthetic_zip(
                args.out, args.cases, args.seed, args.shape, fov=args.fov, **family
            )
            print(f"wrote {path} ({args.cases} cases, shape {shape})")
        if args.unlabelled:
            path, truth = write_unlabelled(
                args.out, args.unlabelled, args.seed, args.shape, fov=args.fov, **family
            )
            print(f"wrote {path} ({args.unlabelled} unlabelled cases, shape {shape})")
            print(f"wrote their ground truth to {truth} (kept apart, for tests)")

    return _run("flare-synth", parser, body, argv)


# --------------------------------------------------------------------------- flare-extract


def _add_case_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-cases", type=int, default=0, help="at most N unlabelled scans (default: all)"
    )
    parser.add_argument(
        "--range",
        dest="case_range",
        metavar="FIRST-LAST",
        help="1-based positions of the scans to take, in case order, e.g. 1-200 or 201-",
    )


def _case_range(text: str | None) -> tuple[int, int]:
    """``"201-400"`` → (201, 400); ``"201-"`` → (201, 0); None → (1, 0)."""
    if not text:
        return 1, 0
    first, sep, last = text.partition("-")
    try:
        return int(first), int(last) if last.strip() else 0
    except ValueError:
        raise FlareError(f"--range must look like 1-200 or 201-, got '{text}'") from None


def extract_main(argv: Sequence[str] | None = None) -> int:
    """``flare-extract --zip ZIP --out DIR`` (``--unlabelled [--max-cases N] [--range A-B]``)."""
    parser = _parser("flare-extract", "Safely extract the FLARE22 training zip and list its cases.")
    parser.add_argument(
        "--zip",
        required=True,
        type=Path,
        help="FLARE22Train.zip (or, with --unlabelled, a zip "
        "or folder of FLARE22's unlabelled scans)",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to extract into")
    parser.add_argument(
        "--unlabelled",
        action="store_true",
        help="the input holds unlabelled scans (FLARE_UnlabeledCase1-1000/Case_00001_0000.nii.gz "
        "…): copy the chosen ones to OUT/<name>/images/, pairing nothing",
    )
    _add_case_range(parser)

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.data.cases import discover_cases, discover_unlabelled
        from flare_helpers.data.extract import extract_zip
        from flare_helpers.data.nifti import describe_cases

        if args.unlabelled:
            from flare_helpers.data.unlabelled import extract_scans

            first, last = _case_range(args.case_range)
            target, source = extract_scans(
                args.zip, args.out, max_cases=args.max_cases, first=first, last=last
            )
            for note in source.notes:
                print(f"note: {note}")
            print(f"extracted {len(source.scans)} of {source.total} unlabelled scans to {target}")
            print(format_table(describe_cases(discover_unlabelled(target).cases)))
            return
        target = extract_zip(args.zip, args.out)
        found = discover_cases(target)
        print(f"extracted to {target}")
        print(format_table(describe_cases(found.cases)))
        for path in found.unlabelled:
            print(f"note: no label for {path.name} (it can be predicted, not trained on)")
        for path in found.orphan_labels:
            print(f"note: label {path.name} has no image; ignored")

    return _run("flare-extract", parser, body, argv)


# --------------------------------------------------------------------------- flare-preprocess


def preprocess_main(argv: Sequence[str] | None = None) -> int:
    """``flare-preprocess --data DIR --cache DIR [--config config.yaml] [key=value …]``."""
    parser = _parser(
        "flare-preprocess", "Fill or update the preprocessed cache and the data split."
    )
    parser.add_argument("--data", required=True, type=Path, help="extracted FLARE22Train folder")
    parser.add_argument("--cache", required=True, type=Path, help="cache folder")
    parser.add_argument("--config", type=Path, help="config.yaml (default: built-in defaults)")
    parser.add_argument(
        "--workers", type=int, help="parallel processes (default: config, 0 = all cores)"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value settings")

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.config import load_config
        from flare_helpers.data.pseudo_folder import pseudo_cases
        from flare_helpers.preprocess.pipeline import preprocess_dataset

        cfg = load_config(args.config, args.overrides)
        workers = cfg.preprocess.workers if args.workers is None else args.workers
        summary = preprocess_dataset(
            args.data,
            args.cache,
            cfg,
            training_only=pseudo_cases(cfg.data.pseudo_dirs),
            workers=workers,
        )
        print(summary)

    return _run("flare-preprocess", parser, body, argv)


# --------------------------------------------------------------------------- flare-train


def train_main(argv: Sequence[str] | None = None) -> int:
    """``flare-train [--config config.yaml] [--print-config] [section.key=value …]``.

    Prints the plan measured on this device before training (``plan.json``). A run
    that ``train.time_limit_minutes`` ended exits 0 with a line saying so and which
    model it leaves; Ctrl-C or SIGTERM saves ``last.keras`` first and exits 130.
    """
    parser = _parser(
        "flare-train", "Train the VNet as configured; rerunning the same command resumes."
    )
    parser.add_argument("--config", type=Path, help="config.yaml (default: built-in defaults)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every setting with its value and comment (YAML that --config reads), then stop",
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value settings, e.g. train.epochs=5"
    )

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.config import load_config, print_config

        cfg = load_config(args.config, args.overrides)  # a bad config fails before Keras loads
        if args.print_config:
            print_config(cfg)
            return
        from flare_helpers.data.layout import RunLayout
        from flare_helpers.data.lock import FolderLock

        FolderLock(RunLayout(cfg.train.output_dir).lock, "run folder").check()  # before Keras
        from flare_helpers.model.runtime import describe_device
        from flare_helpers.train.budget import format_duration
        from flare_helpers.workflows.training import train

        print(describe_device())
        result = train(cfg)  # prints the measured plan, and what a time limit ended
        if result.resumed_from < 0:
            print(f"{result.run_dir} is already trained ({result.epochs_completed} epochs)")
        elif result.resumed_from > 0:
            print(f"resumed at epoch {result.resumed_from + 1}")
        if result.stopped_by:
            print(
                f"flare-train: the {result.stopped_by} "
                f"({format_duration(result.time_limit_seconds)}) ended this run; "
                f"history: {result.history_csv}; run the same command again to go on"
            )
            return
        print(
            f"best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch}; "
            f"model: {result.best_model}; history: {result.history_csv}"
        )

    return _run("flare-train", parser, body, argv)


# --------------------------------------------------------------------------- flare-predict


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``flare-predict --model-path M --input NII_OR_DIR --output NII_OR_DIR``."""
    parser = _parser(
        "flare-predict", "Predict organ labels for CTs, written on each input's own grid."
    )
    parser.add_argument("--model-path", required=True, type=Path, help="trained .keras model")
    parser.add_argument(
        "--input", required=True, type=Path, help="a .nii.gz CT or a folder of them"
    )
    parser.add_argument("--output", required=True, type=Path, help="output .nii.gz or folder")
    parser.add_argument(
        "--config", type=Path, help="run config (default: config.yaml beside the model)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--no-largest-component", action="store_true", help="keep every predicted component"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        help="network compute precision (default: the run's infer.precision; auto = bfloat16 "
        "where the CPU computes it natively, else float32)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        help="sliding-window overlap in [0, 1) for spacing-mode models (default: infer.overlap)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="also predict the left-right mirror image and average (2x the network time)",
    )
    parser.add_argument(
        "--no-localize",
        action="store_true",
        help="slide windows over the whole body crop, not only the localiser's organ box",
    )

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.infer.predict import load_predictor, plan_outputs, predict_files

        pairs = plan_outputs(args.input, args.output)
        overrides: dict = {"largest_component": False} if args.no_largest_component else {}
        if args.precision:
            overrides["precision"] = args.precision
        if args.overlap is not None:
            overrides["overlap"] = args.overlap
        if args.tta:
            overrides["tta"] = True
        if args.no_localize:
            overrides["localize"] = False
        predictor = load_predictor(args.model_path, args.config, **overrides)
        print(predictor.describe())
        reports: list = []
        for path, report in zip(
            predict_files(predictor, pairs, overwrite=args.overwrite, reports=reports),
            reports,
            strict=True,
        ):
            print(report.line())
            print(f"wrote {path}")

    return _run("flare-predict", parser, body, argv)


# --------------------------------------------------------------------------- flare-pseudolabel


def pseudolabel_main(argv: Sequence[str] | None = None) -> int:
    """``flare-pseudolabel --model-path RUN/best.keras --images ZIP_OR_DIR --out P``."""
    parser = _parser(
        "flare-pseudolabel",
        "Label unlabelled CTs with a trained model, score each, keep the confident ones; "
        "rerunning resumes.",
    )
    parser.add_argument("--model-path", required=True, type=Path, help="the teacher's .keras")
    parser.add_argument(
        "--images", required=True, type=Path, help="zip or folder of unlabelled scans"
    )
    parser.add_argument("--out", required=True, type=Path, help="pseudo-label folder P")
    _add_case_range(parser)
    parser.add_argument("--config", type=Path, help="config.yaml for the pseudo: settings")
    parser.add_argument(
        "overrides", nargs="*", help="pseudo.key=value settings, e.g. pseudo.keep_fraction=0.3"
    )

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.config import load_config
        from flare_helpers.pseudolabel.teacher import pseudolabel, teacher_settings

        settings = (
            load_config(args.config, args.overrides).pseudo
            if args.config or args.overrides
            else teacher_settings(args.model_path)
        )
        first, last = _case_range(args.case_range)
        result = pseudolabel(
            args.model_path,
            args.images,
            args.out,
            settings,
            max_cases=args.max_cases,
            first=first,
            last=last,
        )
        print(result)
        print(f"wrote {result.root / 'confidence.csv'}")

    return _run("flare-pseudolabel", parser, body, argv)


# --------------------------------------------------------------------------- flare-series


def series_main(argv: Sequence[str] | None = None) -> int:
    """``flare-series --profile ci|demo|colab|FILE [--only 01 03 …] [--fresh-runtimes]``."""
    parser = _parser(
        "flare-series", "Run the notebooks 01 → 06 in order through papermill with a profile."
    )
    parser.add_argument("--profile", default="demo", help="ci, demo, colab, full or a params YAML")
    parser.add_argument(
        "--only", nargs="*", default=[], help="notebook prefixes to run, e.g. 01 02"
    )
    parser.add_argument(
        "--fresh-runtimes",
        action="store_true",
        help="run each notebook with a new, empty data_root, as Colab runs each notebook in "
        "its own runtime (only work_dir and the zip are shared)",
    )

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.series.runner import run_series

        out = run_series(args.profile, only=args.only, fresh_runtimes=args.fresh_runtimes)
        print(f"executed notebooks and parameters: {out}")
        print(f"outputs (model, metrics, figures, video): {out.parent}")

    return _run("flare-series", parser, body, argv)


# --------------------------------------------------------------------------- flare-evaluate


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``flare-evaluate --model-path M --data-path DIR [--output CSV]`` or ``--pred-dir P``."""
    parser = _parser(
        "flare-evaluate",
        "Per-case, per-organ DSC / NSD / HD95 on the original grid (FLARE22 rules).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-path", type=Path, help="trained .keras model: predict, then score")
    source.add_argument("--pred-dir", type=Path, help="score saved predictions <case>.nii.gz")
    source.add_argument(
        "--ceiling",
        action="store_true",
        help="score what a perfect network would reach with --config's settings "
        "(ground truth → network grid → back), before any training",
    )
    parser.add_argument(
        "--data-path", required=True, type=Path, help="FLARE22Train folder with labels/"
    )
    parser.add_argument(
        "--output", type=Path, help="per-case CSV (default: beside the model or predictions)"
    )
    parser.add_argument(
        "--config", type=Path, help="with --ceiling: the settings to measure (default: defaults)"
    )
    parser.add_argument(
        "--cases",
        choices=("test", "all"),
        default="test",
        help="with --model-path: the run's test split (default) or every labelled case",
    )

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.data.layout import RunLayout
        from flare_helpers.evaluate.evaluation import (
            evaluate_model,
            score_prediction_dir,
            write_report,
        )

        name = None
        if args.output is not None:
            out_dir, name = args.output.parent, args.output.name
        elif args.model_path is not None:
            out_dir = RunLayout(args.model_path.parent).evaluation_dir
        elif args.ceiling:
            out_dir = Path("ceiling")
        else:
            out_dir = args.pred_dir
        if args.model_path is not None:
            result = evaluate_model(args.model_path, args.data_path, out_dir, which=args.cases)
        elif args.ceiling:
            from flare_helpers.config import load_config
            from flare_helpers.workflows.ceiling import resolution_ceiling

            result = resolution_ceiling(args.data_path, load_config(args.config))
        else:
            result = score_prediction_dir(args.pred_dir, args.data_path)
        for case_id in result.missing:
            print(f"note: no prediction for {case_id}; not scored")
        print(format_summary(result.summary()))
        for path in write_report(result, out_dir, per_case_name=name).values():
            print(f"wrote {path}")

    return _run("flare-evaluate", parser, body, argv)


# --------------------------------------------------------------------------- flare-visualize


def visualize_main(argv: Sequence[str] | None = None) -> int:
    """``flare-visualize --model-path M --data-path DIR --output-path DIR [--cases …]``."""
    parser = _parser(
        "flare-visualize",
        "Predict cases, then write a slice figure (PNG) and a rotating 3D video (MP4) of each.",
    )
    parser.add_argument("--model-path", required=True, type=Path, help="trained .keras model")
    parser.add_argument(
        "--data-path", required=True, type=Path, help="FLARE22Train folder with images/"
    )
    parser.add_argument(
        "--output-path",
        required=True,
        type=Path,
        help="folder for predictions/, <case>_slices.png and <case>_organs.mp4",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["test"],
        metavar="test|all|ID",
        help="the run's test split (default), every image, or case ids",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="video length (default 10)")
    parser.add_argument("--fps", type=int, default=12, help="video frame rate (default 12)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        help="video size in pixels (default 960 480)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    def body(args: argparse.Namespace) -> None:
        from flare_helpers.viz.render3d import VIDEO_SIZE
        from flare_helpers.workflows.report import CASE_GROUPS, visualize_cases

        group = len(args.cases) == 1 and args.cases[0] in CASE_GROUPS
        written = visualize_cases(
            args.model_path,
            args.data_path,
            args.output_path,
            case_ids=args.cases[0] if group else args.cases,
            seconds=args.seconds,
            fps=args.fps,
            size=tuple(args.size or VIDEO_SIZE),
            overwrite=args.overwrite,
        )
        for path in written:
            print(f"wrote {path}")

    return _run("flare-visualize", parser, body, argv)
