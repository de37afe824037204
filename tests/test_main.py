"""``python -m flare_helpers <command>``: one dispatcher for every console command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flare_helpers import cli
from flare_helpers.__main__ import COMMANDS, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flare_helpers", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_console_script_has_a_command():
    assert list(COMMANDS) == [
        "synth",
        "extract",
        "preprocess",
        "train",
        "predict",
        "evaluate",
        "pseudolabel",
        "visualize",
        "series",
    ]
    assert COMMANDS["extract"][0] is cli.extract_main
    assert COMMANDS["series"][0] is cli.series_main


def test_command_help_through_a_real_interpreter():
    result = _run("extract", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flare-extract [-h] [--debug] --zip ZIP --out OUT")
    assert result.stderr == ""


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "usage: python -m flare_helpers <command> [options]"
    assert [line.split()[0] for line in lines[3:]] == list(COMMANDS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["nope"], "unknown command 'nope'"), ([], "no command given")],
)
def test_unknown_or_missing_command_exits_2_with_one_line(argv, message):
    result = _run(*argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "synth, extract" in lines[0]
    assert result.stdout == ""


def test_arguments_reach_the_command(tmp_path, capsys):
    assert main(["extract", "--zip", str(tmp_path / "missing.zip"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"flare-extract: error: {tmp_path / 'missing.zip'}: file not found"
