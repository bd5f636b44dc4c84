"""One update cycle: finish interrupted upgrades, check, then upgrade what changed, in dependency order.

Shared by the daemon's scheduled job and `dockwarden update`. Per service it decides, from data, whether
to upgrade (auto mode or named on the command line, a newer digest, not on the skip list, lock free),
then runs the transaction in `upgrade`. A failure never stops the other services.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from dockwarden import check, gate, history, imageref, recreate, retention, upgrade
from dockwarden.check import Checker, CheckResult
from dockwarden.config import Config, Service
from dockwarden.engine import Engine, EngineError
from dockwarden.history import History
from dockwarden.locks import Busy, ContainerLock
from dockwarden.skiplist import Entry, SkipList
from dockwarden.upgrade import Outcome, Target

WOULD_UPGRADE = "would-upgrade"  # --dry-run's result for a service it would upgrade
REVERTED = "reverted"  # `dockwarden rollback`: the service runs the older version now


@dataclass
class Options:
    named: bool = False  # services were named on the command line: upgrade them even in monitor mode
    force: bool = False  # ignore the skip list
    dry_run: bool = False
    cancel: threading.Event | None = None
    checkpoint: upgrade.Checkpoint | None = None
    progress: upgrade.Progress | None = None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)  # service -> dry-run description

    def failed(self) -> bool:
        return any(
            o.result in (upgrade.ROLLED_BACK, upgrade.ROLLBACK_FAILED, upgrade.ERROR) for o in self.outcomes
        )


def record_checks(journal: History, results: Iterable[CheckResult]) -> None:
    for r in results:
        journal.record(
            history.CHECKED,
            r.service,
            status=r.status,
            running_digest=r.running_digest,
            registry_digest=r.registry_digest,
            error=r.error,
            reason=r.reason,
        )


def record_outcome(journal: History, outcome: Outcome, event: str = history.UPGRADE) -> None:
    """A skip with its reason; an attempt (or any on-demand rollback), whatever its end. Results of the
    check alone (up to date, a registry error) are already in its `checked` entry."""
    if outcome.result == upgrade.SKIPPED:
        journal.record(history.SKIPPED, outcome.service, reason=outcome.error, digest=outcome.to_digest)
        return
    attempted = outcome.step is not None or outcome.result not in (upgrade.UP_TO_DATE, upgrade.ERROR)
    if attempted or event == history.ROLLBACK:
        fields = {k: v for k, v in outcome.to_json().items() if k != "service"}
        duration = round(outcome.duration, 3)
        journal.record(event, outcome.service, **fields, verdict=outcome.verdict, duration_s=duration)


def policy_for(cfg: Config, service: Service) -> gate.Policy:
    probe = None
    if service.probe is not None:
        probe = gate.Probe(service.probe.kind, service.probe.target, service.probe.timeout.total_seconds())
    window = service.stability_window
    return gate.Policy(window.total_seconds(), cfg.health_timeout_max.total_seconds(), probe)


def order(services: list[Service], parents: dict[str, str]) -> list[Service]:
    """Config order, except that a service comes after those it depends on and after the container whose
    network namespace it shares (`parents`: service -> service)."""
    names = {s.name for s in services}
    needs = {
        s.name: ({*s.depends_on, *([parents[s.name]] if s.name in parents else [])} & names) for s in services
    }
    done: list[Service] = []
    left = list(services)
    while left:
        ready = next(
            (s for s in left if needs[s.name] <= {d.name for d in done}), left[0]
        )  # loops: config order
        done.append(ready)
        left.remove(ready)
    return done


UPGRADE = "upgrade"


def decide(
    service: Service, result: CheckResult, skipped: Entry | None, options: Options
) -> tuple[str, str | None]:
    """What to do with one checked service: UPGRADE, or a final result and its reason."""
    if result.status == check.ERROR:
        return upgrade.ERROR, result.error
    if result.status == check.UP_TO_DATE:
        return upgrade.UP_TO_DATE, None
    if service.update != "auto" and not options.named:
        return upgrade.SKIPPED, "update: monitor"
    digest = str(result.registry_digest)
    if skipped is not None and digest in skipped.digests and not options.force:
        return (
            upgrade.SKIPPED,
            f"{digest[:19]} failed before ({skipped.reason}); pass --force to try it again",
        )
    return UPGRADE, None


def namespace_parents(services: list[Service], inspected: dict[str, dict[str, Any]]) -> dict[str, str]:
    """service -> the service whose container's network namespace it joins (named by name or by ID)."""
    owner: dict[str, str] = {}  # container name and ID -> service
    for service in services:
        if service.name in inspected:
            owner[service.container] = owner[str(inspected[service.name]["Id"])] = service.name
    parents = {}
    for name, data in inspected.items():
        target = recreate.network_mode(data).removeprefix("container:")
        if recreate.network_mode(data).startswith("container:") and owner.get(target, name) != name:
            parents[name] = owner[target]
    return parents


