"""The decision history: JSON lines in state_dir, rotated by size, read newest first."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from structlog.testing import capture_logs

from dockwarden import history, report, status
from dockwarden.config import Service
from dockwarden.history import Event, History


def test_entries_are_read_back_newest_first_and_by_service(tmp_path: Path) -> None:
    """Each record is one line with time, event and service; reading filters by service."""
    journal = History(tmp_path)
    journal.record(Event.CHECKED, "web", status="up-to-date", error=None)
    journal.record(Event.SKIPPED, "api", reason="update: monitor")
    journal.record(Event.UPGRADE, "web", result="upgraded", from_digest="sha256:1", to_digest="sha256:2")
    lines = (tmp_path / history.FILE_NAME).read_text().splitlines()
    assert len(lines) == 3
    assert "error" not in json.loads(lines[0])  # None fields are left out
    assert [e["event"] for e in History(tmp_path).entries()] == ["upgrade", "skipped", "checked"]
    assert [e["event"] for e in History(tmp_path).entries("web")] == ["upgrade", "checked"]
    assert History(tmp_path).entries("web")[0]["at"].endswith("+00:00")


def test_rotation_keeps_a_bounded_number_of_files_and_the_order(tmp_path: Path) -> None:
    """Past max_bytes the file rotates to .1, .2, ...; the oldest beyond ROTATED files is dropped, and
    reading still goes newest first across files."""
    journal = History(tmp_path, max_bytes=300)
    for number in range(60):
        journal.record(Event.CHECKED, "web", n=number)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(history.FILE_NAME + "."))
    assert [f for f in files if not f.endswith(".lock")] == [
        f"{history.FILE_NAME}.{i}" for i in range(1, history.ROTATED + 1)
    ]
    assert all(p.stat().st_size <= 300 for p in tmp_path.glob(history.FILE_NAME + "*"))
    numbers = [e["n"] for e in journal.entries()]
    assert numbers == sorted(numbers, reverse=True)
    assert numbers[0] == 59
    assert len(numbers) < 60  # the oldest were dropped with the oldest file


def test_a_cut_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    """A line cut by a crash or a full disk is ignored; the others are read."""
    journal = History(tmp_path)
    journal.record(Event.CHECKED, "web")
    with (tmp_path / history.FILE_NAME).open("a") as out:
        out.write('{"at": "2026-11-28T07:00:00", "event": "chec')
    journal.record(Event.SKIPPED, "web")
    assert [e["event"] for e in journal.entries()] == ["skipped", "checked"]


def _append(path: str, count: int) -> None:
    journal = History(Path(path))
    for number in range(count):
        journal.record(Event.CHECKED, "web", n=number, padding="x" * 40)


def test_two_processes_appending_lose_no_line(tmp_path: Path) -> None:
    """The daemon and a manual command may write at once: every line stays whole, none is lost."""
    workers = [multiprocessing.Process(target=_append, args=(str(tmp_path), 40)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    entries = History(tmp_path).entries()
    assert len((tmp_path / history.FILE_NAME).read_text().splitlines()) == len(entries)  # no torn line
    assert sorted(e["n"] for e in entries) == sorted([*range(40), *range(40)])


def test_an_unwritable_state_dir_is_one_warning(tmp_path: Path) -> None:
    """Recording into a directory that cannot be created warns once and never raises."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = History(blocker / "state")
    with capture_logs() as logs:
        journal.record(Event.CHECKED, "web")
        journal.record(Event.CHECKED, "web")
    assert [e["event"] for e in logs] == ["state.unwritable"]
    assert journal.entries() == []


MALFORMED = [
    [1, 2],
    {"at": 5, "event": "checked", "service": "web"},
    {"at": "2026-11-30T00:00:00+00:00", "event": ["upgrade"], "service": "web"},
    {"at": "2026-11-30T00:00:00+00:00", "event": "upgrade", "service": "web", "from_digest": 7},
    {"at": "2026-11-30T00:00:00+00:00", "event": "checked", "service": {"a": 1}},
    {"at": "2026-11-30T00:00:00+00:00", "event": "gc", "service": "web", "bytes": "lots"},
]


def test_entries_of_unexpected_types_are_skipped_with_a_warning(tmp_path: Path) -> None:
    """Lines holding lists, numbers where strings belong or strings where numbers do are skipped, once
    warned about, and `history` and `status` render the rest without a traceback."""
    journal = History(tmp_path)
    journal.record(Event.CHECKED, "web", status="up-to-date", registry_digest="sha256:" + "a" * 64)
    with (tmp_path / history.FILE_NAME).open("a") as out:
        out.writelines(json.dumps(item) + "\n" for item in MALFORMED)
    with capture_logs() as logs:
        entries = History(tmp_path).entries()
    assert [e["event"] for e in entries] == ["checked"]
    assert [(e["event"], e["reason"]) for e in logs] == [("state.ignored", "6 malformed entries skipped")]
    assert "up-to-date" in report.history_table(entries)
    described = status.describe(Service(name="web", container="web"), None, [], entries, None)
    assert described.registry_digest == "sha256:" + "a" * 64
    assert "web" in report.status_table([described])
