"""The bad-input matrix shared by the ``test_bad_*.py`` files: broken inputs × entry points.

Each case must end in one line that names the file and the problem (a
``FlareError`` from the library; ``prog: error: …`` and exit code 2 from a
console script), never a traceback, and must leave no partial output: no
temporaries, no half cache entry, no output for the bad input. Each test file
runs the part of :data:`MATRIX` that belongs to its pipeline stage
(:func:`matrix_for`).
"""

from __future__ import annotations

import gzip
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from flare_helpers.cli import evaluate_main, extract_main, predict_main, preprocess_main, train_main
from flare_helpers.config import load_config, save_config
from flare_helpers.data import cases, extract, nifti
from flare_helpers.data.fileio import is_temp_name
from flare_helpers.errors import FlareError
from flare_helpers.evaluate.evaluation import score_prediction_dir
from flare_helpers.infer import predict as infer
from flare_helpers.phantoms.synthetic import case_files
from flare_helpers.preprocess.pipeline import entry_dir, preprocess_dataset

SMALL = ["preprocess.mode=resize", "preprocess.target_shape=[16,16,16]", "preprocess.workers=1"]
CASE1, CASE2 = "FLARE22_Tr_0001", "FLARE22_Tr_0002"
#: A tqdm progress line ("preprocess:  50%|█ | 1/2 [00:00<…]"), the only other stderr allowed.
PROGRESS = re.compile(r"^[\w -]+: .*\[\d\d:\d\d[<,]")


@dataclass
class Workspace:
    """Everything a matrix case may use; ``data`` is a private, writable copy."""

    tmp: Path
    zip: Path
    data: Path
    good_image: Path
    good_label: Path
    run: Path
    predictor: infer.Predictor

    @property
    def cache(self) -> Path:
        """Where the preprocessing entries write their cache."""
        return self.tmp / "cache"


# --------------------------------------------------------------------------- bad files


def _save(dest: Path, array: np.ndarray, affine: np.ndarray) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), dest)


