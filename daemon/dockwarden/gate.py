"""The health gate: is a freshly started container good enough to keep?

With a HEALTHCHECK we wait for `healthy` up to a deadline derived from the check's own timing (capped);
without one, the container must keep running for a stability window with no restart and no OOM kill.
An optional probe from the host (HTTP status < 400, or a TCP connect) must also succeed. The deadline
math is a pure function; `wait` is the thin loop that polls the engine.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from dockwarden.engine import EngineError, NotFound

if TYPE_CHECKING:
    from dockwarden.config import Service

POLL = 0.2
NS = 1_000_000_000
# Docker's own defaults for a HEALTHCHECK that leaves a field unset.
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
# From Engine 25 (API 1.44) the engine probes every StartInterval during the start period, 5 s when unset;
# older engines ignore the field and probe at Interval throughout.
DEFAULT_START_INTERVAL = 5.0
START_INTERVAL_API = (1, 44)


class Inspector(Protocol):
    """All the gate asks of an engine: `engine.Engine` satisfies it, and so can a test double."""

    def inspect_container(self, name: str) -> dict[str, Any]:
        """The container's inspect document (`GET /containers/{name}/json`); `name` is a name, an ID or a
        unique ID prefix. Raises NotFound if there is no such container, EngineError if the engine fails."""
        ...

    def stopped_by_request(self, container_id: str, since: float) -> bool:
        """Whether the engine's events since `since` (Unix seconds) show a `kill` or `stop` of the
        container (`GET /events`): it was stopped, by the engine shutting down or by hand, not by itself."""
        ...


@dataclass(frozen=True, kw_only=True)
class Probe:
    kind: str  # "http" or "tcp"
    target: str  # a URL, or HOST:PORT
    timeout: float  # seconds until the probe must have succeeded once


@dataclass(frozen=True, kw_only=True)
class Policy:
    stability: float  # seconds a container without HEALTHCHECK must keep running
    health_timeout_max: float  # cap on the derived wait for `healthy`
    probe: Probe | None = None


class Cause(StrEnum):
    """Whom a failed verdict is about. Only a CONTAINER verdict says anything against the image."""

    CONTAINER = "container"  # the container exited, restarted, was OOM-killed, unhealthy, failed its probe
    ENGINE = "engine"  # the engine could not be asked (unreachable, 5xx, restarted): no verdict on the image
    DOCKWARDEN = "dockwarden"  # dockwarden stopped (or failed) before a verdict


@dataclass(frozen=True, kw_only=True)
class Verdict:
    passed: bool
    reason: str  # why it failed, or what it waited for
    cause: Cause = Cause.CONTAINER  # for a failed verdict: what it is about


@dataclass(frozen=True, kw_only=True)
class Timing:
    """The figures behind the wait for `healthy`, in seconds, for the gate's log line."""

    interval: float
    timeout: float
    retries: int
    start_period: float
    start_interval: float  # 0 where the engine probes at `interval` during the start period too
    deadline: float


def has_healthcheck(config: dict[str, Any]) -> bool:
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def engine_start_interval(api_version: object) -> float | None:
    """The StartInterval an engine uses when a HEALTHCHECK leaves it unset: 5 s from API 1.44 (Engine 25),
    None before (those engines have no start interval)."""
    major, _, minor = str(api_version or "").partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return DEFAULT_START_INTERVAL if (int(major), int(minor)) >= START_INTERVAL_API else None


