"""The digest cache in state_dir: survives restarts, never trusted across platforms, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dockwarden import digests
from dockwarden.digests import DigestCache

A, B, C = ("sha256:" + ch * 64 for ch in "abc")


def test_roundtrip(tmp_path: Path) -> None:
    """What one process learned is known to the next one on the same platform."""
    path = tmp_path / "state" / "digests.json"
    first = DigestCache(path, "linux/amd64")
    first.put(A, B)
    first.save()
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert DigestCache(path, "linux/amd64").get(A) == (A, B)


def test_an_index_remembers_this_platforms_child(tmp_path: Path) -> None:
    """An index digest resolves to its child manifest for this platform and that child's config, across
    processes; an entry from a file written before children were kept is refetched, not guessed."""
    path = tmp_path / "digests.json"
    first = DigestCache(path, "linux/amd64")
    first.put(A, C, B)
    first.save()
    assert DigestCache(path, "linux/amd64").get(A) == (B, C)
    path.write_text(json.dumps({"version": 1, "platform": "linux/amd64", "config_of": {A: C}}))
    assert DigestCache(path, "linux/amd64").get(A) is None


def test_other_platform_is_ignored(tmp_path: Path) -> None:
    """An index resolves differently per platform, so another platform's file is not used."""
    path = tmp_path / "digests.json"
    cache = DigestCache(path, "linux/arm64")
    cache.put(A, B)
    cache.save()
    with capture_logs() as logs:
        assert DigestCache(path, "linux/amd64").get(A) is None
    assert logs[0]["event"] == "state.ignored"


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", json.dumps({"version": 1, "platform": "linux/amd64", "config_of": {"x": "y", A: 5}})],
)
def test_bad_file_is_ignored(tmp_path: Path, content: str) -> None:
    """A corrupt or hand-edited file never crashes the checker and never yields a bad entry."""
    path = tmp_path / "digests.json"
    path.write_text(content)
    cache = DigestCache(path, "linux/amd64")
    assert len(cache) == 0


def test_unwritable_path_warns_once(tmp_path: Path) -> None:
    """A state file that cannot be written (its directory is a file) warns once and keeps the entries."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache = DigestCache(blocker / "digests.json", "linux/amd64")
    with capture_logs() as logs:
        cache.put(A, B)
        cache.save()
        cache.put(B, C)
        cache.save()
    assert [e["event"] for e in logs] == ["state.unwritable"]
    assert cache.get(A) == (A, B)


def test_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache keeps at most MAX_ENTRIES, dropping the oldest."""
    monkeypatch.setattr(digests, "MAX_ENTRIES", 2)
    cache = DigestCache()
    cache.put(A, C)
    cache.put(B, C)
    cache.put(C, C)
    assert (cache.get(A), cache.get(B), cache.get(C)) == (None, (B, C), (C, C))


@pytest.mark.parametrize(
    "config_of",
    [[A, B], {A: 5}, {A: [B]}, "x"],
    ids=["a-list", "a-number", "a-nested-list", "a-string"],
)
def test_values_of_unexpected_types_are_ignored_with_a_warning(tmp_path: Path, config_of: object) -> None:
    """A cache whose config_of is not an object of digest strings is ignored with a warning, never raised."""
    path = tmp_path / "digests.json"
    path.write_text(json.dumps({"version": 1, "platform": "linux/amd64", "config_of": config_of}))
    with capture_logs() as logs:
        cache = DigestCache(path, "linux/amd64")
    assert (len(cache), cache.get(A)) == (0, None)
    assert [e["event"] for e in logs] == ["state.ignored"]
