"""Nothing untrusted is unpickled, executed or written outside its folder."""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from bad_matrix import Workspace, lambda_model

from flare_helpers.errors import FlareError
from flare_helpers.infer import predict as infer

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- security


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == name)
            or (isinstance(node.func, ast.Name) and node.func.id == name)
        )
    ]


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_library_never_unpickles_or_runs_untrusted_code():
    """Every np.load says allow_pickle=False, every load_model safe_mode=True; no pickle/yaml.load."""
    sources = sorted((REPO / "flare_helpers").rglob("*.py"))
    seen = {"np.load": 0, "load_model": 0}
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "load"):
            func = call.func
            owner = getattr(getattr(func, "value", None), "id", "")
            if owner in ("np", "numpy"):
                seen["np.load"] += 1
                assert _keyword(call, "allow_pickle") is False, f"{path}:{call.lineno}"
            assert owner not in ("pickle", "cloudpickle", "joblib", "torch"), (
                f"{path}:{call.lineno}"
            )
            assert owner != "yaml", f"{path}:{call.lineno}: use yaml.safe_load"
        for call in _calls(tree, "load_model"):
            seen["load_model"] += 1
            assert _keyword(call, "safe_mode") is True, f"{path}:{call.lineno}"
        assert not _calls(tree, "enable_unsafe_deserialization"), path
        assert not _calls(tree, "read_pickle"), path
    assert seen["np.load"] >= 2 and seen["load_model"] >= 1


def test_lambda_model_refused_even_after_unsafe_deserialization_was_enabled(ws: Workspace):
    model = ws.tmp / "m" / "best.keras"
    model.parent.mkdir()
    lambda_model(model)
    shutil.copy(ws.run / "config.yaml", model.parent / "config.yaml")
    from keras.src.backend.common import global_state

    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()  # something else in the session did this
    try:
        with pytest.raises(FlareError, match="contains Python code") as info:
            infer.load_predictor(model)
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)
    assert str(model) in str(info.value)


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_cache_array_is_refused_without_running_it(tmp_path):
    from flare_helpers.train.batches import _open

    marker = tmp_path / "pwned"
    evil = tmp_path / "image.npy"
    np.save(evil, np.array([_Exploit(marker)], dtype=object), allow_pickle=True)
    assert pickle.dumps(_Exploit(marker))  # the payload is real
    with pytest.raises(FlareError, match="not a readable .npy") as info:
        _open(evil)
    assert str(evil) in str(info.value) and not marker.exists()
