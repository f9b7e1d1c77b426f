"""Exclusive locks on output folders, so that two runs never write into one folder.

The lock is a file beside the folder (``.NAME.lock``; inside it would be uploaded, copied and replaced with the
folder) holding an ``fcntl.flock`` for as long as the run lives, with the owner's pid, host and start time
written into it for the error message. The kernel drops a ``flock`` when its process dies, however it dies
(``kill -9`` included), so a lock file left behind by a dead run is *stale*: it is simply taken over. No
timeouts, no guessing from pids.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path

from sparsezoo.errors import SparsezooError


class FolderLockedError(SparsezooError):
    """Another live process holds the lock on the output folder."""


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


class FolderLock:
    """``with FolderLock(out):`` — exclusive, non-blocking; raises :class:`FolderLockedError` naming the owner."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = lock_path(folder)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            owner = _owner(fd)
            os.close(fd)
            raise FolderLockedError(f"{self.folder} is in use by another run ({owner}); wait for it to finish "
                                    "or choose another --out") from e
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its owner released (and unlinked) it between our open and our flock: take the new one
            os.close(fd)
            return self.acquire()
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)  # while still held: nobody else can be holding this inode
        finally:
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _owner(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "owner unknown"
