"""Metrics: what a cycle, a rollback and a GC add, on the daemon's own registry, never the global one."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from dockwarden import metrics
from dockwarden.check import CheckResult, Status
from dockwarden.upgrade import Outcome, Result


def _check(
    service: str, status: Status, remaining: str | None = None, image: str = "127.0.0.1:5000/a:1"
) -> CheckResult:
    return CheckResult(
        service=service,
        container=service,
        image=image,
        running_digest=None,
        registry_digest=None,
        status=status,
        ratelimit_remaining=remaining,
    )


def _outcome(service: str, result: Result) -> Outcome:
    return Outcome(service=service, container=service, from_digest=None, to_digest=None, result=result)


def _samples(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_cycle_counts_checks_upgrades_and_gate_rollbacks() -> None:
    """Checks by status, attempted upgrades by result (up-to-date not counted), automatic rollbacks, the
    update-available gauge, the duration histogram and the last successful cycle's time."""
    m = metrics.Metrics()
    m.observe_cycle(
        [
            _check("web", Status.UPDATE_AVAILABLE),
            _check("db", Status.UPDATE_AVAILABLE),
            _check("cache", Status.UP_TO_DATE),
        ],
        [
            _outcome("web", Result.UPGRADED),
            _outcome("db", Result.ROLLED_BACK),
            _outcome("cache", Result.UP_TO_DATE),
        ],
        1.5,
        1_800_000_000.0,
    )
    s = _samples(m)
    assert s[("dockwarden_checks_total", (("result", "update-available"), ("service", "web")))] == 1
    assert s[("dockwarden_checks_total", (("result", "up-to-date"), ("service", "cache")))] == 1
    assert s[("dockwarden_upgrades_total", (("result", "upgraded"), ("service", "web")))] == 1
    assert s[("dockwarden_upgrades_total", (("result", "rolled-back"), ("service", "db")))] == 1
    assert ("dockwarden_upgrades_total", (("result", "up-to-date"), ("service", "cache"))) not in s
    assert (
        s[("dockwarden_rollbacks_total", (("result", "rolled-back"), ("service", "db"), ("trigger", "gate")))]
        == 1
    )
    assert s[("dockwarden_update_available", (("service", "web"),))] == 0  # upgraded since the check
    assert s[("dockwarden_update_available", (("service", "db"),))] == 1
    assert s[("dockwarden_cycle_duration_seconds_count", ())] == 1
    assert s[("dockwarden_cycle_duration_seconds_bucket", (("le", "2.5"),))] == 1
    assert s[("dockwarden_cycle_duration_seconds_bucket", (("le", "1.0"),))] == 0
    assert s[("dockwarden_last_successful_cycle_timestamp_seconds", ())] == 1_800_000_000.0


def test_a_cancelled_cycle_does_not_move_the_last_success() -> None:
    """A cycle that did not run to its end is timed but is not a success."""
    m = metrics.Metrics()
    m.observe_cycle([], [], 0.2, None)
    s = _samples(m)
    assert s[("dockwarden_cycle_duration_seconds_count", ())] == 1
    assert s[("dockwarden_last_successful_cycle_timestamp_seconds", ())] == 0


def test_rollbacks_retention_gc_and_rate_limit() -> None:
    """A requested rollback, the retained versions per service, GC bytes and a registry's pull budget."""
    m = metrics.Metrics()
    m.observe_rollback(_outcome("web", Result.REVERTED))
    m.observe_retained({"web": 2, "db": 0})
    m.observe_gc(1024)
    m.observe_gc(2048)
    m.observe_cycle(
        [_check("web", Status.UP_TO_DATE, "76;w=21600", "docker.io/library/busybox:1")], [], 0.1, 1.0
    )
    s = _samples(m)
    assert (
        s[
            (
                "dockwarden_rollbacks_total",
                (("result", "reverted"), ("service", "web"), ("trigger", "request")),
            )
        ]
        == 1
    )
    assert s[("dockwarden_retained_versions", (("service", "web"),))] == 2
    assert s[("dockwarden_retained_versions", (("service", "db"),))] == 0
    assert s[("dockwarden_gc_reclaimed_bytes_total", ())] == 3072
    assert s[("dockwarden_registry_ratelimit_remaining", (("registry", "registry-1.docker.io"),))] == 76


def test_ratelimit_header_values() -> None:
    """Docker Hub's `N;w=SECONDS` gives N; anything not starting with a number gives None."""
    assert metrics.ratelimit_count("76;w=21600") == 76
    assert metrics.ratelimit_count(" 0") == 0
    assert metrics.ratelimit_count("unlimited") is None


def test_two_daemons_metrics_do_not_share_a_registry() -> None:
    """Each Metrics has its own registry, and nothing lands in prometheus_client's global one."""
    one, two = metrics.Metrics(), metrics.Metrics()
    one.observe_gc(5)
    assert _samples(two)[("dockwarden_gc_reclaimed_bytes_total", ())] == 0
    assert REGISTRY.get_sample_value("dockwarden_gc_reclaimed_bytes_total") is None
