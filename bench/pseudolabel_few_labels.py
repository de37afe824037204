"""Few labels: does a student trained on confident pseudo-labels beat its teacher, and does the
confidence rank cases by their true Dice?

Issue "pseudo-labels". On phantoms: a light VNet (the teacher) trains on ``--labelled``
labelled cases for ``--minutes`` of wall-clock time. It pseudo-labels ``--unlabelled``
unlabelled phantoms (``flare-synth --unlabelled``: their ground truth is kept apart),
keeping the top ``--keep-fraction`` by confidence. Each student variant then trains for
the same ``--minutes`` on the labelled plus the kept pseudo-labelled cases:

* ``scratch``: from random weights (the default of ``pseudo.init_from``);
* ``from teacher``: from the teacher's weights (``pseudo.init_from``);
* ``all pseudo``: from scratch on every pseudo-labelled case (``keep_fraction`` 1), to
  see what the selection is worth;
* ``round 2`` (with ``--rounds 2``): the ``scratch`` student pseudo-labels the same scans
  again and a second student trains from scratch.

Every model is scored on the same ``--test-cases`` held-out labelled phantoms of another
seed family (FLARE22 rules, original grids). Confidence: the Spearman ρ between each
score (``confidence`` and its two parts) and the true per-case mean DSC of the teacher's
pseudo-labels (``scipy.stats.spearmanr``). Targets: student ≥ teacher + 0.02 held-out mean
DSC; ρ ≥ 0.5.

    python bench/pseudolabel_few_labels.py                         # 3 min per model, appends
    python bench/pseudolabel_few_labels.py --minutes 0.3 --unlabelled 6 --test-cases 2 \\
        --variants scratch --no-append                             # smoke
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _report import LIGHT_VNET, bench_parser, dated_heading, environment, finish
from scipy.stats import spearmanr

from flare_helpers.config import load_config
from flare_helpers.evaluate import evaluate_model, score_prediction_dir
from flare_helpers.extract import extract_zip
from flare_helpers.pseudolabel import PseudoLayout, pseudolabel
from flare_helpers.synthetic import write_synthetic_zip, write_unlabelled
from flare_helpers.unlabelled import extract_scans
from flare_helpers.workflows.pseudo_round import round_paths, student_config
from flare_helpers.workflows.training import train

HEADING = "## Pseudo-labels with few labels (`bench/pseudolabel_few_labels.py`)"
INTRO = (
    "A light VNet trained on 4 labelled phantoms (the teacher) pseudo-labels 24 unlabelled\n"
    "ones; students train on labelled + kept pseudo-labelled cases for the same wall-clock\n"
    "time. All models are scored on the same held-out phantoms of another seed family.\n"
    "Spearman ρ: confidence against the true per-case mean DSC of the pseudo-labels.\n"
    "Targets: student ≥ teacher + 0.02 mean DSC; ρ ≥ 0.5."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
SETTINGS = [
    "preprocess.mode=resize",
    "preprocess.target_shape=[64,64,32]",
    *LIGHT_VNET,
    "preprocess.workers=1",
    "data.val_fraction=0.0",
    "data.test_fraction=0.0",
]
SCORES = ("confidence", "mean_probability", "component_share")


def _mean_dsc(per_case) -> float:
    return float(per_case.groupby("organ")["dsc"].mean()[list(ORGANS)].mean())


def _truth_dir(scans: Path, truth: Path, dest: Path) -> Path:
    """The unlabelled phantoms and their kept-apart labels as a FLARE22-layout folder."""
    shutil.copytree(scans / "images", dest / "images")
    shutil.copytree(truth, dest / "labels")
    return dest


def run(args, tmp: Path) -> dict:
    shape = tuple(args.shape)
    labelled = extract_zip(
        write_synthetic_zip(
            tmp / "lab", args.labelled, seed=21, shape=shape, progress=False, family="simple"
        ),
        tmp / "lab" / "data",
        progress=False,
    )
    unlabelled_zip, truth = write_unlabelled(
        tmp / "unl", args.unlabelled, seed=21, shape=shape, progress=False, family="simple"
    )
    scans, _ = extract_scans(unlabelled_zip, tmp / "unl" / "scans", progress=False)
    truth_data = _truth_dir(scans, truth, tmp / "unl" / "truth_data")
    test = extract_zip(
        write_synthetic_zip(
            tmp / "test", args.test_cases, seed=99, shape=shape, progress=False, family="simple"
        ),
        tmp / "test" / "data",
        progress=False,
    )
    cfg = load_config(
        None,
        [
            f"data.data_dir={labelled}",
            f"data.cache_dir={tmp / 'cache'}",
            f"train.output_dir={tmp / 'teacher'}",
            f"train.time_limit_minutes={args.minutes}",
            f"pseudo.keep_fraction={args.keep_fraction}",
            *SETTINGS,
        ],
    )
    out = {"models": {}, "confidence": {}}

    def score(name: str, model: Path, minutes: float, epochs: int) -> None:
        per_case = evaluate_model(model, test, tmp / "eval" / name, which="all", progress=False)
        dsc = per_case.per_case.groupby("organ")["dsc"].mean()
        out["models"][name] = {"minutes": minutes, "epochs": epochs, **dsc.to_dict()}

    def timed_train(config):
        start = time.perf_counter()
        result = train(config, progress=False)
        return result, (time.perf_counter() - start) / 60

    teacher, minutes = timed_train(cfg)
    score("teacher", teacher.best_model, minutes, teacher.epochs_completed)

    start = time.perf_counter()
    r1 = round_paths(tmp, 1)
    labels = pseudolabel(
        teacher.best_model, unlabelled_zip, r1.pseudo_dir, cfg.pseudo, progress=False
    )
    out["pseudolabel_seconds"] = time.perf_counter() - start
    truth_scores = score_prediction_dir(
        PseudoLayout(r1.pseudo_dir).predictions, truth_data, progress=False
    ).per_case
    true_dsc = truth_scores.groupby("case")["dsc"].mean()
    ok = [c for c, r in labels.rows.items() if r["status"] == "ok"]
    for key in SCORES:
        values = [float(labels.rows[c][key]) for c in ok]
        out["confidence"][key] = float(spearmanr(values, [true_dsc[c] for c in ok]).statistic)
    kept = set(labels.kept)
    out["pseudo_dsc"] = {
        "all": float(true_dsc[ok].mean()),
        "kept": float(true_dsc[sorted(kept)].mean()) if kept else float("nan"),
        "n_kept": len(kept),
        "n": len(ok),
    }

    variants = {
        "scratch": (r1, False, cfg),
        "from teacher": (round_paths(tmp / "init", 1), True, cfg),
        "all pseudo": (
            round_paths(tmp / "all", 1),
            False,
            cfg.replace(pseudo={"keep_fraction": 1.0}),
        ),
    }
    for name in args.variants:
        paths, from_teacher, base = variants[name]
        if paths is not r1:  # the same predictions, selected again with this variant's settings
            shutil.copytree(r1.pseudo_dir, paths.pseudo_dir)
            pseudolabel(
                teacher.best_model, unlabelled_zip, paths.pseudo_dir, base.pseudo, progress=False
            )
        student, minutes = timed_train(
            student_config(base, teacher.best_model, paths, from_teacher)
        )
        score(f"student, {name}", student.best_model, minutes, student.epochs_completed)
    if args.rounds >= 2 and "scratch" in args.variants:
        r2 = round_paths(tmp, 2)
        pseudolabel(r1.model_path, unlabelled_zip, r2.pseudo_dir, cfg.pseudo, progress=False)
        student, minutes = timed_train(student_config(cfg, r1.model_path, r2, False))
        score("student, round 2", student.best_model, minutes, student.epochs_completed)
    return out


def report(out: dict, args) -> str:
    shape = "×".join(map(str, args.shape))
    lines = [
        dated_heading(
            f"{args.labelled} labelled + {args.unlabelled} unlabelled phantoms of {shape}, "
            f"{args.minutes:g} min per model, {args.test_cases} held-out phantoms"
        ),
        "",
        environment(),
        "",
        "| model | training (min, epochs) | liver | right kidney | left kidney | spleen | "
        "mean DSC | vs teacher |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    teacher = sum(out["models"]["teacher"][o] for o in ORGANS) / len(ORGANS)
    for name, row in out["models"].items():
        mean = sum(row[o] for o in ORGANS) / len(ORGANS)
        cells = " | ".join(f"{row[o]:.3f}" for o in ORGANS)
        lines.append(
            f"| {name} | {row['minutes']:.1f}, {row['epochs']} | {cells} | **{mean:.3f}** | "
            f"{mean - teacher:+.3f} |"
        )
    p = out["pseudo_dsc"]
    rho = ", ".join(f"{k} {v:+.2f}" for k, v in out["confidence"].items())
    lines += [
        "",
        f"- pseudo-labels ({out['pseudolabel_seconds']:.0f} s for {p['n']}): true mean DSC "
        f"{p['all']:.3f} over all, {p['kept']:.3f} over the {p['n_kept']} kept "
        f"(keep_fraction {args.keep_fraction})",
        f"- Spearman ρ with the true per-case DSC: {rho}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (96, 96, 48))
    parser.add_argument("--labelled", type=int, default=4, help="labelled training phantoms")
    parser.add_argument("--unlabelled", type=int, default=24, help="unlabelled phantoms")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out labelled phantoms")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    parser.add_argument("--keep-fraction", type=float, default=0.5)
    parser.add_argument(
        "--variants",
        nargs="*",
        default=["scratch", "from teacher", "all pseudo"],
        choices=["scratch", "from teacher", "all pseudo"],
    )
    parser.add_argument("--rounds", type=int, default=1, help="2: also a second round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flare-bench-pseudo-") as tmp:
        out = run(args, Path(tmp))
    finish(report(out, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
