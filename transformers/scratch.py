"""Each transformer process's own scratch folder, and the sweep of those whose process died.

Outputs and remote-granule copies are written to scratch files that are deleted once streamed,
whatever happens to the call; a process killed mid-work (SIGKILL, OOM) cannot delete them. So each
process works in a folder of its own under the scratch root, holding an exclusive lock on a file
in it while it lives: at start-up, every folder whose lock nobody holds belonged to a dead process
and is removed. Replicas sharing one root (one host, one volume) never sweep each other's work.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_LOCK = ".lock"


class Scratch:
    """A folder this process alone writes to, until close()."""

    def __init__(self, path: Path, lock: IO[bytes]) -> None:
        self.path = path
        self._lock = lock

    @classmethod
    def open(cls, root: Path | None, family: str) -> Scratch:
        """Sweep dead processes' folders under root (None: the system's temp folder), then make ours."""
        base = (root or Path(tempfile.gettempdir()) / "geomesh-scratch").resolve()
        base.mkdir(parents=True, exist_ok=True)
        sweep(base)
        name = f"{family}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked under a name the sweep skips, then renamed: no sweep ever sees it unlocked.
        making = base / f".{name}"
        making.mkdir()
        lock = open(making / _LOCK, "wb")  # noqa: SIM115 - held open for the process's life
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = base / name
        making.rename(path)
        return cls(path, lock)

    def files(self) -> list[Path]:
        """The work files in the folder now."""
        return [p for p in self.path.rglob("*") if p.is_file() and p.name != _LOCK]

    def used_bytes(self) -> int:
        """What the work files take now (a few files: outputs being made or streamed)."""
        total = 0
        for path in self.files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # removed meanwhile
                continue
        return total

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def sweep(base: Path) -> int:
    """Remove every folder under base whose owner is gone; the number of files removed."""
    removed = 0
    for folder in base.iterdir():
        lock_path = folder / _LOCK
        if folder.name.startswith(".") or not folder.is_dir() or not lock_path.exists():
            continue
        with open(lock_path, "rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live transformer's
            files = [p for p in folder.rglob("*") if p.is_file() and p.name != _LOCK]
            shutil.rmtree(folder, ignore_errors=True)
        removed += len(files)
        if files:
            log.info("removed %d scratch files a stopped transformer left in %s", len(files), folder)
    return removed
