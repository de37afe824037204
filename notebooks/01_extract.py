# %% [markdown]
# # 01 · Extract the FLARE22 training data
#
# The first step of the series: unpack the FLARE22 training zip
# (`FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz`, `FLARE22Train/labels/FLARE22_Tr_0001.nii.gz`, …)
# and check what is inside: which images have labels, their size, voxel spacing and
# orientation.
#
# ## Get the data
#
# The data come from the **FLARE22 challenge** (MICCAI 2022, *Fast and Low-resource
# semi-supervised Abdominal oRgan sEgmentation*): <https://flare22.grand-challenge.org/>.
#
# 1. Create a grand-challenge.org account and join the challenge (its *Rules* ask for
#    your real name and affiliation); the download links are then on its *Dataset* page.
# 2. Download the labelled training set, **`FLARE22Train.zip`**: 50 abdominal CTs with
#    labels of 13 organs (about 1.5 GB). Notebooks 01–05 need only this file.
# 3. The **unlabelled** training scans (2,000 CTs, in `FLARE_UnlabeledCase1-1000` and
#    `FLARE_UnlabeledCase1001-2000`, roughly 250 GB in all) are for semi-supervised
#    learning: notebook 06 pseudo-labels a part of them.
#
# **Terms.** The scans come from public data sets (the Medical Segmentation Decathlon,
# KiTS, AbdomenCT-1K and collections of The Cancer Imaging Archive, among others; the
# challenge's *Dataset* page names them). The challenge's rules forbid passing the data or
# the download links on: each user downloads them after registering. Work that uses the data
# should cite the challenge paper: J. Ma et al., "Unleashing the strengths of unlabelled data
# in deep learning-assisted pan-cancer abdominal organ quantification: the FLARE22
# challenge", *The Lancet Digital Health* 6(11), e815–e826, 2024
# (doi:10.1016/S2589-7500(24)00154-7).
#
# **In Colab**, put `FLARE22Train.zip` in your Google Drive (`MyDrive/`); the next cell
# installs `flare_helpers` and mounts Drive. The data are extracted to the runtime's local
# disk (fast), while everything the series produces goes to `work_dir` on Drive. A new
# runtime (each notebook opened from its badge, or after a disconnect) starts without the
# extracted data; notebooks 02, 04, 05 and 06 extract the zip again when they need it.
#
# **No data yet?** Set `synthetic_cases` to e.g. `10` to generate phantom CTs in the same
# layout and run the whole series on them.

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
zip_path = "/content/drive/MyDrive/FLARE22Train.zip"  # the FLARE22 training zip
data_root = "/content/data"  # extraction target (local disk)
work_dir = "/content/drive/MyDrive/flare-vnet"  # cache, model, results (on Drive)
synthetic_cases = 0  # > 0: write this many phantom cases to zip_path first
synthetic_shape = [64, 64, 32]  # voxels per phantom case
synthetic_seed = 0
synthetic_family = "ct"  # "ct": CT-like phantoms, CT-sized at any shape; "simple": fast ellipsoids

# %%
import pandas as pd

from flare_helpers import data, phantoms, series

paths = series.series_paths(work_dir, data_root)
zip_file = series.zip_file(zip_path)

# %% [markdown]
# ## Optional: a synthetic data set
#
# Phantom CTs with all 13 FLARE22 organs, so the rest of the series can run without the
# real data. The default `ct` family draws CT-like anatomy of CT size whatever the voxel
# shape: a lobed liver reaching across the midline, bean kidneys with cortex and pelvis, a
# crescent spleen, bowel with gas or contrast, vessels, vertebrae, ribs, the table; a
# non-contrast, arterial or portal-venous phase; scanner blur and noise; anisotropic
# spacing and mixed orientations (RAS, LPS, …). `simple` draws uniform ellipsoids (fast,
# for quick tests). The same seed gives identical files.

# %%
if synthetic_cases:
    zip_file = phantoms.write_synthetic_zip(
        zip_file.parent, synthetic_cases, synthetic_seed, synthetic_shape, family=synthetic_family
    )
zip_file

# %% [markdown]
# ## Extract
#
# Extraction is safe (members that would land outside `data_root` are refused) and
# idempotent: running the cell again does nothing; an interrupted run is completed.

# %%
data_dir = data.extract_zip(zip_file, paths.data_root)
data_dir

# %% [markdown]
# ## The cases
#
# Each image `*_0000.nii.gz` is paired with its label. Spacing is in mm along the file's
# own axes; the orientation code says where each voxel axis points (e.g. `LPS`: x toward
# the patient's left, y posterior, z superior). The series reorients every volume to RAS
# for the network and writes results back in the file's own orientation.

# %%
found = data.discover_cases(data_dir)
for path in found.unlabelled:
    print(f"no label for {path.name}: it can be predicted, not trained on")
for path in found.orphan_labels:
    print(f"label {path.name} has no image: ignored")
pd.DataFrame(data.describe_cases(found.cases))
