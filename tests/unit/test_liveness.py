"""The watchdog is fed only while the update cycle makes progress within bounds derived from the config."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import cast

import pytest
from structlog.testing import capture_logs

from dockwarden import config as configuration
from dockwarden import liveness
from dockwarden.check import Checker
from dockwarden.daemon import Daemon
from dockwarden.engine import DEFAULT_TIMEOUT
from dockwarden.liveness import Liveness
from dockwarden.notify import Notifier
from dockwarden.upgrade import Step, UndoStep


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _config(tmp_path: Path, extra: str = "registry_timeout: 3s\n") -> configuration.Config:
    path = tmp_path / "dw.yaml"
    path.write_text(f"state_dir: {tmp_path}\n{extra}services:\n  a: {{}}\n  b: {{}}\n")
    return configuration.load(path)


def test_overdue_names_where_the_cycle_is_stuck_and_for_how_long() -> None:
    """Within its bound a place is on time; past it, overdue says where and for how long; idle clears it."""
    clock = Clock()
    live = Liveness(clock)
    assert live.overdue() is None
    live.enter("upgrade step start", 10.0)
    clock.now += 10.0
    assert live.overdue() is None
    clock.now += 0.5
    assert live.overdue() == ("upgrade step start", 10.5)
    live.enter("upgrade step gate", 60.0)  # progress moves the deadline
    assert live.overdue() is None
    live.idle()
    clock.now += 1e6
    assert live.overdue() is None


def test_bounds_follow_the_config(tmp_path: Path) -> None:
    """The check's bound grows with the registry timeout, the gate's with health_timeout_max and windows."""
    short = liveness.bounds(_config(tmp_path))
    slow = liveness.bounds(_config(tmp_path, "registry_timeout: 30s\nhealth_timeout_max: 20m\n"))
    assert slow.check > short.check
    assert slow.gate - short.gate == pytest.approx(15 * 60)
    assert liveness.step_bound(Step.GATE, short) == short.gate
    assert liveness.step_bound(UndoStep.START_OLD, short) == short.gate  # the undo gates the old version
    assert liveness.step_bound(Step.STOP_OLD, short) == short.stop
    assert liveness.step_bound(Step.CREATE, short) == short.step


def _pings(sock: socket.socket, seconds: float) -> int:
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            count += sock.recv(1024) == b"WATCHDOG=1"
    return count


def test_watchdog_starves_while_the_cycle_is_stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle past its bound stops the WATCHDOG=1 pings (once logged, with where it is stuck); they resume
    when the cycle moves on."""
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.settimeout(0.05)
        notifier = Notifier({"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "300000"})
        running = Daemon(_config(tmp_path), cast(Checker, None), notifier)
        monkeypatch.setattr(running, "scheduler_alive", lambda: True)
        server = threading.Thread(target=running.serve, daemon=True)
        with capture_logs() as logs:
            server.start()
            try:
                assert _pings(sock, 0.5) >= 2  # idle: fed
                running.liveness.enter("check cycle", 0.0)
                _pings(sock, 0.3)  # what was in flight
                assert _pings(sock, 0.6) == 0  # stuck: starved
                running.liveness.idle()
                assert _pings(sock, 0.5) >= 2
            finally:
                running.requested = "stop"
                server.join(5)
    starved = [e for e in logs if e["event"] == "watchdog.starved"]
    assert [e["stuck_in"] for e in starved] == ["check cycle"]


def test_the_drain_step_is_bounded_by_the_longest_drain(tmp_path: Path) -> None:
    """A start-first drain may last its service's `drain`: the DRAIN step's bound is the longest one plus
    an engine call, so the watchdog never reads a long drain as a stuck cycle."""
    path = tmp_path / "dw.yaml"
    path.write_text(f"state_dir: {tmp_path}\nservices:\n  a: {{drain: 2m}}\n  b: {{strategy: start-first}}\n")
    limits = liveness.bounds(configuration.load(path))
    assert liveness.step_bound(Step.DRAIN, limits) == pytest.approx(120 + DEFAULT_TIMEOUT)
