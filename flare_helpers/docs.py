"""Executed notebooks for reading on GitHub: what a run of the series shows, before running it.

``make docs`` runs the series with the ``demo`` profile (``flare-series``), then
:func:`publish_notebooks` copies the executed notebooks into ``docs/notebooks/``:
their code cells as in ``notebooks/`` (plus papermill's cell of injected
parameters), their outputs kept, every picture re-encoded as the smaller of an
optimised PNG and a JPEG and at most :data:`MAX_IMAGE_WIDTH` pixels wide, and
all of them together within :data:`MAX_TOTAL_BYTES`. A test checks that their
code cells still match the notebook sources.

``python -m flare_helpers.docs EXECUTED_DIR OUT_DIR`` runs it from a shell.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Sequence
from pathlib import Path

from flare_helpers.errors import FlareError
from flare_helpers.fileio import write_text_atomic

#: Budget of all published notebooks together (the issue's 10 MB).
MAX_TOTAL_BYTES = 10 * 1024 * 1024
#: Wider pictures are scaled down to this width (a GitHub page shows about 900 pixels).
MAX_IMAGE_WIDTH = 1000
#: JPEG quality of re-encoded pictures (when JPEG is the smaller encoding).
JPEG_QUALITY = 85


def compress_image(png: bytes, max_width: int = MAX_IMAGE_WIDTH) -> tuple[str, bytes]:
    """``(mime type, bytes)``: ``png`` scaled to ``max_width`` and re-encoded as the smaller of
    an optimised PNG and a JPEG (``JPEG_QUALITY``; transparency flattened onto white)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    image.load()
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    else:
        image = image.convert("RGB")
    if image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)
    encoded = {}
    for fmt, mime, options in (
        ("PNG", "image/png", {"optimize": True}),
        ("JPEG", "image/jpeg", {"quality": JPEG_QUALITY, "optimize": True}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        encoded[mime] = buffer.getvalue()
    mime = min(encoded, key=lambda m: len(encoded[m]))
    return mime, encoded[mime]


def compress_notebook(notebook) -> None:
    """Re-encode every PNG output of an ``nbformat`` notebook in place (:func:`compress_image`)."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            mime, payload = compress_image(base64.b64decode(data["image/png"]))
            del data["image/png"]
            data[mime] = base64.b64encode(payload).decode("ascii")
            output.get("metadata", {}).pop("image/png", None)


def publish_notebooks(
    executed_dir: str | Path,
    out_dir: str | Path,
    *,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> list[Path]:
    """Copy the executed ``NN_*.ipynb`` of a series run into ``out_dir``, pictures compressed.

    Returns:
        The written notebooks, in order.

    Raises:
        FlareError: no executed notebooks, a notebook with an error output, or more
            than ``max_total_bytes`` in all (nothing is written then).
    """
    import nbformat

    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    sources = sorted(executed_dir.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FlareError("no executed notebooks here (run flare-series first)", executed_dir)
    texts = {}
    for source in sources:
        notebook = nbformat.read(source, as_version=4)
        failed = [
            out
            for cell in notebook.cells
            for out in cell.get("outputs", [])
            if out.get("output_type") == "error"
        ]
        if failed:
            raise FlareError(f"holds an error output ({failed[0].get('ename')})", source)
        compress_notebook(notebook)
        texts[source.name] = nbformat.writes(notebook) + "\n"
    total = sum(len(text.encode("utf-8")) for text in texts.values())
    if total > max_total_bytes:
        raise FlareError(
            f"the notebooks take {total / 2**20:.1f} MB, over the {max_total_bytes / 2**20:.1f} "
            "MB budget; shorten the demo's video or figures",
            executed_dir,
        )
    return [write_text_atomic(out_dir / name, text) for name, text in texts.items()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flare_helpers.docs EXECUTED_DIR OUT_DIR``: :func:`publish_notebooks`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m flare_helpers.docs EXECUTED_DIR OUT_DIR", file=sys.stderr)
        return 2
    try:
        written = publish_notebooks(args[0], args[1])
    except FlareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
