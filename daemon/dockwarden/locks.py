"""One upgrade at a time per container, across processes (the daemon and a manual `dockwarden update`).

An flock on a file in state_dir: the kernel drops it when its holder dies, however it dies, so a lock
left by a killed process is never honoured; the PID written inside only names the holder in messages
and tells us when we took over from a dead one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import structlog

from dockwarden import statefiles

DIR_NAME = "locks"


class Busy(Exception):
    """Another live process holds the lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ContainerLock:
    def __init__(self, state_dir: Path, container: str) -> None:
        self.path = state_dir / DIR_NAME / f"{container}.lock"
        self._fd: int | None = None

    def holder(self) -> int | None:
        try:
            text = statefiles.read_text(self.path).strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> None:
        """Take the lock or raise Busy naming the holder; OSError if state_dir is unusable."""
        statefiles.make_dir(self.path.parent)
        fd = statefiles.open_file(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder()
            raise Busy(
                f"another dockwarden process{f' (pid {pid})' if pid else ''} is upgrading it"
            ) from None
        try:
            previous = os.read(fd, 32).decode(errors="replace").strip()
            if previous.isdigit() and int(previous) != os.getpid() and _alive(int(previous)) is False:
                structlog.get_logger("dockwarden.lock").warning(
                    "lock.taken_over", container=self.path.stem, stale_pid=int(previous)
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except BaseException:
            os.close(fd)  # a failed write (a full disk) must not leave the lock held by nobody's upgrade
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing releases the flock, whatever happened above

    def __enter__(self) -> ContainerLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@contextmanager
def serialised(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on PATH.lock while rewriting or appending to PATH (blocking: such writes
    take microseconds). The daemon and a manual command both write the skip list and the history."""
    statefiles.make_dir(path.parent)
    fd = statefiles.open_file(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
