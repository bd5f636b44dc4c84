"""Prometheus metrics for `GET /metrics`, on a registry the daemon owns (not prometheus_client's global one).

Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/): a `dockwarden_` prefix,
base units (seconds, bytes) in the name, `_total` on counters. The daemon feeds them from what its cycles,
rollbacks and garbage collections return; nothing here calls the engine or a registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from dockwarden import imageref
from dockwarden.check import CheckResult, Status
from dockwarden.upgrade import Outcome, Result

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a 1-service check (well under a second) to a cycle that upgrades several services with long gates.
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Results that say nothing was attempted: not counted as upgrades.
_NOT_ATTEMPTS = frozenset({Result.UP_TO_DATE, Result.WOULD_UPGRADE})
# Docker Hub's `ratelimit-remaining: 76;w=21600`: the count, then the window.
_REMAINING = re.compile(r"\s*(\d+)")


def ratelimit_count(header: str) -> int | None:
    """The number of pulls left from a `RateLimit-Remaining` header value (`76;w=21600` -> 76), or None if
    it does not start with a number (Docker Hub's format: https://docs.docker.com/docker-hub/usage/pulls/)."""
    match = _REMAINING.match(header)
    return int(match.group(1)) if match else None


class Metrics:
    """Every dockwarden metric, registered on `self.registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.checks = Counter(
            "dockwarden_checks_total", "Checks, by service and result.", ["service", "result"], registry=reg
        )
        self.upgrades = Counter(
            "dockwarden_upgrades_total",
            "Upgrades attempted or skipped, by service and result (up-to-date services not counted).",
            ["service", "result"],
            registry=reg,
        )
        self.rollbacks = Counter(
            "dockwarden_rollbacks_total",
            "Rollbacks, by service, result and trigger (gate: a failed upgrade undone; request: asked for).",
            ["service", "result", "trigger"],
            registry=reg,
        )
        self.cycle_duration = Histogram(
            "dockwarden_cycle_duration_seconds",
            "Update cycles' duration.",
            buckets=CYCLE_BUCKETS,
            registry=reg,
        )
        self.last_success = Gauge(
            "dockwarden_last_successful_cycle_timestamp_seconds",
            "When the last update cycle that ran to its end finished (unix time).",
            registry=reg,
        )
        self.update_available = Gauge(
            "dockwarden_update_available",
            "1 if the last check saw a newer image for the service, else 0.",
            ["service"],
            registry=reg,
        )
        self.retained = Gauge(
            "dockwarden_retained_versions", "Previous versions kept on this host.", ["service"], registry=reg
        )
        self.ratelimit = Gauge(
            "dockwarden_registry_ratelimit_remaining",
            "Pulls left in the registry's window, as its last RateLimit-Remaining header said.",
            ["registry"],
            registry=reg,
        )
        self.gc_reclaimed = Counter(
            "dockwarden_gc_reclaimed_bytes_total", "Bytes garbage collection reclaimed.", registry=reg
        )

    def observe_cycle(
        self,
        checks: Iterable[CheckResult],
        outcomes: Iterable[Outcome],
        seconds: float,
        finished_at: float | None,
    ) -> None:
        """One update cycle's checks and outcomes, its duration, and (if it ran to its end) when it ended."""
        for result in checks:
            self.checks.labels(result.service, result.status).inc()
            if result.status != Status.ERROR:
                self.update_available.labels(result.service).set(result.status == Status.UPDATE_AVAILABLE)
            if result.ratelimit_remaining is not None:
                count = ratelimit_count(result.ratelimit_remaining)
                if count is not None:
                    self.ratelimit.labels(_registry_of(result.image)).set(count)
        for outcome in outcomes:
            if outcome.result in _NOT_ATTEMPTS:
                continue
            self.upgrades.labels(outcome.service, outcome.result).inc()
            if outcome.result in (Result.ROLLED_BACK, Result.ROLLBACK_FAILED):
                self.rollbacks.labels(outcome.service, outcome.result, "gate").inc()
            if outcome.result == Result.UPGRADED:
                self.update_available.labels(outcome.service).set(0)
        self.cycle_duration.observe(seconds)
        if finished_at is not None:
            self.last_success.set(finished_at)

    def observe_rollback(self, outcome: Outcome) -> None:
        self.rollbacks.labels(outcome.service, outcome.result, "request").inc()

    def observe_retained(self, counts: dict[str, int]) -> None:
        """service -> how many versions are retained for it now."""
        for service, count in counts.items():
            self.retained.labels(service).set(count)

    def observe_gc(self, reclaimed_bytes: int) -> None:
        self.gc_reclaimed.inc(max(0, reclaimed_bytes))

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format (`CONTENT_TYPE`), as `GET /metrics` answers it."""
        return generate_latest(self.registry)


def _registry_of(image: str) -> str:
    try:
        return imageref.parse(image).api_host
    except imageref.InvalidReference:
        return "unknown"
