# %% [markdown]
# # 05 · Look at the results
#
# Slice overlays of a prediction against the ground truth, an interactive slice viewer,
# the training curves, and a rendered 3D video of the organs (ground truth and prediction
# side by side, the camera turning once around the patient). Figures and the video are
# saved to `work_dir/render`.

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
case_id = ""  # case to render (empty: the first predicted case)
video_seconds = 10.0
video_fps = 12

# %% [markdown]
# The CTs are read from the runtime's local disk; a new runtime gets them extracted again
# from the zip on Drive (as in notebook 04). The predictions are notebook 04's and the
# training curves notebook 03's, both on Drive.

# %%
# %matplotlib inline
from flare_helpers import evaluate, series, viz

paths = series.series_paths(work_dir, data_root)
data_dir = series.ensure_data(paths, series.zip_file(zip_path))
series.ensure_model(paths)
predicted = series.ensure_predictions(paths)
shown = case_id or predicted[0]
load_case = viz.case_loader(data_dir, paths.predictions_dir)
arrays = load_case(shown)

# %% [markdown]
# ## Slice overlays
#
# Radiological convention: the patient's right on the image's left, anterior up; true
# physical proportions. Same organ colours as in the 3D video.

# %%
figure = viz.plot_case(
    arrays.image,
    arrays.spacing,
    gt=arrays.gt,
    pred=arrays.pred,
    dice=evaluate.case_dice(arrays.gt, arrays.pred),
    title=shown,
)
viz.save_figure(figure, paths.render.slices(shown))
figure

# %% [markdown]
# ## Interactive viewer
#
# Pick a case, a plane and a slice; switch between ground truth and prediction. The picture
# keeps its physical proportions, the letters on its edges give the patient's directions
# (R/L right/left, A/P anterior/posterior, S/I superior/inferior), and slice numbers
# count from 1. To step with the keyboard, click the number box beside the slider and use
# the up/down arrow keys (in JupyterLab, a clicked slider handle takes left/right too).

# %%
viewer = viz.slice_viewer(load_case, predicted)

# %% [markdown]
# ## Training curves

# %%
viz.plot_training_curves(paths.run.history)
# %% [markdown]
# ## 3D video
#
# Surface meshes of each organ (marching cubes in mm, lightly smoothed), rendered with a
# camera that turns once around the superior axis. Left: ground truth; right: prediction.

# %%
video = viz.render_rotation_video(
    arrays.gt,
    arrays.pred,
    arrays.spacing,
    paths.render.video(shown),
    seconds=video_seconds,
    fps=video_fps,
)
viz.video_html(video)

# %% [markdown]
# ## Interactive 3D (prediction)
#
# Drag to rotate. Zoom or pan with the toolbar at the top right (or drag with the right
# button); the mouse wheel scrolls the page, not the view.

# %%
viz.interactive_3d(arrays.pred, arrays.spacing)
