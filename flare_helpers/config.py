"""Every setting of the series, as frozen dataclasses, loaded from YAML plus overrides.

The dataclasses below are the only home of the defaults. ``flare_helpers/config.yaml``
(shipped in the package; the repository's root ``config.yaml`` is a copy of it)
documents each field with its default and a comment; :func:`documented_yaml` and
``flare-train --print-config`` print it with a run's own values filled in.
``load_config("config.yaml", ["train.epochs=5"])`` returns a validated
:class:`Config`; an unknown key or a value of the wrong type is a one-line
:class:`~flare_helpers.errors.FlareError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml

from flare_helpers.data.fileio import write_text_atomic
from flare_helpers.data.labels import DEFAULT_ORGANS, OrganSet
from flare_helpers.errors import FlareError


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how cases are split."""

    zip_path: str = "data/FLARE22Train.zip"
    data_dir: str = "data/FLARE22Train"
    cache_dir: str = "cache"
    organs: tuple[str, ...] = DEFAULT_ORGANS
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 42
    pseudo_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT becomes a network input (also used, unchanged, at inference).

    ``mode: resize`` squeezes the body crop whole into ``target_shape`` (one
    network pass per CT). ``mode: spacing`` resamples the crop to
    ``target_spacing`` mm; ``target_shape`` is then the training patch and the
    sliding window's size.
    """

    mode: Literal["resize", "spacing"] = "spacing"
    target_spacing: tuple[float, float, float] = (1.2, 1.2, 2.5)
    target_shape: tuple[int, int, int] = (128, 128, 64)
    hu_window: tuple[float, float] = (-160.0, 240.0)
    crop_to_body: bool = True
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = 5.0
    workers: int = 0


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly training augmentation (never applied to validation or test): nnU-Net's
    default training transforms, each with its published probability and range
    (:mod:`flare_helpers.train.augment` says which default each one comes from).

    Intensities are on the cache's [0, 1] scale (the HU window). nnU-Net applies its
    noise and brightness to z-scored intensities (organ mean 0, std 1);
    ``foreground_mean`` and ``foreground_std`` give that unit here: the liver, kidneys
    and spleen of a real contrast CT measure 36 ± 21 HU, 0.49 ± 0.053 of the default
    window [-160, 240] HU.
    """

    enabled: bool = True
    rotation_probability: float = 0.2
    rotation_deg: tuple[float, float, float] = (30.0, 30.0, 30.0)
    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_probability: float = 0.1
    noise_sigma: tuple[float, float] = (0.0, 0.1)
    blur_probability: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_probability: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    low_resolution_probability: float = 0.125
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_inverted_probability: float = 0.1
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    lr_flip_probability: float = 0.0
    foreground_mean: float = 0.49
    foreground_std: float = 0.053

    def probabilities(self) -> dict[str, float]:
        """Every ``*_probability`` setting by name (without the suffix)."""
        return {
            f.name.removesuffix("_probability"): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name.endswith("_probability")
        }


