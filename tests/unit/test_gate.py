"""The health gate's deadline and verdicts, from recorded inspect states and a fake clock."""

from __future__ import annotations

import http.server
import threading
from typing import Any

import pytest

from dockwarden import gate
from dockwarden.engine import EngineError, NotFound, Unreachable

NS = 1_000_000_000
POLICY = gate.Policy(stability=10.0, health_timeout_max=300.0)
HEALTHCHECK = {"Test": ["CMD-SHELL", "true"], "Interval": 2 * NS, "Timeout": 1 * NS, "Retries": 3}


def _inspect(
    status: str = "running", health: str | None = None, restarts: int = 0, **state: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {"Healthcheck": HEALTHCHECK} if health is not None else {}
    full_state: dict[str, Any] = {
        "Status": status,
        "ExitCode": 0,
        "OOMKilled": False,
        "StartedAt": "2026-11-30T06:00:00.123456789Z",
        **state,
    }
    if health is not None:
        full_state["Health"] = {"Status": health}
    return {"Config": config, "State": full_state, "RestartCount": restarts}


def test_deadline_comes_from_the_healthcheck_timing() -> None:
    """start period + (retries + 1) x (interval + timeout), with Docker's defaults, capped."""
    assert gate.health_deadline({**HEALTHCHECK, "StartPeriod": 5 * NS}, 300) == 5 + 4 * 3
    assert gate.health_deadline({"Test": ["CMD", "true"]}, 1000) == 4 * 60  # Docker's defaults: 30 s, 30 s, 3
    assert gate.health_deadline({"Test": ["CMD", "true"]}, 90) == 90


def test_start_interval_delays_the_first_probe_after_the_start_period() -> None:
    """From API 1.44 the deadline adds one start interval (the container's, else 5 s) and its timeout."""
    with_start = {**HEALTHCHECK, "StartPeriod": 5 * NS}
    assert gate.health_deadline(with_start, 300, gate.DEFAULT_START_INTERVAL) == 5 + (5 + 1) + 4 * 3
    own = {**with_start, "StartInterval": 1 * NS}
    assert gate.health_deadline(own, 300) == 5 + (1 + 1) + 4 * 3  # the container's own needs no API hint
    assert gate.health_deadline(own, 300, gate.DEFAULT_START_INTERVAL) == 5 + (1 + 1) + 4 * 3


def test_start_interval_is_ignored_without_a_start_period_or_before_api_1_44() -> None:
    """No start period means no start-interval probing; an older engine (None) probes at Interval."""
    assert gate.health_deadline(HEALTHCHECK, 300, gate.DEFAULT_START_INTERVAL) == 4 * 3
    assert gate.health_deadline({**HEALTHCHECK, "StartPeriod": 5 * NS}, 300, None) == 5 + 4 * 3


@pytest.mark.parametrize(
    ("api", "expected"),
    [("1.44", 5.0), ("1.47", 5.0), ("2.0", 5.0), ("1.43", None), ("1.41", None), (None, None), ("x", None)],
)
def test_engine_start_interval_from_the_api_version(api: str | None, expected: float | None) -> None:
    """Engines from API 1.44 (Engine 25) default StartInterval to 5 s; older ones have none."""
    assert gate.engine_start_interval(api) == expected


def test_timing_figures_are_the_ones_the_deadline_uses() -> None:
    """The gate logs the interval, timeout, retries, start period and start interval behind its deadline."""
    timing = gate.health_timing({**HEALTHCHECK, "StartPeriod": 5 * NS}, 300, 5.0)
    assert (timing.interval, timing.timeout, timing.retries) == (2.0, 1.0, 3)
    assert (timing.start_period, timing.start_interval, timing.deadline) == (5.0, 5.0, 23.0)


def test_a_watch_on_a_new_engine_waits_out_the_start_interval() -> None:
    """A container still `starting` just past the old deadline is not failed on an engine from API 1.44."""
    first = _inspect(health="starting")
    first["Config"]["Healthcheck"] = {**HEALTHCHECK, "StartPeriod": 5 * NS}
    old = gate.Watch(first, POLICY, started=0.0, restarts=0)
    new = gate.Watch(first, POLICY, started=0.0, restarts=0, start_interval=5.0)
    assert old.observe(first, now=18.0) is not None
    assert new.observe(first, now=18.0) is None


def test_engine_errors_in_the_gate_are_about_the_engine() -> None:
    """An inspect that fails gives a verdict about the engine; a vanished container one about itself."""

    class Gone:
        def __init__(self, error: Exception) -> None:
            self.error, self.calls = error, 0

        def inspect_container(self, name: str) -> dict[str, Any]:
            self.calls += 1
            if self.calls > 1:
                raise self.error
            return _inspect(health="starting")

        def stopped_by_request(self, container_id: str, since: float) -> bool:
            return False

    engine_down = gate.wait(Gone(EngineError("500 Internal Server Error")), "c1", POLICY)
    assert (engine_down.passed, engine_down.cause) == (False, gate.Cause.ENGINE)
    removed = gate.wait(Gone(NotFound("no such container")), "c1", POLICY)
    assert (removed.passed, removed.cause) == (False, gate.Cause.CONTAINER)


class Exits:
    """An engine whose container has exited at the first poll; its events say whether it was stopped."""

    def __init__(self, stopped: bool | Exception, **state: Any) -> None:
        self.stopped, self.state = stopped, state

    def inspect_container(self, name: str) -> dict[str, Any]:
        return _inspect(status="exited", **self.state)

    def stopped_by_request(self, container_id: str, since: float) -> bool:
        if isinstance(self.stopped, Exception):
            raise self.stopped
        return self.stopped


def test_a_stop_is_looked_for_since_the_containers_last_start() -> None:
    """The events are read from State.StartedAt (nanoseconds cut to microseconds), the engine's own clock;
    a container that never started is not asked about."""
    asked: list[float] = []

    class Recording(Exits):
        def stopped_by_request(self, container_id: str, since: float) -> bool:
            asked.append(since)
            return False

    gate.wait(Recording(False), "c1", POLICY)
    assert asked == [1796018400.123456]
    gate.wait(Recording(False, StartedAt="0001-01-01T00:00:00Z"), "c1", POLICY)
    assert len(asked) == 1


@pytest.mark.parametrize(
    ("engine", "cause"),
    [
        (Exits(False), gate.Cause.CONTAINER),
        (Exits(True), gate.Cause.ENGINE),
        (Exits(Unreachable("cannot connect")), gate.Cause.ENGINE),
        (Exits(True, OOMKilled=True), gate.Cause.CONTAINER),
    ],
    ids=["exited-by-itself", "stopped-from-outside", "engine-gone-since", "oom-killed"],
)
def test_an_exit_is_the_containers_unless_something_stopped_it(engine: Exits, cause: gate.Cause) -> None:
    """A successor that is not running is a verdict on it, unless the engine's events show a kill or stop
    (an engine shutting down for a restart, a docker stop by hand) or the engine cannot say: then the
    engine's; an OOM kill is the container's whatever the events say."""
    verdict = gate.wait(engine, "c1", POLICY)
    assert (verdict.passed, verdict.cause) == (False, cause)


def test_healthcheck_none_counts_as_no_healthcheck() -> None:
    """HEALTHCHECK NONE in an image disables its parent's check: no health to wait for."""
    assert not gate.has_healthcheck({"Healthcheck": {"Test": ["NONE"]}})
    assert gate.has_healthcheck({"Healthcheck": HEALTHCHECK})


def test_no_healthcheck_passes_only_after_the_whole_window() -> None:
    """Without a HEALTHCHECK the container must be seen running until the window has elapsed."""
    watch = gate.Watch(_inspect(), POLICY, started=0.0, restarts=0)
    assert watch.observe(_inspect(), 9.9) is None
    verdict = watch.observe(_inspect(), 10.0)
    assert verdict is not None
    assert verdict.passed


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (_inspect(status="exited", ExitCode=1), "not running (exited, exit code 1)"),
        (_inspect(status="restarting"), "not running (restarting"),
        (_inspect(restarts=1), "restarted 1 times"),
        (_inspect(OOMKilled=True), "OOM"),
    ],
)
def test_no_healthcheck_fails_on_exit_restart_or_oom(state: dict[str, Any], reason: str) -> None:
    """An exit, a restart by the engine or an OOM kill within the window fails the gate at once."""
    watch = gate.Watch(_inspect(), POLICY, started=0.0, restarts=0)
    verdict = watch.observe(state, 1.0)
    assert verdict is not None
    assert not verdict.passed
    assert reason in verdict.reason


