"""Every decision dockwarden takes, one JSON object per line in `state_dir/history.jsonl`.

The log is for operators watching now; this file is for the question asked a week later ("what ran here
on Tuesday, and why was it rolled back?"), and `dockwarden status` reads its last check and upgrade from
it. Appends are serialised by a lock file, so the daemon and a manual `update` can both write. When the
file would grow past `max_bytes` it is rotated (history.jsonl.1 .. .N, oldest dropped), like logrotate.
A history that cannot be written is a warning, never a reason to stop an upgrade.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dockwarden import statefiles
from dockwarden.locks import serialised

if TYPE_CHECKING:
    from dockwarden.config import Config

FILE_NAME = "history.jsonl"
ROTATED = 4  # files kept beside the current one


class Event(StrEnum):
    """What an entry records, one per decision (the entry's `event`)."""

    CHECKED = "checked"
    SKIPPED = "skipped"
    UPGRADE = "upgrade"  # an attempt by the update cycle: its result, gate verdict, from -> to
    ROLLBACK = "rollback"  # an on-demand `dockwarden rollback`
    RETAINED = "retained"  # a replaced version kept for rollback
    RELEASED = "released"  # a version beyond keep_previous untagged (and removed when nothing uses it)
    GC = "gc"  # one removal by garbage collection


class History:
    def __init__(self, state_dir: Path, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.path = state_dir / FILE_NAME
        self.max_bytes = max_bytes
        self._warned = False

    @classmethod
    def of(cls, cfg: Config) -> History:
        """The history of the config's state_dir, rotated at its history_max_bytes."""
        return cls(cfg.state_dir, cfg.history_max_bytes)

    def record(self, event: Event, service: str | None = None, **fields: Any) -> None:
        entry = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        if service is not None:
            entry["service"] = service
        entry.update({k: v for k, v in fields.items() if v is not None})
        line = (json.dumps(entry, sort_keys=False, default=str) + "\n").encode()
        try:
            with serialised(self.path):
                self._rotate_for(len(line))
                fd = statefiles.open_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
                try:
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        line = b"\n" + line  # a line cut by a crash must not swallow this one
                    os.write(fd, line)  # one write per line: a reader never sees half a record
                finally:
                    os.close(fd)
        except OSError as exc:
            if not self._warned:  # once per process: a full disk would otherwise flood the log
                self._warned = True
                structlog.get_logger("dockwarden.state").warning(
                    "state.unwritable", file=str(self.path), reason=str(exc), effect="history not recorded"
                )

    def _rotate_for(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        for index in range(ROTATED - 1, 0, -1):
            older = self.path.with_name(f"{FILE_NAME}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{FILE_NAME}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{FILE_NAME}.1"))

    def files(self) -> list[Path]:
        """The history files, oldest first."""
        rotated = [self.path.with_name(f"{FILE_NAME}.{i}") for i in range(ROTATED, 0, -1)]
        return [p for p in [*rotated, self.path] if p.exists()]

    def entries(self, service: str | None = None) -> list[dict[str, Any]]:
        """Every recorded entry (of `service`, if given), newest first; unreadable lines and entries whose
        fields have unexpected types (`well_formed`) are skipped, the latter with one warning per file."""
        found: list[dict[str, Any]] = []
        for path in self.files():
            try:
                text = statefiles.read_text(path)
            except OSError:
                continue
            malformed = 0
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash or a full disk
                if not well_formed(entry):
                    malformed += 1
                elif service is None or entry.get("service") == service:
                    found.append(entry)
            if malformed:
                structlog.get_logger("dockwarden.state").warning(
                    "state.ignored", file=str(path), reason=f"{malformed} malformed entries skipped"
                )
        found.reverse()
        return found


# The fields `history` and `status` read, and the types they are written with (`record`'s callers).
_STRINGS = frozenset(
    {
        "service",
        "status",
        "running_digest",
        "registry_digest",
        "error",
        "reason",
        "result",
        "from_digest",
        "to_digest",
        "verdict",
        "step",
        "rollback_error",
        "kind",
        "name",
        "reference",
    }
)


def well_formed(entry: object) -> bool:
    """Whether a parsed history line is an entry as `record` writes it: an object with string `at` and
    `event`, and the fields readers use each a string (or absent, or null) and `bytes` an integer. Anything
    else was written by hand or by something else, and is skipped rather than shown wrongly or crashing."""
    if not isinstance(entry, dict):
        return False
    if not isinstance(entry.get("at"), str) or not isinstance(entry.get("event"), str):
        return False
    if any(entry.get(key) is not None and not isinstance(entry[key], str) for key in _STRINGS):
        return False
    count = entry.get("bytes")
    return count is None or (isinstance(count, int) and not isinstance(count, bool))
