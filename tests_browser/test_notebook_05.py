"""Notebook 05 as users see it: JupyterLab and Notebook 7 in headless Chromium.

Runs with ``make test-browser`` (not part of ``make test``): needs Debian's
``chromium`` at /usr/bin/chromium and ``playwright``, ``jupyterlab`` and
``notebook`` from PyPI. The series ``ci`` run (``runs/ci``) is made or reused,
notebook 05 is re-executed through papermill, and a JupyterLab server on
127.0.0.1 (free port, token) serves copies of the notebooks from a temporary
folder, so nothing tracked is saved over. Screenshots go to ``runs/browser/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import BrowserContext, Page, sync_playwright

from flare_helpers.data.labels import ORGAN_COLORS

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "runs" / "ci"
SHOTS = ROOT / "runs" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebGL (plotly's 3D) on the CPU: SwiftShader, which Chromium no longer picks on its own.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
BOX_PX = 640  # the viewer picture's largest on-screen size
VIEWPORT = {"width": 1280, "height": 1000}
CELL_TIMEOUT_MS = 240_000


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ci_run() -> Path:
    """The ``ci`` series run, made if missing; notebook 05 re-executed with this checkout."""
    series = Path(sys.executable).parent / "flare-series"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not (RUN / "evaluation" / "predictions").is_dir():
        subprocess.run([series, "--profile", "ci"], cwd=ROOT, env=env, check=True)
    subprocess.run([series, "--profile", "ci", "--only", "05"], cwd=ROOT, env=env, check=True)
    return RUN


@pytest.fixture(scope="module")
def server(ci_run, tmp_path_factory) -> Iterator[str]:
    """A JupyterLab server (with Notebook 7) on 127.0.0.1; yields ``"<base URL>|<token>"``."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / "05_render.ipynb", root / "05_render.ipynb")
    shutil.copy(ROOT / "notebooks" / "05_render.ipynb", root / "05_render_nb7.ipynb")
    shutil.copy(ci_run / "notebooks" / "05_render.ipynb", root / "05_render_executed.ipynb")
    with _jupyter_lab(root, tmp_path_factory.mktemp("jupyter"), ci_run, "jupyter") as url:
        yield url


@pytest.fixture(scope="module")
def bare_server(ci_run, tmp_path_factory) -> Iterator[str]:
    """A JupyterLab without the widget and plotly extensions, as when another JupyterLab
    (not this project's environment) runs the project's kernel."""
    root = tmp_path_factory.mktemp("bare-lab")
    shutil.copy(ROOT / "notebooks" / "05_render.ipynb", root / "05_render.ipynb")
    config = tmp_path_factory.mktemp("bare-jupyter")
    disabled = (
        "@jupyter-widgets/jupyterlab-manager",
        "jupyterlab-plotly",
        "@jupyterlab/plotly-extension:factory",
    )
    with _jupyter_lab(root, config, ci_run, "bare-jupyter", disabled) as url:
        yield url


