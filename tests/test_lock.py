"""One run folder, one writer: the lock file, busy folders refused, stale locks taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_settings import TINY_MODEL

from flare_helpers.config import load_config
from flare_helpers.data import lock as lock_module
from flare_helpers.data.fileio import read_history, read_json
from flare_helpers.data.layout import CacheLayout, RunLayout
from flare_helpers.data.lock import FolderLock, read_holder
from flare_helpers.errors import FlareError
from flare_helpers.preprocess.pipeline import preprocess_dataset

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _dead_pid() -> int:
    """The id of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, pid: int, host: str, heartbeat: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host, "started": "2026-01-01T10:00:00+00:00"}
    path.write_text(json.dumps({**record, "heartbeat": heartbeat, "token": "old"}))


def _holder_process(lock_path: Path) -> subprocess.Popen:
    """Another live process holding ``lock_path`` until its stdin closes."""
    code = (
        "import sys; from flare_helpers.data.lock import FolderLock\n"
        f"lock = FolderLock({str(lock_path)!r}, 'run folder').acquire()\n"
        "print('held', flush=True); sys.stdin.read(); lock.release()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_holder_is_recorded_and_removed_on_release(tmp_path):
    layout = RunLayout(tmp_path / "run")
    with FolderLock(layout.lock, "run folder") as held:
        holder = read_holder(layout.lock)
        assert (holder.pid, holder.host) == (os.getpid(), socket.gethostname())
        assert holder.token == held.holder.token and abs(holder.heartbeat - time.time()) < 60
        again = FolderLock(layout.lock).acquire()  # the same process may take it again
        again.release()
    assert not layout.lock.exists()
    assert not layout.root.exists()  # made for the lock, nothing else written: removed


def test_a_live_holder_refuses_a_second_writer_at_once(tmp_path):
    run = tmp_path / "run"
    proc = _holder_process(RunLayout(run).lock)
    try:
        start = time.monotonic()
        with pytest.raises(FlareError) as info:
            FolderLock(RunLayout(run).lock, "run folder").acquire()
        with pytest.raises(FlareError):
            FolderLock(RunLayout(run).lock, "run folder").check()
        assert time.monotonic() - start < 1.0
        message = str(info.value)
        assert message.startswith(f"{run}: this run folder is in use by pid {proc.pid} on host ")
        assert "\n" not in message
    finally:
        proc.communicate("")
    assert proc.returncode == 0 and not RunLayout(run).lock.exists()
    FolderLock(RunLayout(run).lock).acquire().release()  # free again


def test_stale_locks_are_taken_over_with_a_message(tmp_path, capsys):
    path = RunLayout(tmp_path / "run").lock
    # same host, the process is gone (a killed kernel)
    _write_lock(path, _dead_pid(), socket.gethostname(), time.time())
    held = FolderLock(path, "run folder").acquire()
    assert read_holder(path).pid == os.getpid()
    note = capsys.readouterr().err
    assert note.startswith(f"note: {path.parent}: taking over the stale lock of pid ")
    held.release()
    # another host, silent for longer than STALE_AFTER_SECONDS (a disconnected Colab runtime)
    old = time.time() - lock_module.STALE_AFTER_SECONDS - 5
    _write_lock(path, 1, "colab-runtime-1", old)
    held = FolderLock(path).acquire()
    assert "stale lock of pid 1 on host colab-runtime-1" in capsys.readouterr().err
    held.release()
    # another host, heard from a minute ago: still at work there
    _write_lock(path, 1, "colab-runtime-2", time.time() - 60)
    with pytest.raises(
        FlareError, match=r"in use by pid 1 on host colab-runtime-2 .*seen 60 s ago"
    ):
        FolderLock(path).acquire()
    assert read_holder(path).host == "colab-runtime-2"  # untouched


def test_the_heartbeat_is_refreshed(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / "folder" / "lock.json"
    with FolderLock(path) as held:
        first = read_holder(path).heartbeat
        time.sleep(0.3)
        assert read_holder(path).heartbeat > first
        assert read_holder(path).token == held.holder.token


def test_a_busy_cache_is_refused_and_a_stale_one_taken_over(synthetic_data, tmp_path, capsys):
    cache = CacheLayout(tmp_path / "cache")
    cfg = load_config(None, [*TINY_MODEL])
    proc = _holder_process(cache.lock)
    try:
        with pytest.raises(FlareError, match=r"this cache is in use by pid \d+"):
            preprocess_dataset(synthetic_data, cache.root, cfg, progress=False)
        assert not cache.manifest.exists()
    finally:
        proc.communicate("")
    _write_lock(cache.lock, _dead_pid(), socket.gethostname(), time.time())
    summary = preprocess_dataset(synthetic_data, cache.root, cfg, progress=False)
    assert summary.n_cases == 6 and cache.manifest.exists() and not cache.lock.exists()
    assert "taking over the stale lock" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_flare_train_into_a_busy_run_folder_is_refused(synthetic_data, tmp_path):
    """The first run keeps training and ends intact; the second stops within seconds."""
    run = tmp_path / "run"
    args = [
        *TINY_MODEL,
        f"data.data_dir={synthetic_data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={run}",
        "train.batch_size=2",
        "train.workers=1",
        "train.epochs=2",
    ]
    command = [sys.executable, "-m", "flare_helpers", "train", *args]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    layout = RunLayout(run)
    deadline = time.monotonic() + 120
    while read_holder(layout.lock) is None:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    start = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)
    refused_after = time.monotonic() - start
    first_still_running = first.poll() is None
    output, _ = first.communicate(timeout=600)

    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert f"{run}: this run folder is in use by pid {first.pid} on host" in line
    assert refused_after < 10 and first_still_running, refused_after
    assert first.returncode == 0, output
    assert [row["epoch"] for row in read_history(layout.history)] == [0, 1]
    assert read_json(layout.done)["epochs_completed"] == 2
    assert "epoch 1/2 took" in output and "1 to go: about" in output  # time per epoch, ETA
    assert not layout.lock.exists()
