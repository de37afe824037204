"""Settings: config.yaml documents every default, overrides, and one-line errors for bad values."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from flare_helpers.config import (
    AugmentConfig,
    Config,
    documented_defaults,
    documented_yaml,
    load_config,
    load_run_config,
    parse_override,
    save_config,
    validate,
)
from flare_helpers.errors import FlareError

#: The documented defaults shipped in the package; the repository's config.yaml is a copy.
PACKAGE_CONFIG = Path(__file__).resolve().parents[1] / "flare_helpers" / "config.yaml"
REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults


def test_root_config_yaml_is_the_packaged_one():
    """One text: flare_helpers/config.yaml (shipped, printed by --print-config) is the source."""
    assert REPO_CONFIG.read_text(encoding="utf-8") == PACKAGE_CONFIG.read_text(encoding="utf-8"), (
        "config.yaml differs from flare_helpers/config.yaml: edit the package's file, then "
        "cp flare_helpers/config.yaml config.yaml"
    )
    assert documented_defaults() == PACKAGE_CONFIG.read_text(encoding="utf-8")


def test_config_yaml_holds_every_default_and_nothing_else():
    documented = yaml.safe_load(PACKAGE_CONFIG.read_text(encoding="utf-8"))
    defaults = Config().to_dict()
    assert list(documented) == list(defaults)  # same sections, same order
    for section, values in defaults.items():
        assert list(documented[section]) == list(values), section  # same keys, same order
        for key, value in values.items():
            got = documented[section][key]
            assert got == value and type(got) is type(value), (
                f"{section}.{key}: {got!r} != {value!r}"
            )


def test_every_key_in_config_yaml_is_explained():
    """Each ``key: value`` line carries a comment saying what it does."""
    keys = {key for values in Config().to_dict().values() for key in values}
    explained = set()
    for line in PACKAGE_CONFIG.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^  (\w+): [^#]*#\s*\S", line)
        if match:
            explained.add(match.group(1))
    assert keys == explained


def test_loading_config_yaml_gives_the_defaults():
    assert load_config(PACKAGE_CONFIG) == Config()
    assert load_config() == Config()


def test_printed_defaults_are_the_documented_file():
    assert documented_yaml() == documented_yaml(Config()) == documented_defaults()


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["train.epochs=5", "train.learning_rate=1e-5", "data.organs=[liver, spleen]"],
        [
            "preprocess.mode=resize",
            "preprocess.target_shape=[32,32,16]",
            "data.cache_dir=/content/drive/My Drive/cache",
            "data.zip_path='data/FLARE22 #1.zip'",
            "train.jit_compile=false",
            "augment.scale_range=[0.8,1.25]",
            "model.convs_per_stage=[1,1,1]",
            "model.depth=2",
        ],
    ],
)
def test_printed_config_loads_back_into_the_same_config(tmp_path, overrides):
    cfg = load_config(None, overrides)
    text = documented_yaml(cfg)
    assert load_config(_write(tmp_path, text)) == cfg
    # every key keeps its comment; a changed value names its default
    lines, section = {}, None
    for line in text.splitlines():
        if header := re.match(r"^(\w+):\s*$", line):
            section = header.group(1)
        elif key := re.match(r"^  (\w+): ", line):
            lines[f"{section}.{key.group(1)}"] = line
    assert set(lines) == {f"{s}.{k}" for s, values in Config().to_dict().items() for k in values}
    assert all("# " in line for line in lines.values())
    changed = {o.partition("=")[0] for o in overrides}
    for key, line in lines.items():
        assert ("(default: " in line) == (key in changed), line
    if overrides:
        assert "  epochs: 5" in text or "target_shape: [32, 32, 16]" in text


def test_print_config_flag_prints_the_settings_and_trains_nothing(tmp_path, capsys):
    from flare_helpers.cli import train_main

    run = tmp_path / "run"
    assert train_main(["--print-config", "train.epochs=7", f"train.output_dir={run}"]) == 0
    text = capsys.readouterr().out
    assert "  epochs: 7" in text and "(default: 100)" in text
    assert load_config(_write(tmp_path, text)) == load_config(
        None, ["train.epochs=7", f"train.output_dir={run}"]
    )
    assert not run.exists()


def test_exponent_notation_in_a_file_is_a_number(tmp_path):
    """``learning_rate: 1e-4`` is what people write; PyYAML alone would make it a string."""
    cfg = load_config(_write(tmp_path, "train:\n  learning_rate: 1e-4\n"))
    assert cfg.train.learning_rate == 1e-4


@pytest.mark.parametrize("text", ["", "# only a comment\n", "train:\n", "data: null\ntrain: {}\n"])
def test_empty_file_or_sections_keep_the_defaults(tmp_path, text):
    assert load_config(_write(tmp_path, text)) == Config()


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(
        None,
        [
            "train.epochs=7",
            "data.organs=[spleen, liver]",
            "model.depth=3",
            "model.convs_per_stage=[1,1,2,2]",
        ],
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert not [p for p in path.parent.iterdir() if p.name != "config.yaml"]  # no temporaries


# --------------------------------------------------------------------------- overrides


def test_file_then_overrides_in_order(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 5\n  batch_size: 2\ndata:\n  organs: [liver]\n")
    cfg = load_config(
        path, ["train.epochs=9", "train.epochs=11", "preprocess.hu_window=[-100, 200]"]
    )
    assert cfg.train.epochs == 11  # the last override wins
    assert cfg.train.batch_size == 2  # from the file
    assert cfg.train.learning_rate == Config().train.learning_rate  # default
    assert cfg.data.organs == ("liver",)
    assert cfg.preprocess.hu_window == (-100.0, 200.0)
    assert all(isinstance(v, float) for v in cfg.preprocess.hu_window)  # ints become floats


@pytest.mark.parametrize(
    ("override", "section", "key", "value"),
    [
        ("data.data_dir=/data/a=b", "data", "data_dir", "/data/a=b"),  # '=' in the value
        ("train.jit_compile=true", "train", "jit_compile", True),
        ("train.jit_compile=auto", "train", "jit_compile", "auto"),
        ("train.learning_rate=3e-4", "train", "learning_rate", 3e-4),  # YAML 1.1: a string
        ("train.learning_rate=1E+2", "train", "learning_rate", 100.0),
        ("augment.scale_range=[9e-1, 1.1]", "augment", "scale_range", (0.9, 1.1)),
        ("train.learning_rate=1", "train", "learning_rate", 1.0),
        ("infer.largest_component=false", "infer", "largest_component", False),
        ("data.organs=[Left Kidney]", "data", "organs", ("Left Kidney",)),
        ("preprocess.target_shape=[64, 64, 32]", "preprocess", "target_shape", (64, 64, 32)),
    ],
)
def test_override_values_are_parsed_as_yaml(override, section, key, value):
    got = getattr(getattr(load_config(None, [override]), section), key)
    assert got == value and type(got) is type(value)


def test_replace_checks_names_and_types():
    cfg = Config().replace(train={"epochs": 3})
    assert cfg.train.epochs == 3 and Config().train.epochs == 100  # frozen original
    with pytest.raises(FlareError, match=r"unknown key 'train\.epoch'"):
        Config().replace(train={"epoch": 3})
    with pytest.raises(FlareError, match="must be an integer"):
        Config().replace(train={"epochs": "3"})


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  epoch: 5\n", r"unknown key 'train\.epoch' \(did you mean 'train\.epochs'\?\)"),
        ("train:\n  learning_rat: 1\n", r"did you mean 'train\.learning_rate'\?"),
        ("trian:\n  epochs: 5\n", r"unknown key 'trian' \(did you mean 'train'\?\)"),
        (
            "preprocess:\n  zzz: 1\n",
            r"unknown key 'preprocess\.zzz'; known: mode, target_spacing, target_shape, hu_window",
        ),
        ("xyz: {}\n", r"unknown key 'xyz'; known: data, preprocess, augment, model, train, infer"),
    ],
)
def test_unknown_keys_name_the_key_and_suggest(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(FlareError, match=message) as info:
        load_config(path)
    assert info.value.path == path and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=five", "train.epochs must be an integer, got 'five'"),
        ("train.epochs=2.5", "train.epochs must be an integer, got 2.5"),
        ("train.epochs=true", "train.epochs must be an integer, got True"),
        ("train.learning_rate=fast", "train.learning_rate must be a number, got 'fast'"),
        ("train.tensorboard=1", "train.tensorboard must be true or false, got 1"),
        ("train.output_dir=[a]", r"train.output_dir must be a string, got \['a'\]"),
        ("preprocess.target_shape=128", "must be a list of 3 integers, got 128"),
        ("preprocess.target_shape=[64, 64]", r"must be a list of 3 integers, got \[64, 64\]"),
        ("preprocess.target_shape=[64, 64, 32.5]", "must be a list of 3 integers"),
        ("preprocess.hu_window=[a, b]", "must be a list of 2 numbers"),
        ("train.learning_rate=1e", "train.learning_rate must be a number, got '1e'"),
        ("train.epochs=1e3", "train.epochs must be an integer, got '1e3'"),
        ("data.organs=liver", "data.organs must be a list of strings, got 'liver'"),
        ("model.normalization=group", r"must be one of 'none', 'batch', 'instance', got 'group'"),
        ("train.mixed_precision=fp16", "must be one of 'auto', 'none', 'mixed_float16'"),
    ],
)
def test_wrong_types_are_one_line_errors(override, message):
    with pytest.raises(FlareError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("preprocess.target_shape=[0, 64, 64]", "target_shape must be > 0"),
        ("preprocess.target_shape=[96, 96, 40]", r"divisible by 2\*\*model.depth = 16"),
        ("preprocess.hu_window=[240, -160]", "low < high"),
        ("preprocess.crop_margin_mm=-1", "crop_margin_mm must be >= 0"),
        ("preprocess.workers=-1", "preprocess.workers must be >= 0"),
        ("preprocess.body_threshold_hu=.inf", "preprocess.body_threshold_hu must be a finite"),
        ("data.val_fraction=1", r"must be in \[0, 1\)"),
        ("data.test_fraction=-0.1", r"must be in \[0, 1\)"),
        ("data.organs=[]", "organ list is empty"),
        ("data.organs=[liver, liver]", "organ listed twice"),
        ("data.organs=[liver, heart]", "unknown organ"),
        ("data.split_seed=-1", r"must be in \[0, 2\*\*32\)"),
        ("model.depth=0", "model.depth must be >= 1"),
        ("model.convs_per_stage=[1, 2]", "needs depth \\+ 1 entries"),
        ("model.dropout=1", r"model.dropout must be in \[0, 1\)"),
        ("model.kernel_size=0", "must be >= 1"),
        ("train.epochs=0", "train.epochs and train.batch_size must be >= 1"),
        ("train.learning_rate=0", "learning_rate must be > 0"),
        ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
        ("train.dice_weight=-1", "dice_weight and train.ce_weight must be >= 0"),
        ("train.early_stopping_patience=-2", "early_stopping_patience must be >= 0"),
        ("train.workers=0", "train.workers must be >= 1"),
        ("train.seed=-5", r"must be in \[0, 2\*\*32\)"),
        ("augment.rotation_probability=1.5", r"rotation_probability must be in \[0, 1\]"),
        ("augment.low_resolution_zoom=[0.5, 1.5]", r"must lie in \(0, 1\]"),
        ("augment.rotation_deg=[30, 30, 200]", r"must be in \[0, 180\]"),
        ("augment.blur_sigma=[1.0, 0.5]", "blur_sigma must be \\[low, high\\]"),
        ("train.steps_per_epoch=-1", "steps_per_epoch >= 0"),
        ("train.ema_smoothing=1", r"ema_smoothing must be in \[0, 1\)"),
        ("augment.lr_flip_probability=-0.1", r"must be in \[0, 1\]"),
        ("augment.noise_sigma=[-0.01, 0.1]", "noise_sigma must be \\[low, high\\] with 0 <= low"),
        ("augment.scale_range=[1.1, 0.9]", "scale_range must be \\[low, high\\]"),
        ("augment.scale_range=[0, 1.1]", "scale_range must be > 0"),
        ("augment.gamma_range=[0, 1.5]", "gamma_range must be > 0"),
        ("infer.batch_size=0", "infer.batch_size must be >= 1"),
    ],
)
def test_values_out_of_range_are_refused(override, message):
    with pytest.raises(FlareError, match=message):
        load_config(None, [override])


def test_range_errors_from_a_file_name_the_file(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 0\n")
    with pytest.raises(FlareError) as info:
        load_config(path)
    assert info.value.path == path and "train.epochs" in str(info.value)


def test_edge_values_that_are_allowed():
    cfg = load_config(
        None,
        [
            "data.val_fraction=0",
            "data.test_fraction=0",
            "augment.rotation_probability=1",
            "train.steps_per_epoch=0",
            "train.ce_weight=0",
            "model.depth=1",
            "model.convs_per_stage=[1, 1]",
            "preprocess.target_shape=[2, 4, 6]",
            "preprocess.workers=0",
        ],
    )
    assert validate(cfg) is cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: [unclosed\n", r"not valid YAML \(line 2, column 1: expected ',' or '\]'"),
        ("train:\n  epochs: 3\n   bad: 1\n", r"not valid YAML \(line 3, column 7: mapping values"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("train: 5\n", "section 'train' must be a mapping"),
    ],
)
def test_malformed_files_are_one_line_errors_with_a_position(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(FlareError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(FlareError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(FlareError, match="cannot read config"):
        load_config(tmp_path)  # a folder
    binary = tmp_path / "model.keras"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    with pytest.raises(FlareError, match="not UTF-8 text") as info:
        load_config(binary)
    assert str(binary) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs=5", "must look like section.key=value"),
        ("train.epochs", "must look like section.key=value"),
        ("=5", "must look like section.key=value"),
        ("train.=5", "must look like section.key=value"),
        ("train.epochs=[1", r"value is not valid YAML \(line 1, column 3"),
    ],
)
def test_malformed_overrides(text, message):
    with pytest.raises(FlareError, match=message) as info:
        parse_override(text)
    assert "\n" not in str(info.value)


def test_runs_saved_before_normalization_existed_keep_their_unnormalised_vnet(tmp_path):
    """Old run folders lack ``model.normalization``: they had none, not today's instance."""
    from flare_helpers.config import load_run_config, save_config

    assert load_config().model.normalization == "instance"
    path = save_config(load_config(), tmp_path / "config.yaml")
    assert load_run_config(path).model.normalization == "instance"
    settings = yaml.safe_load(path.read_text())
    del settings["model"]["normalization"]
    path.write_text(yaml.safe_dump(settings))
    assert load_run_config(path).model.normalization == "none"


