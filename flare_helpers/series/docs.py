"""Executed notebooks for reading on GitHub: what a run of the series shows, before running it.

``make docs`` runs the series with the ``demo`` profile (``flare-series``), then
:func:`publish_notebooks` copies the executed notebooks into ``docs/notebooks/``:
their code cells as in ``notebooks/`` (plus papermill's cell of injected
parameters), their outputs kept, every picture re-encoded as the smaller of an
optimised PNG and a JPEG and at most :data:`MAX_IMAGE_WIDTH` pixels wide, and
all of them together within :data:`MAX_TOTAL_BYTES`. A test checks that their
code cells still match the notebook sources. On the way they are cleaned for a
reader (:func:`clean_notebook`; publishing a published notebook changes nothing):

- a first cell saying how it ran (:func:`run_header`): the profile, the parameters
  papermill injected, the machine (from the runner's record,
  :data:`~flare_helpers.series.runner.RUN_RECORD`), the date and the notebook's wall
  time (papermill's metadata);
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
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from tqdm.std import Bar

from flare_helpers.data.fileio import write_text_atomic
from flare_helpers.errors import FlareError
from flare_helpers.series.runner import RUN_RECORD, read_run_record
from flare_helpers.series.session import format_seconds

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


#: Tag of the published notebooks' first cell, which says how the notebook ran.
HEADER_TAG = "flare-run"


def _literal(value) -> str:
    """A parameter's value as papermill writes it into the notebook (Python literals)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _wall_time(notebook) -> tuple[datetime, float]:
    """When the notebook started (UTC) and its wall time in seconds, from papermill's
    metadata: the notebook's ``duration``, else its cells' first start to last end."""
    meta = notebook.metadata.get("papermill", {})
    cells = [c.metadata.get("papermill", {}) for c in notebook.cells]
    starts = [c["start_time"] for c in cells if c.get("start_time")]
    ends = [c["end_time"] for c in cells if c.get("end_time")]
    start_text = meta.get("start_time") or min(starts, default=None)
    if start_text is None:
        raise FlareError("papermill recorded no start time in this notebook")
    start = datetime.fromisoformat(str(start_text))
    start = start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start
    duration = meta.get("duration")
    if duration is None:
        if not ends:
            raise FlareError("papermill recorded no run time in this notebook")
        last = datetime.fromisoformat(str(max(ends)))
        last = last.replace(tzinfo=timezone.utc) if last.tzinfo is None else last
        duration = (last - start).total_seconds()
    return start.astimezone(timezone.utc), float(duration)


def run_header(notebook, run: Mapping) -> str:
    """The Markdown of a published notebook's first cell: how it ran.

    Args:
        notebook: the executed ``nbformat`` notebook, papermill's metadata still in it.
        run: its entry of the runner's record (``profile``, ``machine``, ``fresh_runtime``).
    """
    started, seconds = _wall_time(notebook)
    params = notebook.metadata.get("papermill", {}).get("parameters") or {}
    cells = [
        c.source for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])
    ]
    shown = re.findall(r"^(\w+) = ", cells[0] if cells else "", re.M)  # the cell's order
    names = [n for n in shown if n in params] + sorted(set(params) - set(shown))
    injected = " · ".join(f"`{k} = {_literal(params[k])}`" for k in names) or "none"
    rows = [
        ("profile", f"`{run['profile']}`"),
        ("parameters papermill injected", injected),
        ("machine", str(run["machine"])),
        ("date", started.strftime("%Y-%m-%d %H:%M UTC")),
        ("wall time", format_seconds(seconds)),
    ]
    if run.get("fresh_runtime"):
        rows.append(("runtime", "fresh: a new, empty `data_root` (only `work_dir` and the zip)"))
    table = "\n".join(f"| {k} | {v.replace('|', '&#124;')} |" for k, v in rows)
    return (
        "**How this notebook ran** (recorded by `flare-series`; the cells below are the "
        f"notebook's own)\n\n| | |\n|---|---|\n{table}\n"
    )


def add_run_header(notebook, run: Mapping | None, source: Path) -> None:
    """Open an executed notebook with its :func:`run_header` cell (in place).

    A notebook that already opens with one (published before) keeps it; one that
    papermill did not execute (no ``parameters`` in its metadata) gets none.

    Raises:
        FlareError: papermill executed it but the runner's record has no entry for it.
    """
    import nbformat

    first = notebook.cells[0] if notebook.cells else None
    if first is not None and HEADER_TAG in first.metadata.get("tags", []):
        return
    if "parameters" not in notebook.metadata.get("papermill", {}):
        return
    if run is None:
        raise FlareError(
            f"no entry in {RUN_RECORD} beside it says how it ran: run the series with "
            "flare-series, then publish",
            source,
        )
    cell = nbformat.v4.new_markdown_cell(run_header(notebook, run))
    cell.metadata["tags"] = [HEADER_TAG]
    if "id" in cell:
        cell["id"] = HEADER_TAG
    notebook.cells.insert(0, cell)


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
    (paths below the folder become relative to it, the folder itself ``.``), ``"~"`` or a
    relative name such as ``"data"``."""
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
    executed copy's folder's parent), a fresh runtime's data_root and the home folder.
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
    # a fresh runtime's own empty data_root (``flare-series --fresh-runtimes``): "data"
    data_root = Path(str((meta.get("parameters") or {}).get("data_root") or ""))
    if data_root.is_absolute() and not any(data_root.is_relative_to(r) for r in roots | works):
        folders[str(data_root)] = "data"
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
    """Copy the executed ``NN_*.ipynb`` of a series run into ``out_dir``, each opened with how
    it ran (:func:`add_run_header`, from the runner's record in ``executed_dir``), cleaned for
    readers (:func:`clean_notebook`, paths made relative to ``root``, default the current
    folder) and pictures compressed.

    Returns:
        The written notebooks, in order.

    Raises:
        FlareError: no executed notebooks, a notebook with an error output, one that
            the runner's record does not list, an absolute path of the machine left
            after cleaning, or more than ``max_total_bytes`` in all (nothing is written
            then).
    """
    import nbformat

    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    sources = sorted(executed_dir.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FlareError("no executed notebooks here (run flare-series first)", executed_dir)
    record = read_run_record(executed_dir)
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
        add_run_header(notebook, record.get(source.stem), source)
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
