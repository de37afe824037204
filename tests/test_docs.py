"""`make docs`: executed notebooks copied for GitHub readers, pictures compressed, within budget."""

from __future__ import annotations

import base64
import io

import nbformat
import numpy as np
import pytest
from PIL import Image

from flare_helpers.docs import MAX_IMAGE_WIDTH, compress_image, main, publish_notebooks
from flare_helpers.errors import FlareError


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(width: int, height: int) -> np.ndarray:
    """A CT-like picture: smooth grey shapes plus noise (PNG compresses it poorly)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    grey = 128 + 80 * np.sin(x / 37.0) * np.cos(y / 23.0) + rng.normal(0, 12, (height, width))
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _figure(width: int, height: int) -> np.ndarray:
    """A plot-like picture: white with a few flat colour blocks (PNG compresses it well)."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    image[height // 4 : height // 2, width // 4 : width // 2] = (204, 84, 51)
    image[height // 2 :, width // 2 :] = (51, 115, 242)
    return image


def _notebook(folder, name: str, pictures: list[bytes], error: bool = False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("x = 1")]
    for k, png in enumerate(pictures):
        cell = nbformat.v4.new_code_cell(f"show({k})")
        data = {"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}
        cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
        nb.cells.append(cell)
    if error:
        cell = nbformat.v4.new_code_cell("1 / 0")
        cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="")]
        nb.cells.append(cell)
    path = folder / name
    nbformat.write(nb, path)
    return path


def test_pictures_are_scaled_and_take_the_smaller_encoding():
    photo = _png(_photo(1200, 600))
    mime, payload = compress_image(photo)
    assert mime == "image/jpeg" and len(payload) < len(photo) / 4
    assert Image.open(io.BytesIO(payload)).size == (MAX_IMAGE_WIDTH, 500)
    figure = _png(_figure(600, 400))
    mime, payload = compress_image(figure)
    assert mime == "image/png" and len(payload) <= len(figure)
    decoded = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
    assert np.array_equal(decoded, _figure(600, 400))  # lossless, exact organ colours


def test_publish_copies_code_and_outputs_and_shrinks_pictures(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "parameters.yaml").write_text("x: 1\n")
    pictures = [_png(_photo(1200, 600)), _png(_figure(600, 400))]
    source = _notebook(executed, "01_a.ipynb", pictures)
    _notebook(executed, "02_b.ipynb", [])
    written = publish_notebooks(executed, tmp_path / "docs")
    assert [p.name for p in written] == ["01_a.ipynb", "02_b.ipynb"]
    before, after = (nbformat.read(p, as_version=4) for p in (source, written[0]))
    assert [c.source for c in after.cells] == [c.source for c in before.cells]
    kinds = [sorted(c.outputs[0]["data"]) for c in after.cells if c.get("outputs")]
    assert kinds == [["image/jpeg", "text/plain"], ["image/png", "text/plain"]]
    assert written[0].stat().st_size < source.stat().st_size / 3


def test_publish_refuses_errors_and_an_oversized_set(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    _notebook(executed, "01_a.ipynb", [_png(_photo(300, 300))])
    with pytest.raises(FlareError, match=r"over the 0\.0 MB budget"):
        publish_notebooks(executed, tmp_path / "docs", max_total_bytes=1000)
    assert not (tmp_path / "docs").exists()
    _notebook(executed, "02_b.ipynb", [], error=True)
    with pytest.raises(FlareError, match="error output"):
        publish_notebooks(executed, tmp_path / "docs")
    with pytest.raises(FlareError, match="no executed notebooks"):
        publish_notebooks(tmp_path / "nothing", tmp_path / "docs")
    assert main([str(tmp_path / "nothing"), str(tmp_path / "docs")]) == 2