@pytest.mark.parametrize(
    ("override", "names"),
    [
        (
            "augment.spatial_probability=0.5",
            "augment.rotation_probability and augment.scale_probability",
        ),
        ("augment.intensity_probability=0.5", "augment.noise_probability"),
        ("augment.noise_std=0.03", "augment.noise_sigma"),
        ("augment.intensity_scale=0.1", "augment.brightness_range"),
        ("train.patches_per_case=4", "train.steps_per_epoch"),
    ],
)
def test_retired_keys_are_refused_naming_what_replaces_them(override, names):
    with pytest.raises(FlareError, match="is no longer a setting") as info:
        load_config(None, [override])
    assert names in str(info.value) and "\n" not in str(info.value)


def test_a_saved_run_with_retired_keys_still_loads(tmp_path):
    path = _write(
        tmp_path,
        "augment:\n  spatial_probability: 0.5\n  noise_std: 0.03\n"
        "train:\n  patches_per_case: 8\n  epochs: 7\n",
    )
    cfg = load_run_config(path)
    assert cfg.train.epochs == 7 and cfg.augment == AugmentConfig()


def test_seed_recipe_is_one_setting_and_later_keys_win():
    seed = load_config(None, ["train.recipe=seed"])
    assert (seed.train.learning_rate, seed.train.lr_schedule) == (1e-4, "constant")
    assert seed.train.steps_per_epoch == 0
    later = load_config(None, ["train.recipe=seed", "train.learning_rate=3e-4"])
    assert later.train.learning_rate == 3e-4 and later.train.lr_schedule == "constant"
    default = load_config(None, ["train.recipe=nnunet"])
    assert default.train == load_config().train
    with pytest.raises(FlareError, match="train.recipe must be one of 'seed', 'nnunet'"):
        load_config(None, ["train.recipe=fast"])