def _outcome(result: CheckResult, status: str, error: str | None = None) -> Outcome:
    return Outcome(
        result.service, result.container, result.running_digest, result.registry_digest, status, error
    )


class Updater:
    def __init__(self, engine: Engine, checker: Checker | None = None) -> None:
        self.engine = engine
        self.checker = checker  # None: this updater only rolls back, which never asks a registry
        self.log = structlog.get_logger("dockwarden.update")
        self.upgrading = threading.Event()  # set while a transaction runs, so a stop waits for its end

    def close(self) -> None:
        if self.checker is not None:
            self.checker.close()  # closes the engine too
        else:
            self.engine.close()

    def recover(self, cfg: Config) -> None:
        """Converge every half-done upgrade of a watched container that a killed process left behind.

        Only this config's containers: another dockwarden with another state_dir (so other locks) may be
        in the middle of its own upgrade of a container we do not watch.
        """
        try:
            names = upgrade.interrupted(self.engine)
        except EngineError as exc:
            self.log.error("recovery.failed", error=str(exc))
            return
        by_container = {s.container: s for s in cfg.services}
        for name in names:
            service = by_container.get(name)
            if service is None:
                continue
            try:
                with ContainerLock(cfg.state_dir, name):
                    upgrade.converge(self.engine, name, policy_for(cfg, service))
            except Busy:
                continue  # its owner is alive and still working on it
            except OSError as exc:
                self.log.error("recovery.failed", container=name, error=f"state_dir: {exc}")
        self._release_pulled(cfg)

    def _release_pulled(self, cfg: Config) -> None:
        """Drop `-pulled` tags a killed upgrade left (the image goes too if nothing else holds it)."""
        try:
            images = self.engine.images()
        except EngineError:
            return  # the check that follows reports an unreachable engine
        for service in cfg.services:
            for reference in retention.pulled_references(images, service.container):
                try:
                    with ContainerLock(cfg.state_dir, service.container):
                        self.engine.remove_image(reference)
                except (Busy, OSError, EngineError):
                    continue  # in use by a live upgrade, or already gone

    def _report_interrupted(self, cfg: Config) -> None:
        watched = {s.container for s in cfg.services}
        try:
            names = [n for n in upgrade.interrupted(self.engine) if n in watched]
        except EngineError:
            return
        for name in names:
            self.log.warning("recovery.pending", container=name, note="a real run would converge it first")

    def cycle(self, cfg: Config, services: Iterable[Service], options: Options) -> Report:
        services = list(services)
        if options.dry_run:
            self._report_interrupted(cfg)
        else:
            self.recover(cfg)
        if self.checker is None:
            raise TypeError("an update cycle needs a Checker")
        summary = self.checker.cycle(services, cfg.check_concurrency, options.cancel)
        results = {r.service: r for r in summary.results}
        journal = History.of(cfg)
        if not options.dry_run:
            record_checks(journal, summary.results)
        report = Report()
        skips = SkipList(cfg.state_dir)
        # Namespace parents cost an inspect per service: only worth it when several may be upgraded.
        pending = [s for s in services if results[s.name].status == check.UPDATE_AVAILABLE]
        parents = self._parents(pending) if len(pending) > 1 else {}
        for service in order(services, parents):
            if options.cancel is not None and options.cancel.is_set():
                outcome = _outcome(results[service.name], upgrade.SKIPPED, "dockwarden is stopping")
            else:
                outcome = self._one(cfg, service, results[service.name], options, skips, report)
            report.outcomes.append(outcome)
            if not options.dry_run:
                record_outcome(journal, outcome)
        self.log.info(
            "update.cycle_finished",
            **{
                result: sum(1 for o in report.outcomes if o.result == result)
                for result in (
                    upgrade.UPGRADED,
                    upgrade.ROLLED_BACK,
                    upgrade.ROLLBACK_FAILED,
                    upgrade.SKIPPED,
                )
            },
        )
        return report

    def _parents(self, services: list[Service]) -> dict[str, str]:
        inspected = {}
        for service in services:
            try:
                inspected[service.name] = self.engine.inspect_container(service.container)
            except EngineError:
                continue  # its own upgrade will report the engine error
        return namespace_parents(services, inspected)

    def _one(
        self,
        cfg: Config,
        service: Service,
        result: CheckResult,
        options: Options,
        skips: SkipList,
        report: Report,
    ) -> Outcome:
        log = self.log.bind(
            service=service.name, from_digest=result.running_digest, to_digest=result.registry_digest
        )
        digest = str(result.registry_digest)
        skipped = skips.get(service.name)
        status, reason = decide(service, result, skipped, options)
        if status != UPGRADE:
            if status == upgrade.SKIPPED:
                log.warning("upgrade.skipped", reason=reason)
            return _outcome(result, status, reason)
        ref = imageref.parse(result.image)
        target = Target(
            service.name, service.container, ref, result.running_digest, digest, policy_for(cfg, service)
        )
        if options.dry_run:
            return self._plan(target, result, report)
        try:
            with ContainerLock(cfg.state_dir, service.container):
                self.upgrading.set()
                try:
                    outcome = upgrade.Upgrade(
                        self.engine, target, options.checkpoint, options.cancel, options.progress
                    ).run()
                    self._after(cfg, target, outcome, options)
                    if outcome.switched:
                        self.retain(cfg, service, ref.name, outcome)
                finally:
                    self.upgrading.clear()
        except Busy as exc:
            log.warning("upgrade.skipped", reason=str(exc))
            return _outcome(result, upgrade.SKIPPED, str(exc))
        except OSError as exc:
            return _outcome(result, upgrade.ERROR, f"cannot lock in state_dir {cfg.state_dir}: {exc}")
        if outcome.result in (upgrade.ROLLED_BACK, upgrade.ROLLBACK_FAILED):
            skips.add(service.name, [digest], f"{outcome.step}: {outcome.error}")
        elif outcome.result == upgrade.UPGRADED and skipped is not None:
            skips.clear(service.name)
        return outcome

    def retain(self, cfg: Config, service: Service, repo: str, outcome: Outcome) -> None:
        """Keep the image the service ran until now as its newest previous version; let go of the oldest.

        Called with the service's lock held, right after the switch."""
        try:
            images = self.engine.images()
            containers = self.engine.containers()
        except EngineError as exc:
            self.log.error("retention.failed", service=service.name, error=str(exc))
            return
        old_tags = tuple(
            tag for image in images if image["Id"] == outcome.old_image for tag in retention.tags(image)
        )
        todo = retention.plan(
            service.container,
            repo,
            retention.versions(images, service.container),
            str(outcome.new_image),
            outcome.old_image,
            service.keep_previous,
            datetime.now(UTC),
            retention.users(containers),
            old_tags,
        )
        journal = History.of(cfg)
        retention.apply(
            self.engine, service.name, todo, lambda event, **f: journal.record(event, service.name, **f)
        )

    def rollback(self, cfg: Config, service: Service, to: str | None, options: Options) -> Outcome:
        """Switch `service` back to a version kept on this host (never pulling), through the same
        transaction as an upgrade; the digest it leaves goes on the skip list."""
        journal = History.of(cfg)
        try:
            with ContainerLock(cfg.state_dir, service.container):
                self.upgrading.set()
                try:
                    outcome = self._rollback(cfg, service, to, options)
                finally:
                    self.upgrading.clear()
        except Busy as exc:
            outcome = Outcome(service.name, service.container, None, None, upgrade.SKIPPED, str(exc))
        except OSError as exc:
            outcome = Outcome(
                service.name,
                service.container,
                None,
                None,
                upgrade.ERROR,
                f"cannot lock in state_dir {cfg.state_dir}: {exc}",
            )
        record_outcome(journal, outcome, history.ROLLBACK)
        return outcome

    def _rollback(self, cfg: Config, service: Service, to: str | None, options: Options) -> Outcome:
        policy = policy_for(cfg, service)
        upgrade.converge(self.engine, service.container, policy)  # a half-done upgrade first
        try:
            container = self.engine.inspect_container(service.container)
            images = self.engine.images()
            ref = service.image or imageref.parse(str(container["Config"]["Image"]))
        except (EngineError, imageref.InvalidReference) as exc:
            return Outcome(service.name, service.container, None, None, upgrade.ERROR, str(exc))
        ref = ref.with_tag_default()
        running = str(container["Image"])
        running_digests = retention.digests_of(images, running, ref.name)
        from_digest = running_digests[0] if running_digests else None
        known = retention.versions(images, service.container)
        try:
            image_id, digest = retention.choose(known, running, images, ref.name, to)
        except retention.AlreadyRunning as exc:
            return Outcome(service.name, service.container, from_digest, None, upgrade.UP_TO_DATE, str(exc))
        except LookupError as exc:
            kept = ", ".join(
                f"{(v.digests or (v.image_id,))[0][:19]} ({v.retired_at:%Y-%m-%d %H:%M}Z)" for v in known
            )
            message = f"{exc}; versions kept for {service.name}: {kept or 'none'}"
            return Outcome(service.name, service.container, from_digest, None, upgrade.ERROR, message)
        target = Target(
            service.name,
            service.container,
            ref,
            from_digest,
            digest,
            policy,
            image_id=image_id,
            stopped_ok=True,
        )
        outcome = upgrade.Upgrade(
            self.engine, target, options.checkpoint, options.cancel, options.progress
        ).run()
        self._after(cfg, target, outcome, options)
        if not outcome.switched:
            return outcome
        if running_digests:
            # So that the daemon does not upgrade straight back to what was just rolled away from.
            reason = f"rolled back by hand to {digest or image_id[:19]}"
            SkipList(cfg.state_dir).add(service.name, running_digests, reason)
        self.retain(cfg, service, ref.name, outcome)
        return dataclasses.replace(outcome, result=REVERTED)

    def _after(self, cfg: Config, target: Target, outcome: Outcome, options: Options) -> None:
        """Containers in the upgraded one's network namespace lost it with the old container: redo them."""
        old_id, new = outcome.replaced, None
        if old_id is None:
            return
        try:
            new = self.engine.inspect_container(target.container)
            children = self.engine.containers_in_namespace_of(old_id, target.container)
        except EngineError as exc:
            self.log.error("namespace.refresh_failed", container=target.container, error=str(exc))
            return
        for child in children:
            if outcome.result == upgrade.UPGRADED:
                self._rejoin(cfg, target, child, old_id, str(new["Id"]), options)
            else:
                try:
                    self.engine.restart(child)
                except EngineError as exc:
                    self.log.error("namespace.refresh_failed", container=child, error=str(exc))

    def _rejoin(
        self, cfg: Config, parent: Target, child: str, old_id: str, new_id: str, options: Options
    ) -> None:
        """Recreate `child` (same image) in the new parent's namespace; a mode naming the parent by name
        resolves again by itself, one naming the old ID is pointed at the new one."""
        try:
            mode = recreate.network_mode(self.engine.inspect_container(child))
        except EngineError as exc:
            self.log.error("namespace.refresh_failed", container=child, error=str(exc))
            return
        override = f"container:{new_id}" if mode == f"container:{old_id}" else None
        target = Target(child, child, parent.ref, None, None, parent.policy, network_mode=override)
        try:
            with ContainerLock(cfg.state_dir, child):
                result = upgrade.Upgrade(self.engine, target, None, options.cancel).run()
        except (Busy, OSError) as exc:
            self.log.error("namespace.refresh_failed", container=child, error=str(exc))
            return
        self.log.info("namespace.recreated", container=child, parent=parent.container, result=result.result)

    def _plan(self, target: Target, result: CheckResult, report: Report) -> Outcome:
        try:
            old = self.engine.inspect_container(target.container)
            old_image = self.engine.inspect_image(old["Image"])
        except EngineError as exc:
            return _outcome(result, upgrade.ERROR, str(exc))
        new = recreate.plan(old, old_image, {}, upgrade.image_string(old, target.ref))
        lines = [
            f"digest: {target.from_digest} -> {target.to_digest}",
            f"pull: {target.ref.name}@{target.to_digest}",
            *recreate.describe(old, new),
        ]
        report.plans[target.service] = lines
        return _outcome(result, WOULD_UPGRADE)


def open_updater(cfg: Config) -> Updater:
    checker = check.open_checker(cfg)
    return Updater(checker.engine, checker)


def describe(report: Report) -> str:
    """One line for systemd's STATUS=."""

    def count(*results: str) -> int:
        return sum(1 for o in report.outcomes if o.result in results)

    rolled_back = count(upgrade.ROLLED_BACK, upgrade.ROLLBACK_FAILED)
    return (
        f"{len(report.outcomes)} checked: {count(upgrade.UP_TO_DATE)} up to date, "
        f"{count(upgrade.UPGRADED)} upgraded, {rolled_back} rolled back, "
        f"{count(upgrade.SKIPPED, WOULD_UPGRADE)} skipped, {count(upgrade.ERROR)} errors"
    )
