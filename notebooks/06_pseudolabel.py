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
# 4. optionally the student becomes the teacher of a second round (`rounds = 2`).
#
# Pseudo-labelled cases only ever go to training: the validation and test cases are the
# labelled ones of notebook 02, unchanged, so teacher and student are scored on the same
# held-out cases. **Everything resumes**: run the notebook again after a disconnect and
# finished CTs, epochs and rounds are skipped. The scans are read from their zip one at a
# time, so the 250 GB set never lands on the runtime's disk.
#
# **Settings**: `epochs`, `batch_size` and `learning_rate` are the student's; the selection
# (`pseudo.min_confidence`, `pseudo.keep_fraction`) and how often a pseudo-labelled case is
# drawn against a labelled one (`pseudo.sample_weight`) come from `config.yaml`, `config_path`
# and `overrides`, as in notebooks 02 and 03.


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
student_from_teacher = False  # start the student from the teacher's weights
rounds = 1  # 2: the first student pseudo-labels again and teaches a second student

# %%
# %matplotlib inline
from pathlib import Path

from IPython.display import display

from flare_helpers import pseudolabel, series, splits, synthetic, viz
from flare_helpers.workflows import pseudo_round, training

paths = series.series_paths(work_dir, data_root)
cfg = series.notebook_config(
    paths,
    config_path,
    overrides,
    train={"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate},
)
images = Path(series.resolve(unlabelled_path, "FLARE_UNLABELLED"))
if synthetic_unlabelled:
    images, _ = synthetic.write_unlabelled(
        images.parent,
        synthetic_unlabelled,
        synthetic_seed,
        synthetic_shape,
        family=synthetic_family,
    )
teacher = paths.model_path
first = pseudo_round.round_paths(paths.work_dir, 1)
print(f"teacher {teacher}; unlabelled scans {images}")

# %% [markdown]
# ## 1 · The teacher pseudo-labels the unlabelled CTs
#
# Each CT goes through the teacher's own preprocessing and prediction (as in notebook 04),
# and its labels are written on the CT's own grid with FLARE22's ids. A **confidence** in
# [0, 1] is measured on the way: the network's mean top-class probability over the voxels it
# calls an organ, times the share of each organ's voxels in its largest connected piece
# (a real organ is one piece; a confused network leaves fragments and misses organs). On
# phantoms it ranks cases by their true Dice (`BENCHMARKS.md`).
#
# A case is kept when its confidence is at least `pseudo.min_confidence` and it is in the
# top `pseudo.keep_fraction` of the cases. A CT that cannot be read is skipped with its
# reason. Kept cases land in the FLARE22 layout (`images/`, `labels/`) below
# `work_dir/pseudo/round1/pseudolabels`, every prediction in `predictions/`, and the scores
# in `confidence.csv`.

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
# is drawn `pseudo.sample_weight` times as often as a labelled one. The student starts from
# scratch unless `student_from_teacher` (then from the teacher's weights: faster, but it
# inherits the teacher's habits). Its run folder is `work_dir/pseudo/round1/student`;
# training resumes like notebook 03's.

# %%
trained = training.train(pseudo_round.student_config(cfg, teacher, first, student_from_teacher))
print(f"student: best {trained.monitor} = {trained.best_value:.3f} at epoch {trained.best_epoch}")

# %% [markdown]
# ## 4 · More rounds
#
# With `rounds = 2` the student pseudo-labels the same scans again and teaches a new
# student (`work_dir/pseudo/round2`), and so on. Nothing runs here when `rounds = 1`.

# %%
students = {"student": first.model_path}
for number in range(2, rounds + 1):
    previous = pseudo_round.round_paths(paths.work_dir, number - 1).model_path
    later = pseudo_round.round_paths(paths.work_dir, number)
    pseudo_round.run_round(
        cfg, previous, images, later, from_teacher=student_from_teacher, max_cases=n_cases
    )
    students[f"student {number}"] = later.model_path
list(students)

# %% [markdown]
# ## 5 · Teacher against student, on the same held-out cases
#
# Every model predicts the teacher's test split (labelled cases never trained on, by teacher
# or student) and is scored with the FLARE22 rules, as in notebook 04. Scores go to
# `work_dir/pseudo/evaluation/<model>/`.

# %%
test_cases = splits.read_splits(paths.run.splits)["test"]
comparison = pseudo_round.compare_models(
    {"teacher": teacher, **students},
    paths.data_dir,
    paths.work_dir / "pseudo" / "evaluation",
    test_cases,
)
comparison.round(3)

# %%
pseudo_round.plot_comparison(comparison)
