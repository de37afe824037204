"""Opening a ``.keras`` file safely: refuse code inside, load uncompiled, one-line errors.

Both the VNet and the localiser are saved as ``.keras`` archives. A file from
elsewhere must not run code when it loads, so its ``config.json`` is checked
before Keras sees it (:func:`check_model_file`), and the package's custom
layers, losses and metrics are registered by importing their modules here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras

from flare_helpers.errors import FlareError, one_line
from flare_helpers.model import losses, metrics, vnet  # noqa: F401  (registers custom objects)

#: Modules a model's config may name: Keras itself and this package's registered objects.
TRUSTED_MODULES = ("keras", "flare_helpers")
_CODE = "refusing to load a model that contains Python code ({}): it could run anything here"


def _untrusted_code(node: object) -> str | None:
    """What in a ``.keras`` config.json would run code on loading (a Lambda, a foreign module)."""
    if isinstance(node, dict):
        if node.get("class_name") in ("Lambda", "__lambda__"):
            return "a Lambda layer"
        module = node.get("module")
        if isinstance(module, str) and module.split(".")[0] not in TRUSTED_MODULES:
            return f"it refers to module '{module}'"
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _untrusted_code(child)
        if found:
            return found
    return None


def check_model_file(path: Path) -> None:
    """Refuse anything but a .keras archive whose config names only Keras and our layers.

    Checked before Keras sees the file, so a Lambda layer is refused even where
    ``keras.config.enable_unsafe_deserialization()`` was called (which would
    override ``safe_mode=True``).
    """
    if not path.exists():
        raise FlareError("model file not found", path)
    if path.is_dir() or path.suffix != ".keras":
        raise FlareError("not a .keras model file", path)
    if not zipfile.is_zipfile(path):
        raise FlareError("not a valid .keras file (it is not a zip archive)", path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except KeyError as exc:
        raise FlareError("not a valid .keras file (no config.json inside)", path) from exc
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FlareError(f"not a valid .keras file ({one_line(exc)})", path) from exc
    found = _untrusted_code(config)
    if found:
        raise FlareError(_CODE.format(found), path)


def load_model_file(path: Path):
    """A checked ``.keras`` file (:func:`check_model_file`) loaded in safe mode, uncompiled.

    Raises:
        FlareError: one line naming the file: missing, not a model, or unloadable.
    """
    check_model_file(path)
    try:
        # safe_mode=True explicitly: a .keras file from elsewhere must not run code
        # (Lambda layers), even if something called enable_unsafe_deserialization().
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        if "safe_mode" in str(exc):
            raise FlareError(_CODE.format("Keras refused it in safe mode"), path) from exc
        raise FlareError(
            f"cannot load the model ({type(exc).__name__}: {one_line(exc)})", path
        ) from exc
