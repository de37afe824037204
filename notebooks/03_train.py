# %% [markdown]
# # 03 · Train the VNet
#
# A 3D VNet (Milletari et al. 2016): residual stages of 5×5×5 convolutions with PReLU,
# strided convolutions down, transposed convolutions up, skip connections, softmax over
# background + 4 organs. Loss: soft Dice (organs only) + cross-entropy. Optimiser: Adam,
# learning rate 1e-4, batch 4. Training batches are shuffled and augmented (small rotations
# and scaling, intensity changes); validation batches are not.
#
# Everything goes to the run folder `work_dir/model` (on Drive in Colab): the best model by
# validation mean Dice, a checkpoint after every epoch, and the metric history. **If the
# runtime disconnects, run this notebook again: training resumes at the last finished
# epoch** with the same optimiser state. A finished run is not retrained.
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
data_root = "/content/data"
work_dir = "/content/drive/MyDrive/flare-vnet"
config_path = ""  # optional settings YAML like config.yaml (empty: defaults)
overrides = []  # extra settings as strings, see the note above
epochs = 100
batch_size = 4
learning_rate = 0.0001

# %%
# %matplotlib inline
from flare_helpers import labels, runtime, series, train, viz

paths = series.series_paths(work_dir, data_root)
cfg = series.notebook_config(
    paths,
    config_path,
    [
        *overrides,
        f"train.epochs={epochs}",
        f"train.batch_size={batch_size}",
        f"train.learning_rate={learning_rate}",
    ],
)
print(runtime.describe_device())

# %% [markdown]
# ## The model

# %%
organs = labels.OrganSet.from_names(cfg.data.organs)
model = train.build_and_compile(cfg, organs.n_classes)
model.summary(line_length=100)
print(f"{model.count_params():,} parameters; classes: {', '.join(organs.class_names)}")
del model

# %% [markdown]
# ## Train
#
# One progress bar per epoch. The best model is kept by validation mean Dice over the four
# organs (background excluded).

# %%
result = train.train(cfg)
print(f"best {result.monitor} = {result.best_value:.3f} at epoch {result.best_epoch}")
print(f"model: {result.best_model}")

# %% [markdown]
# ## Learning curves
#
# Loss and per-organ Dice, training (dashed) against validation (solid).

# %%
viz.plot_training_curves(result.history_csv)
