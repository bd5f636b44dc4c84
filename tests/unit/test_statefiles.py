"""state_dir cannot be turned against root: it is checked before use, and no state file is opened through a
symlink or left half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dockwarden import cli, statefiles
from dockwarden.history import Event, History
from dockwarden.locks import Busy, ContainerLock, serialised
from dockwarden.skiplist import SkipList

NOBODY = 65534


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A file only root should write, which a planted symlink points at."""
    path = tmp_path / "precious"
    path.write_text("root's data\n")
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    statefiles.verify(path)
    return path


def test_a_missing_state_dir_is_created_private(tmp_path: Path) -> None:
    """verify creates state_dir with mode 0700 when it does not exist."""
    statefiles.verify(tmp_path / "new" / "state")
    assert (tmp_path / "new" / "state").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("problem", ["owner", "group-writable", "world-writable", "symlinked-dir"])
def test_unsafe_state_dir_is_refused(tmp_path: Path, state: Path, problem: str) -> None:
    """A state_dir owned by another user, writable by group or others, or a symlink is refused."""
    checked = state
    if problem == "owner":
        os.chown(state, NOBODY, -1)
    elif problem == "group-writable":
        state.chmod(0o770)
    elif problem == "world-writable":
        state.chmod(0o703)
    else:
        checked = tmp_path / "link"  # state_dir itself is a symlink: it could be repointed at any time
        checked.symlink_to(state)
    with pytest.raises(statefiles.UnsafeStateDir, match="not safe to use as root"):
        statefiles.verify(checked)


@pytest.mark.parametrize("name", ["history.jsonl", "skipped.json", "locks"])
def test_planted_entries_are_refused(state: Path, target: Path, name: str) -> None:
    """A symlink, or a file of another user, among state_dir's entries makes verify refuse it."""
    (state / name).symlink_to(target)
    with pytest.raises(statefiles.UnsafeStateDir, match="is a symlink"):
        statefiles.verify(state)
    (state / name).unlink()
    (state / name).write_text("{}")
    os.chown(state / name, NOBODY, -1)
    with pytest.raises(statefiles.UnsafeStateDir, match="owned by uid 65534"):
        statefiles.verify(state)


def test_no_state_file_is_written_through_a_symlink(state: Path, target: Path) -> None:
    """Locks, the history, the lock files beside them and the skip list never follow a planted symlink:
    the target keeps its content and no file appears where a link points."""
    (state / "locks").mkdir(mode=0o700)
    (state / "locks" / "web.lock").symlink_to(target)
    (state / "history.jsonl").symlink_to(target)
    (state / "skipped.json.lock").symlink_to(target.with_name("created-by-root"))
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        ContainerLock(state, "web").acquire()
    with capture_logs() as logs:
        History(state).record(Event.CHECKED, "web")
    assert [e["event"] for e in logs] == ["state.unwritable"]
    with (
        pytest.raises(OSError, match="Too many levels of symbolic links"),
        serialised(state / "skipped.json"),
    ):
        pass
    (state / "skipped.json").symlink_to(target)
    (state / "skipped.json.lock").unlink()
    SkipList(state).add("web", ["sha256:" + "1" * 64], "gate")  # replaces the link, never writes through it
    assert target.read_text() == "root's data\n"
    assert not target.with_name("created-by-root").exists()
    assert not (state / "skipped.json").is_symlink()


def test_a_failed_write_leaves_no_temporary_file(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the rename of a whole-file write fails, its temporary file is removed and the error raised."""

    def refuse(_src: object, _dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        statefiles.replace(state / "skipped.json", "{}")
    assert sorted(p.name for p in state.iterdir()) == []


def test_a_failed_write_after_locking_releases_the_lock(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If writing our PID into a lock fails, the lock is not left held: the next acquire succeeds."""
    real = os.pwrite

    def full(_fd: int, _data: bytes, _offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space left"):
        ContainerLock(state, "web").acquire()
    monkeypatch.setattr(os, "pwrite", real)
    lock = ContainerLock(state, "web")
    try:
        lock.acquire()
    except Busy:
        pytest.fail("the lock stayed held after the failed write")
    lock.release()


def test_commands_refuse_an_unsafe_state_dir(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command that uses state_dir exits 1 with the reason when it is unsafe; validate does not care."""
    os.chown(state, NOBODY, -1)
    cfg = tmp_path / "dw.yaml"
    cfg.write_text(f"state_dir: {state}\nservices: {{}}\n")
    assert cli.main(["history", "-c", str(cfg)]) == 1
    assert "state_dir is not safe to use as root" in capsys.readouterr().err
    assert cli.main(["validate", "-c", str(cfg)]) == 0


@pytest.mark.parametrize(
    ("content", "warnings"),
    [
        ([{"web": {"digests": ["sha256:1"]}}], 1),
        ({"web": ["sha256:1"]}, 1),
        ({"web": {"digests": [1, 2]}}, 1),
        ({"web": {"digests": ["sha256:1"], "reason": 5, "at": []}}, 1),
        ({"web": {"digests": "sha256:1"}, "api": 7}, 2),
    ],
    ids=["a-list", "an-entry-list", "number-digests", "number-reason", "two-bad-entries"],
)
def test_a_skip_list_of_unexpected_types_is_ignored_with_a_warning(
    tmp_path: Path, content: object, warnings: int
) -> None:
    """skipped.json holding a list, or entries of the wrong types, skips nothing, warns and never raises."""
    (tmp_path / "skipped.json").write_text(json.dumps(content))
    with capture_logs() as logs:
        skips = SkipList(tmp_path)
        assert (skips.all(), skips.get("web")) == ({}, None)
    assert [e["event"] for e in logs] == ["state.ignored"] * warnings * 2


def test_a_skip_that_cannot_be_written_is_kept_in_memory_and_saved_later(state: Path) -> None:
    """A skip-list file that cannot be written (here a directory in its place) keeps the skip in the same
    SkipList's memory, reports it, and writes it with the next change once the file can be written."""
    failed, later = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    blocker = state / "skipped.json"
    blocker.mkdir()
    skips = SkipList(state)
    with capture_logs() as logs:
        skips.add("web", [failed], "gate: unhealthy")
    assert [e["event"] for e in logs if e["log_level"] == "warning"][-1] == "state.unwritable"
    entry = skips.get("web")
    assert entry is not None
    assert entry.digests == (failed,)
    assert SkipList(state).get("web") is None  # nothing reached the disk
    blocker.rmdir()
    skips.add("web", [later], "gate: unhealthy")
    on_disk = SkipList(state).get("web")
    assert on_disk is not None
    assert set(on_disk.digests) == {failed, later}


def test_a_clear_that_cannot_be_written_still_clears_in_memory(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clear whose write fails (disk full) holds in memory: the file still lists the skip, the
    daemon's SkipList no longer does."""
    skips = SkipList(state)
    skips.add("web", ["sha256:" + "1" * 64], "gate: unhealthy")

    def full(_src: object, _dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    skips.clear("web")
    assert skips.get("web") is None
    assert SkipList(state).get("web") is not None
