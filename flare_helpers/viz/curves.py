"""Training curves from a Keras ``CSVLogger`` history file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from flare_helpers.data.fileio import read_history
from flare_helpers.data.labels import DEFAULT_ORGANS, FLARE22_IDS, ORGAN_COLORS
from flare_helpers.viz.planes import display_name

_DICE_COLUMN = re.compile(r"^(?:val_)?dice_(?P<organ>.+)$")
_MEAN_COLOUR = (0.1, 0.1, 0.1)
_OTHER_COLOUR = (0.5, 0.5, 0.5)
_STYLES = (("--", "train"), ("-", "validation"))
_MARKERS_UP_TO = 30  # points are marked on short runs, where lines alone hide single epochs


def history_organs(columns) -> list[str]:
    """Organs with a ``dice_<organ>`` or ``val_dice_<organ>`` column, default organs first."""
    found = {m["organ"] for c in columns if (m := _DICE_COLUMN.match(str(c)))}
    order = {organ: rank for rank, organ in enumerate(DEFAULT_ORGANS)}
    return sorted(found, key=lambda o: (order.get(o, 99), FLARE22_IDS.get(o, 99), o))


def plot_training_curves(history_csv: str | Path) -> Figure:
    """Loss and Dice curves of a training run.

    Left: ``loss`` (train, dashed) and ``val_loss`` (validation, solid). Right:
    per-organ Dice (``dice_<organ>`` / ``val_dice_<organ>``) in the organ's colour
    and ``mean_dice`` in black, train dashed and validation solid. Each line's
    ``gid`` is its column name. Any of these columns may be missing; epochs where a
    value is empty (e.g. validation every few epochs) are skipped. The x axis is
    the ``epoch`` column as written (Keras counts from 0), else the row number.

    Raises:
        FlareError: the file is missing, empty or not a CSV.
    """
    path = Path(history_csv)
    table = pd.DataFrame(read_history(path, required=True))
    epochs = table["epoch"].to_numpy() if "epoch" in table else np.arange(len(table))
    fig = Figure(figsize=(11, 4), dpi=100, layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2)

    _plot_pair(loss_ax, table, epochs, "loss", _MEAN_COLOUR)
    loss_ax.set_title("loss")
    series = [
        (display_name(o), f"dice_{o}", ORGAN_COLORS.get(o, _OTHER_COLOUR))
        for o in history_organs(table.columns)
    ]
    series.append(("mean", "mean_dice", _MEAN_COLOUR))
    drawn = [
        (name, colour)
        for name, column, colour in series
        if _plot_pair(dice_ax, table, epochs, column, colour)
    ]
    dice_ax.set_title("Dice")
    dice_ax.set_ylim(0.0, 1.0)
    for ax in (loss_ax, dice_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no columns", ha="center", va="center", transform=ax.transAxes)
    styles = [Line2D([], [], color="grey", linestyle=s, label=t) for s, t in _STYLES]
    loss_ax.legend(handles=styles, fontsize=8)
    organs = [Line2D([], [], color=colour, label=name) for name, colour in drawn]
    dice_ax.legend(
        handles=organs + styles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5)
    )
    fig.suptitle(path.name, fontsize=10)
    return fig


def _plot_pair(ax, table: pd.DataFrame, epochs: np.ndarray, column: str, colour) -> bool:
    """Train (dashed) and ``val_`` (solid) lines of one metric; False if neither has data."""
    drawn = False
    for (style, _), prefix in zip(_STYLES, ("", "val_"), strict=True):
        name = prefix + column
        if name not in table:
            continue
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(values)
        if keep.any():
            marker = "o" if keep.sum() <= _MARKERS_UP_TO else None
            ax.plot(
                epochs[keep],
                values[keep],
                style,
                color=colour,
                marker=marker,
                markersize=3,
                gid=name,
            )
            drawn = True
    return drawn