@contextlib.contextmanager
def _jupyter_lab(
    root: Path, config: Path, run: Path, name: str, disabled: tuple[str, ...] = ()
) -> Iterator[str]:
    """Start ``jupyter lab`` on 127.0.0.1 (free port, token) serving ``root``; stop it after."""
    # No "get notified about Jupyter news?" toast over the notebook.
    off = {"@jupyterlab/apputils-extension:announcements": True} | dict.fromkeys(disabled, True)
    labconfig = config / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": off}))
    # Every cell in the page (JupyterLab draws only those near the view by default).
    tracker = config / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLARE_WORK_DIR": str(run),
        "FLARE_DATA_ROOT": str(run / "data"),
        "JUPYTER_CONFIG_DIR": str(config / "config"),
        "JUPYTER_RUNTIME_DIR": str(config / "runtime"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("FLARE_HEADLESS", None)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open(SHOTS / f"{name}.log", "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                f"--LabApp.workspaces_dir={config / 'workspaces'}",
                f"--LabApp.user_settings_dir={config / 'settings'}",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for(f"{base}/api/status?token={token}", process)
            yield f"{base}|{token}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile (playwright passes it as --user-data-dir)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
        )
        yield context
        context.close()


class Console:
    """Error messages a page logs (console errors and uncaught exceptions)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def _open(browser: BrowserContext, server: str, path: str) -> tuple[Page, Console]:
    base, token = server.split("|")
    page = browser.new_page()
    console = Console(page)
    page.goto(f"{base}/{path}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    return page, console


# --------------------------------------------------------------------------- tests


def test_jupyterlab_runs_notebook_05(server, browser):
    page, console = _open(browser, server, "lab/tree/05_render.ipynb")
    _run_all(page, server)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "lab-full.png", full_page=True)

    # Viewer: a picture inside the 640×640 box, legend beside it, all on one screen.
    picture = page.locator(".widget-image").first
    picture.scroll_into_view_if_needed()
    box = picture.bounding_box()
    assert 100 <= box["width"] <= BOX_PX and 100 <= box["height"] <= BOX_PX, box
    legend = page.get_by_text("right kidney", exact=True).first.bounding_box()
    assert legend["x"] >= box["x"] + box["width"], (legend, box)
    assert box["y"] <= legend["y"] <= box["y"] + box["height"], (legend, box)
    viewer = page.locator(".widget-vbox", has=page.locator(".widget-image")).first
    assert viewer.bounding_box()["height"] <= VIEWPORT["height"]
    viewer.screenshot(path=SHOTS / "lab-viewer.png")

    # A slider step from the keyboard changes the slice number and the picture.
    before = _pixels(picture.screenshot())
    caption = page.locator(".widget-html", has_text="slice").first
    label_before = caption.inner_text()
    number = page.locator(".widget-text input[type='number']").first
    first = int(number.input_value())
    page.locator(".widget-slider .noUi-handle").first.click()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("([el, v]) => el.value !== v", arg=[number.element_handle(), str(first)])
    page.wait_for_timeout(1000)
    after = _pixels(picture.screenshot(path=SHOTS / "lab-viewer-step.png"))
    assert int(number.input_value()) == first + 1
    assert f"slice {first}/" in label_before and f"slice {first + 1}/" in caption.inner_text()
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 0.5

    # The three-plane figure is shown (not a path) and is not blank.
    figure = page.locator(".jp-OutputArea-output img").first
    figure.scroll_into_view_if_needed()
    figure.screenshot(path=SHOTS / "lab-slices.png")
    assert _pixels(figure.screenshot()).std() > 20
    assert "PosixPath" not in page.locator(".jp-Notebook").inner_text()

    # The video plays from the embedded data.
    assert _video_duration(page) > 0

    # Plotly: a non-blank WebGL canvas whose organ colours match the legend.
    plot = page.locator(".js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    page.wait_for_timeout(2000)
    shot = _pixels(plot.screenshot(path=SHOTS / "lab-plotly.png"))
    assert shot.std() > 10
    assert _legend_colour_share(shot, "liver") > 0.01

    assert console.errors == []


def test_notebook7_arrow_keys_move_the_slider(server, browser):
    """Notebook 7 binds arrow keys on a focused handle to cell moves; the number box steps."""
    page, console = _open(browser, server, "notebooks/05_render_nb7.ipynb")
    _wait_kernel_idle(page, server)
    # Notebook 7.6 itself logs one error on opening any notebook here ("Cannot read
    # properties of undefined (reading 'schema')"); only errors after it count.
    on_open = list(console.errors)
    _run_all(page, server)
    number = page.locator(".widget-text input[type='number']").first
    number.scroll_into_view_if_needed()
    first = int(number.input_value())
    picture = page.locator(".widget-image").first
    before = _pixels(picture.screenshot())
    scroll = page.evaluate("document.querySelector('.jp-WindowedPanel-outer').scrollTop")
    number.click()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_timeout(1500)
    page.screenshot(path=SHOTS / "nb7-viewer.png")
    assert int(number.input_value()) == first + 2
    caption = page.locator(".widget-html", has_text="slice").first.inner_text()
    assert f"slice {first + 2}/" in caption
    assert np.abs(_pixels(picture.screenshot()).astype(int) - before.astype(int)).mean() > 0.5
    assert page.evaluate("document.querySelector('.jp-WindowedPanel-outer').scrollTop") == scroll
    assert console.errors == on_open


def test_executed_copy_shows_video_and_figure(server, browser, ci_run):
    """Papermill's copy, untrusted: the video plays, the figure shows, no stalled bar."""
    page, console = _open(browser, server, "lab/tree/05_render_executed.ipynb")
    figure = page.locator(".jp-OutputArea-output img").first
    figure.wait_for(timeout=60_000)
    assert _pixels(figure.screenshot()).std() > 20
    page.screenshot(path=SHOTS / "executed-figure.png")
    video = page.locator("video").first
    video.wait_for(state="attached", timeout=60_000)
    video.scroll_into_view_if_needed()
    assert _video_duration(page) > 0
    page.wait_for_timeout(1000)
    page.screenshot(path=SHOTS / "executed-video.png")
    assert console.errors == []

    # The saved outputs: the figure is an image, the progress bar's last state is 100%.
    cells = json.loads((ci_run / "notebooks" / "05_render.ipynb").read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    texts = [
        o.get("text", "") if "text" in o else o.get("data", {}).get("text/plain", "")
        for o in outputs
    ]
    texts = ["".join(t) if isinstance(t, list) else t for t in texts]
    render = [t for t in texts if "render:" in t]
    assert render and render[-1].replace("\r", "\n").strip().splitlines()[-1].startswith(
        "render: 100%"
    )
    assert not any("PosixPath" in t for t in texts)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # figure, curves


def test_lab_without_extensions_shows_fallbacks(bare_server, browser):
    """Item 1 of the report: no ``VBox(children=…`` text and no silent empty 3D cell."""
    page, _ = _open(browser, bare_server, "lab/tree/05_render.ipynb")
    _run_all(page, bare_server, plot=False)
    viewer_note = page.get_by_text("cannot show the interactive slice viewer").first
    viewer_note.scroll_into_view_if_needed()
    still = page.locator("img[alt='slice viewer picture']").first
    box = still.bounding_box()
    assert 100 <= box["width"] <= BOX_PX and 100 <= box["height"] <= BOX_PX, box
    assert _pixels(still.screenshot()).std() > 20
    page.screenshot(path=SHOTS / "bare-viewer.png")
    # The 3D cell falls back to HTML: plotly.js from its CDN where the browser can reach
    # it (the note then removes itself), else the note saying what to install.
    last = page.locator(".jp-Cell").last
    last.scroll_into_view_if_needed()
    page.wait_for_timeout(2000)
    page.screenshot(path=SHOTS / "bare-3d.png")
    assert last.locator(".jp-RenderedPlotly").count() == 0
    assert last.locator(".jp-RenderedHTMLCommon").count() == 1
    drawn = last.locator(".js-plotly-plot canvas").count() > 0
    note = last.get_by_text("cannot show the interactive 3D view")
    assert drawn != note.is_visible()
    assert "VBox(children" not in page.locator(".jp-Notebook").inner_text()


# --------------------------------------------------------------------------- helpers


def _run_all(page: Page, server: str, *, plot: bool = True) -> None:
    """Run every cell through the Run menu and wait until all have an execution count."""
    _wait_kernel_idle(page, server)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    try:
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""",
            timeout=CELL_TIMEOUT_MS,
        )
    except Exception:
        page.screenshot(path=SHOTS / "run-all-timeout.png")
        raise
    if plot:
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)


def _wait_kernel_idle(page: Page, server: str, timeout: float = 120.0) -> None:
    """Wait until the server's kernels exist and are idle (asked through the REST API)."""
    base, token = server.split("|")
    sessions = f"{base}/api/sessions?token={token}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(sessions, timeout=5) as answer:
            states = [s["kernel"]["execution_state"] for s in json.load(answer)]
        if states and all(state == "idle" for state in states):
            page.wait_for_timeout(1000)
            return
        page.wait_for_timeout(500)
    raise TimeoutError("the notebook's kernel did not become idle")


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _video_duration(page: Page) -> float:
    page.wait_for_function(
        "() => { const v = document.querySelector('video'); return v && v.readyState >= 1; }",
        timeout=30_000,
    )
    return float(page.evaluate("document.querySelector('video').duration"))


def _legend_colour_share(rgb: np.ndarray, organ: str) -> float:
    """Share of pixels within 12% (in RGB) of the organ's legend colour."""
    target = np.asarray(ORGAN_COLORS[organ]) * 255.0
    distance = np.linalg.norm(rgb.astype(float) - target, axis=-1)
    return float((distance < 0.12 * 255).mean())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url}")
