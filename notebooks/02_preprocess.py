# %% [markdown]
# # 02 · Preprocess: from CT to network input
#
# Each CT is loaded with nibabel (voxels as float32 HU), reoriented to RAS, cropped to the
# body, resized to the network grid (128×128×64 by default; linear interpolation for the
# image, nearest neighbour for the labels) and windowed to the abdominal soft-tissue window
# [-160, 240] HU, scaled to [0, 1]. The labels keep liver, right kidney, left kidney and
# spleen as classes 1–4; every other organ becomes background.
#
# The results go to a cache on disk (float16 image, uint8 label, and a manifest recording
# the source file, its fingerprint, geometry and every parameter). Re-running does nothing
# unless a file or a setting changed; then only the affected cases are rebuilt. The cache
# also holds the seeded train/validation/test split that the rest of the series uses.
#
# **Settings** come from `config.yaml`'s defaults; `config_path` may name your own YAML, and
# `overrides` adds `"section.key=value"` strings such as `"preprocess.target_shape=[96,96,64]"`.
# Use the same settings in notebooks 02 and 03.

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
data_root = "/content/data"  # holds FLARE22Train/ (from notebook 01)
work_dir = "/content/drive/MyDrive/flare-vnet"  # cache, model and results
config_path = ""  # optional settings YAML like config.yaml (empty: defaults)
overrides = []  # extra settings as strings, see the note above
workers = 0  # preprocessing processes (0: one per CPU core)
case_id = ""  # case to show (empty: the first training case)

# %%
# %matplotlib inline
from flare_helpers import preprocess, series, viz

paths = series.series_paths(work_dir, data_root)
cfg = series.notebook_config(paths, config_path, overrides)

# %% [markdown]
# ## Fill the cache
#
# Cases run in parallel processes. Each cache entry is written under a temporary name and
# renamed when complete, so an interrupted run never leaves a broken entry.

# %%
summary = preprocess.preprocess_dataset(paths.data_dir, paths.cache_dir, cfg, workers=workers)
print(summary)
shown = case_id or summary.splits["train"][0]

# %% [markdown]
# ## One case at its original resolution
#
# Axial, coronal and sagittal slices with the ground truth overlaid, in the radiological
# convention (patient's right on the image's left, anterior up) and with the true physical
# proportions from the voxel spacing.

# %%
load_case = viz.case_loader(paths.data_dir)
original = load_case(shown)
viz.plot_case(original.image, original.spacing, gt=original.gt, title=f"{shown} (original grid)")
# %% [markdown]
# ## The same case as the network sees it
#
# Body crop, resized grid, HU window mapped to [0, 1], labels as the training classes.

# %%
network_view = viz.cached_case(paths.cache_dir, shown, cfg.data.organs)
viz.plot_case(
    network_view.image,
    network_view.spacing,
    gt=network_view.gt,
    hu_window=(0.0, 1.0),
    title=f"{shown} (network input {' × '.join(map(str, cfg.preprocess.target_shape))})",
)
# %% [markdown]
# ## Browse the training cases
#
# Slice slider, plane selector, overlay opacity and case selector. (When the notebook runs
# headless, e.g. through papermill, a static figure is shown instead.)

# %%
viewer = viz.slice_viewer(load_case, summary.splits["train"])
