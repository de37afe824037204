"""`make docs`: executed notebooks copied for GitHub readers, pictures compressed, within budget."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from flare_helpers.errors import FlareError
from flare_helpers.series.docs import MAX_IMAGE_WIDTH, compress_image, main, publish_notebooks
from flare_helpers.series.runner import RUN_RECORD, describe_machine, record_run
from flare_helpers.series.session import format_seconds


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


# --- what a reader sees: no machine paths, no TensorFlow log lines, bars as they ended ---

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: Absolute paths into folders where a checkout, a home or a build lives (not Colab's /content).
MACHINE_PATH = re.compile(
    r"(?<![\w.:/~+=-])/(?:home|Users|root|work|tmp|mnt|opt|srv|var|private|scratch|builds?"
    r"|runner|workspace|data)/"
)
TF_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795958616.885523   20718 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "E0000 00:00:1733150000.123456   123 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
    "Attempting to register factory for plugin cuDNN when one has already been registered",
    "W0000 00:00:1733150000.654321   123 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
    "2024-05-01 10:00:00.123456: E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:282]"
    " failed call to cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected",
]


def _texts(node, key=""):
    """Every text string of a notebook's JSON but encoded pictures and data URIs."""
    if isinstance(node, dict):
        for name, value in node.items():
            if not name.startswith("image/") and name != "bdata":
                yield from _texts(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item, key)
    elif isinstance(node, str):
        yield re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", node)


def _outputs(notebook):
    return [out for cell in notebook.cells for out in cell.get("outputs", [])]


def _bar_state(model_id, left, value, total, right, *, hidden=False):
    """The widget models ``tqdm.notebook`` saves for one bar (as in docs/notebooks, trimmed)."""
    ids = [f"{model_id}{part}" for part in ("l", "p", "r", "y")]
    return {
        model_id: {
            "model_name": "HBoxModel",
            "state": {
                "children": [f"IPY_MODEL_{i}" for i in ids[:3]],
                "layout": f"IPY_MODEL_{ids[3]}",
            },
        },
        ids[0]: {"model_name": "HTMLModel", "state": {"value": left}},
        ids[1]: {
            "model_name": "FloatProgressModel",
            "state": {"min": 0.0, "max": total, "value": value},
        },
        ids[2]: {"model_name": "HTMLModel", "state": {"value": right}},
        ids[3]: {
            "model_name": "LayoutModel",
            "state": {"visibility": "hidden" if hidden else None},
        },
    }


def _widget_output(model_id, fallback):
    view = {"model_id": model_id, "version_major": 2, "version_minor": 0}
    data = {"application/vnd.jupyter.widget-view+json": view, "text/plain": fallback}
    return nbformat.v4.new_output("display_data", data=data)


