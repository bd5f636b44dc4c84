"""`dockwarden run` as systemd runs it: notify socket, watchdog, reload on SIGHUP, stop on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dockwarden import check
from dockwarden import config as configuration
from dockwarden.daemon import Daemon
from dockwarden.notify import Notifier
from tests.conftest import Deploy
from tests.integration.helpers import spawn, write_config
from tests.support.proxy import FaultPlan, FaultProxy
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_daemon_under_systemd_protocol(
    deploy: Deploy,
    stop_signal: signal.Signals,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """The daemon says READY=1 after connecting, reports each cycle in STATUS=, pings the watchdog, keeps its
    config when a reload finds the file invalid, applies a valid one, and exits 0 within 10 s of a stop
    signal."""
    name, _tag, _image_id, _digest = deploy(registry)
    cfg = write_config(tmp_path / "dw.yaml", {"web": {"container": name}})

    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> None:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass

    log = tmp_path / "daemon.log"
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "600000"}
    proc = spawn("run", cfg, log, env)
    try:

        def seen(text: str) -> bool:
            drain()
            return any(text in m for m in messages)

        _wait_for(lambda: seen("READY=1"), 30, "READY=1")
        _wait_for(lambda: seen("STATUS=last cycle"), 30, "a cycle summary in STATUS=")
        assert any("1 checked: 1 up to date" in m for m in messages), messages
        _wait_for(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3, 10, "three watchdog pings")

        good = cfg.read_text()
        cfg.write_text(good + "  extra:\n    update: never\n")
        proc.send_signal(signal.SIGHUP)
        _wait_for(
            lambda: any(e["event"] == "config.reload_failed" for e in _events(log)), 10, "reload failure"
        )
        failed = next(e for e in _events(log) if e["event"] == "config.reload_failed")
        problems = failed["problems"]
        assert isinstance(problems, list)
        assert any(f"{cfg}:" in p and "must be 'auto' or 'monitor'" in p for p in problems)
        assert proc.poll() is None

        cfg.write_text(good + f"  again:\n    container: {name}-again\n")  # one container per service
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: any(e["event"] == "config.reloaded" for e in _events(log)), 10, "reload")
        reloaded = next(e for e in _events(log) if e["event"] == "config.reloaded")
        assert reloaded["services"] == 2

        stop_at = time.monotonic()
        proc.send_signal(stop_signal)
        assert proc.wait(10) == 0
        assert time.monotonic() - stop_at < 10
        drain()
        assert any("STOPPING=1" in m for m in messages)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()

    events = _events(log)  # every line is JSON: json.loads above would have failed otherwise
    names = [e["event"] for e in events]
    for expected in (
        "daemon.started",
        "cycle.started",
        "service.checked",
        "cycle.finished",
        "daemon.stopped",
    ):
        assert expected in names
    checked = next(e for e in events if e["event"] == "service.checked")
    assert {"service", "running_digest", "registry_digest", "status", "duration_ms", "timestamp"} <= set(
        checked
    )


def test_run_exits_1_with_a_clear_message_when_the_engine_is_unreachable(tmp_path: Path) -> None:
    """`run` against an engine that does not answer says so on stderr and exits 1, without a traceback."""
    cfg = write_config(tmp_path / "dw.yaml", {"web": {}}, extra=f"docker_host: unix://{tmp_path}/no.sock")
    proc = subprocess.run(
        [sys.executable, "-m", "dockwarden", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_during_a_stuck_check_still_stops_within_10_seconds(
    deploy: Deploy,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """A cycle blocked on a registry that never answers does not hold the daemon past 10 s after SIGTERM."""
    name, _tag, _image_id, _digest = deploy(registry)
    proxy = FaultProxy(registry.url, FaultPlan(delay=60)).start()
    try:
        cfg = write_config(
            tmp_path / "dw.yaml",
            {"web": {"container": name, "image": f"{proxy.host}/sample:latest"}},
            extra="registry_timeout: 60s",
        )
        log = tmp_path / "daemon.log"
        proc = spawn("run", cfg, log)
        try:
            _wait_for(lambda: proxy.count >= 1, 30, "the check to reach the registry")
            stop_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert time.monotonic() - stop_at < 10
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stopped = next(e for e in _events(log) if e["event"] == "daemon.stopped")
        assert stopped["cycle_abandoned"] is True
        failed = next(e for e in _events(log) if e["event"] == "check.failed")
        assert (failed["service"], failed["reason"]) == ("web", "cancelled")
        finished = next(e for e in _events(log) if e["event"] == "cycle.finished")
        assert (finished["checked"], finished["errors"], finished["cancelled"]) == (1, 1, True)
    finally:
        proxy.stop()


def test_a_cycle_longer_than_the_interval_is_logged_not_dropped_silently(
    registry: Registry, deploy: Deploy, tmp_path: Path
) -> None:
    """When a cycle outlasts the interval the next start is skipped with a `cycle.skipped` warning, and the
    cycles do not overlap."""
    name, _tag, _image_id, _digest = deploy(registry)
    proxy = FaultProxy(registry.url, FaultPlan(delay=12)).start()
    try:
        cfg = write_config(
            tmp_path / "dw.yaml",
            {"web": {"container": name, "image": f"{proxy.host}/sample:latest"}},
            extra="registry_timeout: 30s",
        )
        cfg.write_text(cfg.read_text().replace("interval: 1m", "interval: 10s"))
        log = tmp_path / "daemon.log"
        proc = spawn("run", cfg, log)
        try:
            _wait_for(lambda: any(e["event"] == "cycle.skipped" for e in _events(log)), 25, "cycle.skipped")
            _wait_for(lambda: any(e["event"] == "cycle.finished" for e in _events(log)), 30, "the slow cycle")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        events = [e["event"] for e in _events(log)]
        skipped = next(e for e in _events(log) if e["event"] == "cycle.skipped")
        assert skipped["reason"] == "the previous cycle is still running"
        assert skipped["level"] == "warning"
        first_finish = events.index("cycle.finished")
        assert events[:first_finish].count("cycle.started") == 1  # no overlap
    finally:
        proxy.stop()


def test_watchdog_is_fed_only_while_the_scheduler_lives(tmp_path: Path) -> None:
    """WATCHDOG=1 is sent while APScheduler's thread runs, and stops when the scheduler dies, so systemd
    restarts a daemon whose scheduler is gone."""
    cfg = configuration.load(write_config(tmp_path / "dw.yaml", {}))
    notify_path = tmp_path / "notify.sock"
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        sock.bind(str(notify_path))
        sock.settimeout(0.1)
        notifier = Notifier({"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "300000"})
        checker = stack.enter_context(check.connect(cfg))
        running = Daemon(cfg, checker, notifier)

        def pings(seconds: float) -> int:
            count, deadline = 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    count += sock.recv(1024) == b"WATCHDOG=1"
            return count

        server = threading.Thread(target=running.serve, daemon=True)
        server.start()
        try:
            assert pings(0.6) == 0  # not started yet
            running.start()
            assert pings(0.6) >= 2
            running.scheduler.shutdown(wait=False)
            pings(0.2)
            assert pings(0.6) == 0
        finally:
            running.requested = "stop"
            server.join(5)
            running.stop()


def test_gc_runs_on_its_own_schedule_and_follows_a_reload(tmp_path: Path) -> None:
    """The daemon schedules GC on gc.schedule (UTC cron) beside the check cycle, drops it when a reload
    disables GC, and its job collects (logging gc.finished)."""
    path = write_config(tmp_path / "dw.yaml", {}, extra='gc:\n  schedule: "30 3 * * *"\n  min_age: 36500d')
    cfg = configuration.load(path)
    with check.connect(cfg) as checker:
        _gc_follows_reload(path, Daemon(cfg, checker, Notifier({})))


def _gc_follows_reload(path: Path, running: Daemon) -> None:
    running.start()
    try:
        job = running.scheduler.get_job("gc")
        assert job is not None
        fire = job.next_run_time.astimezone(UTC)
        assert (fire.hour, fire.minute) == (3, 30)
        assert fire - datetime.now(UTC) <= timedelta(days=1)
        with capture_logs() as logs:
            job.func()  # what the scheduler calls at 03:30
        assert "gc.finished" in [e["event"] for e in logs]
        path.write_text(path.read_text().replace("gc:\n", "gc:\n  enabled: false\n"))
        running.reload()
        assert running.scheduler.get_job("gc") is None
        assert running.scheduler.get_job("check-cycle") is not None
    finally:
        running.stop()
