"""Few labels: why a student trained on pseudo-labels loses to its teacher, what fixes it, and
which confidence ranks cases by their true Dice.

Issue "pseudo-labels that pay off". On the CT-like phantoms (``flare-synth``'s default
family): a light VNet (the teacher) trains ``--steps`` optimizer steps on ``--labelled``
labelled phantoms. It pseudo-labels ``--unlabelled`` unlabelled phantoms (their truth kept
apart) twice, with the shifted and with the mirrored test-time prediction, recording every
confidence signal (:mod:`flare_helpers.pseudolabel.confidence`). Measured:

* each signal's and each product's Spearman ρ with the true per-case mean DSC;
* the true DSC of kept against rejected pseudo-labels (per-case selection), and how
  wrong the voxels are that the per-voxel consistency check ignores, against the rest;
* students, every one trained for the same ``--steps`` optimizer steps as the teacher
  (equal steps = equal CPU work per model at batch 2 on one grid; the machine is shared,
  so wall time is not comparable between models; CPU seconds are recorded too):
  ``scratch`` (the issue's baseline: old confidence, weight 1, from random weights),
  then with the chosen confidence: ``scratch`` (weight 1 or 0.5), ``from teacher``
  (``pseudo.init_from``),
  ``from teacher, weight 0.5`` (``pseudo.sample_weight``), ``…, ignore`` (per-voxel
  consistency, ``pseudo.ignore_disagreement``); and ``teacher + steps``: the teacher
  trained the same extra steps on the labelled cases only, the control for fine-tuning
  (a student from the teacher has had 2 × ``--steps`` steps in all).

Each student meets the teacher on ``--val-cases`` labelled validation phantoms (trained on
by neither), whole cases (``pseudo_round.adopt``, margin ``pseudo.adopt_margin``); the
adopted model (student or teacher) is then scored with all others on ``--test-cases``
held-out phantoms of another seed. Targets: adopted ≥ teacher + 0.02 held-out mean DSC and
never below teacher − 0.005; ρ ≥ 0.5.

    python bench/pseudolabel_few_labels.py                       # appends to BENCHMARKS.md
    python bench/pseudolabel_few_labels.py --steps 20 --unlabelled 4 --test-cases 2 \\
        --val-cases 1 --students "from teacher" --no-append     # smoke
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import LIGHT_VNET, bench_parser, dated_heading, environment, finish
from scipy.stats import spearmanr

from flare_helpers.config import PseudoConfig, load_config
from flare_helpers.data.cases import discover_cases
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.labels import IGNORE, OrganSet
from flare_helpers.data.nifti import load_label
from flare_helpers.data.pseudo_folder import PseudoLayout
from flare_helpers.data.unlabelled import extract_scans
from flare_helpers.evaluate.evaluation import evaluate_model, score_prediction_dir
from flare_helpers.phantoms.synthetic import write_synthetic_zip, write_unlabelled
from flare_helpers.pseudolabel.teacher import pseudolabel, reference_from_labels
from flare_helpers.workflows.pseudo_round import adopt, decide, round_paths, student_config
from flare_helpers.workflows.training import train

HEADING = "## Pseudo-labels with few labels (`bench/pseudolabel_few_labels.py`)"
INTRO = (
    "A light VNet trained on 4 labelled phantoms (the teacher) pseudo-labels 24 unlabelled\n"
    "ones; students train on labelled + kept pseudo-labelled cases for the same number of\n"
    "optimizer steps. All models are scored on the same held-out phantoms of another seed.\n"
    "Spearman ρ: confidence against the true per-case mean DSC of the pseudo-labels.\n"
    "Targets: adopted model ≥ teacher + 0.02 mean DSC, never < teacher − 0.005; ρ ≥ 0.5."
)
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")
SETTINGS = [
    "preprocess.mode=resize",
    *LIGHT_VNET,
    "preprocess.workers=1",
    "data.val_fraction=0.0",
    "data.test_fraction=0.0",
]
#: Candidate confidences: (test-time transform, signals multiplied).
CANDIDATES = {
    "mean_probability": ("shift", ("mean_probability",)),
    "component_share": ("shift", ("component_share",)),
    "mean_probability × component_share (old)": (
        "shift",
        ("mean_probability", "component_share"),
    ),
    "agreement, shift": ("shift", ("agreement",)),
    "agreement, mirror": ("mirror", ("agreement",)),
    "anatomy": ("shift", ("anatomy",)),
    "agreement (shift) × anatomy": ("shift", ("agreement", "anatomy")),
    "agreement (mirror) × anatomy": ("mirror", ("agreement", "anatomy")),
    "mean_probability × agreement (shift)": ("shift", ("mean_probability", "agreement")),
    "mean_probability × agreement (shift) × anatomy": (
        "shift",
        ("mean_probability", "agreement", "anatomy"),
    ),
}
OLD = "mean_probability × component_share (old)"


def _truth_dir(scans: Path, truth: Path, dest: Path) -> Path:
    """The unlabelled phantoms and their kept-apart labels as a FLARE22-layout folder."""
    shutil.copytree(scans / "images", dest / "images")
    shutil.copytree(truth, dest / "labels")
    return dest


def _labelled(tmp: Path, name: str, n: int, seed: int, shape) -> Path:
    zip_path = write_synthetic_zip(tmp / name, n, seed=seed, shape=shape, progress=False)
    return extract_zip(zip_path, tmp / name / "data", progress=False)


def _product(rows: dict, case_id: str, signals) -> float:
    return math.prod(float(rows[case_id][s]) for s in signals)


def _voxel_check(layout: PseudoLayout, truth: Path, case_ids, organs: OrganSet) -> dict:
    """How wrong the pseudo-label voxels are that the consistency check ignores, and the rest."""
    wrong_ignored = ignored = wrong_kept = kept_voxels = 0
    for case_id in case_ids:
        masked = organs.to_classes(load_label(layout.masked_prediction(case_id)).data)
        plain = organs.to_classes(load_label(layout.prediction(case_id)).data)
        gt = organs.to_classes(load_label(truth / f"{case_id}.nii.gz").data)
        region = (plain > 0) | (gt > 0) | (masked == IGNORE)  # organ voxels of either
        ignore = masked == IGNORE
        wrong = plain != gt
        ignored += int(ignore.sum())
        wrong_ignored += int((wrong & ignore).sum())
        kept_voxels += int((region & ~ignore).sum())
        wrong_kept += int((wrong & region & ~ignore).sum())
    return {
        "ignored_share": ignored / max(ignored + kept_voxels, 1),
        "error_ignored": wrong_ignored / max(ignored, 1),
        "error_kept": wrong_kept / max(kept_voxels, 1),
        "errors_caught": wrong_ignored / max(wrong_ignored + wrong_kept, 1),
    }


def run(args, tmp: Path, save: Path) -> dict:
    shape = tuple(args.shape)
    organs = OrganSet.from_names(ORGANS)
    labelled = _labelled(tmp, "lab", args.labelled, 21, shape)
    val = _labelled(tmp, "val", args.val_cases, 55, shape)
    test = _labelled(tmp, "test", args.test_cases, 99, shape)
    unlabelled_zip, truth = write_unlabelled(
        tmp / "unl", args.unlabelled, seed=21, shape=shape, progress=False
    )
    scans, _ = extract_scans(unlabelled_zip, tmp / "unl" / "scans", progress=False)
    truth_data = _truth_dir(scans, truth, tmp / "unl" / "truth_data")
    reference = reference_from_labels([c.label for c in discover_cases(labelled).labelled], organs)
    cfg = load_config(
        None,
        [
            f"data.data_dir={labelled}",
            f"data.cache_dir={tmp / 'cache'}",
            f"train.output_dir={tmp / 'teacher'}",
            f"pseudo.keep_fraction={args.keep_fraction}",
            "pseudo.tta=shift",
            f"pseudo.adopt_margin={args.margin}",
            *SETTINGS,
            f"preprocess.target_shape=[{','.join(map(str, args.grid))}]",
            f"train.epochs={max(1, args.steps // 2)}",  # 4 cases, batch 2: 2 steps an epoch
        ],
    )
    out = {"models": {}, "confidence": {}, "args": vars(args) | {"output": str(args.output)}}

    def dump() -> None:
        save.write_text(json.dumps(out, indent=1, default=str))

    def score(name: str, result, cpu_s: float, wall_s: float, steps: int, labelled_draws) -> None:
        per_case = evaluate_model(
            result.best_model, test, tmp / "eval" / name, which="all", progress=False
        ).per_case
        dsc = per_case.groupby("organ")["dsc"].mean()
        out["models"][name] = {
            "cpu_s": cpu_s,
            "wall_s": wall_s,
            "steps": steps,
            "labelled_draws": labelled_draws,
            "mean": float(dsc[list(ORGANS)].mean()),
            **{o: float(dsc[o]) for o in ORGANS},
        }
        dump()

    def timed_train(config):
        cpu, wall = time.process_time(), time.perf_counter()
        result = train(config, progress=False)
        return result, time.process_time() - cpu, time.perf_counter() - wall

    teacher, cpu_s, wall_s = timed_train(cfg)
    score("teacher", teacher, cpu_s, wall_s, 2 * cfg.train.epochs, 4 * cfg.train.epochs)
    teacher_model = teacher.best_model

    # ---- pseudo-labels, twice: shifted and mirrored test-time predictions
    start = time.perf_counter()
    r1 = round_paths(tmp, 1)
    first = pseudolabel(
        teacher_model, unlabelled_zip, r1.pseudo_dir, cfg.pseudo, reference=reference,
        progress=False,
    )  # fmt: skip
    out["pseudolabel_seconds"] = time.perf_counter() - start
    mirror_dir = tmp / "mirror" / "pseudolabels"
    mirror = pseudolabel(
        teacher_model, unlabelled_zip, mirror_dir, dataclasses.replace(cfg.pseudo, tta="mirror"),
        reference=reference, progress=False,
    )  # fmt: skip
    true_dsc = (
        score_prediction_dir(PseudoLayout(r1.pseudo_dir).predictions, truth_data, progress=False)
        .per_case.groupby("case")["dsc"]
        .mean()
    )
    ok = [c for c, r in first.rows.items() if r["status"] == "ok"]
    truth_values = [float(true_dsc[c]) for c in ok]
    out["true_dsc"] = {c: float(true_dsc[c]) for c in ok}
    for name, (tta, signals) in CANDIDATES.items():
        rows = first.rows if tta == "shift" else mirror.rows
        values = [_product(rows, c, signals) for c in ok]
        out["confidence"][name] = float(spearmanr(values, truth_values).statistic)
    best = max(
        (n for n in CANDIDATES if not math.isnan(out["confidence"][n])),
        key=lambda n: out["confidence"][n],
    )
    out["best_confidence"] = best
    tta, signals = CANDIDATES[best]
    n_keep = math.ceil(args.keep_fraction * len(ok) - 1e-9)
    out["selection"] = {}
    for name in (OLD, best):
        rows = first.rows if CANDIDATES[name][0] == "shift" else mirror.rows
        ranked = sorted(ok, key=lambda c: -_product(rows, c, CANDIDATES[name][1]))
        kept, dropped = ranked[:n_keep], ranked[n_keep:]
        out["selection"][name] = {
            "kept": float(np.mean([true_dsc[c] for c in kept])),
            "dropped": float(np.mean([true_dsc[c] for c in dropped])) if dropped else math.nan,
            "n_kept": len(kept),
        }
    out["pseudo_dsc_all"] = float(np.mean(truth_values))
    out["voxels"] = {
        "shift": _voxel_check(PseudoLayout(r1.pseudo_dir), truth, ok, organs),
        "mirror": _voxel_check(PseudoLayout(mirror_dir), truth, ok, organs),
    }
    dump()

    # ---- students, each the same number of optimizer steps as the teacher
    chosen = {"tta": tta, "confidence": signals}
    variants = {
        "scratch, old confidence": ({"confidence": CANDIDATES[OLD][1]}, False, 1.0, False),
        "scratch": (chosen, False, 1.0, False),
        "scratch, weight 0.5": (chosen, False, 0.5, False),
        "from teacher": (chosen, True, 1.0, False),
        "from teacher, weight 0.5": (chosen, True, 0.5, False),
        "from teacher, weight 0.5, ignore": (chosen, True, 0.5, True),
    }
    source = {"shift": r1.pseudo_dir, "mirror": mirror_dir}
    for k, name in enumerate(args.students):
        if name == "teacher + steps":
            config = cfg.replace(
                train={"output_dir": str(tmp / "more")}, pseudo={"init_from": str(teacher_model)}
            )
            result, cpu_s, wall_s = timed_train(config)
            steps = 2 * cfg.train.epochs
            score(name, result, cpu_s, wall_s, steps, 4 * cfg.train.epochs)
        else:
            settings, from_teacher, weight, ignore = variants[name]
            paths = round_paths(tmp / f"student{k}", 1)
            shutil.copytree(source[settings.get("tta", "shift")], paths.pseudo_dir)
            base = cfg.replace(
                pseudo={
                    **settings,
                    "tta": settings.get("tta", "shift"),
                    "sample_weight": weight,
                    "ignore_disagreement": ignore,
                }
            )
            picked = pseudolabel(
                teacher_model, unlabelled_zip, paths.pseudo_dir, base.pseudo, progress=False
            )  # only reselects: every case is predicted already
            per_epoch = round(args.labelled + weight * len(picked.kept))
            steps_per_epoch = math.ceil(per_epoch / 2)
            epochs = max(1, round(2 * cfg.train.epochs / steps_per_epoch))
            config = student_config(base, teacher_model, paths, from_teacher).replace(
                train={"epochs": epochs}, data={"cache_dir": str(tmp / f"cache{k}")}
            )  # a cache of its own: the kept cases differ between students
            result, cpu_s, wall_s = timed_train(config)
            draws = epochs * args.labelled
            score(name, result, cpu_s, wall_s, epochs * steps_per_epoch, draws)
        adoption = adopt(
            teacher_model,
            result.best_model,
            val,
            sorted(c.case_id for c in discover_cases(val).labelled),
            tmp / "adopt" / name,
            args.margin,
            progress=False,
        )
        out["models"][name]["adopted"] = adoption.adopted
        out["models"][name]["val_teacher"] = adoption.teacher_dsc
        out["models"][name]["val_student"] = adoption.student_dsc
        out["models"][name]["line"] = str(adoption)
        dump()
    return out


def report(out: dict, args) -> str:
    shape = "×".join(map(str, args.shape))
    models = out["models"]
    teacher = models["teacher"]["mean"]
    lines = [
        dated_heading(
            f"{args.labelled} labelled (+ {args.val_cases} validation) + {args.unlabelled} "
            f"unlabelled CT-like phantoms of {shape} (network grid {'×'.join(map(str, args.grid))}), "
            f"{args.steps} steps per model, "
            f"{args.test_cases} held-out phantoms"
        ),
        "",
        environment(),
        "",
        "| model | steps (labelled draws) | CPU s | liver | right kidney | left kidney | spleen "
        f"| mean DSC | vs teacher | validation: student vs teacher | adopted (margin {args.margin:g}) "
        "| adopted − teacher |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for name, row in models.items():
        cells = " | ".join(f"{row[o]:.3f}" for o in ORGANS)
        if "adopted" in row:  # decided again at --margin from the recorded validation scores
            rule = decide("t", "s", row["val_teacher"], row["val_student"], args.margin, 0)
            val = f"{row['val_student']:.3f} vs {row['val_teacher']:.3f}"
            adopted = "student" if rule.adopted else "teacher"
            gain = f"{(row['mean'] if rule.adopted else teacher) - teacher:+.3f}"
        else:
            val, adopted, gain = "", "", ""
        lines.append(
            f"| {name} | {row['steps']} ({row['labelled_draws']}) | {row['cpu_s']:.0f} | {cells} "
            f"| **{row['mean']:.3f}** | {row['mean'] - teacher:+.3f} | {val} | {adopted} | {gain} |"
        )
    if "best_confidence" not in out:
        return "\n".join(lines) + "\n"
    rho = ", ".join(f"{k} {v:+.2f}" for k, v in out["confidence"].items())
    selection = "; ".join(
        f"{name}: kept {s['kept']:.3f}, dropped {s['dropped']:.3f} ({s['n_kept']} kept)"
        for name, s in out["selection"].items()
    )
    voxels = "; ".join(
        f"{tta}: {100 * v['ignored_share']:.1f} % of organ voxels ignored, wrong there "
        f"{100 * v['error_ignored']:.0f} % vs {100 * v['error_kept']:.1f} % elsewhere, "
        f"{100 * v['errors_caught']:.0f} % of all wrong voxels caught"
        for tta, v in out["voxels"].items()
    )
    lines += [
        "",
        f"- pseudo-labels ({out['pseudolabel_seconds']:.0f} s for {len(out['true_dsc'])}, "
        f"with the shifted twin): true mean DSC {out['pseudo_dsc_all']:.3f} over all",
        f"- Spearman ρ with the true per-case DSC: {rho}; best: {out['best_confidence']}",
        f"- true DSC of kept and dropped pseudo-labels (top {args.keep_fraction:g}): {selection}",
        f"- per-voxel consistency: {voxels}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, (96, 96, 48))
    parser.add_argument("--labelled", type=int, default=4, help="labelled training phantoms")
    parser.add_argument("--val-cases", type=int, default=8, help="labelled validation phantoms")
    parser.add_argument("--unlabelled", type=int, default=24, help="unlabelled phantoms")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out labelled phantoms")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model")
    parser.add_argument("--grid", type=int, nargs=3, default=[64, 64, 32], help="network grid")
    parser.add_argument("--keep-fraction", type=float, default=0.5)
    parser.add_argument(
        "--margin", type=float, default=PseudoConfig().adopt_margin, help="pseudo.adopt_margin"
    )
    parser.add_argument(
        "--students",
        nargs="*",
        default=[
            "teacher + steps",
            "scratch, old confidence",
            "scratch, weight 0.5",
            "from teacher",
            "from teacher, weight 0.5",
            "from teacher, weight 0.5, ignore",
        ],
    )
    parser.add_argument("--json", type=Path, default=Path("pseudolabel_few_labels.json"))
    parser.add_argument(
        "--from-json", action="store_true", help="report a saved (possibly partial) --json run"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        out = json.loads(args.json.read_text())
        saved = {
            k: v
            for k, v in out["args"].items()
            if k not in ("output", "no_append", "json", "from_json", "margin")
        }
        vars(args).update(saved)
    else:
        with tempfile.TemporaryDirectory(prefix="flare-bench-pseudo-") as tmp:
            out = run(args, Path(tmp), args.json)
    finish(report(out, args), args.output, HEADING, INTRO, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