@dataclass(frozen=True)
class ModelConfig:
    """VNet architecture (Milletari et al. 2016), with instance normalisation after every
    convolution (as nnU-Net): on CT-sized data, patches that miss most organs train
    without it to a plateau (``bench/learn_real_scale.py`` in BENCHMARKS.md)."""

    base_filters: int = 16
    depth: int = 4
    convs_per_stage: tuple[int, ...] = (1, 2, 3, 3, 3)
    kernel_size: int = 5
    dropout: float = 0.0
    normalization: Literal["none", "batch", "instance"] = "instance"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, callbacks, precision and distribution."""

    output_dir: str = "runs/vnet"
    epochs: int = 100
    steps_per_epoch: int = 250
    batch_size: int = 2
    learning_rate: float = 1e-3
    lr_schedule: Literal["constant", "cosine", "poly"] = "poly"
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_include_background: bool = False
    batch_dice: bool = False
    early_stopping_patience: int = 0
    tensorboard: bool = False
    mixed_precision: Literal["auto", "none", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto", True, False] = "auto"
    distribution: Literal["none", "mirrored", "multi_worker", "data_parallel"] = "none"
    seed: int = 1234
    deterministic: bool = True
    workers: int = 2
    use_multiprocessing: bool = False
    foreground_fraction: float = 0.33
    ema_smoothing: float = 0.9
    time_limit_minutes: float = 0.0
    plan_steps: int = 3


@dataclass(frozen=True)
class InferConfig:
    """Prediction and mapping back to the input grid."""

    resample: Literal["probabilities", "labels"] = "probabilities"
    largest_component: bool = True
    batch_size: int = 1
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    overlap: float = 0.25
    tta: bool = False
    localize: bool = True
    roi_margin_mm: float = 20.0


@dataclass(frozen=True)
class LocalizerConfig:
    """The organ localiser of spacing-mode runs (:mod:`flare_helpers.localize.localizer`).

    A small VNet on a coarse grid (``target_spacing`` mm) that sees the whole
    body crop in one or a few ``target_shape`` windows; at prediction its organ
    boxes (plus ``infer.roi_margin_mm``) are the only region the main network's
    sliding windows cover. Trained on the same cache, before the main model; kept
    only if the validation mean Dice of its kept epoch reaches ``min_val_dice``
    (:func:`flare_helpers.localize.localizer.gate_localizer`). 0.5: a default
    localiser trained on 10 ``ct`` phantoms (the demo's grid) and checked after each
    of its 40 epochs on 6 phantoms it did not train on had all their organs inside
    its boxes at every epoch of validation Dice ≥ 0.5 (0.52–0.76), 5 or 6 of the 6
    boxes passing the checks from 0.62 on; at 0.21–0.32 (epochs 6–20: the liver alone learned,
    the demo's 15 epochs among them) its boxes missed organs in 3 to 6 of the 6.
    ``time_share`` of ``train.time_limit_minutes`` is its time; where its measured
    plan fits fewer than ``min_epochs`` epochs in it (or all ``epochs`` where fewer),
    it is not trained and the VNet has that time: by the same measurement, a
    localiser of 20 epochs or fewer had not found the kidneys and spleen.
    """

    enabled: bool = True
    target_spacing: tuple[float, float, float] = (6.0, 6.0, 6.0)
    target_shape: tuple[int, int, int] = (64, 64, 64)
    base_filters: int = 8
    depth: int = 3
    convs_per_stage: tuple[int, ...] = (1, 2, 2, 2)
    kernel_size: int = 3
    normalization: Literal["none", "batch", "instance"] = "instance"
    epochs: int = 40
    batch_size: int = 2
    learning_rate: float = 0.003
    min_val_dice: float = 0.5
    time_share: float = 0.15
    min_epochs: int = 20


@dataclass(frozen=True)
class PseudoConfig:
    """Pseudo-labelling unlabelled CTs with a trained teacher, and training a student on them.

    ``flare-pseudolabel`` keeps a case when its confidence is at least
    ``min_confidence`` and among the top ``keep_fraction`` of the predicted cases.
    A kept case is drawn ``sample_weight`` times as often as a labelled case in
    training (:mod:`flare_helpers.pseudolabel.teacher`). ``confidence`` names the signals
    whose product is a case's confidence (:mod:`flare_helpers.pseudolabel.confidence`); ``tta``
    the second, transformed prediction behind ``agreement`` and
    ``ignore_disagreement`` (voxels where the two differ are left out of training).
    A student replaces its teacher only if its mean DSC on the labelled validation
    cases is at least ``adopt_margin`` higher (:mod:`flare_helpers.workflows.pseudo_round`).
    The student reuses its teacher's organ localiser (a copy of ``localizer.keras``)
    unless ``retrain_localizer`` asks it to train its own.
    """

    min_confidence: float = 0.0
    keep_fraction: float = 0.5
    sample_weight: float = 0.5
    init_from: str = ""
    confidence: tuple[
        Literal["mean_probability", "component_share", "agreement", "anatomy"], ...
    ] = ("agreement",)
    tta: Literal["shift", "mirror", "none"] = "mirror"
    ignore_disagreement: bool = False
    adopt_margin: float = 0.02
    retrain_localizer: bool = False


@dataclass(frozen=True)
class Config:
    """All settings; each section is one dataclass above."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists), ready for YAML or JSON."""
        return {
            section.name: {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(getattr(self, section.name)).items()
            }
            for section in dataclasses.fields(self)
        }

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """Return a checked copy with some keys changed, e.g. ``cfg.replace(train={"epochs": 2})``."""
        return validate(
            _apply(self, {name: dict(values) for name, values in sections.items()}, None)
        )


#: Settings of earlier versions, refused with what replaces them (a saved run's
#: ``config.yaml`` loads without them: :func:`load_run_config`).
RETIRED_KEYS: dict[str, str] = {
    "augment.spatial_probability": (
        "rotation and scaling now have their own chances: set augment.rotation_probability "
        "and augment.scale_probability"
    ),
    "augment.intensity_probability": (
        "each intensity transform now has its own chance: augment.noise_probability, "
        "blur_probability, brightness_probability, contrast_probability, "
        "low_resolution_probability, gamma_probability, gamma_inverted_probability"
    ),
    "augment.intensity_scale": "set augment.brightness_range (a multiplier range)",
    "augment.intensity_shift": "set augment.brightness_range and augment.contrast_range",
    "augment.noise_std": (
        "set augment.noise_sigma, a [low, high] range in units of augment.foreground_std"
    ),
    "train.patches_per_case": (
        "an epoch is now train.steps_per_epoch batches whatever the number of cases "
        "(nnU-Net: 250); set train.steps_per_epoch (0 = one patch per training case, "
        "as patches_per_case: 1 was)"
    ),
}

#: ``train.recipe=NAME``: one setting that stands for several (later keys still win).
#: ``seed`` is the recipe this project started from: Adam at a constant 1e-4 and an
#: epoch of one patch per training case.
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {"learning_rate": 1e-4, "lr_schedule": "constant", "steps_per_epoch": 0},
    "nnunet": {"learning_rate": 1e-3, "lr_schedule": "poly", "steps_per_epoch": 250},
}


_SCALAR_NAMES = {int: "integer", float: "number", bool: "true/false value", str: "string"}


def _type_name(tp: Any) -> str:
    """How a message names a type: "an integer", "a list of 3 integers", "one of 'a', 'b'"."""
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        inner = _SCALAR_NAMES.get(args[0], str(args[0]))
        return f"a list of {inner}s" if args[-1] is Ellipsis else f"a list of {len(args)} {inner}s"
    if tp is bool:
        return "true or false"
    name = _SCALAR_NAMES.get(tp, str(tp))
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


#: Numbers in exponent notation without a dot, which PyYAML (YAML 1.1) leaves as strings.
_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(value: Any, tp: Any, where: str, source: Path | None) -> Any:
    """Check ``value`` against the annotation ``tp``; return it normalised (lists → tuples)."""
    origin = typing.get_origin(tp)
    bad = FlareError(f"{where} must be {_type_name(tp)}, got {value!r}", source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise bad
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise bad
        try:
            return tuple(_coerce(v, args[0], where, source) for v in value)
        except FlareError:
            raise bad from None
    if origin in (types.UnionType, typing.Union):
        raise TypeError(f"unsupported annotation {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported annotation {tp}")


def _unknown(key: str, known: Iterable[str], where: str, source: Path | None) -> FlareError:
    known = list(known)
    hint = difflib.get_close_matches(key, known, n=1)
    suggestion = f" (did you mean '{where}{hint[0]}'?)" if hint else f"; known: {', '.join(known)}"
    return FlareError(f"unknown key '{where}{key}'{suggestion}", source)


def _apply(
    cfg: Config, updates: Mapping[str, Any], source: Path | None, drop_retired: bool = False
) -> Config:
    """Return ``cfg`` with nested ``updates`` applied, validating names and types.

    A key of :data:`RETIRED_KEYS` is refused with what replaces it (``drop_retired``:
    skipped); ``train.recipe`` sets the keys of its :data:`RECIPES` entry.
    """
    if not isinstance(updates, Mapping):
        raise FlareError("the config must be a mapping of sections (data:, train:, …)", source)
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    new_sections = {}
    for name, values in updates.items():
        if name not in sections:
            raise _unknown(str(name), sections, "", source)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise FlareError(f"section '{name}' must be a mapping of key: value", source)
        current = new_sections.get(name, getattr(cfg, name))
        hints = typing.get_type_hints(type(current))
        changes = {}
        for key, value in values.items():
            retired = RETIRED_KEYS.get(f"{name}.{key}")
            if retired is not None:
                if drop_retired:
                    continue
                raise FlareError(f"{name}.{key} is no longer a setting: {retired}", source)
            if name == "train" and key == "recipe":
                if value not in RECIPES:
                    raise FlareError(
                        f"train.recipe must be one of {', '.join(map(repr, RECIPES))}, got {value!r}",
                        source,
                    )
                changes.update(RECIPES[value])
                continue
            if key not in hints:
                raise _unknown(str(key), hints, f"{name}.", source)
            changes[key] = _coerce(value, hints[key], f"{name}.{key}", source)
        new_sections[name] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **new_sections)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where (line, column) and what, from PyYAML's multi-line message (FlareError joins lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def parse_override(text: str) -> dict[str, dict[str, Any]]:
    """Parse ``section.key=value`` (value in YAML syntax) into a nested update."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise FlareError(
            f"override '{text}' must look like section.key=value (e.g. train.epochs=5)"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise FlareError(
            f"override '{text}': value is not valid YAML ({_yaml_problem(exc)})"
        ) from exc
    return {section: {name: value}}


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), *, drop_retired: bool = False
) -> Config:
    """Load settings: defaults, then the YAML file (if given), then ``section.key=value``.

    Args:
        path: a YAML file shaped like ``config.yaml``; missing sections keep defaults.
        overrides: strings such as ``"train.epochs=5"`` or ``"data.organs=[liver]"``.

    Raises:
        FlareError: missing/unreadable file, bad YAML, unknown key, or wrong type.
    """
    cfg = Config()
    source = None
    if path is not None:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise FlareError("config file not found", source) from exc
        except OSError as exc:
            raise FlareError(f"cannot read config ({exc.strerror})", source) from exc
        except UnicodeDecodeError as exc:
            raise FlareError(
                f"not UTF-8 text (byte {exc.start}); is this a config.yaml?", source
            ) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise FlareError(f"not valid YAML ({_yaml_problem(exc)})", source) from exc
        cfg = _apply(cfg, data, source, drop_retired)
    for text in overrides:
        cfg = _apply(cfg, parse_override(text), None)
    return validate(cfg, source)


def load_run_config(path: str | Path) -> Config:
    """Load the ``config.yaml`` saved in a run folder, as the run was trained.

    Runs saved before ``preprocess.mode`` existed were all trained in resize mode,
    and runs saved before ``model.normalization`` existed had no normalisation; their
    files lack these keys, which would otherwise read as today's defaults. Retired
    training and augmentation keys (:data:`RETIRED_KEYS`) are skipped: they do not
    change how a trained model predicts.
    """
    cfg = load_config(path, drop_retired=True)
    text = Path(path).read_text(encoding="utf-8")
    saved = yaml.safe_load(text) or {}
    if "mode" not in (saved.get("preprocess") or {}):
        cfg = cfg.replace(preprocess={"mode": "resize"})
    if "normalization" not in (saved.get("model") or {}):
        cfg = cfg.replace(model={"normalization": "none"})
    return cfg


def _non_finite(cfg: Config) -> str | None:
    """Name of the first number that is NaN or infinite (YAML ``.nan``, ``.inf``), if any."""
    for section in dataclasses.fields(cfg):
        for key, value in dataclasses.asdict(getattr(cfg, section.name)).items():
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                return f"{section.name}.{key}"
    return None


def validate(cfg: Config, source: Path | None = None) -> Config:
    """Check value ranges that types alone do not catch; return ``cfg`` unchanged."""
    bad = _non_finite(cfg)
    if bad is not None:
        raise FlareError(f"{bad} must be a finite number", source)
    a, t = cfg.augment, cfg.train
    factor = 2**cfg.model.depth
    checks = [
        (all(s > 0 for s in cfg.preprocess.target_shape), "preprocess.target_shape must be > 0"),
        (
            cfg.model.depth < 1 or all(s % factor == 0 for s in cfg.preprocess.target_shape),
            f"preprocess.target_shape {list(cfg.preprocess.target_shape)} must be divisible by "
            f"2**model.depth = {factor} along every axis",
        ),
        (cfg.preprocess.crop_margin_mm >= 0, "preprocess.crop_margin_mm must be >= 0"),
        (cfg.preprocess.workers >= 0, "preprocess.workers must be >= 0 (0 = one per CPU core)"),
        (
            cfg.preprocess.hu_window[0] < cfg.preprocess.hu_window[1],
            "preprocess.hu_window must be [low, high] with low < high",
        ),
        (
            0 <= cfg.data.val_fraction < 1 and 0 <= cfg.data.test_fraction < 1,
            "data.val_fraction and data.test_fraction must be in [0, 1)",
        ),
        (
            cfg.data.val_fraction + cfg.data.test_fraction < 1,
            "data.val_fraction + data.test_fraction must be < 1",
        ),
        (cfg.model.depth >= 1, "model.depth must be >= 1"),
        (
            len(cfg.model.convs_per_stage) == cfg.model.depth + 1,
            "model.convs_per_stage needs depth + 1 entries",
        ),
        (
            all(n >= 1 for n in cfg.model.convs_per_stage),
            "model.convs_per_stage entries must be >= 1",
        ),
        (
            cfg.model.base_filters >= 1 and cfg.model.kernel_size >= 1,
            "model.base_filters and model.kernel_size must be >= 1",
        ),
        (0 <= cfg.model.dropout < 1, "model.dropout must be in [0, 1)"),
        (
            cfg.train.epochs >= 1 and cfg.train.batch_size >= 1,
            "train.epochs and train.batch_size must be >= 1",
        ),
        (cfg.train.learning_rate > 0, "train.learning_rate must be > 0"),
        *_augment_checks(a),
        (
            t.dice_weight >= 0 and t.ce_weight >= 0 and t.dice_weight + t.ce_weight > 0,
            "train.dice_weight and train.ce_weight must be >= 0, and not both 0",
        ),
        (t.early_stopping_patience >= 0, "train.early_stopping_patience must be >= 0 (0 = off)"),
        (t.workers >= 1, "train.workers must be >= 1"),
        (
            0 <= t.seed < 2**32 and 0 <= cfg.data.split_seed < 2**32,
            "train.seed and data.split_seed must be in [0, 2**32)",
        ),
        (cfg.infer.batch_size >= 1, "infer.batch_size must be >= 1"),
        (cfg.infer.roi_margin_mm >= 0, "infer.roi_margin_mm must be >= 0"),
        *_localizer_checks(cfg.localizer),
        (
            0 <= cfg.pseudo.min_confidence <= 1 and 0 < cfg.pseudo.keep_fraction <= 1,
            "pseudo.min_confidence must be in [0, 1] and pseudo.keep_fraction in (0, 1]",
        ),
        (
            cfg.pseudo.sample_weight >= 0,
            "pseudo.sample_weight must be >= 0",
        ),
        (
            len(cfg.pseudo.confidence) > 0
            and not ({"agreement"} & set(cfg.pseudo.confidence) and cfg.pseudo.tta == "none")
            and not (cfg.pseudo.ignore_disagreement and cfg.pseudo.tta == "none"),
            "pseudo.confidence needs at least one signal, and its agreement signal and "
            "pseudo.ignore_disagreement need pseudo.tta shift or mirror",
        ),
        (0 <= cfg.infer.overlap < 1, "infer.overlap must be in [0, 1)"),
        (
            all(s > 0 for s in cfg.preprocess.target_spacing),
            "preprocess.target_spacing must be > 0 mm along every axis",
        ),
        (
            0 <= t.foreground_fraction <= 1
            and t.steps_per_epoch >= 0
            and t.time_limit_minutes >= 0,
            "train.foreground_fraction must be in [0, 1], train.steps_per_epoch >= 0 and "
            "train.time_limit_minutes >= 0",
        ),
        (0 <= t.ema_smoothing < 1, "train.ema_smoothing must be in [0, 1)"),
        (t.plan_steps >= 0, "train.plan_steps must be >= 0 (0 = no measured plan)"),
    ]
    for ok, message in checks:
        if not ok:
            raise FlareError(message, source)
    try:
        OrganSet.from_names(cfg.data.organs)
    except FlareError as exc:
        raise FlareError(f"data.organs: {exc.problem}", source) from exc
    return cfg


def _augment_checks(a: AugmentConfig) -> list[tuple[bool, str]]:
    """Range checks of the ``augment:`` section (as :func:`validate` lists them)."""
    ranges = {
        name: getattr(a, name)
        for name in (
            "scale_range",
            "noise_sigma",
            "blur_sigma",
            "brightness_range",
            "contrast_range",
            "low_resolution_zoom",
            "gamma_range",
        )
    }
    return [
        *(
            (0 <= p <= 1, f"augment.{name}_probability must be in [0, 1]")
            for name, p in a.probabilities().items()
        ),
        *(
            (0 <= low <= high, f"augment.{name} must be [low, high] with 0 <= low <= high")
            for name, (low, high) in ranges.items()
        ),
        (a.scale_range[0] > 0, "augment.scale_range must be > 0"),
        (a.gamma_range[0] > 0, "augment.gamma_range must be > 0"),
        (
            a.low_resolution_zoom[0] > 0 and a.low_resolution_zoom[1] <= 1,
            "augment.low_resolution_zoom must lie in (0, 1]",
        ),
        (
            all(0 <= d <= 180 for d in a.rotation_deg),
            "augment.rotation_deg must be in [0, 180] degrees about each axis",
        ),
        (a.foreground_std > 0, "augment.foreground_std must be > 0"),
    ]


def _localizer_checks(loc: LocalizerConfig) -> list[tuple[bool, str]]:
    """Range checks of the ``localizer:`` section (as :func:`validate` lists them)."""
    factor = 2**loc.depth
    return [
        (
            all(s > 0 for s in loc.target_spacing),
            "localizer.target_spacing must be > 0 mm along every axis",
        ),
        (
            loc.depth >= 1 and all(s > 0 and s % factor == 0 for s in loc.target_shape),
            f"localizer.target_shape {list(loc.target_shape)} must be > 0 and divisible by "
            f"2**localizer.depth = {factor} along every axis (localizer.depth >= 1)",
        ),
        (
            len(loc.convs_per_stage) == loc.depth + 1 and min(loc.convs_per_stage) >= 1,
            "localizer.convs_per_stage needs depth + 1 entries, each >= 1",
        ),
        (
            loc.base_filters >= 1 and loc.kernel_size >= 1,
            "localizer.base_filters and localizer.kernel_size must be >= 1",
        ),
        (
            loc.epochs >= 1 and loc.batch_size >= 1 and loc.learning_rate > 0,
            "localizer.epochs and localizer.batch_size must be >= 1, localizer.learning_rate > 0",
        ),
        (0 <= loc.min_val_dice <= 1, "localizer.min_val_dice must be in [0, 1]"),
        (0 < loc.time_share < 1, "localizer.time_share must be in (0, 1)"),
        (loc.min_epochs >= 0, "localizer.min_epochs must be 0 or more"),
    ]


#: ``  key: value   # comment`` lines of the documented YAML.
_DOCUMENTED_LINE = re.compile(
    r"^(?P<lead>  (?P<key>\w+): )(?P<value>[^#]*?)(?P<gap>\s*)(?P<comment>#.*)?$"
)


#: Where the documented YAML's comments start (0-based column of ``#``).
_COMMENT_COLUMN = 36


def documented_defaults() -> str:
    """The text of the package's ``config.yaml``: every setting, its default and a comment."""
    return (files("flare_helpers") / "config.yaml").read_text(encoding="utf-8")


def _yaml_value(value: Any) -> str:
    """One value in the file's style: flow lists, plain scalars (``[1.2, 1.2, 2.5]``, ``true``)."""
    value = list(value) if isinstance(value, tuple) else value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


def documented_yaml(cfg: Config | None = None) -> str:
    """Every setting with its comment, as YAML that ``load_config`` (``--config``) reads back.

    Without ``cfg`` this is the documented defaults. With one, each value is
    ``cfg``'s; where it differs from the default, the comment ends with
    ``(default: …)``, so a notebook or ``flare-train --print-config`` shows what
    was changed and what it was.
    """
    text = documented_defaults()
    if cfg is None:
        return text
    values, defaults = cfg.to_dict(), Config().to_dict()
    section = None
    lines = []
    for line in text.splitlines():
        header = re.match(r"^(\w+):\s*$", line)
        match = _DOCUMENTED_LINE.match(line)
        if header:
            section = header.group(1)
        elif match and section in values and match["key"] in values[section]:
            key = match["key"]
            value, default = values[section][key], defaults[section][key]
            if value != default:
                comment = f"{match['comment'] or '#'} (default: {_yaml_value(default)})"
                line = f"{match['lead'] + _yaml_value(value):<{_COMMENT_COLUMN - 1}} {comment}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def print_config(cfg: Config | None = None) -> None:
    """Print :func:`documented_yaml` (for a notebook: every setting, its value and comment)."""
    print(documented_yaml(cfg), end="")


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved settings as YAML (atomically), e.g. into a run folder."""
    return write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
