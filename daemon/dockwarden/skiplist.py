"""Digests that failed their upgrade, so the daemon does not retry them every cycle.

A failed upgrade to digest D puts (service, D) here; the service is not upgraded to D again until its
tag moves to another digest (a fix was pushed) or the user passes --force. Kept in state_dir so a
restart does not start the loop again; an unreadable file is ignored with a warning, like the cache.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

FILE_NAME = "skipped.json"


@dataclass(frozen=True)
class Entry:
    digest: str
    reason: str
    at: str


class SkipList:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The daemon and a manual update may both write; serialise the read-modify-write.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            structlog.get_logger("dockwarden.state").warning(
                "state.ignored", file=str(self.path), reason=f"unreadable: {exc}"
            )
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".skipped-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def get(self, service: str) -> Entry | None:
        item = self._read().get(service)
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            return None
        return Entry(item["digest"], str(item.get("reason", "")), str(item.get("at", "")))

    def add(self, service: str, digest: str, reason: str) -> None:
        try:
            with self._locked():
                data = self._read()
                data[service] = {"digest": digest, "reason": reason, "at": datetime.now(UTC).isoformat()}
                self._write(data)
        except OSError as exc:
            self._unwritable(exc, "the failed digest is not remembered: the next cycle will try it again")

    def clear(self, service: str) -> None:
        try:
            with self._locked():
                data = self._read()
                if data.pop(service, None) is not None:
                    self._write(data)
        except OSError as exc:
            self._unwritable(exc, "an old entry stays; it only matters if the tag moves back to that digest")

    def _unwritable(self, exc: OSError, effect: str) -> None:
        structlog.get_logger("dockwarden.state").warning(
            "state.unwritable", file=str(self.path), reason=str(exc), effect=effect
        )