def _like(good: Path, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Writer of ``change(voxels of good)`` on the good file's affine."""

    def write(dest: Path) -> None:
        img = nib.load(good)
        _save(dest, change(np.asarray(img.dataobj)), img.affine)

    return write


def _set(array: np.ndarray, value, dtype=None) -> np.ndarray:
    out = array.astype(dtype or array.dtype)
    out[1, 1, 1] = value
    return out


def _shifted(good: Path) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        img = nib.load(good)
        affine = img.affine.copy()
        affine[0, 3] += 2.0
        _save(dest, np.asarray(img.dataobj), affine)

    return write


def _truncated_voxels(good: Path) -> Callable[[Path], None]:
    """A valid gzip whose NIfTI lacks the last 100 voxel bytes."""

    def write(dest: Path) -> None:
        raw = gzip.decompress(good.read_bytes())
        dest.write_bytes(gzip.compress(raw[:-100]))

    return write


def _singular_affine(good: Path) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        img = nib.Nifti1Image(np.asarray(nib.load(good).dataobj), np.eye(4))
        img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
        img.set_qform(None, code=0)
        nib.save(img, dest)

    return write


def _bytes(payload: bytes) -> Callable[[Path], None]:
    return lambda dest: dest.write_bytes(payload)


def _nothing(dest: Path) -> None:
    """The file is simply not there."""


@dataclass(frozen=True)
class Bad:
    """One kind of broken input: ``make(good_file)`` gives a writer; ``message`` is a regex."""

    make: Callable[[Path], Callable[[Path], None]]
    message: str
    skip: tuple[str, ...] = ()  # entries where this input is legitimately not an error


IMAGE_ONLY = ("preprocess", "preprocess_dataset")  # a missing image just leaves an orphan label

BAD_VOLUMES: dict[str, Bad] = {
    "truncated-gzip": Bad(
        lambda g: _bytes(g.read_bytes()[: len(g.read_bytes()) // 2]), "truncated"
    ),
    "gzip-of-text": Bad(
        lambda g: _bytes(gzip.compress(b"not a NIfTI " * 40)), "not a readable NIfTI file"
    ),
    "text-named-nii-gz": Bad(lambda g: _bytes(b"hello"), "corrupt gzip"),
    "truncated-voxels": Bad(_truncated_voxels, "voxel data is truncated"),
    "2d": Bad(lambda g: _like(g, lambda a: a[:, :, 0]), "expected a 3D volume, got 2D"),
    "4d": Bad(lambda g: _like(g, lambda a: np.stack([a, a], -1)), "expected a 3D volume, got 4D"),
    "zero-size": Bad(lambda g: _like(g, lambda a: a[:, :0]), "empty dimension"),
    "nan": Bad(lambda g: _like(g, lambda a: _set(a, np.nan, np.float32)), "NaN or Inf"),
    "inf": Bad(lambda g: _like(g, lambda a: _set(a, -np.inf, np.float64)), "NaN or Inf"),
    "complex": Bad(lambda g: _like(g, lambda a: a.astype(np.complex64)), "unsupported voxel type"),
    "singular-affine": Bad(_singular_affine, "affine is singular"),
    "missing": Bad(lambda g: _nothing, "not found", skip=IMAGE_ONLY),
}

BAD_LABELS: dict[str, Bad] = {
    "fractional": Bad(lambda g: _like(g, lambda a: _set(a, 0.5, np.float32)), "non-integer"),
    "value-14": Bad(lambda g: _like(g, lambda a: _set(a, 14)), "unexpected label values 14"),
    "negative": Bad(
        lambda g: _like(g, lambda a: _set(a, -1, np.int16)), "unexpected label values -1"
    ),
    "nan": Bad(lambda g: _like(g, lambda a: _set(a, np.nan, np.float32)), "NaN or Inf"),
    "shape-mismatch": Bad(lambda g: _like(g, lambda a: a[:, :, :-1]), r"shape .* differs"),
    "affine-mismatch": Bad(_shifted, "affine differs"),
    "truncated-voxels": Bad(_truncated_voxels, "voxel data is truncated"),
    "truncated-gzip": Bad(lambda g: _bytes(g.read_bytes()[:300]), "truncated"),
    "3d-rgb": Bad(
        lambda g: _like(g, lambda a: np.zeros(a.shape, [("R", "u1"), ("G", "u1"), ("B", "u1")])),
        "unsupported voxel type",
    ),
}


def _zip(members: dict[str, bytes | tuple[bytes, int]]) -> Callable[[Path], None]:
    """Writer of a zip; a (payload, mode) value sets the member's Unix file type."""

    def write(dest: Path) -> None:
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as archive:
            for name, payload in members.items():
                info = zipfile.ZipInfo(name)
                if isinstance(payload, tuple):
                    payload, mode = payload
                    info.external_attr = mode << 16
                archive.writestr(info, payload)

    return write


def _corrupt_member(dest: Path) -> None:
    files = case_files(1, 1, (16, 16, 8), family="simple")
    _zip(files)(dest)
    raw = bytearray(dest.read_bytes())
    label = files["FLARE22Train/labels/FLARE22_Tr_0001.nii.gz"]
    raw[raw.find(label[:64]) + 80] ^= 0xFF  # flip a byte of stored data: CRC mismatch
    dest.write_bytes(bytes(raw))


def _folder(dest: Path) -> None:
    dest.mkdir()


GOOD_CASE = case_files(1, 1, (16, 16, 8), family="simple")
BAD_ZIPS: dict[str, Bad] = {
    "missing": Bad(lambda g: _nothing, "file not found"),
    "folder": Bad(lambda g: _folder, "is a folder"),
    "not-a-zip": Bad(lambda g: _bytes(b"PK but not really a zip" * 10), "not a zip file"),
    "truncated-zip": Bad(lambda g: _bytes(g.read_bytes()[: g.stat().st_size // 2]), "truncated"),
    "empty-zip": Bad(lambda g: _zip({}), "the zip is empty"),
    "only-folders": Bad(
        lambda g: _zip({"FLARE22Train/": b"", "FLARE22Train/images/": b""}), "empty"
    ),
    "dotdot-member": Bad(lambda g: _zip({**GOOD_CASE, "../evil.nii.gz": b"x"}), "refusing member"),
    "nested-dotdot": Bad(
        lambda g: _zip({**GOOD_CASE, "FLARE22Train/images/../../../evil.nii.gz": b"x"}),
        "refusing member",
    ),
    "backslash-dotdot": Bad(
        lambda g: _zip({**GOOD_CASE, "..\\evil.nii.gz": b"x"}), "refusing member"
    ),
    "absolute-member": Bad(
        lambda g: _zip({**GOOD_CASE, "/tmp/evil.nii.gz": b"x"}), "refusing absolute member"
    ),
    "drive-member": Bad(
        lambda g: _zip({**GOOD_CASE, "C:/evil.nii.gz": b"x"}), "refusing absolute member"
    ),
    "symlink-member": Bad(
        lambda g: _zip(
            {**GOOD_CASE, "FLARE22Train/images/link_0000.nii.gz": (b"/etc", stat.S_IFLNK | 0o777)}
        ),
        "refusing symbolic link member",
    ),
    "no-images-folder": Bad(lambda g: _zip({"readme.txt": b"hi"}), "no images/ folder"),
    "two-images-folders": Bad(
        lambda g: _zip({"a/images/x_0000.nii.gz": b"1", "b/images/y_0000.nii.gz": b"2"}),
        "several images/ folders",
    ),
    "corrupt-member": Bad(lambda g: _corrupt_member, "is corrupt"),
}


def _text(text: str | bytes) -> Callable[[Path], None]:
    payload = text.encode() if isinstance(text, str) else text
    return lambda g: _bytes(payload)


BAD_CONFIGS: dict[str, Bad] = {
    "unknown-key": Bad(
        _text("train:\n  epoch: 5\n"), r"unknown key 'train\.epoch' \(did you mean 'train\.epochs'"
    ),
    "unknown-section": Bad(
        _text("trian:\n  epochs: 5\n"), r"unknown key 'trian' \(did you mean 'train'"
    ),
    "wrong-type": Bad(
        _text("train:\n  epochs: five\n"), "train.epochs must be an integer, got 'five'"
    ),
    "bool-for-int": Bad(
        _text("train:\n  batch_size: yes\n"), "train.batch_size must be an integer"
    ),
    "scalar-for-list": Bad(
        _text("preprocess:\n  target_shape: 128\n"), "target_shape must be a list of 3 integers"
    ),
    "short-list": Bad(
        _text("preprocess:\n  hu_window: [-100]\n"), "hu_window must be a list of 2 numbers"
    ),
    "bad-choice": Bad(
        _text("infer:\n  resample: cubic\n"), "infer.resample must be one of 'probabilities'"
    ),
    "out-of-range": Bad(
        _text("data:\n  val_fraction: 1.5\n"), r"val_fraction .* must be in \[0, 1\)"
    ),
    "nan": Bad(_text("train:\n  learning_rate: .nan\n"), "train.learning_rate must be a finite"),
    "not-divisible": Bad(
        _text("preprocess:\n  target_shape: [100, 100, 48]\n"), "must be divisible by 2\\*\\*model"
    ),
    "unknown-organ": Bad(_text("data:\n  organs: [liver, heart]\n"), "unknown organ.*heart"),
    "bad-yaml": Bad(_text("train: [unclosed\n"), "not valid YAML"),
    "not-a-mapping": Bad(_text("- train\n- data\n"), "must be a mapping of sections"),
    "section-not-mapping": Bad(_text("train: 5\n"), "section 'train' must be a mapping"),
    "not-utf8": Bad(_text(b"train:\n  epochs: \xff\xfe\n"), "not UTF-8"),
    "missing": Bad(lambda g: _nothing, "config file not found"),
}


def lambda_model(dest: Path) -> None:
    inputs = keras.Input((32, 32, 16, 1))
    outputs = keras.layers.Lambda(lambda x: keras.ops.concatenate([x] * 5, axis=-1))(inputs)
    keras.Model(inputs, outputs).save(dest)


def _broken_keras(dest: Path) -> None:
    with zipfile.ZipFile(dest, "w") as archive:
        archive.writestr("config.json", "{}")


def _model(
    write: Callable[[Path, Path], object], config: str | None = "same"
) -> Callable[[Path], Callable[[Path], None]]:
    """A model file written by ``write(dest, good_model)``, with the run's config beside it
    (``"other-grid"``: a config for 64×64×32 inputs; None: no config)."""

    def make(good: Path) -> Callable[[Path], None]:
        def writer(dest: Path) -> None:
            write(dest, good)
            if config is not None:
                cfg = load_config(good.parent / "config.yaml")
                if config == "other-grid":
                    cfg = cfg.replace(preprocess={"target_shape": [64, 64, 32]})
                save_config(cfg, dest.parent / "config.yaml")

        return writer

    return make


BAD_MODELS: dict[str, Bad] = {
    "missing": Bad(_model(lambda d, g: None), "model file not found"),
    "not-a-zip": Bad(_model(lambda d, g: d.write_bytes(b"not a model")), "not a valid .keras file"),
    "broken-archive": Bad(_model(lambda d, g: _broken_keras(d)), "cannot load the model"),
    "lambda-layer": Bad(
        _model(lambda d, g: lambda_model(d)), "refusing to load a model that contains Python code"
    ),
    "other-grid": Bad(
        _model(lambda d, g: shutil.copy(g, d), "other-grid"),
        r"model takes \(32, 32, 16, 1\).*config says",
    ),
    "no-config": Bad(
        _model(lambda d, g: shutil.copy(g, d), None), "no config.yaml beside the model"
    ),
}


def unwritable(dest: Path) -> None:
    """Make ``dest`` a place nothing can be written below, as root too.

    A read-only folder stops normal users but not root (CAP_DAC_OVERRIDE), so
    the probe decides: if root can still write there, ``dest`` becomes a
    regular file, below which no one can create anything.
    """
    dest.mkdir()
    dest.chmod(0o500)
    probe = dest / "probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return
    probe.unlink()
    dest.chmod(0o700)
    dest.rmdir()
    dest.write_text("a file, not a folder")


BAD_OUTPUTS: dict[str, Bad] = {
    "unwritable": Bad(lambda g: unwritable, "(cannot|could not) write"),
}


def _dataset(make: Callable[[Path], None]) -> Callable[[Path], Callable[[Path], None]]:
    """A change to the private copy of the data folder (the good file is not needed)."""
    return lambda g: make


def _no_images_folder(dest: Path) -> None:
    shutil.rmtree(dest / "images")


def _empty_images(dest: Path) -> None:
    for path in (dest / "images").iterdir():
        path.unlink()


def _only_hidden_images(dest: Path) -> None:
    """What a Mac leaves on a USB stick: ``._`` metadata files next to nothing real."""
    for path in (dest / "images").iterdir():
        path.rename(path.with_name("._" + path.name))


def _no_labels(dest: Path) -> None:
    shutil.rmtree(dest / "labels")


BAD_DATASETS: dict[str, Bad] = {
    "missing": Bad(_dataset(shutil.rmtree), "data folder not found"),
    "no-images-folder": Bad(_dataset(_no_images_folder), "no images/ folder"),
    "empty-images": Bad(_dataset(_empty_images), r"no \.nii\.gz images"),
    "only-hidden-images": Bad(_dataset(_only_hidden_images), r"no \.nii\.gz images"),
    "no-labels": Bad(_dataset(_no_labels), "no labelled cases|no ground-truth labels"),
}

BAD_PRED_DIRS: dict[str, Bad] = {
    "missing": Bad(lambda g: _nothing, "prediction folder not found"),
    "a-file": Bad(lambda g: _bytes(b"x"), "prediction folder not found"),
    "empty": Bad(lambda g: _folder, "none of the 2 labelled case"),
    "wrong-names": Bad(lambda g: _misnamed_predictions, "none of the 2 labelled case"),
}


def _misnamed_predictions(dest: Path) -> None:
    dest.mkdir()
    (dest / f"{CASE1}_0000.nii.gz").write_bytes(b"an image name, not a prediction name")


# --------------------------------------------------------------------------- entry points


@dataclass
class Scenario:
    """A run of one entry point: a CLI ``argv`` for ``main``, or a library ``call``."""

    named: Path | str
    main: Callable[[Sequence[str]], int] | None = None
    argv: list[str] = field(default_factory=list)
    call: Callable[[], object] | None = None
    absent: tuple[Path, ...] = ()  # must not exist afterwards
    clean: tuple[Path, ...] = ()  # may exist, but only with complete files


@dataclass(frozen=True)
class Entry:
    """An entry point: where its bad input goes (``target``) and how it is run."""

    target: Callable[[Workspace], Path]
    good: Callable[[Workspace], Path]  # the good file the bad one is derived from
    run: Callable[[Workspace, Path], Scenario]


def _image_in_data(ws: Workspace) -> Path:
    return ws.data / "images" / f"{CASE1}_0000.nii.gz"


def _label_in_data(ws: Workspace) -> Path:
    return ws.data / "labels" / f"{CASE1}.nii.gz"


def _cache_scenario(ws: Workspace, named: Path, cli: bool, config: Path | None = None) -> Scenario:
    absent = (entry_dir(ws.cache, CASE1), ws.cache / "manifest.json")
    if cli:
        extra = ["--config", str(config)] if config else SMALL
        argv = ["--data", str(ws.data), "--cache", str(ws.cache), *extra]
        return Scenario(named, preprocess_main, argv, absent=absent, clean=(ws.cache,))
    cfg = load_config(None, SMALL)
    call = lambda: preprocess_dataset(ws.data, ws.cache, cfg, progress=False)  # noqa: E731
    return Scenario(named, call=call, absent=absent, clean=(ws.cache,))


def _predict_cli(ws: Workspace, bad: Path) -> Scenario:
    """A folder holding a good and the bad CT: the good one may be written, the bad never."""
    shutil.copy(ws.good_image, bad.parent / "a_0000.nii.gz")
    source = bad.parent if bad.exists() else bad
    out = ws.tmp / "pred"
    argv = [
        "--model-path",
        str(ws.run / "best.keras"),
        "--input",
        str(source),
        "--output",
        str(out),
    ]
    return Scenario(bad, predict_main, argv, absent=(out / "b.nii.gz",), clean=(out,))


def _predict_lib(ws: Workspace, bad: Path) -> Scenario:
    out = ws.tmp / "pred"
    pairs = [(ws.good_image, out / "a.nii.gz"), (bad, out / "b.nii.gz")]
    call = lambda: infer.predict_files(ws.predictor, pairs, progress=False)  # noqa: E731
    return Scenario(bad, call=call, absent=(out / "b.nii.gz",), clean=(out,))


def _prediction_dir(ws: Workspace) -> Path:
    """``pred/`` with a good prediction for case 2; case 1's goes where the bad one is put."""
    pred = ws.tmp / "pred"
    pred.mkdir(exist_ok=True)
    shutil.copy(ws.good_label.with_name(f"{CASE2}.nii.gz"), pred / f"{CASE2}.nii.gz")
    return pred / f"{CASE1}.nii.gz"


def _report_files(folder: Path) -> tuple[Path, ...]:
    return tuple(folder / name for name in ("per_case.csv", "summary.csv", "boxplots.png"))


def _evaluate_cli(ws: Workspace, pred_dir: Path, data_dir: Path, named: Path) -> Scenario:
    argv = ["--pred-dir", str(pred_dir), "--data-path", str(data_dir)]
    return Scenario(named, evaluate_main, argv, absent=_report_files(pred_dir))


def _evaluate_lib(ws: Workspace, pred_dir: Path, data_dir: Path, named: Path) -> Scenario:
    call = lambda: score_prediction_dir(pred_dir, data_dir, progress=False)  # noqa: E731
    return Scenario(named, call=call)


def _good_predictions(ws: Workspace) -> Path:
    """Perfect predictions (the pristine labels), for runs whose bad input is elsewhere."""
    pred = ws.tmp / "good_pred"
    pred.mkdir(exist_ok=True)
    for label in ws.good_label.parent.iterdir():
        shutil.copy(label, pred / label.name)
    return pred


def _model_target(ws: Workspace) -> Path:
    folder = ws.tmp / "model"
    folder.mkdir()
    return folder / "best.keras"


def _model_scenario(kind: str) -> Callable[[Workspace, Path], Scenario]:
    def run(ws: Workspace, model: Path) -> Scenario:
        config = model.parent / "config.yaml"
        named = config if model.exists() and not config.exists() else model
        if kind == "lib":
            return Scenario(named, call=lambda: infer.load_predictor(model))
        if kind == "predict":
            out = ws.tmp / "out.nii.gz"
            argv = ["--model-path", str(model), "--input", str(ws.good_image), "--output", str(out)]
            return Scenario(named, predict_main, argv, absent=(out,))
        argv = ["--model-path", str(model), "--data-path", str(ws.data), "--cases", "all"]
        return Scenario(named, evaluate_main, argv, absent=(model.parent / "evaluation",))

    return run


def _config_scenario(kind: str) -> Callable[[Workspace, Path], Scenario]:
    def run(ws: Workspace, config: Path) -> Scenario:
        if kind == "lib":
            return Scenario(config, call=lambda: load_config(config))
        if kind == "train":
            return Scenario(config, train_main, ["--config", str(config)])
        return _cache_scenario(ws, config, cli=True, config=config)

    return run


def _output_scenario(kind: str) -> Callable[[Workspace, Path], Scenario]:
    def run(ws: Workspace, blocker: Path) -> Scenario:
        where = blocker / "sub"
        if kind == "extract":
            return Scenario(blocker, extract_main, ["--zip", str(ws.zip), "--out", str(where)])
        if kind == "extract_zip":
            return Scenario(
                blocker, call=lambda: extract.extract_zip(ws.zip, where, progress=False)
            )
        if kind == "preprocess":
            argv = ["--data", str(ws.data), "--cache", str(where), *SMALL]
            return Scenario(blocker, preprocess_main, argv)
        if kind == "preprocess_dataset":
            cfg = load_config(None, SMALL)
            return Scenario(
                blocker, call=lambda: preprocess_dataset(ws.data, where, cfg, progress=False)
            )
        if kind == "predict":
            model = str(ws.run / "best.keras")
            argv = ["--model-path", model, "--input", str(ws.good_image), "--output", str(where)]
            return Scenario(blocker, predict_main, argv)
        if kind == "predict_files":
            pairs = [(ws.good_image, where / "x.nii.gz")]
            return Scenario(
                blocker, call=lambda: infer.predict_files(ws.predictor, pairs, progress=False)
            )
        if kind == "evaluate":
            argv = [
                *("--pred-dir", str(_good_predictions(ws)), "--data-path", str(ws.data)),
                *("--output", str(where / "scores.csv")),
            ]
            return Scenario(blocker, evaluate_main, argv)
        return Scenario(blocker, call=lambda: save_config(load_config(), where / "config.yaml"))

    return run


def _tmp(name: str) -> Callable[[Workspace], Path]:
    return lambda ws: ws.tmp / name


def _good_image(ws: Workspace) -> Path:
    return ws.good_image


def _good_label(ws: Workspace) -> Path:
    return ws.good_label


def _good_zip(ws: Workspace) -> Path:
    return ws.zip


def _good_model(ws: Workspace) -> Path:
    return ws.run / "best.keras"


def _data_dir(ws: Workspace) -> Path:
    return ws.data


def _input_dir(ws: Workspace) -> Path:
    (ws.tmp / "in").mkdir()
    return ws.tmp / "in" / "b_0000.nii.gz"


ENTRIES: dict[str, dict[str, Entry]] = {
    "volume": {
        "load_image": Entry(
            _tmp("bad_0000.nii.gz"),
            _good_image,
            lambda ws, p: Scenario(p, call=lambda: nifti.load_image(p)),
        ),
        "preprocess": Entry(
            _image_in_data, _good_image, lambda ws, p: _cache_scenario(ws, p, cli=True)
        ),
        "preprocess_dataset": Entry(
            _image_in_data, _good_image, lambda ws, p: _cache_scenario(ws, p, cli=False)
        ),
        "predict": Entry(_input_dir, _good_image, _predict_cli),
        "predict_files": Entry(_tmp("b_0000.nii.gz"), _good_image, _predict_lib),
    },
    "label": {
        "load_case": Entry(
            _tmp("label.nii.gz"),
            _good_label,
            lambda ws, p: Scenario(
                p, call=lambda: nifti.load_case(cases.Case(CASE1, ws.good_image, p))
            ),
        ),
        "preprocess": Entry(
            _label_in_data, _good_label, lambda ws, p: _cache_scenario(ws, p, cli=True)
        ),
        "preprocess_dataset": Entry(
            _label_in_data, _good_label, lambda ws, p: _cache_scenario(ws, p, cli=False)
        ),
        "evaluate": Entry(
            _prediction_dir, _good_label, lambda ws, p: _evaluate_cli(ws, p.parent, ws.data, p)
        ),
        "score_prediction_dir": Entry(
            _prediction_dir, _good_label, lambda ws, p: _evaluate_lib(ws, p.parent, ws.data, p)
        ),
    },
    "zip": {
        "extract": Entry(
            _tmp("bad.zip"),
            _good_zip,
            lambda ws, p: Scenario(
                p,
                extract_main,
                ["--zip", str(p), "--out", str(ws.tmp / "out")],
                clean=(ws.tmp / "out",),
            ),
        ),
        "extract_zip": Entry(
            _tmp("bad.zip"),
            _good_zip,
            lambda ws, p: Scenario(
                p,
                call=lambda: extract.extract_zip(p, ws.tmp / "out", progress=False),
                clean=(ws.tmp / "out",),
            ),
        ),
    },
    "config": {
        kind: Entry(_tmp("config.yaml"), _good_image, _config_scenario(kind))
        for kind in ("lib", "train", "preprocess")
    },
    "model": {
        kind: Entry(_model_target, _good_model, _model_scenario(kind))
        for kind in ("lib", "predict", "evaluate")
    },
    "output": {
        kind: Entry(_tmp("blocked"), _good_image, _output_scenario(kind))
        for kind in (
            "extract",
            "extract_zip",
            "preprocess",
            "preprocess_dataset",
            "predict",
            "predict_files",
            "evaluate",
            "save_config",
        )
    },
    "dataset": {
        "preprocess": Entry(_data_dir, _good_image, lambda ws, p: _cache_scenario(ws, p, cli=True)),
        "preprocess_dataset": Entry(
            _data_dir, _good_image, lambda ws, p: _cache_scenario(ws, p, cli=False)
        ),
        "evaluate": Entry(
            _data_dir, _good_image, lambda ws, p: _evaluate_cli(ws, _good_predictions(ws), p, p)
        ),
        "score_prediction_dir": Entry(
            _data_dir, _good_image, lambda ws, p: _evaluate_lib(ws, _good_predictions(ws), p, p)
        ),
    },
    "pred_dir": {
        "evaluate": Entry(
            _tmp("pred"), _good_image, lambda ws, p: _evaluate_cli(ws, p, ws.data, p)
        ),
        "score_prediction_dir": Entry(
            _tmp("pred"), _good_image, lambda ws, p: _evaluate_lib(ws, p, ws.data, p)
        ),
    },
}

BADS: dict[str, dict[str, Bad]] = {
    "volume": BAD_VOLUMES,
    "label": BAD_LABELS,
    "zip": BAD_ZIPS,
    "config": BAD_CONFIGS,
    "model": BAD_MODELS,
    "output": BAD_OUTPUTS,
    "dataset": BAD_DATASETS,
    "pred_dir": BAD_PRED_DIRS,
}

#: The matrix: every bad input of a kind against every entry point that takes that kind.
MATRIX = [
    pytest.param(kind, entry, bad, id=f"{kind}-{bad}-{entry}")
    for kind, entries in ENTRIES.items()
    for entry in entries
    for bad in BADS[kind]
    if entry not in BADS[kind][bad].skip
]
PROGS = {
    extract_main: "flare-extract",
    preprocess_main: "flare-preprocess",
    train_main: "flare-train",
    predict_main: "flare-predict",
    evaluate_main: "flare-evaluate",
}


def _files(root: Path, skip: Path | None = None) -> set[Path]:
    return {p for p in root.rglob("*") if skip is None or not p.is_relative_to(skip)}


def assert_no_partial_output(folder: Path) -> None:
    """No temporaries below ``folder``; every NIfTI complete; every cache entry whole."""
    if not folder.is_dir():
        return
    for path in folder.rglob("*"):
        assert not is_temp_name(path.name), f"temporary left behind: {path}"
        if path.name.endswith(".nii.gz"):
            nifti.read_geometry(path)  # complete: the header's voxels are all there
        if path.parent.name == "cases" and path.is_dir():
            assert {p.name for p in path.iterdir()} == {"image.npy", "label.npy", "meta.json"}


def error_line(err: str, prog: str) -> str:
    """The single ``prog: error: …`` line of a CLI's stderr (tqdm progress lines aside)."""
    assert "Traceback" not in err, err
    lines = [s for s in re.split(r"[\r\n]+", err) if s.strip() and not PROGRESS.match(s)]
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


#: Pipeline stage of each entry point (kind, entry) of :data:`ENTRIES`; one test file per stage.
_STAGE_OF_ENTRY = {
    "extract": "extract",
    "extract_zip": "extract",
    "load_image": "load",
    "load_case": "load",
    "preprocess": "preprocess",
    "preprocess_dataset": "preprocess",
    "predict": "predict",
    "predict_files": "predict",
    "evaluate": "evaluate",
    "score_prediction_dir": "evaluate",
}
_STAGE_OF_KIND_ENTRY = {
    ("config", "lib"): "config",
    ("config", "train"): "config",
    ("output", "save_config"): "config",
    ("model", "lib"): "predict",
}
STAGES = ("extract", "load", "config", "preprocess", "predict", "evaluate")


def stage_of(kind: str, entry: str) -> str:
    """The stage whose test file runs this entry point."""
    return _STAGE_OF_KIND_ENTRY.get((kind, entry)) or _STAGE_OF_ENTRY[entry]


def matrix_for(stage: str) -> list:
    """The cases of :data:`MATRIX` whose entry point belongs to ``stage``."""
    return [param for param in MATRIX if stage_of(*param.values[:2]) == stage]


def check_bad_input(kind: str, entry: str, bad: str, ws: Workspace, capsys) -> None:
    """One line naming the file and the problem; exit 2 from a CLI; no partial output."""
    spec, case = ENTRIES[kind][entry], BADS[kind][bad]
    target = spec.target(ws)
    case.make(spec.good(ws))(target)
    before = _files(ws.tmp)
    scenario = spec.run(ws, target)
    if scenario.main is not None:
        capsys.readouterr()
        code = scenario.main(scenario.argv)
        text = error_line(capsys.readouterr().err, PROGS[scenario.main])
        assert code == 2
    else:
        with pytest.raises(FlareError) as info:
            scenario.call()
        text = str(info.value)
        assert "\n" not in text
    assert str(scenario.named) in text, text
    assert re.search(case.message, text), text
    for path in scenario.absent:
        assert not path.exists(), f"partial output left: {path}"
    for folder in scenario.clean:
        assert_no_partial_output(folder)
    if kind == "zip":  # nothing appeared outside the extraction folder
        out = ws.tmp / "out"
        assert {p for p in _files(ws.tmp, skip=out) if p not in before} == set()
        assert not list(out.rglob(".extracted.json"))


def check_real_process(command: str, args: list[str], message: str, tmp_path: Path) -> None:
    """Through a real interpreter: exit status 2, exactly one stderr line, no traceback."""
    bad_zip = tmp_path / "bad.zip"
    _zip({**GOOD_CASE, "../evil.nii.gz": b"x"})(bad_zip)
    argv = [a.format(bad_zip=bad_zip, tmp=tmp_path) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "flare_helpers", command, *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, lines[0])
    assert not (tmp_path / "evil.nii.gz").exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- valid variants


def hu_reference(good: Path) -> tuple[np.ndarray, np.ndarray]:
    """The good CT rounded to multiples of 10 HU in [-1000, 1550] (so uint8 can hold it)."""
    img = nib.load(good)
    hu = np.asarray(img.dataobj).astype(np.int16)
    return np.clip(np.round(hu / 10) * 10, -1000, 1550).astype(np.int16), img.affine


def encoded(hu: np.ndarray, affine: np.ndarray, dest: Path, how: str) -> Path:
    """Write the same HU values in one of many valid NIfTI encodings."""
    klass = nib.Nifti2Image if how == "nifti2" else nib.Nifti1Image
    raw, slope, inter = hu, None, None
    if how in ("int32", "float32", "float64"):
        raw = hu.astype(how)
    elif how == "uint8-scaled":
        raw, slope, inter = ((hu + 1000) // 10).astype(np.uint8), 10.0, -1000.0
    elif how == "uint16-offset":
        raw, slope, inter = (hu + 1024).astype(np.uint16), 1.0, -1024.0
    elif how == "4d-singleton":
        raw = hu[..., None]
    img = klass(raw, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path = dest / f"{how}.nii" if how == "uncompressed" else dest / f"{how}.nii.gz"
    if how == "uncompressed-named-gz":  # as some exporters do; ITK reads it too
        path.write_bytes(img.to_bytes())
    else:
        nib.save(img, path)
    return path


IMAGE_ENCODINGS = [
    "int16",
    "int32",
    "float32",
    "float64",
    "uint8-scaled",
    "uint16-offset",
    "nifti2",
    "uncompressed",
    "uncompressed-named-gz",
    "4d-singleton",
]


LABEL_DTYPES = ["uint8", "int16", "uint16", "int32", "int64", "float32", "float64"]
