"""Digests that failed their upgrade, so the daemon does not retry them every cycle.

A set of digests per service, each with its reason and time. An upgrade to digest D whose container
failed (not the engine: `cycle.blamed`) adds D; a manual rollback adds the digests it left; neither
removes the others. The service is not upgraded to a skipped digest again until its tag moves to another
digest and that upgrade succeeds (a fix was pushed: the list is cleared), or the user passes --force.
Kept in state_dir so a restart does not start the loop again; an unreadable file is ignored with a
warning, like the cache. A change that cannot be written is kept in memory for the life of the `SkipList`
(the daemon holds one for its life) and reported, so one broken image never costs more than one outage.
File format: {service: {"skips": {digest: {"reason", "at"}}}}; the two older
ones ({"digest", "reason", "at"}, then {"digests": [...], "reason", "at"}) are still read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from dockwarden import statefiles
from dockwarden.locks import serialised

FILE_NAME = "skipped.json"


@dataclass(frozen=True, kw_only=True)
class Skip:
    """One digest the service is not upgraded to, why, and since when (ISO 8601, UTC)."""

    digest: str
    reason: str
    at: str

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest, "reason": self.reason, "at": self.at}


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A service's skipped digests, oldest first: each added by a failed upgrade or a manual rollback."""

    skips: tuple[Skip, ...]

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(s.digest for s in self.skips)

    def find(self, digest: str) -> Skip | None:
        return next((s for s in self.skips if s.digest == digest), None)

    def to_json(self) -> dict[str, Any]:
        """`status --json`'s `skipped`: every digest with its own reason and time (`skips`); `digests`,
        and the newest skip's `reason` and `at`, as the shape before each digest had its own."""
        newest = max(self.skips, key=lambda s: s.at)
        return {
            "digests": list(self.digests),
            "reason": newest.reason,
            "at": newest.at,
            "skips": [s.to_json() for s in self.skips],
        }


class SkipList:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        # service -> its entry in the file's form (None: cleared) that could not be written yet; laid over
        # what the file says until a write succeeds.
        self._unsaved: dict[str, dict[str, Any] | None] = {}
        self._guard = threading.Lock()

    def _read(self) -> dict[str, Any]:
        data = self._read_file()
        for service, item in self._unsaved.items():
            if item is None:
                data.pop(service, None)
            else:
                data[service] = item
        return data

    def _read_file(self) -> dict[str, Any]:
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
        """Add `digests` to the service's skips (a digest already there takes the new reason and time);
        the others stay: only `clear` removes any."""

        def added(data: dict[str, Any]) -> dict[str, Any] | None:
            return _merged(_entry(data.get(service)), digests, reason)

        self._change(service, added)

    def clear(self, service: str) -> None:
        """Forget the service's skips: its tag moved and an upgrade to another digest succeeded (or a
        forced one to a skipped digest did)."""
        self._change(service, lambda _data: None)

    def _change(self, service: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        """Set the service's entry to `change(current data)` (None removes it), in the file if it can be
        written, else in memory (reported once per failed write)."""
        with self._guard:
            read: dict[str, Any] | None = None
            try:
                with serialised(self.path):
                    read = self._read()
                    data = dict(read)
                    self._apply(data, service, change(data))
                    self._write(data)
                    self._unsaved.clear()  # the file now holds what memory held
            except OSError as exc:
                self._unsaved[service] = change(read if read is not None else self._read())
                self._unwritable(exc, "kept in memory until this process ends or a later write succeeds")

    @staticmethod
    def _apply(data: dict[str, Any], service: str, item: dict[str, Any] | None) -> None:
        if item is None:
            data.pop(service, None)
        else:
            data[service] = item

    def _unwritable(self, exc: OSError, effect: str) -> None:
        structlog.get_logger("dockwarden.state").warning(
            "state.unwritable", file=str(self.path), reason=str(exc), effect=effect
        )


def _merged(entry: Entry | None, digests: Sequence[str], reason: str) -> dict[str, Any]:
    """The file's form of `entry` with `digests` added: {"skips": {digest: {"reason", "at"}}}."""
    at = datetime.now(UTC).isoformat()
    skips = {s.digest: {"reason": s.reason, "at": s.at} for s in (entry.skips if entry else ())}
    skips.update({digest: {"reason": reason, "at": at} for digest in digests})
    return {"skips": skips}


def _entry(item: object) -> Entry | None:
    """A service's entry in any of the file's three formats, or None if it is not one."""
    if not isinstance(item, dict):
        return None
    skips = item.get("skips")
    if isinstance(skips, dict):
        found = tuple(
            Skip(digest=digest, reason=str(value.get("reason", "")), at=str(value.get("at", "")))
            for digest, value in skips.items()
            if isinstance(value, dict)
        )
        return Entry(skips=found) if found else None
    # The older formats: one digest, then several sharing one reason and time (before each had its own).
    digests = [item["digest"]] if isinstance(item.get("digest"), str) else item.get("digests")
    if not isinstance(digests, list) or not digests or not all(isinstance(d, str) for d in digests):
        return None
    reason, at = item.get("reason", ""), item.get("at", "")
    if not isinstance(reason, str) or not isinstance(at, str):
        return None
    return Entry(skips=tuple(Skip(digest=d, reason=reason, at=at) for d in digests))
