"""Seeded train/validation/test split of case ids, saved once and reused.

The split is stored as ``splits.json`` in the cache and copied into every
training run folder; evaluation and figures read the run's copy
(:func:`select_cases`), so a model is never scored on a case it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from pathlib import Path

import numpy as np

from flare_helpers.data.cases import Case, discover_cases
from flare_helpers.data.fileio import read_json, write_json_atomic
from flare_helpers.data.layout import RunLayout
from flare_helpers.errors import FlareError

SPLIT_NAMES = ("train", "val", "test")


def _count(n: int, fraction: float) -> int:
    """Cases for a held-out part: at least one when asked for and the set allows it."""
    if fraction <= 0 or n < 3:
        return 0
    return max(1, int(round(n * fraction)))


def make_splits(
    case_ids: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Split ``case_ids`` at random (seeded) into train/val/test lists (sorted).

    Fewer than three cases all go to training. Otherwise each held-out part
    gets ``round(n * fraction)`` cases, at least one when its fraction is > 0.
    """
    ids = sorted(set(case_ids))
    n_test, n_val = _count(len(ids), test_fraction), _count(len(ids), val_fraction)
    if len(ids) - n_test - n_val < 1:
        raise FlareError(f"{len(ids)} cases are too few for these val/test fractions")
    rest, test = _hold_out(ids, n_test, seed)
    train, val = _hold_out(rest, n_val, seed)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def _hold_out(ids: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """(kept, held out): ``n`` ids drawn with a seeded permutation, the rest in permuted order.

    The same draw as scikit-learn's ``train_test_split(ids, test_size=n,
    random_state=seed)`` (a ``RandomState(seed)`` permutation, the first ``n`` held
    out), so existing splits stay the same, without importing scikit-learn (~1.7 s).
    """
    if n == 0:
        return ids, []
    order = np.random.RandomState(seed).permutation(len(ids))
    return [ids[i] for i in order[n:]], [ids[i] for i in order[:n]]


def load_or_make_splits(
    path: str | Path,
    case_ids: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, list[str]]:
    """Reuse the split saved at ``path`` or make and save a new one.

    A saved split made with the same fractions and seed is kept: cases that are
    gone are dropped and new cases join training (they were never held out, so
    nothing leaks). Different settings make a fresh split.
    """
    path = Path(path)
    settings = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
    ids = set(case_ids)
    if path.exists():
        saved = read_json(path)
        if saved.get("settings") == settings:
            parts = {name: [c for c in saved.get(name, []) if c in ids] for name in SPLIT_NAMES}
            known = set().union(*parts.values())
            parts["train"] = sorted(set(parts["train"]) | (ids - known))
            if parts != {name: saved.get(name) for name in SPLIT_NAMES}:
                write_json_atomic(path, {"settings": settings, **parts})
            return parts
    parts = make_splits(sorted(ids), val_fraction, test_fraction, seed)
    write_json_atomic(path, {"settings": settings, **parts})
    return parts


def read_splits(path: str | Path) -> dict[str, list[str]]:
    """Read a saved split (from a cache or a run folder)."""
    saved = read_json(path)
    missing = [name for name in SPLIT_NAMES if name not in saved]
    if missing:
        raise FlareError(f"split file lacks {', '.join(missing)}", path)
    return {name: list(saved[name]) for name in SPLIT_NAMES}


def select_cases(
    data_dir: str | Path,
    which: str | Sequence[str] | None = "test",
    *,
    model_path: str | Path | None = None,
    labelled: bool = True,
) -> list[Case]:
    """The cases to evaluate or show: the run's test split, ``"all"``, or given case ids.

    Args:
        data_dir: the extracted data set (``images/``, ``labels/``).
        which: ``"test"`` (or None) reads ``splits.json`` beside ``model_path`` (the
            split the model was trained with, so no training case is ever scored);
            ``"all"`` takes every case; a case id or list of ids takes those, in
            order, each once.
        model_path: the run's ``.keras`` model; needed for ``"test"`` only.
        labelled: only cases with a label (to score them); otherwise any image (to show it).

    Raises:
        FlareError: no (labelled) cases in ``data_dir``, no usable test split, test
            cases missing from ``data_dir``, no ids given, or an unknown id.
    """
    found = discover_cases(data_dir)
    usable = {case.case_id: case for case in (found.labelled if labelled else found.cases)}
    if labelled and not usable:
        raise FlareError("no ground-truth labels here (expected labels/<case>.nii.gz)", data_dir)
    if which is None or which == "test":
        ids = _test_ids(model_path, data_dir, {case.case_id for case in found.labelled})
    elif which == "all":
        ids = list(usable)
    else:
        ids = [which] if isinstance(which, str) else [str(c) for c in which]
        if not ids:
            raise FlareError("no cases chosen (give 'test', 'all' or case ids)")
        unknown = [case_id for case_id in ids if case_id not in usable]
        if unknown:
            what = "ground-truth label" if labelled else "image"
            raise FlareError(f"no {what} for case(s) {', '.join(unknown)}", data_dir)
    return [usable[case_id] for case_id in dict.fromkeys(ids)]


def _test_ids(model_path: str | Path | None, data_dir: str | Path, labelled: Set[str]) -> list[str]:
    """The test ids of ``splits.json`` beside the model, all of them labelled in ``data_dir``."""
    if model_path is None:
        raise FlareError("the test split needs the model path (splits.json lies beside it)")
    splits_path = RunLayout(Path(model_path).parent).splits
    if not splits_path.exists():
        raise FlareError("no splits.json beside the model; evaluate all cases instead", splits_path)
    test = read_splits(splits_path)["test"]
    if not test:
        raise FlareError(
            "the test split is empty (too few cases?); evaluate all cases", splits_path
        )
    absent = [case_id for case_id in test if case_id not in labelled]
    if absent:
        raise FlareError(
            f"test case(s) {', '.join(absent[:3])} are not labelled in this folder; "
            "evaluate all cases of another data set with cases='all'",
            data_dir,
        )
    return test
