# %% [markdown]
# # 03 · Train the VNet
#
# This notebook shows what the network is given, builds the VNet and its loss in plain
# sight, measures on this device the time and the memory it needs, then trains it with Adam.
# Everything goes to the run folder `work_dir/model` (on
# Drive in Colab): the best model by validation mean Dice, a checkpoint after every epoch,
# and the metric history. **If the runtime disconnects, run this notebook again: training
# resumes at the last finished epoch** with the same optimiser state. A finished run is not
# retrained.
#
# **Settings**: `epochs`, `batch_size` and `learning_rate` are set here, in the parameters
# cell (and only here); everything else comes from the defaults, `config_path` and
# `overrides`, as in notebook 02 (the settings cell below prints them all). Use the same
# `config_path` and `overrides` in 02 and 03.

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
config_path = ""  # optional settings YAML like config.yaml (empty: defaults)
overrides = []  # extra settings as strings, as in notebook 02
epochs = 100
batch_size = 2
learning_rate = 0.001

# %% [markdown]
# ## Settings and device
#
# First the preprocessed cache that notebook 02 left in `work_dir` (on Drive in Colab, so a
# fresh runtime finds it; without it this cell says to run 02 first).
#
# Every setting with its comment; the ones the parameters or `overrides` changed end with
# their default. Save this text as a YAML file to reuse it as `config_path` (or with
# `flare-train --config`). Training needs a GPU for real data (Colab: *Runtime → Change
# runtime type → T4 GPU*); on a CPU only the tiny demo settings are practical.
#
# **Precision**: `train.mixed_precision: auto` trains in `mixed_float16` on a T4 (its tensor
# cores compute float16, 8× its float32 rate), in `mixed_bfloat16` on an A100/L4/H100, and
# in float32 on a CPU; the softmax and the loss stay float32. **Determinism**:
# `train.deterministic: true` (the default) makes a rerun give the same weights, but on a
# GPU TensorFlow then gives up its fastest non-deterministic convolution algorithms and
# kernels; it was not measured on a GPU here, so if speed matters more than a bit-exact
# rerun, set `overrides = ["train.deterministic=false"]`.

# %%
# %matplotlib inline
from flare_helpers import config, data, series, train, viz
from flare_helpers.model import runtime
from flare_helpers.workflows import training

