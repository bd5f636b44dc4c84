"""One update cycle: finish interrupted upgrades, check, then upgrade what changed, in dependency order.

Shared by the daemon's scheduled job and `dockwarden update`. Per service it decides, from data, whether
to upgrade (auto mode or named on the command line, a newer digest, not on the skip list), then hands the
transaction to the `Runner`. A failure never stops the other services.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from dockwarden import compose, gate, imageref, recovery, recreate, upgrade
from dockwarden.check import Checker, CheckResult, Status
from dockwarden.config import Config, Service, Update
from dockwarden.engine import ContainerView, Engine, EngineError
from dockwarden.history import Event, History
from dockwarden.locks import Busy
from dockwarden.namespace import parents
from dockwarden.runner import Runner
from dockwarden.skiplist import Entry, SkipList
from dockwarden.upgrade import Outcome, Result, Step, Target

# The skip reasons of a `monitor` service whose tag moved, and of a service not reached before a stop.
MONITOR_REASON = "update: monitor"
STOPPING_REASON = "dockwarden is stopping"


class Action(StrEnum):
    """What `decide` may ask for besides a final result."""

    UPGRADE = "upgrade"


@dataclass(frozen=True, kw_only=True)
class Options:
    named: bool = False  # services were named on the command line: upgrade them even in monitor mode
    force: bool = False  # ignore the skip list
    dry_run: bool = False
    cancel: threading.Event | None = None  # set: stop starting upgrades (the runner's hooks roll back)


@dataclass(frozen=True, kw_only=True)
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)  # the cycle's checks, in check order
    plans: dict[str, list[str]] = field(default_factory=dict)  # service -> dry-run description

    def failed(self) -> bool:
        return any(o.result.failed for o in self.outcomes)

    def count(self, *results: Result) -> int:
        return sum(1 for o in self.outcomes if o.result in results)


def record_checks(journal: History, results: Iterable[CheckResult]) -> None:
    for r in results:
        journal.record(
            Event.CHECKED,
            r.service,
            status=r.status,
            running_digest=r.running_digest,
            registry_digest=r.registry_digest,
            error=r.error,
            reason=r.reason,
        )


def order(
    services: list[Service],
    namespace_parents: dict[str, str],
    compose_needs: Mapping[str, Set[str]] | None = None,
) -> list[Service]:
    """Config order, except that a service comes after those it depends on (`depends_on:`, and compose's
    depends_on label: `compose_needs`, service -> services) and after the container whose network namespace
    it shares (`namespace_parents`: service -> service)."""
    names = {s.name for s in services}
    more = compose_needs or {}
    needs = {
        s.name: (
            {
                *s.depends_on,
                *([namespace_parents[s.name]] if s.name in namespace_parents else []),
                *more.get(s.name, ()),
            }
            & names
        )
        for s in services
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


def decide(
    service: Service, result: CheckResult, skipped: Entry | None, options: Options
) -> tuple[Action | Result, str | None]:
    """What to do with one checked service: Action.UPGRADE, or a final result and its reason (a skip's
    starts with a stable word: `pinned`, `update`, a container state, or the digest that failed)."""
    if result.status == Status.ERROR:
        return Result.ERROR, result.error
    if result.status == Status.UP_TO_DATE:
        return Result.UP_TO_DATE, None
    reason = _left_as_is(service, result, options)
    digest = str(result.registry_digest)
    skip = skipped.find(digest) if skipped is not None else None
    if reason is None and skip is not None and not options.force:
        reason = f"{digest[:19]} failed before ({skip.reason}); pass --force to try it again"
    return (Action.UPGRADE, None) if reason is None else (Result.SKIPPED, reason)


def _left_as_is(service: Service, result: CheckResult, options: Options) -> str | None:
    """Why a service with a newer image (or a pinned one) is not upgraded, whatever its skip list says."""
    if result.status == Status.PINNED:
        return (
            f"pinned: {result.image} names a digest, the version chosen for it; set `image:` for this "
            "service to follow a tag instead"
        )
    if service.update != Update.AUTO and not options.named:
        return MONITOR_REASON
    # From the check's look at the container; the transaction decides again on what it inspects.
    return upgrade.left_alone(result.state, service.stopped)


def blamed(outcome: Outcome) -> bool:
    """Whether a failed upgrade puts its digest on the skip list: only if the new version was started (it
    ran, and failed its gate or its start) and the failure is about that container. A failure before
    that, or one the engine caused (it did not answer, answered 5xx, restarted meanwhile: `Outcome.cause`),
    says nothing against the digest: the next cycle tries it again."""
    return (
        outcome.result in (Result.ROLLED_BACK, Result.ROLLBACK_FAILED)
        and outcome.started_new
        and outcome.cause is gate.Cause.CONTAINER
    )


def _records(cfg: Config) -> dict[str, str]:
    """The set-aside records of this config's containers (`recovery.recorded`)."""
    return recovery.recorded(cfg.state_dir, [s.container for s in cfg.services])


