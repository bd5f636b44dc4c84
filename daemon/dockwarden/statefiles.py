"""The one way dockwarden touches `state_dir`: checked before use, never through a symlink, written whole.

dockwarden runs as root. A state directory another user can write would let that user plant symlinks and
make root truncate, append to or create files anywhere (the locks are truncated, the history appended to,
lock files created). So `verify` refuses a state_dir, or a file in it, that is a symlink, is owned by
another user, or is writable by group or others; every open adds O_NOFOLLOW; and whole-file writes go to a
new temporary file that is fsynced, then renamed over the old one (rename never follows a symlink), and
removed if anything fails.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

# O_NOFOLLOW: a symlink in the last component fails with ELOOP instead of being followed.
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC
SUBDIRS = ("locks",)


class UnsafeStateDir(Exception):
    """state_dir, or a file in it, could be used by another user against root; the message says how."""


def _problem(path: Path, info: os.stat_result) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symlink"
    if info.st_uid != os.geteuid():
        return f"{path} is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by its group or by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def verify(state_dir: Path) -> None:
    """Create `state_dir` (mode 0700) if it is missing, then check it, its subdirectories and the files in
    them. Raises UnsafeStateDir naming the first problem, OSError if it cannot be created or read."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in (state_dir, *(state_dir / name for name in SUBDIRS)):
        try:
            info = directory.lstat()
        except FileNotFoundError:
            continue
        problem = _problem(directory, info)
        if problem is None and not stat.S_ISDIR(info.st_mode):
            problem = f"{directory} is not a directory"
        if problem is None:
            for entry in os.scandir(directory):
                problem = problem or _problem(Path(entry.path), entry.stat(follow_symlinks=False))
        if problem is not None:
            raise UnsafeStateDir(
                f"state_dir is not safe to use as root: {problem}; fix it (chown, chmod go-w, remove the "
                "link) or choose another state_dir"
            )


def open_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open without following a symlink at `path` (OSError ELOOP if it is one), close-on-exec."""
    return os.open(path, flags | _SAFE, mode)


def read_text(path: Path) -> str:
    """The file's text (UTF-8), never through a symlink. Raises OSError (FileNotFoundError if missing)."""
    fd = open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as source:
        return source.read()


def read_private(path: Path) -> str:
    """The text of a file root acts on that may hold secrets (notify's `urls_file`): refused, like a state
    file, if it is a symlink, owned by another user, or writable by group or others, checked on the opened
    file itself. Raises UnsafeStateDir saying which, OSError if it cannot be read."""
    fd = open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as source:
        problem = _problem(path, os.fstat(source.fileno()))
        if problem is not None:
            raise UnsafeStateDir(f"refused: {problem}")
        return source.read()


def make_dir(path: Path) -> None:
    """Create a directory of state_dir (0700) unless it exists; OSError if it is a symlink or not a dir."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not stat.S_ISDIR(path.lstat().st_mode):
        raise NotADirectoryError(f"{path} is not a directory")


def replace(path: Path, text: str) -> None:
    """Write `text` as the whole content of `path`, atomically and durably: a new temporary file beside
    it, fsynced, renamed over `path` (which a rename replaces even if it is a symlink, never following it),
    then the directory fsynced. The temporary file never outlives a failure. Raises OSError."""
    make_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