paths = series.series_paths(work_dir, data_root)
cfg = series.notebook_config(
    paths,
    config_path,
    overrides,
    train={"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate},
)
series.ensure_cache(paths)
organs = data.OrganSet.from_names(cfg.data.organs)
config.print_config(cfg)
print(runtime.describe_device())
print("precision:", *runtime.resolve_mixed_precision(cfg.train.mixed_precision))

# %% [markdown]
# ## The run folder
#
# Training writes to one run folder, `work_dir/model`. Opening it takes its lock: while
# this notebook trains, another notebook or `flare-train` aiming at the same folder is
# refused with a line that names who holds it (a lock left by a disconnected runtime is
# recognised and taken over). The cache of notebook 02 is brought up to date, and the
# settings and the split are saved beside the model. If the folder already holds
# finished epochs, training resumes after the last one.
#
# **Time limit**: `train.time_limit_minutes` (0: none) bounds everything from here on, the
# localiser and the VNet together, counted from when the folder is open. It is checked
# after every training step, so even a long epoch ends within a minute (or 5 %) of it;
# an epoch it cuts is not recorded (running again repeats it from the last checkpoint),
# but the weights are saved as `last.keras`, and if nothing was validated yet the network
# is validated once so that a `best.keras` exists. Ctrl-C and SIGTERM save `last.keras` too.
#
# Two networks train in this folder, one after the other, through the same training loop:
# the organ localiser and the VNet. Each has its own files (`localizer.keras`,
# `best.keras`, their histories and resume checkpoints), and `train.prepare_run` says
# where each stands.

# %%
folder = training.open_run(cfg)
run = train.prepare_run(cfg, folder.splits, folder.layout.vnet, deadline=folder.deadline)
print(folder)
print(run)

# %% [markdown]
# ## What the network is given
#
# Batches come from the cache of notebook 02 (brought up to date first). Training batches
# are shuffled and augmented on the fly with nnU-Net's default transforms, each with its
# chance: a rotation of up to ±30° about each axis (0.2) and a zoom of 0.7–1.4 (0.2),
# sampled from the whole case around the patch (image linear, labels nearest), Gaussian
# noise (0.1), blur (0.1), brightness and contrast (0.15 each), simulated low resolution
# (0.125), and gamma of the image (0.3) and of its inverse (0.1). A left-right flip is off
# by default: it would turn a right kidney into a left one, so when you switch it on the
# two kidney classes are swapped with it.
#
# In **spacing** mode each sample is a random 128×128×64 patch of a case; a third of them
# are centred on a voxel of a randomly chosen organ (each organ as likely as the others), so
# the small kidneys and the spleen appear as often as the liver. In **resize** mode each
# sample is a whole case. Below: one augmented training batch, the inputs on top and their
# training labels underneath, each cut through its most-labelled slice.

# %%
train_batches, val_batches = train.make_datasets(cfg, run.splits, initial_epoch=run.initial_epoch)
x, y = train_batches[0]
viz.plot_batch(x, y, organs.organs)

# %% [markdown]
# ## The organ localiser
#
# In spacing mode a CT needs dozens of 128×128×64 windows, but the four organs fill only
# part of the body. So a small VNet (8 filters, 3×3×3 kernels; the VNet is described
# below) first learns the organs on a coarse 6 mm grid, where one 64³ window sees the whole
# body crop. At prediction it runs
# once per CT, and the main network's windows then cover only its organ box plus 20 mm
# (notebook 04 draws it). It trains on the same cache, resampled to 6 mm, with its own
# checkpoints (rerun to resume), validation Dice and measured plan, in at most
# `localizer.time_share` (15 %) of the time limit; the VNet gets what remains.
# Resize-mode runs need no localiser: one pass already covers the whole body.

# %%
localizer = training.train_localizer(cfg, folder.splits, deadline=folder.deadline)
if localizer is None:
    print("no localiser in this run (resize mode, or localizer.enabled: false)")
else:
    name = localizer.best_model.name
    print(f"localiser: best {localizer.monitor} {localizer.best_value:.3f}, {name}")

# %% [markdown]
# ## The VNet
#
# The VNet of Milletari et al. (2016) is an encoder-decoder for volumes:
#
# - **Encoder**: stages of 5×5×5 convolutions with PReLU activations, each stage adding its
#   input back (a residual connection, so gradients reach the first layers). Between stages a
#   2×2×2 convolution with stride 2 halves the grid and doubles the filters (16 → 256 with
#   the default depth 4): deeper stages see more context at coarser resolution.
# - **Decoder**: transposed convolutions double the grid again; each stage concatenates the
#   encoder's features of the same resolution (skip connections), which bring back the fine
#   detail that the coarse stages cannot hold.
# - **Head**: a 1×1×1 convolution and a softmax give each voxel a probability per class
#   (background and the organs).
# - **Instance normalisation** after every convolution (`model.normalization`; the paper
#   has none, nnU-Net normalises every convolution): a patch of a real-size CT misses most
#   organs, and without it the network learnt the organs of CT-sized phantoms from such
#   patches far more slowly (held-out Dice 0.34 against 0.96 after the same 60 epochs).
#
# `build_or_restore` builds it, compiles it with Adam, the loss below and per-organ Dice
# metrics, and, when the run folder has a checkpoint, restores the weights and the
# optimiser state of the last finished epoch.

# %%
model = train.build_or_restore(cfg, run)
model.summary(line_length=100)
print(f"{model.count_params():,} parameters; classes: {', '.join(organs.class_names)}")

# %% [markdown]
# ## The loss
#
# Soft Dice over the organs (background left out, so the large background does not swamp
# the small kidneys) plus voxel-wise cross-entropy, which gives useful gradients from the
# very first step, when the Dice overlap is still near zero. The Dice term of each sample
# counts only the organs its labels contain: a patch without a kidney has no kidney Dice
# to learn from, and kidney voxels predicted there are the cross-entropy's to punish. Below: the loss of the network
# as it starts (untrained, or restored) on the batch above, and of a perfect prediction (the
# labels themselves).

# %%
loss = model.loss
print(f"network now: {float(loss(y, model(x))):.3f}")
print(f"perfect prediction: {float(loss(y, y)):.3f}")

# %% [markdown]
# ## The plan, measured on this device
#
# Before training, `measure_plan` trains the VNet for a few real steps on this runtime's
# device (`train.plan_steps`, after one warm-up step that builds the training function;
# compiling is paid there once, training reuses it), validates once and saves the model
# once, each timed. Then every model and optimiser variable is put back as it was, so the
# weights after training are the same as without the plan. From those times it predicts
# an epoch (its steps, its validation, its saves) and the whole run of `epochs`, and shows
# the peak memory (host RSS; GPU where there is one). When the prediction passes the time
# limit or a free Colab session (about 12 h), it says so and which settings would fit,
# before the long work starts. It is written to `plan.json` in the run folder; after
# training, the time training really took is added to it.
#
# An epoch is `train.steps_per_epoch` steps (nnU-Net's 250) of `batch_size` patches,
# whatever the number of cases, so the budget does not shrink with a small data set. The
# last line is no measurement: an estimate for a Colab T4 from the network's
# floating-point operations, assuming 10 % of the T4's published float16 peak is sustained
# on these 3D convolutions. Memory on a T4 (XLA's buffer plan of one training step of the
# default VNet, instance normalisation, 128×128×64): 4.3 GiB at batch 2 in mixed_float16
# (5.1 GiB in float32, 7.5 and 9.1 GiB at batch 4), well inside its 15 GiB.

# %%
plan = train.measure_plan(cfg, run, model, train_batches)
n_val = val_batches.n_samples if val_batches is not None else 0
estimate = train.plan_training(cfg, len(run.splits["train"]), n_val)
print(estimate.budget_line())
print(estimate.time_line())

# %% [markdown]
# ## Train
#
# After each epoch the callbacks write, atomically, into the run folder: the metric history
# (`history.csv`), the best model so far by the moving average of the validation mean
# Dice over the organs (`best.keras`, background excluded; as nnU-Net's EMA pseudo-Dice,
# `0.9 × previous + 0.1 × this epoch`, so one lucky epoch on a few validation cases does
# not pick the model) and a resume checkpoint with the optimiser state.
# One progress bar per epoch, then a line with the epoch's time and the time left,
# predicted from the measured step times and never past the time limit. In spacing mode validation scores one fixed patch centred on each organ of
# each validation case, the same every epoch, so every organ is seen and scores compare
# across epochs; the mean Dice that picks `best.keras` leaves out an organ that is neither
# in the validation labels nor predicted, so a network that predicts nothing never wins.
# Notebook 04 scores whole held-out cases with sliding windows.
#
# `train.fit` runs Keras' `fit` from `run.initial_epoch` (0, or where a disconnected run
# stopped) to `run.epochs`; the dataset shuffles itself, reproducibly per epoch. These are
# the steps of the one training loop that also trained the localiser above.
# `finish_run` records the outcome; closing the folder gives its lock back.

# %%
callbacks = train.make_callbacks(cfg, run)
train.fit(model, run, train_batches, val_batches, callbacks)
result = train.finish_run(cfg, run)
folder.close()
if plan is not None:
    took, predicted = (train.format_duration(t) for t in (result.fit_seconds, plan.left_seconds))
    print(f"training took {took}; the plan predicted {predicted} for the epochs it had left")
if result.stopped_by:  # the time limit: rerun this notebook to go on
    print(result.stop_line())
    print(result.model_line())
else:
    print(f"best {result.monitor} = {result.best_value:.3f} at epoch {result.best_epoch}")
    print(f"model: {result.best_model.relative_to(paths.work_dir)}")

# %% [markdown]
# ## Learning curves
#
# Loss and per-organ Dice, training (dashed) against validation (solid). Training and
# validation Dice close together mean the model generalises; a widening gap, that it is
# learning the training cases by heart.

# %%
(
    viz.plot_training_curves(result.history_csv)
    if result.epochs_completed
    else "no epoch finished yet: no curves"
)

# %% [markdown]
# The generalisation gap per organ, averaged over the last five epochs (the training Dice
# is measured on the augmented training patches, the validation Dice on the fixed
# validation patches).

# %%
if result.epochs_completed:
    print(train.gap_lines(train.generalisation_gap(result.history_csv, organs.organs)))
