"""The API's wait for the daemon's cycle lock: bounded, and cut short by a stop."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from dockwarden import api, control


def _control(held: bool) -> tuple[control.Control, Any]:
    daemon = SimpleNamespace(cycle_lock=threading.Lock(), cancel=threading.Event())
    if held:
        daemon.cycle_lock.acquire()
    return control.Control(daemon), daemon  # type: ignore[arg-type]


def test_a_held_lock_is_busy_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """While another cycle holds the lock, the request waits BUSY_WAIT seconds, then is Busy."""
    monkeypatch.setattr(control, "BUSY_WAIT", 0.5)
    ctl, _ = _control(held=True)
    started = time.monotonic()
    with pytest.raises(api.Busy, match="is running"):
        ctl._acquire()
    assert time.monotonic() - started >= 0.5


def test_a_lock_freed_within_the_wait_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle that ends within the wait lets the request run."""
    monkeypatch.setattr(control, "BUSY_WAIT", 5.0)
    ctl, daemon = _control(held=True)
    threading.Timer(0.3, daemon.cycle_lock.release).start()
    ctl._acquire()
    assert daemon.cycle_lock.locked()


def test_a_stop_ends_the_wait_and_refuses_new_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop during the wait, or before it, is Stopping, and leaves the lock as it was."""
    monkeypatch.setattr(control, "BUSY_WAIT", 30.0)
    ctl, daemon = _control(held=True)
    threading.Timer(0.3, daemon.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(api.Stopping):
        ctl._acquire()
    assert time.monotonic() - started < 5
    free, idle = _control(held=False)
    idle.cancel.set()
    with pytest.raises(api.Stopping):
        free._acquire()
    assert not idle.cycle_lock.locked()
