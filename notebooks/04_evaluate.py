# %% [markdown]
# # 04 · Evaluate on held-out cases
#
# The trained model predicts every case of the **test split** (never seen in training or
# model selection). Each prediction is mapped back to its CT's own grid (shape, affine and
# orientation of the input file) and scored there, with the voxel spacing from the header,
# following the FLARE22 rules: Dice (DSC), normalised surface Dice (NSD, tolerance liver
# 5 mm, kidneys and spleen 3 mm) and the 95th-percentile Hausdorff distance. An organ absent
# from both ground truth and prediction scores 1; absent from only one, 0.

# %%
import sys

if "google.colab" in sys.modules:  # Colab only: install the package, mount Google Drive
    import subprocess

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "git+https://github.com/flare-vnet/flare-vnet",
        ],
        check=True,
    )
    from google.colab import drive

    drive.mount("/content/drive")

# %% tags=["parameters"]
data_root = "/content/data"
work_dir = "/content/drive/MyDrive/flare-vnet"
cases = "test"  # test: the held-out split of the run; all: every labelled case

# %%
# %matplotlib inline
from flare_helpers import evaluate, series, viz

paths = series.series_paths(work_dir, data_root)

# %% [markdown]
# ## Predict and score

# %%
result = evaluate.evaluate_model(
    paths.model_path, paths.data_dir, paths.evaluation_dir, which=cases
)
report = evaluate.write_report(result, paths.evaluation_dir)
report

# %% [markdown]
# ## Per case and organ

# %%
result.per_case.round(3)

# %% [markdown]
# ## Summary per organ
#
# Mean, standard deviation and median over the test cases; "all organs" averages the
# per-case values over the four organs.

# %%
result.summary().round(3)

# %%
evaluate.plot_boxplots(result.per_case)
# %% [markdown]
# ## The worst case
#
# The case with the lowest mean Dice: ground truth and prediction side by side.

# %%
worst = evaluate.worst_case(result)
arrays = viz.case_loader(paths.data_dir, paths.predictions_dir)(worst)
viz.plot_case(
    arrays.image,
    arrays.spacing,
    gt=arrays.gt,
    pred=arrays.pred,
    dice=evaluate.dice_by_organ(result, worst),
    title=worst,
)