def recover(engine: Engine, cfg: Config) -> None:
    """Resolve every leftover of a killed upgrade of this config's containers (see `recovery`)."""
    log = structlog.get_logger("dockwarden.update")
    try:
        found = recovery.leftovers(cfg.services, engine.containers(), engine.images(), _records(cfg))
    except EngineError as exc:
        log.error("recovery.failed", error=str(exc))
        return
    for leftover in found:
        service = cfg.service(leftover.service)
        assert service is not None  # noqa: S101 -- leftovers() only names this config's services
        try:
            recovery.resolve(
                engine, cfg.state_dir, leftover, gate.policy_for(service, cfg.health_timeout_max)
            )
        except Busy:
            continue  # its owner is alive and still working on it
        except EngineError:
            continue  # converge logged why; a pulled tag may be gone already
        except OSError as exc:
            log.error("recovery.failed", container=leftover.container, error=f"state_dir: {exc}")


def _report_pending(engine: Engine, cfg: Config) -> None:
    """--dry-run: name the half-done upgrades a real run would resolve first, touching nothing."""
    log = structlog.get_logger("dockwarden.update")
    try:
        found = recovery.leftovers(cfg.services, engine.containers(), [], _records(cfg))
    except EngineError:
        return
    for container in sorted({leftover.container for leftover in found}):
        log.warning("recovery.pending", container=container, note="a real run would converge it first")


def run(
    checker: Checker, runner: Runner, cfg: Config, services: Iterable[Service], options: Options
) -> Report:
    """Recover, check `services`, then upgrade (or, with `dry_run`, plan) each that needs it."""
    services = list(services)
    if options.dry_run:
        _report_pending(runner.engine, cfg)
    else:
        recover(runner.engine, cfg)
    summary = checker.cycle(services, cfg.check_concurrency, options.cancel)
    results = {r.service: r for r in summary.results}
    if not options.dry_run:
        record_checks(runner.journal, summary.results)
    report = Report(checks=summary.results)
    skips = runner.skips
    # Namespace parents and compose dependencies cost an inspect per service: only worth it when several
    # may be upgraded.
    pending = [s for s in services if results[s.name].status == Status.UPDATE_AVAILABLE]
    inspected = _inspect(runner.engine, pending) if len(pending) > 1 else {}
    ordered = order(services, parents(pending, inspected), compose.needs(pending, inspected))
    for service in ordered:
        if options.cancel is not None and options.cancel.is_set():
            outcome = _outcome(results[service.name], Result.SKIPPED, STOPPING_REASON)
        else:
            outcome = _one(runner, cfg, service, results[service.name], options, skips, report)
        report.outcomes.append(outcome)
        # A pinned service's skip is its check's result, which its `checked` entry already records.
        if not options.dry_run and results[service.name].status != Status.PINNED:
            runner.record(outcome)
    counts = (Result.UPGRADED, Result.ROLLED_BACK, Result.ROLLBACK_FAILED, Result.SKIPPED)
    structlog.get_logger("dockwarden.update").info(
        "update.cycle_finished", **{result: report.count(result) for result in counts}
    )
    return report


