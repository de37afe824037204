"""One writer per folder: a lock file naming the process that writes a run folder or cache.

Two notebooks, or a notebook and ``flare-train``, training into the same Drive
folder would overwrite each other's checkpoints and history. So the writer
holds ``<folder>/.flare-lock.json`` (:data:`~flare_helpers.data.layout.LOCK_NAME`),
which records its process id, host, start time and a heartbeat that a thread
refreshes every :data:`HEARTBEAT_SECONDS`. A second writer is refused at once
with one line naming the folder and the holder.

A lock left by a process that died without removing it (a killed kernel, a
disconnected Colab runtime) is *stale* and taken over, with a message:

- on the same host, when the recorded process no longer exists;
- from another host (whose processes cannot be checked, e.g. an earlier Colab
  runtime writing to the same Drive folder), when its heartbeat is older than
  :data:`STALE_AFTER_SECONDS`.

The same process may take its own lock again (a notebook cell run twice).
Creating the file is atomic on local disks (``O_EXCL``); on network drives
such as Google Drive it is best effort, which is enough against the mistake
this guards (two sessions started minutes apart).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from flare_helpers.data.fileio import write_json_atomic
from flare_helpers.errors import FlareError

#: Seconds between two refreshes of a held lock's heartbeat.
HEARTBEAT_SECONDS = 60.0
#: A lock of another host whose heartbeat is older than this is stale (10 minutes).
STALE_AFTER_SECONDS = 600.0
#: How long an unreadable lock file (being written right now) is waited for.
_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: process id, host name, start (ISO 8601, UTC), last heartbeat (Unix s)."""

    pid: int
    host: str
    started: str
    heartbeat: float
    token: str

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        started = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started, now, uuid.uuid4().hex)

    def describe(self) -> str:
        """``pid 123 on host colab-1 since 2026-01-01T10:00:00+00:00 (seen 12 s ago)``."""
        age = max(0.0, time.time() - self.heartbeat)
        return f"pid {self.pid} on host {self.host} since {self.started} (seen {age:.0f} s ago)"

    def is_mine(self) -> bool:
        """Held by this very process (a notebook running its training cell again)."""
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def is_stale(self, now: float | None = None) -> bool:
        """Left by a process that is gone: see the module docstring."""
        if self.host == socket.gethostname():
            return not _alive(self.pid)
        now = time.time() if now is None else now
        return now - self.heartbeat > STALE_AFTER_SECONDS


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if os.name == "nt":  # signal 0 would be CTRL_C_EVENT there; no check: never stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def read_holder(path: str | Path) -> Holder | None:
    """The holder recorded in a lock file; None when there is none or it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Holder(
            int(data["pid"]),
            str(data["host"]),
            str(data["started"]),
            float(data["heartbeat"]),
            str(data["token"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class FolderLock:
    """The lock of one folder; ``acquire`` (or ``with``) takes it, ``release`` gives it back.

    Args:
        path: the lock file, e.g. ``RunLayout(folder).lock``.
        what: what the folder is, for messages ("run folder", "cache").
    """

    def __init__(self, path: str | Path, what: str = "folder") -> None:
        self.path = Path(path)
        self.what = what
        self.holder: Holder | None = None
        self._created: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent

    def acquire(self) -> FolderLock:
        """Take the lock, or take over a stale one (printing a note).

        Raises:
            FlareError: another live process holds it (names the folder and the holder),
                or the folder cannot be written.
        """
        self._created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FlareError(
                f"cannot write the {self.what} here ({exc.strerror or exc})", self.folder
            ) from exc
        me = Holder.me()
        for _ in range(3):
            if self._create(me):
                break
            other = self._wait_for_holder()
            if other is not None and not other.is_mine() and not other.is_stale():
                raise self._busy(other)
            if other is not None and not other.is_mine():
                print(
                    f"note: {self.folder}: taking over the stale lock of {other.describe()}",
                    file=sys.stderr,
                )
            now = read_holder(self.path)
            if now is None or other is None or now.token == other.token:  # not renewed meanwhile
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        else:
            raise FlareError(f"could not take the lock of this {self.what}", self.folder)
        self.holder = me
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="flare-lock", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Refuse at once if another live process holds the lock (takes nothing).

        For a command that has slow work to do before it takes the lock (loading
        Keras): the user hears of a busy folder within a second.

        Raises:
            FlareError: the folder is in use (names the folder and the holder).
        """
        other = read_holder(self.path)
        if other is not None and not other.is_mine() and not other.is_stale():
            raise self._busy(other)

    def _busy(self, other: Holder) -> FlareError:
        return FlareError(
            f"this {self.what} is in use by {other.describe()}; wait until it is done, "
            "or choose another folder",
            self.folder,
        )

    def _create(self, me: Holder) -> bool:
        """Create the lock file with our record if there is none (atomically)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise FlareError(f"cannot write a lock here ({exc.strerror})", self.folder) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(me), handle)
        return True

    def _wait_for_holder(self) -> Holder | None:
        """The recorded holder; a file still being written by its creator is waited for."""
        deadline = time.monotonic() + _SETTLE_SECONDS
        while True:
            holder = read_holder(self.path)
            if holder is not None or not self.path.exists() or time.monotonic() > deadline:
                return holder
            time.sleep(0.05)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            current = read_holder(self.path)
            if self.holder is None or current is None or current.token != self.holder.token:
                return  # released, or taken over by another process
            self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
            with contextlib.suppress(FlareError):
                write_json_atomic(self.path, asdict(self.holder))

    def release(self) -> None:
        """Remove the lock file if it is still ours; stop the heartbeat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        current = read_holder(self.path)
        if self.holder is not None and current is not None and current.token == self.holder.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.holder = None
        for folder in self._created:  # made for the lock and left empty: leave no trace
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