def test_committed_docs_show_no_path_of_the_build_machine():
    notebooks = sorted((DOCS / "notebooks").glob("*.ipynb"))
    assert [p.stem for p in notebooks] == [
        "01_extract", "02_preprocess", "03_train", "04_evaluate", "05_render", "06_pseudolabel"
    ]  # fmt: skip
    found = []
    for path in sorted(p for p in DOCS.rglob("*") if p.is_file()):
        if path.suffix == ".ipynb":
            notebook = nbformat.read(path, as_version=4)
            assert set(notebook.metadata.get("papermill", {})).isdisjoint(
                {"input_path", "output_path", "parameters"}
            ), path.name
            texts = list(_texts(notebook))
        elif path.suffix in (".png", ".jpg", ".jpeg", ".gif", ".mp4"):
            continue
        else:
            texts = [path.read_text(encoding="utf-8")]
        repo = str(DOCS.parent)
        found += [(path.name, m) for t in texts for m in MACHINE_PATH.findall(t)]
        found += [(path.name, repo) for t in texts if repo in t]
    assert found == []
    injected = [
        c.source
        for c in nbformat.read(DOCS / "notebooks" / "03_train.ipynb", as_version=4).cells
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert injected[0].splitlines()[1:3] == [
        'work_dir = "runs/demo"',
        'data_root = "data"',  # make docs runs each notebook with a fresh, empty data_root
    ]


def test_committed_docs_show_no_tensorflow_log_lines_and_finished_bars():
    for path in sorted((DOCS / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        texts = [o.get("text", "") for o in _outputs(notebook)]
        texts += [o.get("data", {}).get("text/plain", "") for o in _outputs(notebook)]
        joined = "\n".join(texts)
        for marker in ("absl::InitializeLog", "oneDNN custom operations", "port.cc:", "cuInit"):
            assert marker not in joined, (path.name, marker)
        assert "widgets" not in notebook.metadata, path.name
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                       for o in _outputs(notebook)), path.name  # fmt: skip
        bars = re.findall(r"(\d+)%\|", joined)
        assert "\r" not in joined and set(bars) <= {"100"}, (path.name, sorted(set(bars)))
    trained = nbformat.read(DOCS / "notebooks" / "03_train.ipynb", as_version=4)
    bars = [o.data["text/plain"] for o in _outputs(trained) if o.output_type == "display_data"
            and o.data.get("text/plain", "").startswith("epoch ")]  # fmt: skip
    assert len(bars) == 40 + 30 and bars[-1].startswith("epoch 30/30: 100%|██████████| 40/40 [")


def _executed_notebook(folder: Path, root: Path, work: Path) -> Path:
    """A notebook as papermill leaves it in ``work/notebooks``, run from ``root``."""
    nb = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell(f'# Parameters\nwork_dir = "{work}"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    zip_cell = nbformat.v4.new_code_cell("paths.zip_path")
    zip_cell.outputs = [
        nbformat.v4.new_output(
            "execute_result",
            data={"text/plain": f"PosixPath('{work}/FLARE22Train.zip')"},
            execution_count=2,
        )
    ]
    home = Path.home()
    printed = nbformat.v4.new_code_cell("print(model)")
    printed.outputs = [
        nbformat.v4.new_output(
            "stream",
            name="stdout",
            text=f"model: {work}/model/best.keras\ncache {work}/cache: 6 cases\n"
            f"weights from {home}/.keras/models/x.h5; stays in {work}\n",
        )
    ]
    nb.cells = [injected, zip_cell, printed]
    nb.metadata["papermill"] = {
        "input_path": f"{root}/notebooks/01_a.ipynb",
        "output_path": f"{work}/notebooks/01_a.ipynb",
        "parameters": {"work_dir": str(work)},
        "environment_variables": {},
        "start_time": "2026-12-03T14:02:05.123456+00:00",
        "duration": 1.5,
        "version": "2.7.0",
    }
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "01_a.ipynb")
    record_run(folder, "01_a", profile="demo", machine="Test CPU (2 CPU cores), no GPU")
    return folder / "01_a.ipynb"


def test_publish_makes_machine_paths_relative_and_drops_papermill_paths(tmp_path):
    root = tmp_path / "clone"
    work = root / "runs" / "demo"
    _executed_notebook(work / "notebooks", root, work)
    (written,) = publish_notebooks(work / "notebooks", tmp_path / "docs", root=root)
    after = nbformat.read(written, as_version=4)
    assert after.cells[0].metadata.tags == ["flare-run"]  # how it ran (the next test)
    assert after.cells[1].source == '# Parameters\nwork_dir = "runs/demo"\n'
    assert after.cells[2].outputs[0].data == {
        "text/plain": "PosixPath('runs/demo/FLARE22Train.zip')"
    }
    assert after.cells[3].outputs[0].text == (
        "model: runs/demo/model/best.keras\ncache runs/demo/cache: 6 cases\n"
        "weights from ~/.keras/models/x.h5; stays in runs/demo\n"
    )
    assert after.metadata.papermill == {
        "start_time": "2026-12-03T14:02:05.123456+00:00",
        "duration": 1.5,
        "version": "2.7.0",
    }
    assert list(_texts(after)) == list(_texts(nbformat.read(written, as_version=4)))
    # Publishing a published notebook changes nothing; one run elsewhere (no checkout
    # above the working folder) shows paths relative to its working folder.
    again = publish_notebooks(tmp_path / "docs", tmp_path / "again", root=root)
    assert again[0].read_text() == written.read_text()
    elsewhere = tmp_path / "scratch" / "demo"
    _executed_notebook(elsewhere / "notebooks", tmp_path / "other", elsewhere)
    (moved,) = publish_notebooks(elsewhere / "notebooks", tmp_path / "docs2", root=root)
    text = nbformat.read(moved, as_version=4).cells[3].outputs[0].text
    assert text.splitlines()[:2] == ["model: model/best.keras", "cache cache: 6 cases"]


def test_publish_refuses_a_machine_path_it_cannot_make_relative(tmp_path):
    executed = _executed_notebook(tmp_path / "work" / "notebooks", tmp_path, tmp_path / "work")
    notebook = nbformat.read(executed, as_version=4)
    notebook.cells[2].outputs[0].text += f"cache at {tmp_path}-old/cache\n"  # not below root
    nbformat.write(notebook, executed)
    with pytest.raises(FlareError, match=f"absolute path of this machine: {tmp_path}-old/cache$"):
        publish_notebooks(executed.parent, tmp_path / "docs", root=tmp_path)
    assert not (tmp_path / "docs").exists()


def _header_fields(notebook) -> dict[str, str]:
    """The rows of a published notebook's first cell (``| field | value |``)."""
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.metadata.tags == ["flare-run"]
    assert first.source.startswith("**How this notebook ran**")
    return dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", first.source, re.M))


@pytest.mark.slow
def test_a_published_notebook_opens_with_how_it_ran(tmp_path):
    """A notebook papermill really ran: its profile, injected parameters, this machine, the
    date and its wall time, in a Markdown cell before the notebook's own cells."""
    import papermill

    source = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'work_dir = "/content/drive/MyDrive/flare-vnet"\nepochs = 100\noverrides = []'
    )
    params.metadata["tags"] = ["parameters"]
    source.cells = [
        nbformat.v4.new_markdown_cell("# 01 · A notebook"),
        params,
        nbformat.v4.new_code_cell("import time\ntime.sleep(1.2)\nprint(epochs * 2)"),
    ]
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}  # fmt: skip
    nbformat.write(source, tmp_path / "source.ipynb")
    work = tmp_path / "work"
    executed = work / "notebooks"
    executed.mkdir(parents=True)
    papermill.execute_notebook(
        str(tmp_path / "source.ipynb"),
        str(executed / "01_a.ipynb"),
        parameters={"work_dir": str(work), "epochs": 3, "overrides": ["model.depth=2"]},
        kernel_name="python3",
        progress_bar=False,
    )
    machine = describe_machine()
    record_run(executed, "01_a", profile="ci", machine=machine)
    (written,) = publish_notebooks(executed, tmp_path / "docs", root=tmp_path)
    published = nbformat.read(written, as_version=4)
    fields = _header_fields(published)
    assert list(fields) == [
        "profile", "parameters papermill injected", "machine", "date", "wall time"
    ]  # fmt: skip
    assert fields["profile"] == "`ci`"
    assert fields["parameters papermill injected"] == (
        '`work_dir = "work"` · `epochs = 3` · `overrides = ["model.depth=2"]`'
    )
    assert fields["machine"] == machine and re.search(r"\(\d+ CPU cores, ", machine)
    ran = nbformat.read(executed / "01_a.ipynb", as_version=4).metadata.papermill
    assert fields["date"] == f"{ran.start_time[:10]} {ran.start_time[11:16]} UTC"
    assert 1.2 < ran.duration < 120 and fields["wall time"] == format_seconds(ran.duration)
    # the notebook's own cells follow unchanged; publishing again keeps the one header
    assert [c.source for c in published.cells[1:]][:1] == ["# 01 · A notebook"]
    again = publish_notebooks(tmp_path / "docs", tmp_path / "again", root=tmp_path)
    assert again[0].read_text() == written.read_text()


