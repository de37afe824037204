"""Executed notebooks for reading on GitHub: what a run of the series shows, before running it.

``make docs`` runs the series with the ``demo`` profile (``flare-series``), then
:func:`publish_notebooks` copies the executed notebooks into ``docs/notebooks/``:
their code cells as in ``notebooks/`` (plus papermill's cell of injected
parameters), their outputs kept, every picture re-encoded as the smaller of an
optimised PNG and a JPEG and at most :data:`MAX_IMAGE_WIDTH` pixels wide, and
all of them together within :data:`MAX_TOTAL_BYTES`. A test checks that their
code cells still match the notebook sources. On the way they are cleaned for a
reader (:func:`clean_notebook`; publishing a published notebook changes nothing):

- no absolute path of the build machine: the folder ``make docs`` ran in (and the
  checkout and working folder papermill's metadata names) become relative paths, the
  home folder ``~``, and papermill's path metadata is dropped;
- no TensorFlow start-up log lines (:data:`TF_LOG_LINE`) in stderr outputs;
- progress bars as they ended: a ``tqdm.auto`` bar is saved as a widget whose text
  fallback shows 0 %; it becomes the text of its final state (kept in the notebook's
  widget metadata), and carriage-return text bars keep only their last line.

``python -m flare_helpers.series.docs EXECUTED_DIR OUT_DIR`` runs it from a shell.
"""

from __future__ import annotations

import base64
import html
import io
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tqdm.std import Bar

from flare_helpers.data.fileio import write_text_atomic
from flare_helpers.errors import FlareError

#: Budget of all published notebooks together (the issue's 10 MB).
MAX_TOTAL_BYTES = 10 * 1024 * 1024
#: Wider pictures are scaled down to this width (a GitHub page shows about 900 pixels).
MAX_IMAGE_WIDTH = 1000
#: JPEG quality of re-encoded pictures (when JPEG is the smaller encoding).
JPEG_QUALITY = 85

#: A line TensorFlow's C++ side (absl/glog logging, CUDA/XLA set-up) writes to stderr.
TF_LOG_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w./-]+:\d+\] .*"  # I0000 00:00:17… 123 port.cc:153]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w./-]+:\d+\] .*"  # older TensorFlow
    r"|To enable the following instructions: .* with the appropriate compiler flags\."
)
#: An absolute path into a folder where a checkout, a home or a build lives (not Colab's
#: ``/content``, which the notebooks' own defaults name).
MACHINE_PATH = re.compile(
    r"(?<![\w.:/~+=-])/(?:home|Users|root|work|tmp|mnt|opt|srv|var|private|scratch|builds?"
    r"|runner|workspace|data)/[^\s'\"<>)\]]*"
)
#: Strings never rewritten or searched for paths: encoded pictures and plotly's arrays.
_BINARY_KEYS = ("image/", "bdata")
_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


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


def _strings(node, rewrite=None):
    """Every text string in a notebook's JSON (not pictures); ``rewrite`` replaces each."""
    if isinstance(node, dict):
        for name in list(node):
            if not name.startswith(_BINARY_KEYS):
                node[name] = yield from _strings(node[name], rewrite)
    elif isinstance(node, list):
        for k, item in enumerate(node):
            node[k] = yield from _strings(item, rewrite)
    elif isinstance(node, str):
        yield node
        return rewrite(node) if rewrite else node
    return node


def machine_paths(notebook) -> list[str]:
    """Absolute paths of a build machine (:data:`MACHINE_PATH`) in a notebook's text."""
    found = []
    for text in _strings(notebook):
        found += MACHINE_PATH.findall(_DATA_URI.sub("", text))
    return found


def _rewrite_prefixes(notebook, prefixes: Mapping[str, str]) -> None:
    """Replace each absolute folder in ``prefixes`` (longest first) by its stand-in: ``""``
    (paths below the folder become relative to it, the folder itself ``.``) or ``"~"``."""
    if not prefixes:
        return
    ordered = sorted(prefixes, key=len, reverse=True)
    pattern = re.compile("(?<![\\w.-])(" + "|".join(map(re.escape, ordered)) + ")(/|(?![\\w.-]))")

    def replace(match: re.Match) -> str:
        stand_in = prefixes[match.group(1)]
        if match.group(2):
            return f"{stand_in}/" if stand_in else ""
        return stand_in or "."

    for _ in _strings(notebook, lambda text: pattern.sub(replace, text)):
        pass


def _machine_folders(notebook, root: Path) -> dict[str, str]:
    """Absolute folders of the build machine to rewrite, with their relative stand-ins.

    The folder publishing runs in (``make docs``: the checkout), the checkout and the
    working folder papermill's metadata names (the notebooks' folder's parent, the
    executed copy's folder's parent) and the home folder.
    """
    meta = notebook.metadata.get("papermill", {})
    roots = {root}
    input_path = Path(str(meta.get("input_path") or ""))
    if input_path.is_absolute() and input_path.parent.name == "notebooks":
        roots.add(input_path.parent.parent)
    works = set()
    output_path = Path(str(meta.get("output_path") or ""))
    if output_path.is_absolute():
        works.add(output_path.parent.parent)
    work_dir = Path(str((meta.get("parameters") or {}).get("work_dir") or ""))
    if work_dir.is_absolute():
        works.add(work_dir)
    folders = {}
    for work in works:  # outside every root: paths there become relative to it
        if not any(work.is_relative_to(r) for r in roots):
            folders[str(work)] = ""
    folders.update({str(r): "" for r in roots})
    folders.setdefault(str(Path.home()), "~")
    return {folder: stand_in for folder, stand_in in folders.items() if folder != root.anchor}


