"""What each manifest digest means on this platform, remembered across cycles and restarts.

A digest is a content address, so the image config digest a manifest (or, for this platform, an index)
resolves to can never change, nor the child manifest an index holds for this platform: an entry never goes
stale. Both are kept, because the classic image store names an image by its config digest and the
containerd image store by its manifest or index digest (a container there runs the index's child).
Keeping them in `state_dir` lets a one-shot `dockwarden check` from cron, or a restarted daemon, skip the
GETs it already paid for. The file is a
cache: if it is missing, unreadable or from another platform it is ignored (with a warning) and rebuilt.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import structlog

from dockwarden import statefiles

FILE_NAME = "digests.json"
MAX_ENTRIES = 10_000
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class DigestCache:
    def __init__(self, path: Path | None = None, platform: str = "") -> None:
        self._path = path
        self._platform = platform
        self._config_of: dict[str, str] = {}
        # digest -> the platform manifest it means: itself, or an index's child for this platform. An entry
        # read from a file older than this map is not used (its index child is unknown) until refetched.
        self._manifest_of: dict[str, str] = {}
        self._dirty = False
        self._lock = threading.Lock()
        self._warned = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        log = structlog.get_logger("dockwarden.state")
        try:
            data = json.loads(statefiles.read_text(path))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("state.ignored", file=str(path), reason=f"unreadable: {exc}")
            return
        if not isinstance(data, dict) or data.get("version") != 1 or data.get("platform") != self._platform:
            log.warning("state.ignored", file=str(path), reason="another version or platform")
            return
        entries = data.get("config_of")
        if not isinstance(entries, dict):
            log.warning("state.ignored", file=str(path), reason="config_of is not an object")
            return
        self._config_of = {
            k: v for k, v in entries.items() if isinstance(v, str) and _DIGEST.match(k) and _DIGEST.match(v)
        }
        if len(self._config_of) < len(entries):
            dropped = len(entries) - len(self._config_of)
            log.warning("state.ignored", file=str(path), reason=f"{dropped} malformed entries skipped")
        children = data.get("manifest_of")  # absent in files written before the containerd store's support
        if isinstance(children, dict):
            self._manifest_of = {
                k: v
                for k, v in children.items()
                if isinstance(v, str) and k in self._config_of and _DIGEST.match(v)
            }

    def __len__(self) -> int:
        return len(self._config_of)

    def get(self, digest: str) -> tuple[str, str] | None:
        """(platform manifest digest, config digest) for manifest or index `digest`, if known."""
        with self._lock:
            config, child = self._config_of.get(digest), self._manifest_of.get(digest)
            return (child, config) if config is not None and child is not None else None

    def put(self, digest: str, config_digest: str, manifest_digest: str | None = None) -> None:
        """Remember `digest` -> config digest and, for an index, its platform child `manifest_digest`."""
        child = manifest_digest or digest
        with self._lock:
            if self._config_of.get(digest) == config_digest and self._manifest_of.get(digest) == child:
                return
            self._config_of[digest] = config_digest
            self._manifest_of[digest] = child
            while len(self._config_of) > MAX_ENTRIES:  # oldest first: dicts keep insertion order
                oldest = next(iter(self._config_of))
                del self._config_of[oldest]
                self._manifest_of.pop(oldest, None)
            self._dirty = True

    def save(self) -> None:
        """Write the file if anything was learned; a failure is a warning, never an error."""
        with self._lock:
            if not self._dirty or self._path is None:
                return
            payload = json.dumps(
                {
                    "version": 1,
                    "platform": self._platform,
                    "config_of": self._config_of,
                    "manifest_of": self._manifest_of,
                }
            )
            self._dirty = False
        try:
            # Write then rename, so a crash mid-write never leaves a torn file behind.
            statefiles.replace(self._path, payload)
        except OSError as exc:
            if not self._warned:
                structlog.get_logger("dockwarden.state").warning(
                    "state.unwritable",
                    file=str(self._path),
                    reason=str(exc),
                    effect="digests kept in memory only",
                )
                self._warned = True