def _inspect(engine: Engine, services: list[Service]) -> dict[str, ContainerView]:
    """service name -> its container, for those the engine could inspect."""
    inspected = {}
    for service in services:
        try:
            inspected[service.name] = engine.container_view(service.container)
        except EngineError:
            continue  # its own upgrade will report the engine error
    return inspected


def _outcome(
    result: CheckResult, status: Result, error: str | None = None, step: Step | None = None
) -> Outcome:
    return Outcome(
        service=result.service,
        container=result.container,
        from_digest=result.running_digest,
        to_digest=result.registry_digest,
        result=status,
        error=error,
        step=step,
    )


def _one(
    runner: Runner,
    cfg: Config,
    service: Service,
    result: CheckResult,
    options: Options,
    skips: SkipList,
    report: Report,
) -> Outcome:
    skipped = skips.get(service.name)
    action, reason = decide(service, result, skipped, options)
    if not isinstance(action, Action):
        if action == Result.SKIPPED:
            log = structlog.get_logger("dockwarden.update").bind(
                service=service.name, from_digest=result.running_digest, to_digest=result.registry_digest
            )
            log.warning("upgrade.skipped", reason=reason)
        return _outcome(result, action, reason)
    refused = _compose_refusal(runner.engine, service)
    if refused is not None:
        structlog.get_logger("dockwarden.update").warning(
            "upgrade.failed",
            service=service.name,
            container=service.container,
            from_digest=result.running_digest,
            to_digest=result.registry_digest,
            step=Step.PLAN,
            error=refused,
        )
        return _outcome(result, Result.ERROR, refused, Step.PLAN)
    digest = str(result.registry_digest)
    target = Target(
        service=service.name,
        container=service.container,
        ref=imageref.parse(result.image),
        from_digest=result.running_digest,
        to_digest=digest,
        policy=gate.policy_for(service, cfg.health_timeout_max),
        stopped=service.stopped,
        strategy=service.strategy,
        drain=service.drain.total_seconds(),
    )
    if options.dry_run:
        return _plan(runner.engine, target, result, report)
    outcome = runner.upgrade(target, service.keep_previous)
    if blamed(outcome):
        skips.add(service.name, [digest], f"{outcome.step}: {outcome.error}")
    elif outcome.result == Result.UPGRADED and skipped is not None:
        skips.clear(service.name)
    return outcome


def _compose_refusal(engine: Engine, service: Service) -> str | None:
    """Why the service's compose features forbid a recreate (`compose.refusal`), found before anything is
    pulled: the transaction refuses it at plan too, but only after its pull, which each cycle would repeat."""
    try:
        container = engine.container_view(service.container)
    except EngineError:
        return None  # the upgrade reports it
    return compose.refusal(container.labels)


def _plan(engine: Engine, target: Target, result: CheckResult, report: Report) -> Outcome:
    try:
        old = engine.container_view(target.container)
        old_image = engine.inspect_image(old.image_id)
    except EngineError as exc:
        return _outcome(result, Result.ERROR, str(exc))
    # The create body is built from the whole inspect documents, as the upgrade itself builds it. Nothing
    # is pulled and no probe container is made: the old image stands in for the new one (its VOLUMEs
    # decide which anonymous volumes are re-attached), and Docker's built-in defaults for the engine's.
    new = recreate.plan(old.raw, old_image, old_image, upgrade.image_string(old.raw, target.ref))
    report.plans[target.service] = [
        f"digest: {target.from_digest} -> {target.to_digest}",
        f"pull: {target.ref.name}@{target.to_digest}",
        *recreate.describe(old.raw, new),
        "assumed: the new image declares the old one's VOLUMEs; the engine has Docker's built-in defaults",
    ]
    return _outcome(result, Result.WOULD_UPGRADE)


def describe(report: Report) -> str:
    """One line for systemd's STATUS=."""
    return (
        f"{len(report.outcomes)} checked: {report.count(Result.UP_TO_DATE)} up to date, "
        f"{report.count(Result.UPGRADED)} upgraded, "
        f"{report.count(Result.ROLLED_BACK, Result.ROLLBACK_FAILED)} rolled back, "
        f"{report.count(Result.SKIPPED, Result.WOULD_UPGRADE)} skipped, {report.count(Result.ERROR)} errors"
    )
