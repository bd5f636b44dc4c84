"""Digests that failed their upgrade, so the daemon does not retry them every cycle.

A failed upgrade to digest D puts (service, D) here; the service is not upgraded to D again until its
tag moves to another digest (a fix was pushed) or the user passes --force. Kept in state_dir so a
restart does not start the loop again; an unreadable file is ignored with a warning, like the cache.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from dockwarden import statefiles
from dockwarden.locks import serialised

FILE_NAME = "skipped.json"


@dataclass(frozen=True, kw_only=True)
class Entry:
    digests: tuple[str, ...]  # one manifest digest, or all a rolled-away image is known by
    reason: str
    at: str

    def to_json(self) -> dict[str, Any]:
        return {"digests": list(self.digests), "reason": self.reason, "at": self.at}


class SkipList:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(statefiles.read_text(self.path))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            structlog.get_logger("dockwarden.state").warning(
                "state.ignored", file=str(self.path), reason=f"unreadable: {exc}"
            )
            return {}
        if not isinstance(data, dict):
            self._ignored(f"a JSON {type(data).__name__}, not an object")
            return {}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        statefiles.replace(self.path, json.dumps(data, indent=1, sort_keys=True))

    def _ignored(self, reason: str) -> None:
        structlog.get_logger("dockwarden.state").warning("state.ignored", file=str(self.path), reason=reason)

    def get(self, service: str) -> Entry | None:
        return self.all().get(service)

    def all(self) -> dict[str, Entry]:
        """The entries that are well formed; each other one is ignored with a warning (it skips nothing)."""
        found = {}
        for name, item in self._read().items():
            entry = _entry(item)
            if entry is None:
                self._ignored(f"the entry of {name!r} is malformed")
            else:
                found[name] = entry
        return found

    def add(self, service: str, digests: Sequence[str], reason: str) -> None:
        try:
            with serialised(self.path):
                data = self._read()
                data[service] = {
                    "digests": list(digests),
                    "reason": reason,
                    "at": datetime.now(UTC).isoformat(),
                }
                self._write(data)
        except OSError as exc:
            self._unwritable(exc, "the failed digest is not remembered: the next cycle will try it again")

    def clear(self, service: str) -> None:
        try:
            with serialised(self.path):
                data = self._read()
                if data.pop(service, None) is not None:
                    self._write(data)
        except OSError as exc:
            self._unwritable(exc, "an old entry stays; it only matters if the tag moves back to that digest")

    def _unwritable(self, exc: OSError, effect: str) -> None:
        structlog.get_logger("dockwarden.state").warning(
            "state.unwritable", file=str(self.path), reason=str(exc), effect=effect
        )


def _entry(item: object) -> Entry | None:
    if not isinstance(item, dict):
        return None
    digests = item.get("digests")
    if isinstance(item.get("digest"), str):  # the format before a rollback could skip several digests
        digests = [item["digest"]]
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        return None
    reason, at = item.get("reason", ""), item.get("at", "")
    if not isinstance(reason, str) or not isinstance(at, str):
        return None
    return Entry(digests=tuple(digests), reason=reason, at=at)