def test_the_header_takes_the_cells_times_without_a_duration_and_needs_the_record(tmp_path):
    root = tmp_path / "clone"
    work = root / "runs" / "demo"
    executed = _executed_notebook(work / "notebooks", root, work)
    notebook = nbformat.read(executed, as_version=4)
    del notebook.metadata.papermill["duration"], notebook.metadata.papermill["start_time"]
    notebook.cells[1].metadata["papermill"] = {
        "start_time": "2026-12-03T23:59:00.000000+00:00",
        "end_time": "2026-12-03T23:59:10.000000+00:00",
    }
    notebook.cells[2].metadata["papermill"] = {
        "start_time": "2026-12-03T23:59:10.000000+00:00",
        "end_time": "2026-12-04T00:01:05.500000+00:00",
    }
    nbformat.write(notebook, executed)
    record_run(executed.parent, "01_a", profile="demo", machine="X (2 CPU cores), no GPU",
               fresh_runtime=True)  # fmt: skip
    (written,) = publish_notebooks(executed.parent, tmp_path / "docs", root=root)
    fields = _header_fields(nbformat.read(written, as_version=4))
    assert fields["date"] == "2026-12-03 23:59 UTC"
    assert fields["wall time"] == "2 min 6 s"  # 125.5 s from the first cell's start
    assert fields["runtime"].startswith("fresh")
    (executed.parent / RUN_RECORD).unlink()
    with pytest.raises(FlareError) as caught:
        publish_notebooks(executed.parent, tmp_path / "docs2", root=root)
    assert f"no entry in {RUN_RECORD}" in str(caught.value) and "01_a.ipynb" in str(caught.value)


