"""What each notebook front end is shown: widget and plotly outputs with a readable fallback.

An output carries several representations and the front end picks the richest
one it can render. Widgets and plotly figures need front-end extensions
(``jupyterlab_widgets``, plotly's JupyterLab renderer) installed where JupyterLab
runs, which is not the kernel's environment when a project kernel is used from
another JupyterLab. Without them a bare widget shows as ``VBox(children=…`` and
a bare plotly figure as nothing. Every output here therefore adds an HTML
fallback that shows a still picture and says what is missing.
"""

from __future__ import annotations

import base64
import html
import sys

#: Output type of a Jupyter widget view: its protocol (2.0) and the model id are the
#: same in ipywidgets 7.x (Colab) and 8.x (JupyterLab 4), so the bundle is built here
#: rather than through the widget's own display hook, which differs between them.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PROTOCOL = {"version_major": 2, "version_minor": 0}


def in_colab() -> bool:
    """True inside Google Colab, whose front end always renders core widgets."""
    return "google.colab" in sys.modules


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,…`` for embedding a PNG in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def missing_extension_note(what: str, package: str) -> str:
    """An HTML paragraph saying which front-end package shows ``what``."""
    return (
        "<p style='font-size:90%'>This front end cannot show the interactive "
        f"{html.escape(what)}: install <code>{html.escape(package)}</code> in the environment "
        "that runs JupyterLab (or start JupyterLab from this project's environment).</p>"
    )


def widget_bundle(widget, fallback_html: str) -> dict[str, object]:
    """Display data for ``widget``: the widget view, an HTML fallback and a text line.

    In Colab the fallback is left out: Colab always renders widgets and needs no
    second picture.
    """
    bundle: dict[str, object] = {
        WIDGET_MIME: {**WIDGET_PROTOCOL, "model_id": widget.model_id},
        "text/plain": f"{type(widget).__name__} (needs Jupyter widgets to show)",
    }
    if not in_colab():
        bundle["text/html"] = fallback_html
    return bundle


def show(obj, *, raw: bool = False) -> None:
    """Display ``obj`` (a display-data dict when ``raw``) when an IPython shell exists."""
    try:  # IPython is optional outside notebooks: no shell, nothing to display
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(obj, raw=raw)
