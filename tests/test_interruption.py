"""Killed midway (SIGKILL, as a Colab disconnect does), rerun, and nothing is lost or wrong.

Extraction and preprocessing run as real processes (``python -m flare_helpers extract``
/ ``preprocess``), are killed as soon as their first output
appears, and are run again; the result must equal an uninterrupted run byte for
byte. Reproducibility: two fresh runs with the same seed and settings, one
serial and one parallel, give bit-identical caches.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from flare_helpers.config import load_config
from flare_helpers.data.cases import discover_cases
from flare_helpers.data.extract import extract_zip
from flare_helpers.data.fileio import is_temp_name
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.synthetic import write_synthetic_zip
from flare_helpers.preprocess.pipeline import preprocess_dataset

SMALL = ["preprocess.mode=resize", "preprocess.target_shape=[32,32,16]"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}


def _cli(command: str, *args: object) -> list[str]:
    return [sys.executable, "-m", "flare_helpers", command, *map(str, args)]


def _kill_when(command: list[str], ready: Callable[[], bool], env=ENV) -> int:
    """Start ``command``, SIGKILL its whole process group once ``ready()``; return its status.

    The status is negative (-9) when the kill landed, 0 when the command had
    already finished. Killing the group also kills preprocessing's worker
    processes, as losing a Colab runtime does.
    """
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and not ready():
            assert time.monotonic() < deadline, "no output within 120 s"
            time.sleep(0.001)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode


def _files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative path → bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


# --------------------------------------------------------------------------- extraction


def _big_zip(folder: Path, n_cases: int) -> Path:
    """A FLARE22-layout zip of ``n_cases`` noise CTs (2 MB) and labels (0.6 MB), stored."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    image = gzip.compress(
        nib.Nifti1Image(
            rng.integers(-1000, 1000, (128, 128, 64), dtype=np.int16), affine
        ).to_bytes(),
        compresslevel=1,
        mtime=0,
    )
    label = gzip.compress(
        nib.Nifti1Image(rng.integers(0, 14, (128, 128, 64), dtype=np.uint8), affine).to_bytes(),
        compresslevel=1,
        mtime=0,
    )
    path = folder / f"big{n_cases}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for n in range(1, n_cases + 1):
            archive.writestr(f"FLARE22Train/images/FLARE22_Tr_{n:04d}_0000.nii.gz", image)
            archive.writestr(f"FLARE22Train/labels/FLARE22_Tr_{n:04d}.nii.gz", label)
    return path


def _mid_write(target: Path) -> bool:
    """At least one member is complete and another is being written (its temporary exists)."""
    files = [
        p
        for folder in ("images", "labels")
        if (target / folder).is_dir()
        for p in (target / folder).iterdir()
    ]
    names = [p.name for p in files]
    return any(is_temp_name(n) for n in names) and any(not is_temp_name(n) for n in names)


@pytest.mark.slow
def test_killed_extraction_resumes_to_identical_files(tmp_path):
    zip_path = _big_zip(tmp_path, 24)
    for attempt in range(3):  # retried only if the kill missed the middle of a write
        out = tmp_path / f"out{attempt}"
        target = out / "FLARE22Train"
        command = _cli("extract", "--zip", zip_path, "--out", out)
        status = _kill_when(command, lambda target=target: _mid_write(target))
        if status == -signal.SIGKILL and _temporaries(target):
            break
    assert status == -signal.SIGKILL, "extraction finished before it could be killed"
    assert _temporaries(target), "the kill never landed inside a write"

    with zipfile.ZipFile(zip_path) as archive:
        members = {
            info.filename.removeprefix("FLARE22Train/"): archive.read(info)
            for info in archive.infolist()
        }
    # Killed: not complete, and whatever carries a real name is a whole, correct file.
    assert not (target / ".extracted.json").exists()
    interrupted = {
        name: payload
        for name, payload in _files(target).items()
        if not is_temp_name(Path(name).name)
    }
    assert 1 <= len(interrupted) < len(members)
    assert all(members[name] == payload for name, payload in interrupted.items())
    kept = {name: (target / name).stat().st_mtime_ns for name in interrupted}

    rerun = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "FLARE22_Tr_0024" in rerun.stdout
    reference = extract_zip(zip_path, tmp_path / "reference", progress=False)
    resumed = _files(target)
    assert not _temporaries(target)
    assert resumed == _files(reference)  # all members and the completion marker
    assert {name: resumed[name] for name in members} == members
    # complete files were verified (CRC) and kept, not extracted again
    assert {name: (target / name).stat().st_mtime_ns for name in interrupted} == kept


# --------------------------------------------------------------------------- preprocessing


@pytest.fixture(scope="module")
def many_cases(tmp_path_factory) -> Path:
    """32 labelled cases: 4 distinct 64×64×32 phantoms, each stored under 8 case ids."""
    root = tmp_path_factory.mktemp("many")
    source = extract_zip(
        write_synthetic_zip(root, 4, seed=3, shape=(64, 64, 32), progress=False, family="simple"),
        root / "src",
        progress=False,
    )
    data = root / "FLARE22Train"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    cases = discover_cases(source).labelled
    for n in range(32):
        case = cases[n % 4]
        shutil.copy(case.image, data / "images" / f"FLARE22_Tr_{n + 1:04d}_0000.nii.gz")
        shutil.copy(case.label, data / "labels" / f"FLARE22_Tr_{n + 1:04d}.nii.gz")
    return data


def _manifest_without_paths(cache: Path) -> dict:
    """manifest.json minus what names the cache folder and what the run rebuilt."""
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["cases"] = sorted(manifest["cases"])
    manifest.pop("rebuilt")
    return manifest


