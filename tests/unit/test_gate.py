"""The health gate's deadline and verdicts, from recorded inspect states and a fake clock."""

from __future__ import annotations

import http.server
import threading
from typing import Any

import pytest

from dockwarden import gate

NS = 1_000_000_000
POLICY = gate.Policy(stability=10.0, health_timeout_max=300.0)
HEALTHCHECK = {"Test": ["CMD-SHELL", "true"], "Interval": 2 * NS, "Timeout": 1 * NS, "Retries": 3}


def _inspect(
    status: str = "running", health: str | None = None, restarts: int = 0, **state: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {"Healthcheck": HEALTHCHECK} if health is not None else {}
    full_state: dict[str, Any] = {"Status": status, "ExitCode": 0, "OOMKilled": False, **state}
    if health is not None:
        full_state["Health"] = {"Status": health}
    return {"Config": config, "State": full_state, "RestartCount": restarts}


def test_deadline_comes_from_the_healthcheck_timing() -> None:
    """start period + (retries + 1) x (interval + timeout), with Docker's defaults, capped."""
    assert gate.health_deadline({**HEALTHCHECK, "StartPeriod": 5 * NS}, 300) == 5 + 4 * 3
    assert gate.health_deadline({"Test": ["CMD", "true"]}, 1000) == 4 * 60  # Docker's defaults: 30 s, 30 s, 3
    assert gate.health_deadline({"Test": ["CMD", "true"]}, 90) == 90


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
