"""What the API asks of the running daemon (`api.Backend`): the CLI's own functions on the daemon's state.

Status and history answer exactly what `status --json` and `history --json` print (`report`'s functions).
An update or a rollback runs through the daemon's own cycle code (`Daemon.run_cycle`, `Daemon.rollback`),
under its cycle lock, so it never runs beside a scheduled cycle: a request waits for the running one at
most `BUSY_WAIT` seconds, then is refused (`api.Busy`, HTTP 409 with `Retry-After`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dockwarden import cycle, report, status, statuspage
from dockwarden.api import Answer, Busy, Stopping, UnknownService
from dockwarden.history import History
from dockwarden.upgrade import Result

if TYPE_CHECKING:
    from dockwarden.daemon import Daemon

BUSY_WAIT = 10.0  # seconds: a scheduled check cycle (no upgrade) ends well within it; an upgrade may not
POLL = 0.2  # seconds between looks at the daemon's stop request while waiting


class Control:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def status(self) -> Answer:
        found = status.gather(self.daemon.checker.engine, self.daemon.config)
        return Answer(body=report.status_json(found))

    def history(self, service: str | None, limit: int) -> Answer:
        cfg = self.daemon.config
        if service is not None and cfg.service(service) is None:
            raise UnknownService(f"no such service: {service}")
        entries = History.of(cfg).entries(service)
        return Answer(body=report.history_json(entries[:limit] if limit else entries))

    def _acquire(self) -> None:
        """Take the cycle lock within BUSY_WAIT seconds (Busy otherwise); a stop ends the wait at once."""
        deadline = time.monotonic() + BUSY_WAIT
        while not self.daemon.cycle_lock.acquire(timeout=POLL):
            if self.daemon.cancel.is_set():
                raise Stopping("dockwarden is stopping")
            if time.monotonic() >= deadline:
                raise Busy(
                    f"an update cycle or rollback is running (waited {BUSY_WAIT:.0f} s); try again later"
                )
        if self.daemon.cancel.is_set():
            self.daemon.cycle_lock.release()
            raise Stopping("dockwarden is stopping")

    def update(self, services: list[str]) -> Answer:
        cfg = self.daemon.config
        unknown = [name for name in services if cfg.service(name) is None]
        if unknown:
            raise UnknownService(f"no such service: {', '.join(unknown)}")
        self._acquire()
        try:
            chosen = [s for s in cfg.services if s.name in services] if services else list(cfg.services)
            options = cycle.Options(named=bool(services), cancel=self.daemon.cancel)
            result = self.daemon.run_cycle(cfg, chosen, options)
        finally:
            self.daemon.cycle_lock.release()
        return Answer(body=report.update_json(result), ok=not result.failed())

    def rollback(self, service: str, to: str | None) -> Answer:
        from dockwarden.rollback import parse_digest  # noqa: PLC0415 -- keeps the import graph one-way

        cfg = self.daemon.config
        found = cfg.service(service)
        if found is None:
            raise UnknownService(f"no such service: {service}")
        digest = parse_digest(to) if to is not None else None  # ValueError: a 400
        self._acquire()
        try:
            outcome = self.daemon.rollback(cfg, found, digest)
        finally:
            self.daemon.cycle_lock.release()
        ok = outcome.result in (Result.REVERTED, Result.UP_TO_DATE)
        return Answer(body=report.update_json(cycle.Report(outcomes=[outcome])), ok=ok)

    def health(self) -> tuple[bool, str]:
        overdue = self.daemon.liveness.overdue()
        if not self.daemon.scheduler_alive():
            return False, "the scheduler is not running"
        if overdue is not None:
            return False, f"stuck in {overdue[0]} for {overdue[1]:.0f} s"
        return True, "ok"

    def metrics(self) -> tuple[bytes, str]:
        from dockwarden.metrics import CONTENT_TYPE  # noqa: PLC0415 -- prometheus_client: only with `api:`

        metrics = self.daemon.metrics
        return (metrics.exposition() if metrics is not None else b""), CONTENT_TYPE

    def page(self) -> str:
        cfg = self.daemon.config
        found = status.gather(self.daemon.checker.engine, cfg)
        entries = History.of(cfg).entries()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return statuspage.render(found, entries, stamp)