def health_timing(healthcheck: dict[str, Any], cap: float, start_interval: float | None = None) -> Timing:
    """How long to wait for `healthy`: the start period plus every retry the engine makes, at most `cap`.

    The engine declares a container unhealthy after `retries` consecutive failures at `interval` (each
    taking up to `timeout`), counted from the end of the start period, so no sooner verdict is possible.
    During the start period an engine from API 1.44 probes every `StartInterval` (the container's, else
    `start_interval`, the engine's default; None: an older engine), so the first probe after the start
    period may come up to one start interval (plus its timeout) late.
    """
    interval = (healthcheck.get("Interval") or 0) / NS or DEFAULT_INTERVAL
    timeout = (healthcheck.get("Timeout") or 0) / NS or DEFAULT_TIMEOUT
    retries = int(healthcheck.get("Retries") or DEFAULT_RETRIES)
    start_period = (healthcheck.get("StartPeriod") or 0) / NS
    own = (healthcheck.get("StartInterval") or 0) / NS
    start = (own or start_interval or 0.0) if start_period else 0.0  # only used during a start period
    late = start + timeout if start else 0.0
    total = min(cap, start_period + late + (retries + 1) * (interval + timeout))
    return Timing(
        interval=interval,
        timeout=timeout,
        retries=retries,
        start_period=start_period,
        start_interval=start,
        deadline=total,
    )


def health_deadline(healthcheck: dict[str, Any], cap: float, start_interval: float | None = None) -> float:
    """Seconds to wait for `healthy` (`health_timing`)."""
    return health_timing(healthcheck, cap, start_interval).deadline


def _probe_once(probe: Probe, budget: float) -> str | None:
    """None when the probe succeeds, else why not."""
    try:
        if probe.kind == "tcp":
            host, _, port = probe.target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=budget):
                return None
        with urllib.request.urlopen(probe.target, timeout=budget) as response:  # noqa: S310 (URL from config)
            return None if response.status < 400 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def _state_problem(state: dict[str, Any], restarts: int, baseline: int) -> str | None:
    if state.get("OOMKilled"):
        return "killed for lack of memory (OOM)"
    if state.get("Status") != "running":
        return f"not running ({state.get('Status')}, exit code {state.get('ExitCode')})"
    if restarts != baseline:
        return f"restarted {restarts - baseline} times"
    return None


class Watch:
    """The verdict so far from successive inspect documents; pure, so tests feed it recorded states."""

    def __init__(
        self,
        first: dict[str, Any],
        policy: Policy,
        started: float,
        restarts: int,
        start_interval: float | None = None,
    ) -> None:
        config = first.get("Config") or {}
        self.policy = policy
        self.started = started
        self.checked = has_healthcheck(config)
        # The count before *our* start, from the caller: by the first poll the engine may already have
        # restarted a crashing container, which must not become the baseline.
        self.baseline = restarts
        self.timing: Timing | None = None
        if self.checked:
            self.timing = health_timing(
                config.get("Healthcheck") or {}, policy.health_timeout_max, start_interval
            )
            self.deadline = started + self.timing.deadline
            self.waiting_for = "healthy"
        else:
            self.deadline = started + policy.stability
            self.waiting_for = f"running for {policy.stability:g}s"
        self.probe_deadline = started + (policy.probe.timeout if policy.probe else 0)
        self.probe_error: str | None = "not probed yet" if policy.probe else None

    def observe(self, data: dict[str, Any], now: float) -> Verdict | None:
        """A verdict, or None to keep waiting."""
        state = data.get("State") or {}
        problem = _state_problem(state, int(data.get("RestartCount") or 0), self.baseline)
        healthy = True
        if problem is None and self.checked:
            status = (state.get("Health") or {}).get("Status")
            problem = "unhealthy (its HEALTHCHECK failed)" if status == "unhealthy" else None
            healthy = status == "healthy"
            if not healthy and now >= self.deadline:
                problem = f"not healthy after {self.deadline - self.started:.0f}s"
        if problem is None and self.probe_error is not None and now >= self.probe_deadline:
            problem = (
                f"probe {self.policy.probe.target if self.policy.probe else ''} failed: {self.probe_error}"
            )
        if problem is not None:
            return Verdict(passed=False, reason=problem)
        # Without a HEALTHCHECK the window must elapse; with one, `healthy` ends the wait at once.
        if healthy and (self.checked or now >= self.deadline) and self.probe_error is None:
            return Verdict(passed=True, reason=self.waiting_for)
        return None


