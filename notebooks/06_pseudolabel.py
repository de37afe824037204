# %% [markdown]
# # 06 · Pseudo-labels: a teacher labels unlabelled CTs, a student learns from them
#
# FLARE22 is a semi-supervised challenge: next to the 50 labelled training CTs it gives
# 2,000 unlabelled ones (`FLARE_UnlabeledCase1-1000/`, `FLARE_UnlabeledCase1001-2000/`,
# files `Case_00001_0000.nii.gz` …). Its winner and most top teams used them the same way:
#
# 1. the model trained on the labelled cases (the **teacher**, notebook 03) predicts the
#    unlabelled CTs: **pseudo-labels**;
# 2. each pseudo-label gets a **confidence**, and only the confident ones are kept;
# 3. a **student** trains on the labelled cases plus the kept pseudo-labelled ones;
# 4. the student **earns its place**: it replaces the teacher only if it scores better on the
#    labelled validation cases by at least `pseudo.adopt_margin`; otherwise the teacher stays;
# 5. optionally the winner teaches a second round (`rounds = 2`).
#
# Pseudo-labelled cases only ever go to training: the validation and test cases are the
# labelled ones of notebook 02, unchanged, so teacher and student are scored on the same
# held-out cases. **Everything resumes**: run the notebook again after a disconnect and
# finished CTs, epochs and rounds are skipped. The scans are read from their zip one at a
# time, so the 250 GB set never lands on the runtime's disk.
#
# **Settings**: `epochs`, `batch_size`, `learning_rate` and `time_limit_minutes` are the
# student's (the limit is checked after every step and leaves a model; run again to go on); the confidence
# (`pseudo.confidence`, `pseudo.tta`), the selection (`pseudo.min_confidence`,
# `pseudo.keep_fraction`), the ignored voxels (`pseudo.ignore_disagreement`), how often a
# pseudo-labelled case is drawn against a labelled one (`pseudo.sample_weight`) and the
# adoption margin (`pseudo.adopt_margin`) come from `config.yaml`, `config_path` and
# `overrides`, as in notebooks 02 and 03. The student reuses the teacher's organ localiser
# unless `overrides` says `pseudo.retrain_localizer=true`.
#
# **A fresh runtime** (this notebook opened from its badge) has none of the extracted CTs:
# they come back from the zip on Drive, as in notebook 04; the cache (notebook 02) and the
# teacher (notebook 03) are read from `work_dir`. Each line below says what came back.


# %%
import importlib.util
import sys

if "google.colab" in sys.modules:  # Colab only: add what the runtime lacks, mount Google Drive
    if importlib.util.find_spec("flare_helpers") is None:  # once per runtime
        import json
        import subprocess

        pip = [sys.executable, "-m", "pip", "install", "-q", "--report", "-"]
        url = "git+https://github.com/flare-vnet/flare-vnet"
        done = subprocess.run([*pip, f"flare-vnet @ {url}"], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr)
        added = [p["metadata"] for p in json.loads(done.stdout)["install"]]
        print("installed:", ", ".join(f"{m['name']} {m['version']}" for m in added))
    from google.colab import drive

    drive.mount("/content/drive")

# %% tags=["parameters"]
data_root = "/content/data"
work_dir = "/content/drive/MyDrive/flare-vnet"
zip_path = "/content/drive/MyDrive/FLARE22Train.zip"  # re-extracted if a new runtime lost the data
unlabelled_path = "/content/drive/MyDrive/FLARE_UnlabeledCase1-1000.zip"  # zip or folder
n_cases = 200  # unlabelled scans to pseudo-label, from the first (0: all of them)
synthetic_unlabelled = 0  # > 0: write this many phantom scans beside unlabelled_path first
synthetic_shape = [64, 64, 32]  # voxels per phantom scan
synthetic_seed = 0
synthetic_family = "ct"  # "ct": CT-like phantoms, CT-sized at any shape; "simple": fast ellipsoids
config_path = ""  # the same settings YAML as in notebooks 02 and 03 (empty: defaults)
overrides = []  # the same overrides as in 02 and 03, plus any pseudo.* settings
epochs = 100
batch_size = 4
learning_rate = 0.0001
time_limit_minutes = 0.0  # the student's whole training time, checked every step (0: no limit)
student_from_teacher = False  # True: start the student from the teacher's weights
rounds = 1  # 2: the winner of round 1 pseudo-labels again and teaches a second student

# %%
# %matplotlib inline
from pathlib import Path

from IPython.display import display

from flare_helpers import data, phantoms, pseudolabel, series, viz
from flare_helpers.workflows import pseudo_round

paths = series.series_paths(work_dir, data_root)
data_dir = series.ensure_data(paths, series.zip_file(zip_path))
series.ensure_cache(paths)
teacher = series.ensure_model(paths)
cfg = series.notebook_config(
    paths,
    config_path,
    overrides,
    train={
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "time_limit_minutes": time_limit_minutes,
    },
)
images = Path(series.resolve(unlabelled_path, "FLARE_UNLABELLED"))
if synthetic_unlabelled:
    images, _ = phantoms.write_unlabelled(
        images.parent,
        synthetic_unlabelled,
        synthetic_seed,
        synthetic_shape,
        family=synthetic_family,
    )
first = pseudo_round.round_paths(paths.work_dir, 1)
print(f"teacher {teacher}; unlabelled scans {images}")

