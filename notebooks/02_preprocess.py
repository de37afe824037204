# %% [markdown]
# # 02 · Preprocess: from CT to network input
#
# A CT is 512×512×100+ voxels of Hounsfield units in whatever orientation the scanner
# wrote; the network wants a fixed-size array of numbers near [0, 1] in one orientation.
# This notebook builds that input for every case, the same way notebook 04 and
# `flare-predict` will build it for a new CT.
#
# Two modes share every step but one (`preprocess.mode`):
#
# - **spacing** (the default): the body is resampled to fixed voxel sizes in mm
#   (`preprocess.target_spacing`, 1.2×1.2×2.5 mm). An organ then has the same size in voxels
#   in every scan, whether it covers the abdomen only or chest to pelvis. The network trains
#   on 128×128×64 patches of that grid and predicts with overlapping sliding windows.
# - **resize** (the original recipe): the body is squeezed whole into 128×128×64, one network
#   pass per CT. Simple and fast, but the voxel size then depends on the patient and on the
#   scan range, and small organs lose detail.
#
# The results go to a cache on disk (float16 image, uint8 label, and a manifest recording
# each source file, its fingerprint, geometry, the data set's spacing statistics and every
# parameter). Re-running does nothing unless a file or a setting changed; then only the
# affected cases are rebuilt. The cache also holds the seeded train/validation/test split.
#
# **Settings** are the library's defaults (printed below, each with its comment);
# `config_path` may name your own YAML, and `overrides` adds `"section.key=value"` strings
# such as `"preprocess.mode=resize"`. Use the same settings in notebooks 02 and 03.

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
data_root = "/content/data"  # holds FLARE22Train/ (from notebook 01)
work_dir = "/content/drive/MyDrive/flare-vnet"  # cache, model and results
zip_path = "/content/drive/MyDrive/FLARE22Train.zip"  # re-extracted if a new runtime lost the data
config_path = ""  # optional settings YAML like config.yaml (empty: defaults)
overrides = []  # extra settings as strings, see the note above
workers = 0  # preprocessing processes (0: one per CPU core)
case_id = ""  # case to show (empty: the first labelled case)
ceiling_cases = 5  # cases scored for the resolution ceiling (0: skip it)

# %% [markdown]
# ## Settings and data
#
# The paths come from the parameters above (or the `FLARE_WORK_DIR` and `FLARE_DATA_ROOT`
# environment variables), the rest from the settings. The CTs live on the runtime's local
# disk: a new runtime (this notebook opened from its badge, or after a disconnect) gets them
# extracted again from the zip on Drive, as notebook 01 does. Below, every setting with its
# comment; a value the parameters or `overrides` changed ends with its default. The text
# is valid YAML: save it as a file, edit it, and pass it as `config_path` (or to
# `flare-train --config`).

# %%
# %matplotlib inline
from flare_helpers import config, data, preprocess, series, viz
from flare_helpers.workflows import ceiling

paths = series.series_paths(work_dir, data_root)
data_dir = series.ensure_data(paths, series.zip_file(zip_path))
cfg = series.notebook_config(paths, config_path, overrides)
config.print_config(cfg)

# %%
labelled = data.discover_cases(data_dir).labelled
shown = case_id or labelled[0].case_id
image, label = data.load_case(next(c for c in labelled if c.case_id == shown))
print(f"{len(labelled)} labelled cases; mode {cfg.preprocess.mode}; showing {shown}")

# %% [markdown]
# ## The steps on one case
#
# - **Reorient to RAS.** Files come in any voxel order (LPS from DICOM, feet-first …);
#   turning them to one order means the network always sees the patient's right on the
#   same side. The original orientation is kept to write predictions back.
# - **Crop to the body.** Air around the patient carries nothing; the largest region above
#   -500 HU, plus 5 mm, is kept, so the network's voxels go to anatomy.
# - **Resample** the crop: to `target_spacing` mm (spacing mode) or into `target_shape`
#   (resize mode); linear interpolation for the image, nearest neighbour for the labels,
#   which never invents a label value.
# - **Window [-160, 240] HU → [0, 1].** The abdominal soft-tissue window keeps liver,
#   spleen, kidneys and fat apart and saturates bone and air, which carry nothing for these
#   organs; a [0, 1] range suits the network's initialisation.
#
# Below, the middle and right panels draw one square pixel per voxel: what the network
# sees. In resize mode the organs come out squeezed along z.

# %%
viz.plot_preprocessing(image, label, cfg)

# %% [markdown]
# ## What the grid costs: the resolution ceiling
#
# Even a perfect network can only be as sharp as its grid. The ceiling takes the ground
# truth to the network grid exactly as training labels are made, maps it back to the CT
# like a prediction, and scores it against itself (FLARE22 rules). No model trained with
# these settings can beat these numbers; a real model lands below them. The table compares
# your settings with the other mode on the first `ceiling_cases` data.

# %%
chosen = [case.case_id for case in labelled[:ceiling_cases]]
ceiling.compare_modes(data_dir, cfg, chosen).round(3) if chosen else "skipped"

# %% [markdown]
# ## Fill the cache
#
# Cases run in parallel processes. Each cache entry is written under a temporary name and
# renamed when complete, so an interrupted run never leaves a broken entry. The manifest
# records the spacing statistics of the data set and the cache's size on disk.

# %%
summary = preprocess.preprocess_dataset(data_dir, paths.cache_dir, cfg, workers=workers)
print(summary)
print(preprocess.read_manifest(paths.cache_dir)["statistics"])

# %% [markdown]
# ## One case at its original resolution
#
# Axial, coronal and sagittal slices with the ground truth overlaid, in the radiological
# convention (patient's right on the image's left, anterior up) and with the true physical
# proportions from the voxel spacing.

# %%
load_case = viz.case_loader(data_dir)
original = load_case(shown)
viz.plot_case(original.image, original.spacing, gt=original.gt, title=f"{shown} (original grid)")

# %% [markdown]
# ## A real CT beside it
#
# The same views of a real patient: TotalSegmentator's example CT (abdomen and pelvis, 3 mm
# voxels; its organ outlines were drawn by TotalSegmentator, not by a person; Apache-2.0,
# github.com/wasserth/TotalSegmentator), shipped with this package. If the case above is a
# phantom, compare: organ shapes, the fat between organs, bowel, bone, noise. A network
# trained only on phantoms has to find these organs.

# %%
real = viz.case_loader(data.real_ct_folder())(data.REAL_CT_CASE)
viz.plot_case(real.image, real.spacing, gt=real.gt, title="real CT (TotalSegmentator example)")
# %% [markdown]
# ## The same case as the network sees it
#
# The cached grid: body crop, resampled, HU window mapped to [0, 1], labels as the training
# classes, drawn with the grid's physical voxel size.

# %%
network_view = viz.cached_case(paths.cache_dir, shown, cfg.data.organs)
viz.plot_case(
    network_view.image,
    network_view.spacing,
    gt=network_view.gt,
    hu_window=(0.0, 1.0),
    title=f"{shown} (network grid {' × '.join(map(str, network_view.image.shape))})",
)
# %% [markdown]
# ## Browse the training cases
#
# Slice slider, plane selector, overlay opacity and case selector. (When the notebook runs
# headless, e.g. through papermill, a static figure is shown instead.)

# %%
viewer = viz.slice_viewer(load_case, summary.splits["train"])