def test_restarts_before_the_first_poll_still_count() -> None:
    """A crash-looping container whose first poll already shows a restart fails, though it looks running."""
    watch = gate.Watch(_inspect(restarts=2), POLICY, started=0.0, restarts=0)
    verdict = watch.observe(_inspect(restarts=2), 11.0)
    assert verdict is not None
    assert not verdict.passed


def test_healthy_passes_at_once_and_unhealthy_fails_at_once() -> None:
    """With a HEALTHCHECK, `healthy` ends the wait and `unhealthy` fails it, whatever the time."""
    watch = gate.Watch(_inspect(health="starting"), POLICY, started=0.0, restarts=0)
    assert watch.observe(_inspect(health="starting"), 1.0) is None
    passed = watch.observe(_inspect(health="healthy"), 1.5)
    assert passed is not None
    assert passed.passed
    failed = watch.observe(_inspect(health="unhealthy"), 1.5)
    assert failed is not None
    assert "unhealthy" in failed.reason


def test_starting_past_the_deadline_fails() -> None:
    """Still `starting` after the derived deadline (12 s here) fails the gate."""
    watch = gate.Watch(_inspect(health="starting"), POLICY, started=0.0, restarts=0)
    assert watch.observe(_inspect(health="starting"), 11.9) is None
    verdict = watch.observe(_inspect(health="starting"), 12.0)
    assert verdict is not None
    assert "not healthy after 12s" in verdict.reason