def _mid_write_entry(cache: Path) -> bool:
    """At least one cache entry is complete and another is being written."""
    cases = cache / "cases"
    names = [p.name for p in cases.iterdir()] if cases.is_dir() else []
    return any(is_temp_name(n) for n in names) and any(not is_temp_name(n) for n in names)


@pytest.mark.slow
def test_killed_preprocessing_resumes_to_a_byte_identical_cache(many_cases, tmp_path):
    for attempt in range(3):  # retried only if the kill missed the middle of a write
        cache = tmp_path / f"cache{attempt}"
        command = _cli("preprocess", "--data", many_cases, "--cache", cache, "--workers", 2, *SMALL)
        status = _kill_when(command, lambda cache=cache: _mid_write_entry(cache))
        if status == -signal.SIGKILL and _temporaries(cache):
            break
    assert status == -signal.SIGKILL, "preprocessing finished before it could be killed"
    assert _temporaries(cache), "the kill never landed inside the writing of an entry"

    reference = tmp_path / "reference"
    cfg = load_config(None, SMALL)
    preprocess_dataset(many_cases, reference, cfg, workers=1, progress=False)
    expected = _files(reference / "cases")
    assert len(expected) == 3 * 32

    # Killed: no manifest, not every case, and every entry under its real name is whole.
    assert not (cache / "manifest.json").exists()
    entries = [p for p in (cache / "cases").iterdir() if not is_temp_name(p.name)]
    assert 1 <= len(entries) < 32
    for entry in entries:
        name = entry.name
        assert {p.name for p in entry.iterdir()} == {"image.npy", "label.npy", "meta.json"}
        for file in entry.iterdir():
            assert file.read_bytes() == expected[f"{name}/{file.name}"], file

    rerun = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = len(entries)
    assert f"32 cases, {32 - done} (re)built, {done} up to date" in rerun.stdout
    assert not _temporaries(cache)
    assert _files(cache / "cases") == expected  # image.npy, label.npy and meta.json
    assert (cache / "splits.json").read_bytes() == (reference / "splits.json").read_bytes()
    assert _manifest_without_paths(cache) == _manifest_without_paths(reference)


# --------------------------------------------------------------------------- reproducibility


def _meta_without_run_specifics(text: bytes) -> dict:
    """meta.json minus where the source files lie and when they were written."""
    meta = json.loads(text)
    for key in ("image_file", "label_file"):
        meta[key].pop("path")
        meta[key].pop("mtime_ns")
    return meta


@pytest.mark.slow
def test_same_seed_and_settings_give_bit_identical_caches(tmp_path):
    """Two independent pipelines (zip → extract → preprocess in a fresh process), one serial,
    one with two worker processes and another hash seed: the same bytes."""
    caches = {}
    for name, workers, hash_seed in (("serial", 1, "1"), ("parallel", 2, "2")):
        root = tmp_path / name
        zip_path = write_synthetic_zip(
            root, 6, seed=11, shape=(48, 48, 24), progress=False, family="simple"
        )
        data = extract_zip(zip_path, root, progress=False)
        cache = root / "cache"
        command = _cli("preprocess", "--data", data, "--cache", cache, "--workers", workers, *SMALL)
        env = {**ENV, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        caches[name] = cache
    serial, parallel = (_files(caches[k]) for k in ("serial", "parallel"))
    assert serial.keys() == parallel.keys() and len(serial) == 2 + 3 * 6
    for name in serial:
        if name.endswith(".npy") or name == "splits.json":
            assert serial[name] == parallel[name], name
        elif name.endswith("meta.json"):
            one, other = (_meta_without_run_specifics(f[name]) for f in (serial, parallel))
            assert one == other and one["image_file"]["sha256"], name
    manifests = [json.loads(f["manifest.json"]) for f in (serial, parallel)]
    for manifest in manifests:
        for key in ("data_dir", "cases", "unlabelled", "orphan_labels"):
            manifest.pop(key)
    assert manifests[0] == manifests[1]


def test_interrupted_rebuild_leaves_no_manifest_vouching_for_mixed_entries(
    synthetic_data, tmp_path, monkeypatch
):
    """Settings changed, rebuild killed after one entry: the old manifest must not survive,
    or training from the cache alone (data folder gone) would mix old and new entries."""
    from flare_helpers.preprocess import pipeline as pp

    cache = tmp_path / "cache"
    before = load_config(None, [*SMALL, "preprocess.workers=1"])
    after = load_config(None, [*SMALL, "preprocess.workers=1", "preprocess.hu_window=[-100,200]"])
    preprocess_dataset(synthetic_data, cache, before, progress=False)
    old_params = pp.PreprocessParams.from_config(before)
    assert len(pp.read_manifest(cache, old_params)["cases"]) == 6

    build_entry = pp.build_entry

    def lost_runtime(case, cache_dir, params):
        if lost_runtime.built:
            raise KeyboardInterrupt  # the runtime disconnects after one new entry
        lost_runtime.built += 1
        return build_entry(case, cache_dir, params)

    lost_runtime.built = 0
    monkeypatch.setattr(pp, "build_entry", lost_runtime)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(synthetic_data, cache, after, progress=False)
    keys = {
        json.loads((entry / "meta.json").read_text())["params_key"]
        for entry in (cache / "cases").iterdir()
    }
    assert len(keys) == 2  # old and new entries side by side …
    with pytest.raises(FlareError, match="no preprocessed cache"):
        pp.read_manifest(cache, old_params)  # … and nothing vouches for them

    monkeypatch.undo()
    summary = preprocess_dataset(synthetic_data, cache, after, progress=False)
    assert len(summary.rebuilt) == 5  # the new entry was kept
    new_params = pp.PreprocessParams.from_config(after)
    assert len(pp.read_manifest(cache, new_params)["cases"]) == 6
