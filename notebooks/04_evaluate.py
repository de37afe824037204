# %% [markdown]
# # 04 · Evaluate on held-out cases
#
# The trained model predicts every case of the **test split** (never seen in training or
# model selection). Each CT goes through the model's own preprocessing (its run folder's
# `config.yaml`, so the mode travels with the model). In **spacing** mode the network slides
# over the whole resampled body in overlapping 128×128×64 windows (`infer.overlap`, 0.25),
# and each voxel's class probabilities are a Gaussian-weighted mean of the windows that see
# it, trusting a window's centre more than its edges, where it lacks context. In **resize**
# mode one pass covers the whole body. The probabilities are then mapped back to the CT's own
# grid (shape, affine and orientation of the input file), and each organ keeps its largest
# connected piece.
#
# Scores follow the FLARE22 rules, on that original grid with the header's voxel spacing:
# Dice (DSC), normalised surface Dice (NSD, tolerance liver 5 mm, kidneys and spleen 3 mm)
# and the 95th-percentile Hausdorff distance. An organ absent from both ground truth and
# prediction scores 1; absent from only one, 0.

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
cases = "test"  # test: the held-out split of the run; all: every labelled case

# %% [markdown]
# ## The data and the model
#
# The CTs live on the runtime's local disk, which a new runtime (after a disconnect) no
# longer has: if they are missing, they are extracted again from the zip on Drive (a few
# minutes, with a progress bar), as notebook 01 does. The model and its settings come from
# the run folder of notebook 03 (on Drive). Each line below says what came back and from
# where; a missing one stops with the notebook to run first.

# %%
# %matplotlib inline
from flare_helpers import config, evaluate, infer, series, viz
from flare_helpers.workflows import ceiling, report

paths = series.series_paths(work_dir, data_root)
data_dir = series.ensure_data(paths, series.zip_file(zip_path))
model_path = series.ensure_model(paths)
run_cfg = config.load_run_config(paths.run.config)
print(f"model {model_path}: {run_cfg.preprocess.mode} mode")

# %% [markdown]
# ## Predict and score
#
# Predictions are written to `work_dir/evaluation/predictions`, one `<case>.nii.gz` per CT
# on its own grid: open one beside its CT in any viewer and they overlay.

# %%
timing = []
result = evaluate.evaluate_model(
    model_path, data_dir, paths.evaluation_dir, which=cases, reports=timing
)
written = evaluate.write_report(result, paths.evaluation_dir)
written

# %% [markdown]
# ## Where the time goes
#
# Per CT: the windows the network ran against the windows a sliding window over the whole
# body crop needs, and the seconds of each stage: load, preprocess, localise (the coarse
# network), network (the fine windows), resample (mapping back to the CT grid), write.

# %%
infer.timing_table(timing)

# %% [markdown]
# ## Per case and organ
#
# One row per test case and organ: DSC and NSD (1 is perfect), HD95 in mm, and the organ's
# volume in the ground truth and the prediction, in millilitres.

# %%
result.per_case.round(3)

# %% [markdown]
# ## Summary per organ
#
# Mean, standard deviation and median over the test cases; "all organs" averages the
# per-case values over the four organs.

# %%
result.summary().round(3)

# %% [markdown]
# ## How close to the ceiling
#
# The same cases scored for a perfect network on this model's grid (notebook 02's
# resolution ceiling). The gap is what better training could still win; the ceiling itself
# only moves with the preprocessing settings.

# %%
ceiling.against_ceiling(result, data_dir, run_cfg).round(3)

# %% [markdown]
# ## Spread over cases
#
# One box per organ and metric: a wide box or a low outlier points at cases to look at.

# %%
evaluate.plot_boxplots(result.per_case)
# %% [markdown]
# ## The worst case
#
# The case with the lowest mean Dice: ground truth and prediction side by side.

# %%
worst = evaluate.worst_case(result)
arrays = viz.case_loader(data_dir, paths.predictions_dir)(worst)
viz.plot_case(
    arrays.image,
    arrays.spacing,
    gt=arrays.gt,
    pred=arrays.pred,
    dice=evaluate.case_dice(arrays.gt, arrays.pred, result.organs),
    title=worst,
)

# %% [markdown]
# ## Where the localiser looked
#
# The coarse localiser's box per organ on the worst case, and their union plus the margin
# (dashed): the fine network's windows cover only that box, which is why a CT costs a
# fraction of the body crop's windows. Without a localiser (resize mode) the body crop is
# shown alone.

# %%
report.localizer_figure(model_path, data_dir, worst)
