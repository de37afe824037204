"""``python -m flare_helpers <command> …``: the console commands without installed scripts.

``python -m flare_helpers extract --zip Z --out D`` runs exactly what
``flare-extract --zip Z --out D`` runs. This is the only module that imports
the CLI layer, so library modules never import back up into it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from flare_helpers.cli import (
    EXIT_BAD_INPUT,
    evaluate_main,
    extract_main,
    predict_main,
    preprocess_main,
    pseudolabel_main,
    series_main,
    synth_main,
    train_main,
    visualize_main,
)

#: Sub-command → (entry point, one-line description), in pipeline order.
COMMANDS: dict[str, tuple[Callable[[Sequence[str] | None], int], str]] = {
    "synth": (synth_main, "write a synthetic FLARE22-like zip (flare-synth)"),
    "extract": (extract_main, "safely extract the FLARE22 zip (flare-extract)"),
    "preprocess": (preprocess_main, "fill the preprocessed cache (flare-preprocess)"),
    "train": (train_main, "train the VNet, resumable (flare-train)"),
    "predict": (predict_main, "predict CTs onto their own grid (flare-predict)"),
    "evaluate": (evaluate_main, "per-organ DSC / NSD / HD95 (flare-evaluate)"),
    "pseudolabel": (pseudolabel_main, "pseudo-label unlabelled CTs, resumable (flare-pseudolabel)"),
    "visualize": (visualize_main, "slice figures and 3D videos (flare-visualize)"),
    "series": (series_main, "run notebooks 01 → 06 with a profile (flare-series)"),
}


def usage() -> str:
    """The ``--help`` text: one line per command."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: python -m flare_helpers <command> [options]",
        "",
        "commands (each takes --help):",
        *(f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command with the remaining arguments.

    Returns:
        The command's exit status; 0 for ``--help``; 2 (with a one-line message)
        for a missing or unknown command.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in COMMANDS:
        given = f"unknown command {args[0]!r}" if args else "no command given"
        print(
            f"python -m flare_helpers: error: {given} (choose from {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    entry, _ = COMMANDS[args[0]]
    return entry(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