def test_publish_drops_tensorflow_log_lines_only(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import flare_helpers.train.loop")
    stream = nbformat.v4.new_output
    cell.outputs = [
        stream("stream", name="stderr", text="\n".join(TF_LINES[:2]) + "\n"),
        stream("stream", name="stderr", text="\n".join(TF_LINES[:2]) + "\n"),
        stream("stream", name="stdout", text="16 labelled cases\n"),
        stream("stream", name="stderr", text=f"{TF_LINES[2]}\nUserWarning: low contrast\n"),
        stream("stream", name="stderr", text="\n".join(TF_LINES[3:]) + "\n"),
        stream("stream", name="stdout", text=TF_LINES[0] + "\n"),  # printed: not a log line
    ]
    nb.cells = [cell]
    nbformat.write(nb, executed / "01_a.ipynb")
    (written,) = publish_notebooks(executed, tmp_path / "docs")
    outputs = nbformat.read(written, as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [
        ("stdout", "16 labelled cases\n"),
        ("stderr", "UserWarning: low contrast\n"),
        ("stdout", TF_LINES[0] + "\n"),
    ]


def test_publish_shows_progress_bars_as_they_ended(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    nb = nbformat.v4.new_notebook()
    state = {
        **_bar_state("done", "epoch\u20071/15:\u2007100%", 5.0, 5.0,
                     "\u20075/5\u2007[00:11&lt;00:00,\u2007\u20071.07s/step,\u2007loss=3.1733]"),
        **_bar_state("stopped", "predict:\u2007\u200740%", 2.0, 5.0,
                     "\u20072/5\u2007[00:04&lt;00:06,\u2007\u20072.08s/case]"),
        **_bar_state("closed", "windows:\u2007100%", 18.0, 18.0, "\u200718/18", hidden=True),
        **_bar_state("nototal", "", 1.0, 1.0, "cases:\u200712it\u2007[00:01,\u20078.00it/s]"),
        "slider": {"model_name": "IntSliderModel", "state": {"layout": "IPY_MODEL_sliderlay"}},
        "sliderlay": {"model_name": "LayoutModel", "state": {}},
    }  # fmt: skip
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": state,
            "version_major": 2,
            "version_minor": 0,
        }
    }
    bars = nbformat.v4.new_code_cell("train()")
    bars.outputs = [
        _widget_output("done", "epoch 1/15:   0%|          | 0/5 [00:00<?, ?step/s]"),
        _widget_output("stopped", "predict:   0%|          | 0/5 [00:00<?, ?case/s]"),
        _widget_output("closed", "windows:   0%|          | 0/18 [00:00<?, ?win/s]"),
        _widget_output("nototal", "cases: 0it [00:00, ?it/s]"),
        _widget_output("slider", "IntSlider(value=3)"),
    ]
    text_bar = nbformat.v4.new_code_cell("render()")
    text_bar.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=f"\rrender: {k * 50:3d}%|{'█' * (5 * k):10}| "
                               f"{k * 30}/60 [00:0{k}<00:00, 24.20frame/s]")
        for k in range(3)
    ] + [nbformat.v4.new_output("stream", name="stderr", text="\n")]  # fmt: skip
    nb.cells = [bars, text_bar]
    nbformat.write(nb, executed / "01_a.ipynb")
    (written,) = publish_notebooks(executed, tmp_path / "docs")
    after = nbformat.read(written, as_version=4)
    shown = [o.data.get("text/plain") for o in after.cells[0].outputs]
    assert shown == [
        "epoch 1/15: 100%|██████████| 5/5 [00:11<00:00,  1.07s/step, loss=3.1733]",
        "predict:  40%|████      | 2/5 [00:04<00:06,  2.08s/case]",
        "cases: 12it [00:01, 8.00it/s]",
        "IntSlider(value=3)",
    ]
    assert [sorted(o.data) for o in after.cells[0].outputs[:3]] == [["text/plain"]] * 3
    kept = after.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert sorted(kept) == ["slider", "sliderlay"]  # the bars' models are gone
    assert [(o.name, o.text) for o in after.cells[1].outputs] == [
        ("stderr", "render: 100%|██████████| 60/60 [00:02<00:00, 24.20frame/s]\n")
    ]


def test_the_machine_names_its_gpus_from_nvidia_smi_else_says_no_gpu(tmp_path, monkeypatch):
    cpu_only = describe_machine()
    assert cpu_only.endswith(", no GPU") and re.search(r"\(\d+ CPU cores, \w+ \w+\)", cpu_only)
    smi = tmp_path / "nvidia-smi"  # answers as the real one does for two T4s
    smi.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=name" ] && printf "Tesla T4\\nTesla T4\\n"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert describe_machine() == f"GPU 2 × Tesla T4; CPU {cpu_only.removesuffix(', no GPU')}"
