"""Settings of the tiny untrained runs the tests share (a module, so tests can import them)."""

#: A tiny spacing-mode run: 1 × 1 × 2.5 mm grid, 32 × 32 × 16 patches (several windows per case).
TINY_SPACING = ["preprocess.mode=spacing", "preprocess.target_spacing=[1.0,1.0,2.5]"]

TINY_MODEL = [
    "preprocess.mode=resize",
    "preprocess.target_shape=[32,32,16]",
    "preprocess.workers=1",
    "model.base_filters=4",
    "model.depth=2",
    "model.convs_per_stage=[1,1,1]",
    "model.kernel_size=3",
    "train.steps_per_epoch=0",  # an epoch: one sample per training case
    "train.plan_steps=0",  # no measured plan (its steps, validation pass and save; its tests set it)
]

#: A tiny localiser: 16³ windows of the 6 mm grid, the smallest VNet (seconds to train).
TINY_LOCALIZER = [
    "localizer.target_shape=[16,16,16]",
    "localizer.base_filters=4",
    "localizer.depth=2",
    "localizer.convs_per_stage=[1,1,1]",
    "localizer.epochs=2",
    "localizer.min_val_dice=0.0",  # kept whatever its Dice (tests of the gate set their own)
    "localizer.min_epochs=0",  # trained however short its time (the rule's test sets its own)
]

#: The series' notebooks, in order (the README's badges, the runner's runs, docs/notebooks).
NOTEBOOK_NAMES = [
    "01_extract",
    "02_preprocess",
    "03_train",
    "04_evaluate",
    "05_render",
    "06_pseudolabel",
]