def _started_at(data: dict[str, Any]) -> float | None:
    """When the container last started (`State.StartedAt`, RFC 3339 with nanoseconds, the engine's clock),
    in Unix seconds; None if it never did or the text does not parse. A stop asked for before that cannot
    explain how it is now (dockwarden's own stop of an old version it starts again in an undo)."""
    text = str((data.get("State") or {}).get("StartedAt") or "")
    head, _, fraction = text.rstrip("Z").partition(".")
    try:
        started = datetime.fromisoformat(head + (f".{fraction[:6]}" if fraction else "")).replace(tzinfo=UTC)
    except ValueError:
        return None
    return started.timestamp() if started.year > 1 else None


def _stopped(data: dict[str, Any], restarts: int) -> bool:
    """Whether a failed verdict is about the container not running, or having restarted, which a stop
    from outside would explain (an OOM kill, an unhealthy status or a failed probe would not)."""
    state = data.get("State") or {}
    if state.get("OOMKilled"):
        return False
    return state.get("Status") != "running" or int(data.get("RestartCount") or 0) != restarts


def _cause(exc: EngineError) -> Cause:
    # A container that is gone was most likely removed by the engine after it exited (AutoRemove): that is
    # the container's doing. Any other failure to inspect is the engine's.
    return Cause.CONTAINER if isinstance(exc, NotFound) else Cause.ENGINE


def _about_the_container(engine: Inspector, container_id: str, verdict: Verdict, since: float) -> Verdict:
    """`verdict` (a failure of the container itself), unless the engine's events show the container was
    stopped rather than exiting by itself: an engine shutting down for a restart stops every container
    first (and a keep-alive connection still sees that), and a `docker stop` by hand says nothing about the
    image either. Then, or when the engine cannot be asked, the failure is the engine's."""
    try:
        stopped = engine.stopped_by_request(container_id, since)
    except EngineError as exc:
        return Verdict(passed=False, reason=f"{verdict.reason}; then {exc}", cause=Cause.ENGINE)
    if not stopped:
        return verdict
    reason = f"{verdict.reason}: stopped from outside (the engine's events show a kill or a stop)"
    return Verdict(passed=False, reason=reason, cause=Cause.ENGINE)


def wait(
    engine: Inspector,
    container_id: str,
    policy: Policy,
    restarts: int = 0,
    cancel: threading.Event | None = None,
) -> Verdict:
    """Poll the container until the gate passes or fails; `restarts` is its RestartCount before start.

    An engine that fails to answer gives a verdict about the engine (Cause.ENGINE), not the container."""
    started = time.monotonic()
    # `Engine.api_version` (negotiated); a test double without one is an engine before API 1.44.
    start_interval = engine_start_interval(getattr(engine, "api_version", None))
    try:
        watch = Watch(engine.inspect_container(container_id), policy, started, restarts, start_interval)
    except EngineError as exc:
        return Verdict(passed=False, reason=str(exc), cause=_cause(exc))
    if watch.timing is not None:
        structlog.get_logger("dockwarden.gate").info(
            "gate.waiting", container=container_id[:12], **vars(watch.timing)
        )
    while True:
        if cancel is not None and cancel.is_set():
            return Verdict(passed=False, reason="cancelled: dockwarden is stopping", cause=Cause.DOCKWARDEN)
        try:
            data = engine.inspect_container(container_id)
        except EngineError as exc:
            return Verdict(passed=False, reason=str(exc), cause=_cause(exc))
        if policy.probe and watch.probe_error is not None:
            watch.probe_error = _probe_once(policy.probe, POLL * 5)
        verdict = watch.observe(data, time.monotonic())
        since = _started_at(data)
        if verdict is not None and not verdict.passed and since is not None and _stopped(data, restarts):
            return _about_the_container(engine, container_id, verdict, since)
        if verdict is not None:
            return verdict
        time.sleep(POLL)


def policy_for(service: Service, health_timeout_max: timedelta) -> Policy:
    """The gate a service's successor must pass: its probe and stability window, the global wait cap."""
    probe = None
    if service.probe is not None:
        probe = Probe(
            kind=service.probe.kind,
            target=service.probe.target,
            timeout=service.probe.timeout.total_seconds(),
        )
    return Policy(
        stability=service.stability_window.total_seconds(),
        health_timeout_max=health_timeout_max.total_seconds(),
        probe=probe,
    )
