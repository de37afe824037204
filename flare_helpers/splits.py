"""Seeded train/validation/test split of case ids, saved once and reused.

The split is stored as ``splits.json`` in the cache and copied into every
training run folder; evaluation reads the run's copy, so a model is never
scored on a case it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sklearn.model_selection import train_test_split

from flare_helpers.errors import FlareError
from flare_helpers.fileio import read_json, write_json_atomic

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
    rest, test = train_test_split(ids, test_size=n_test, random_state=seed) if n_test else (ids, [])
    train, val = train_test_split(rest, test_size=n_val, random_state=seed) if n_val else (rest, [])
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


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