def test_probe_must_succeed_within_its_timeout() -> None:
    """A configured probe that has not succeeded by its timeout fails the gate; once it succeeded, the
    window decides."""
    policy = gate.Policy(
        stability=2.0,
        health_timeout_max=300.0,
        probe=gate.Probe(kind="tcp", target="127.0.0.1:1", timeout=5.0),
    )
    watch = gate.Watch(_inspect(), policy, started=0.0, restarts=0)
    watch.probe_error = "connection refused"
    assert watch.observe(_inspect(), 4.0) is None
    verdict = watch.observe(_inspect(), 5.0)
    assert verdict is not None
    assert "probe 127.0.0.1:1 failed: connection refused" in verdict.reason
    ok = gate.Watch(_inspect(), policy, started=0.0, restarts=0)
    ok.probe_error = None
    passed = ok.observe(_inspect(), 2.0)
    assert passed is not None
    assert passed.passed


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_host_probes_against_a_real_loopback_server() -> None:
    """HTTP passes below 400 and reports the status otherwise; TCP passes on connect and reports a refusal."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert (
            gate._probe_once(gate.Probe(kind="http", target=f"http://127.0.0.1:{port}/ok", timeout=1), 1.0)
            is None
        )
        assert (
            gate._probe_once(gate.Probe(kind="http", target=f"http://127.0.0.1:{port}/bad", timeout=1), 1.0)
            == "HTTP 503"
        )
        assert gate._probe_once(gate.Probe(kind="tcp", target=f"127.0.0.1:{port}", timeout=1), 1.0) is None
    finally:
        server.shutdown()
        server.server_close()
    refused = gate._probe_once(gate.Probe(kind="tcp", target=f"127.0.0.1:{port}", timeout=1), 1.0)
    assert refused is not None
    assert "refused" in refused.lower()