def _without_tf_log(text: str) -> str:
    return "".join(
        line for line in text.splitlines(keepends=True) if not TF_LOG_LINE.fullmatch(line.strip())
    )


def _as_terminal_shows(text: str) -> str:
    """Each line as a terminal leaves it: what a carriage return starts overwrites it."""
    lines = []
    for line in text.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown)
    return "\n".join(lines)


def _tqdm_text(model_id: str, state: Mapping) -> str | None:
    """The final text of a ``tqdm.notebook`` bar (an HBox of HTML, progress, HTML), ``""``
    for a bar closed unseen (``leave=False``), ``None`` for any other widget."""

    def model(ref) -> Mapping:
        return state.get(str(ref).removeprefix("IPY_MODEL_"), {})

    box = model(model_id)
    children = [model(c) for c in box.get("state", {}).get("children", [])]
    names = [c.get("model_name") for c in children]
    if box.get("model_name") != "HBoxModel" or len(names) != 3:
        return None
    if names[0] != "HTMLModel" or names[2] != "HTMLModel" or "Progress" not in str(names[1]):
        return None
    if model(box["state"].get("layout")).get("state", {}).get("visibility") == "hidden":
        return ""
    left, bar, right = (c.get("state", {}) for c in children)

    def text(value) -> str:
        return html.unescape(str(value or "")).replace("\u2007", " ")

    if not left.get("value"):  # no total: tqdm shows no bar
        return text(right.get("value"))
    span = float(bar.get("max") or 0) - float(bar.get("min") or 0)
    fraction = (float(bar.get("value") or 0) - float(bar.get("min") or 0)) / span if span else 1
    return (
        f"{text(left['value'])}|{Bar(min(max(fraction, 0.0), 1.0)):10}|{text(right.get('value'))}"
    )


def _widget_ids(node) -> set[str]:
    found = set()
    for text in _strings(node):
        found.update(re.findall(r"IPY_MODEL_(\w+)", text))
    return found


def _final_outputs(outputs: Iterable, state: Mapping) -> list:
    """A cell's outputs as a reader should see them: tqdm widgets as their final text, no
    TensorFlow log lines, consecutive streams joined, carriage-return bars at their end."""
    kept = []
    for output in outputs:
        view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
        if view and (final := _tqdm_text(view.get("model_id", ""), state)) is not None:
            if final:  # a plain text output (``output`` is an nbformat NotebookNode, a dict)
                kept.append(
                    type(output)(
                        output_type="display_data", data={"text/plain": final}, metadata={}
                    )
                )
            continue
        if output.get("output_type") == "stream":
            text = output["text"]
            if output.get("name") == "stderr":
                text = _without_tf_log(text)
            if not text:  # it held only TensorFlow's lines
                continue
            if kept and kept[-1].get("output_type") == "stream" and kept[-1].name == output.name:
                kept[-1]["text"] += text
                continue
            output["text"] = text
        kept.append(output)
    for output in kept:
        if output.get("output_type") == "stream":
            output["text"] = _as_terminal_shows(output["text"])
    return kept


def clean_notebook(notebook, root: str | Path | None = None) -> None:
    """Clean an executed ``nbformat`` notebook in place for readers (see the module's text).

    Args:
        root: the folder whose paths become relative (default: the current folder).
    """
    root = Path(root or Path.cwd()).resolve()
    _rewrite_prefixes(notebook, _machine_folders(notebook, root))
    meta = notebook.metadata
    for key in ("input_path", "output_path", "parameters", "environment_variables"):
        meta.get("papermill", {}).pop(key, None)
    widgets = meta.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    state = widgets.get("state", {})
    for cell in notebook.cells:
        if "outputs" in cell:
            cell.outputs = _final_outputs(cell.outputs, state)
    # keep the state of the widgets still shown (and the models they refer to), no other
    needed = set()
    todo = {
        out["data"]["application/vnd.jupyter.widget-view+json"].get("model_id")
        for c in notebook.cells
        for out in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    }
    while todo:
        model_id = todo.pop()
        if model_id in state and model_id not in needed:
            needed.add(model_id)
            todo |= _widget_ids(state[model_id])
    if state:
        widgets["state"] = {k: v for k, v in state.items() if k in needed}
        if not needed:
            meta.pop("widgets", None)


def publish_notebooks(
    executed_dir: str | Path,
    out_dir: str | Path,
    *,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    root: str | Path | None = None,
) -> list[Path]:
    """Copy the executed ``NN_*.ipynb`` of a series run into ``out_dir``, cleaned for readers
    (:func:`clean_notebook`, paths made relative to ``root``, default the current folder)
    and pictures compressed.

    Returns:
        The written notebooks, in order.

    Raises:
        FlareError: no executed notebooks, a notebook with an error output, an absolute
            path of the machine left after cleaning, or more than ``max_total_bytes`` in
            all (nothing is written then).
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
        clean_notebook(notebook, root)
        left = machine_paths(notebook)
        if left:
            raise FlareError(f"shows an absolute path of this machine: {left[0]}", source)
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
    """``python -m flare_helpers.series.docs EXECUTED_DIR OUT_DIR``: :func:`publish_notebooks`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m flare_helpers.series.docs EXECUTED_DIR OUT_DIR", file=sys.stderr)
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
