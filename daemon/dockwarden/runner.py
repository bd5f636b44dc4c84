"""The transaction runner: one upgrade (or rollback) of one container, under its lock, then what follows.

Needs only the engine and state_dir, never a registry. For the update cycle and `dockwarden rollback`
alike, in this order: take the container's lock (one transaction per container across processes), run the
`Upgrade`, redo the containers that shared the old container's network namespace or linked to it,
restart the compose containers that depend on it with `restart: true` (as compose would), and, when the
service switched image, keep the image it left as its newest previous version. Skip-list decisions stay
with the callers, because an upgrade and a rollback record different things.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from dockwarden import compose, namespace, recovery, retention
from dockwarden.engine import Engine, EngineError
from dockwarden.history import Event, History
from dockwarden.locks import Busy, ContainerLock
from dockwarden.neighbours import Refresher
from dockwarden.skiplist import SkipList
from dockwarden.upgrade import Hooks, Outcome, Result, Target, Upgrade


class Runner:
    def __init__(
        self,
        engine: Engine,
        state_dir: Path,
        journal: History,
        hooks: Hooks | None = None,
        upgrading: threading.Event | None = None,
        skips: SkipList | None = None,
        neighbours: Refresher | None = None,
    ) -> None:
        self.engine = engine
        self.state_dir = state_dir
        # The daemon passes the one it holds for its life, so a skip that cannot be written still holds.
        self.skips = skips if skips is not None else SkipList(state_dir)
        self.journal = journal
        # One per daemon (passed in), so that a missing capability is logged once, not once per cycle.
        self.neighbours = neighbours or Refresher()
        hooks = hooks or Hooks()
        self.hooks = hooks if hooks.started is not None else dataclasses.replace(hooks, started=self.refresh)
        self.log = structlog.get_logger("dockwarden.update")
        # Set while a transaction runs, so a stop waits for its end (the daemon shares one across cycles).
        self.upgrading = upgrading if upgrading is not None else threading.Event()

    def locked(
        self,
        service: str,
        container: str,
        work: Callable[[], Outcome],
        digests: tuple[str | None, str | None],
    ) -> Outcome:
        """`work()` with `container`'s lock held and `upgrading` set; a lock held by another live process
        gives SKIPPED, an unusable state_dir ERROR (`digests`: the outcome's from and to digest then)."""
        try:
            with ContainerLock(self.state_dir, container):
                self.upgrading.set()
                try:
                    return work()
                finally:
                    self.upgrading.clear()
        except Busy as exc:
            self.log.warning(
                "upgrade.skipped",
                service=service,
                from_digest=digests[0],
                to_digest=digests[1],
                reason=str(exc),
            )
            result, error = Result.SKIPPED, str(exc)
        except OSError as exc:
            result, error = Result.ERROR, f"cannot lock in state_dir {self.state_dir}: {exc}"
        return Outcome(
            service=service,
            container=container,
            from_digest=digests[0],
            to_digest=digests[1],
            result=result,
            error=error,
        )

    def refresh(self, container_id: str) -> None:
        """Refresh the host's neighbour entries for a container that just started (`neighbours`); an
        engine that cannot say where it is connected is logged, never raised: the start itself worked."""
        try:
            endpoints = self.engine.bridge_endpoints(container_id)
        except EngineError as exc:
            self.log.warning("neighbour.refresh_failed", container=container_id[:12], error=str(exc))
            return
        self.neighbours.refresh(container_id[:12], endpoints)

    def transact(self, target: Target, keep_previous: int) -> Outcome:
        """Run the transaction and what follows a switch; the caller holds the lock (`locked`)."""
        linked = namespace.linkers(self.engine, target.container)
        # The set-aside record, written under the lock this caller holds: what proves the set-aside
        # container ours if the process dies before its successor exists (recovery.record).
        hooks = dataclasses.replace(
            self.hooks, set_aside=lambda aside_id: recovery.record(self.state_dir, target.container, aside_id)
        )
        outcome = Upgrade(self.engine, target, hooks).run()
        namespace.follow_up(self.engine, self.state_dir, target, outcome, self.hooks, linked)
        if outcome.result == Result.UPGRADED and outcome.replaced is not None:
            compose.restart_dependents(self.engine, target.container)
        if outcome.switched:
            self._retain(target, outcome, keep_previous)
        return outcome

    def upgrade(self, target: Target, keep_previous: int) -> Outcome:
        """`transact` under the target container's lock."""
        return self.locked(
            target.service,
            target.container,
            lambda: self.transact(target, keep_previous),
            (target.from_digest, target.to_digest),
        )

    def record(self, outcome: Outcome, event: Event = Event.UPGRADE) -> None:
        """Record `outcome` in the history: a skip with its reason; an attempt (or any on-demand rollback),
        whatever its end. Results of the check alone (up to date, a registry error) are already in its
        `checked` entry."""
        if outcome.result == Result.SKIPPED:
            self.journal.record(
                Event.SKIPPED, outcome.service, reason=outcome.error, digest=outcome.to_digest
            )
            return
        attempted = outcome.step is not None or outcome.result not in (Result.UP_TO_DATE, Result.ERROR)
        if attempted or event == Event.ROLLBACK:
            fields = {k: v for k, v in outcome.to_json().items() if k != "service"}
            duration = round(outcome.duration, 3)
            self.journal.record(
                event, outcome.service, **fields, verdict=outcome.verdict, duration_s=duration
            )

    def _retain(self, target: Target, outcome: Outcome, keep: int) -> None:
        """Keep the image the service ran until now as its newest previous version; let go of the oldest."""
        try:
            images = self.engine.images()
            containers = self.engine.containers()
        except EngineError as exc:
            self.log.error("retention.failed", service=target.service, error=str(exc))
            return
        old_tags = tuple(tag for image in images if image.id == outcome.old_image for tag in image.tags)
        todo = retention.plan(
            target.container,
            target.ref.name,
            retention.versions(images, target.container),
            str(outcome.new_image),
            outcome.old_image,
            keep,
            datetime.now(UTC),
            retention.users(containers),
            old_tags,
        )
        retention.apply(
            self.engine,
            target.service,
            todo,
            lambda event, **f: self.journal.record(event, target.service, **f),
        )