# %% [markdown]
# ## 1 · The teacher pseudo-labels the unlabelled CTs
#
# Each CT goes through the teacher's own preprocessing and prediction (as in notebook 04),
# and its labels are written on the CT's own grid with FLARE22's ids. Each CT is predicted a
# second time slightly moved (`pseudo.tta`: shifted by a few voxels, or mirrored with the
# kidneys swapped). A **confidence** in [0, 1] is measured on the way, the product of the
# signals `pseudo.confidence` names: `mean_probability` (the mean top-class probability over
# the voxels called an organ), `component_share` (each organ in one piece?), `agreement`
# (Dice between the two predictions: where the network guesses, the guess moves) and
# `anatomy` (organ volumes and positions against the labelled cases'). How well each ranks
# cases by their true Dice was measured on phantoms (`BENCHMARKS.md`); `confidence.csv`
# keeps every signal. Where the two predictions disagree the pseudo-label can be left
# unlabelled (`pseudo.ignore_disagreement`: those voxels teach the student nothing).
#
# A case is kept when its confidence is at least `pseudo.min_confidence` and it is in the
# top `pseudo.keep_fraction` of the cases. A CT that cannot be read is skipped with its
# reason. Kept cases land in the FLARE22 layout (`images/`, `labels/`) below
# `work_dir/pseudo/round1/pseudolabels`, every prediction in `predictions/`, and the scores
# in `confidence.csv`. The table below leaves out a signal measured for no case (`anatomy`
# unless `pseudo.confidence` names it: it needs the labelled cases' organs, and the default
# confidence is `agreement` alone); `confidence.csv` keeps its empty column.

# %%
labelled = pseudolabel.pseudolabel(teacher, images, first.pseudo_dir, cfg.pseudo, max_cases=n_cases)
print(labelled)
table = pseudolabel.confidence_table(labelled.rows)
table

# %% [markdown]
# ## 2 · Look before you trust
#
# The most and the least confident predicted cases, in three planes with their
# pseudo-labels: a good pseudo-label follows the organs; a poor one misses or spills.

# %%
for case_id in pseudolabel.best_and_worst(table):
    image, label = pseudolabel.case_volumes(images, first.pseudo_dir, case_id)
    score = table.loc[case_id, "confidence"]
    kept = "kept" if table.loc[case_id, "kept"] else "dropped"
    display(
        viz.plot_case(
            image.data,
            image.spacing,
            pred=label.data,
            title=f"{case_id}: confidence {score:.3f}, {kept}",
        )
    )

# %% [markdown]
# ## 3 · The student
#
# The same network, trained on the labelled training cases plus the kept pseudo-labelled
# ones. The cache of notebook 02 gains the pseudo-labelled cases (marked `pseudo` in its
# `manifest.json`); the split of the labelled cases does not change. A pseudo-labelled case
# is drawn `pseudo.sample_weight` times as often as a labelled one. With
# `student_from_teacher` the student starts from the teacher's weights (else from scratch).
# Its run folder is `work_dir/pseudo/round1/student`; training resumes like notebook 03's,
# and stops within `time_limit_minutes`, checked after every step (run again to go on). The
# organ localiser only finds the organs' box, which pseudo-labels do not teach it better:
# the student gets a copy of the teacher's `localizer.keras` and trains only the VNet
# (`pseudo.retrain_localizer=true` trains its own).

# %%
trained = pseudo_round.train_student(cfg, teacher, first, from_teacher=student_from_teacher)
print(f"student: best {trained.monitor} = {trained.best_value:.3f} at epoch {trained.best_epoch}")

# %% [markdown]
# ## 4 · Does the student earn its place?
#
# Teacher and student predict the labelled **validation** cases of notebook 02's split (whole
# cases, as in notebook 04; neither trained on them). The student is kept only if its mean
# DSC is at least `pseudo.adopt_margin` higher; otherwise the teacher stays, and the line
# below says so with both numbers. Whichever wins is the model to use, and the teacher of a
# next round.

# %%
adoption = pseudo_round.adopt(
    teacher,
    trained.best_model,
    data_dir,
    pseudo_round.validation_cases(teacher),
    first.root / "adoption",
    cfg.pseudo.adopt_margin,
)
print(adoption)

# %% [markdown]
# ## 5 · More rounds
#
# With `rounds = 2` the winner of round 1 pseudo-labels the same scans again and teaches a
# new student (`work_dir/pseudo/round2`), which must again beat it; and so on. Nothing runs
# here when `rounds = 1`.

# %%
students = {"student": first.model_path}
winner = adoption.model_path
for number in range(2, rounds + 1):
    later = pseudo_round.round_paths(paths.work_dir, number)
    *_, later_adoption = pseudo_round.run_round(
        cfg, winner, images, later, from_teacher=student_from_teacher, max_cases=n_cases
    )
    students[f"student {number}"] = later.model_path
    winner = later_adoption.model_path
print(f"the model to use: {winner}")

# %% [markdown]
# ## 6 · Teacher against student, on the same held-out cases
#
# Every model predicts the teacher's test split (labelled cases never trained on, by teacher
# or student, and not used to choose between them) and is scored with the FLARE22 rules, as
# in notebook 04. Scores go to `work_dir/pseudo/evaluation/<model>/`.

# %%
test_cases = data.read_splits(paths.run.splits)["test"]
comparison = pseudo_round.compare_models(
    {"teacher": teacher, **students},
    data_dir,
    paths.work_dir / "pseudo" / "evaluation",
    test_cases,
)
print(adoption)
comparison.round(3)

# %%
pseudo_round.plot_comparison(comparison)
