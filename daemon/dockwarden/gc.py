"""Garbage collection: what a naive deploy leaks, removed with a reason, never what anything still uses.

`plan` decides from the engine's container and image lists (pure, unit-tested); `collect` executes it.
What it removes:

- dangling images (untagged: the post's `dangling=true` rule) that no container, running or stopped,
  uses and that are older than `gc.min_age` (a build in progress makes young untagged images);
- dockwarden's own leftovers for the watched services: half-done upgrades a killed process left (they
  are converged, as at start: finished or undone, never just deleted), `-pulled` tags, and retained
  versions beyond `keep_previous`;
- opt-in, stopped containers matching every label selector of `gc.stopped_containers` and stopped for at
  least its `min_age` (never a watched service's container).

It never forces: the engine refuses to delete an image a container uses, and to remove a container that
was started again since it was listed; such a refusal is reported and the rest goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

import structlog

from dockwarden import gate, recovery, retention, upgrade
from dockwarden.config import Config, StoppedContainers
from dockwarden.engine import ContainerState, ContainerView, Engine, EngineError, ImageView, NotFound
from dockwarden.history import Event, History
from dockwarden.locks import Busy, ContainerLock


class Kind(StrEnum):
    """What a removal removes (`gc --json`'s `kind`)."""

    CONTAINER = "container"
    IMAGE = "image"
    TAG = "tag"
    RECOVER = "recover"  # a half-done upgrade, converged rather than deleted


STOPPED_STATES = frozenset({ContainerState.EXITED, ContainerState.CREATED, ContainerState.DEAD})


@dataclass(frozen=True, kw_only=True)
class Removal:
    kind: Kind
    target: str  # container or image ID, or a tag reference
    name: str  # what a person recognises: container name, tags, or the reference
    reason: str
    bytes: int = 0  # estimated: the image's own layers, not those it shares with images that stay
    service: str | None = None  # the watched service it belongs to, if any (its lock is taken)
    leftover: recovery.Leftover | None = None  # a killed upgrade's leftover, resolved by `recovery`
    done: bool = False
    error: str | None = None  # the engine refused
    left: str | None = None  # not attempted now: the service is being upgraded, or dockwarden is stopping

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.target,
            "name": self.name,
            "reason": self.reason,
            "bytes": self.bytes,
            "service": self.service,
            "done": self.done,
            "error": self.error,
            "left": self.left,
        }


@dataclass(frozen=True, kw_only=True)
class Result:
    removals: list[Removal] = field(default_factory=list)
    dry_run: bool = False
    # Measured: layers on disk before minus after (from the image list's sizes when df failed), else the sum
    # of what the removals were estimated to free; None on a dry run.
    reclaimed: int | None = None
    error: str | None = None  # the engine could not be read at all

    def failed(self) -> bool:
        return self.error is not None or any(r.error for r in self.removals)


def matches(labels: Mapping[str, str], selectors: tuple[str, ...]) -> bool:
    """Every selector holds: KEY present, or KEY=VALUE exactly."""
    for selector in selectors:
        key, sep, value = selector.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _age(seconds: float) -> str:
    delta = timedelta(seconds=int(seconds))
    return f"{delta.days}d" if delta.days else f"{delta.seconds // 3600}h{delta.seconds % 3600 // 60:02d}m"


def plan(
    cfg: Config,
    containers: list[ContainerView],
    images: list[ImageView],
    sizes: dict[str, int],
    stopped_at: dict[str, datetime],
    now: datetime,
    records: dict[str, str] | None = None,
) -> list[Removal]:
    """Everything GC would remove, in the order it would: the four rules in turn, then each untag's bytes.

    `containers` and `images`: the engine's lists (`Engine.containers`, `Engine.images`); `sizes`: image
    ID -> bytes only that image uses; `stopped_at`: container ID -> when it stopped, for the containers the
    opt-in rule may remove; `records`: the set-aside records (`recovery.recorded`).
    """
    stopped = _stopped_containers(cfg, containers, stopped_at, now)
    gone = {r.target for r in stopped}
    remaining = [c for c in containers if c.id not in gone]
    found = recovery.leftovers(cfg.services, containers, images, records)
    tags = _tags(cfg, found, images, remaining, now)
    _count_untag_bytes(tags, images, sizes, retention.users(remaining))
    half_done = [
        Removal(
            kind=Kind.RECOVER,
            target=leftover.id,
            name=leftover.name,
            reason=f"half-done upgrade left by a killed process: {_WHAT[leftover.kind]}",
            service=leftover.service,
            leftover=leftover,
        )
        for leftover in found
        if leftover.kind != recovery.LeftoverKind.PULLED
    ]
    return [*stopped, *half_done, *tags, *_dangling(cfg, images, remaining, sizes, now)]


_WHAT = {recovery.LeftoverKind.FINISH: "finished", recovery.LeftoverKind.UNDO: "undone"}


def _stopped_containers(
    cfg: Config, containers: list[ContainerView], stopped_at: dict[str, datetime], now: datetime
) -> list[Removal]:
    """Rule 1, opt-in: stopped containers matching every label selector, stopped for at least min_age;
    never a watched container or a set-aside one."""
    rule: StoppedContainers | None = cfg.gc.stopped_containers
    if rule is None:
        return []
    watched = {s.container for s in cfg.services}
    found = []
    for container in containers:
        name = container.name
        if container.state not in STOPPED_STATES or name in watched or name.endswith(upgrade.SUFFIXES):
            continue
        stopped = stopped_at.get(container.id)
        if not matches(container.labels, rule.labels) or stopped is None or now - stopped < rule.min_age:
            continue
        reason = f"{container.state} for {_age((now - stopped).total_seconds())}, labels {list(rule.labels)}"
        found.append(Removal(kind=Kind.CONTAINER, target=container.id, name=name, reason=reason))
    return found


def _tags(
    cfg: Config,
    found: list[recovery.Leftover],
    images: list[ImageView],
    containers: list[ContainerView],
    now: datetime,
) -> list[Removal]:
    """Rule 3, dockwarden's own tags, per service: `-pulled` tags a killed upgrade left (rule 2, the
    half-done upgrades, is `recovery`'s), then retained versions beyond keep_previous that nothing uses."""
    used_by = retention.users(containers)
    running_image = {c.name: c.image_id for c in containers}
    todo = []
    for service in cfg.services:
        for leftover in found:
            if leftover.kind == recovery.LeftoverKind.PULLED and leftover.service == service.name:
                reason = "left by an interrupted upgrade"
                todo.append(
                    Removal(
                        kind=Kind.TAG,
                        target=leftover.name,
                        name=leftover.name,
                        reason=reason,
                        service=service.name,
                        leftover=leftover,
                    )
                )
        known = retention.versions(images, service.container)
        running = running_image.get(service.container, "")
        versions = retention.plan(
            service.container, "", known, running, None, service.keep_previous, now, used_by
        )
        for version, reason in versions.untag:
            todo.append(
                Removal(
                    kind=Kind.TAG,
                    target=version.reference,
                    name=version.reference,
                    reason=reason,
                    service=service.name,
                )
            )
    return todo


def _count_untag_bytes(
    tags: list[Removal], images: list[ImageView], sizes: dict[str, int], used_by: dict[str, list[str]]
) -> None:
    """Bytes of an untag: the image's, when that was its last tag and nothing uses it (the engine deletes
    it then), credited once, to the last of its tags to go. Replaces items of `tags` in place."""
    untagged: dict[str, int] = {}  # image ID -> tags removed from it
    for removal in tags:
        image_id = _image_of(images, removal.target)
        untagged[image_id] = untagged.get(image_id, 0) + 1
    for index in reversed(range(len(tags))):
        image_id = _image_of(images, tags[index].target)
        image = next((i for i in images if i.id == image_id), None)
        left = len(image.tags) if image is not None else 0
        if left == untagged.pop(image_id, -1) and not used_by.get(image_id):
            tags[index] = dataclasses.replace(tags[index], bytes=sizes.get(image_id, 0))


def _dangling(
    cfg: Config,
    images: list[ImageView],
    containers: list[ContainerView],
    sizes: dict[str, int],
    now: datetime,
) -> list[Removal]:
    """Rule 4: dangling (untagged) images nothing uses, old enough not to be a build in progress."""
    used_by = retention.users(containers)
    found = []
    for image in images:
        image_id = image.id
        if image.tags or used_by.get(image_id):
            continue
        age = now - image.created
        if age < cfg.gc.min_age:
            continue
        found.append(
            Removal(
                kind=Kind.IMAGE,
                target=image_id,
                name=image_id.removeprefix("sha256:")[:12],
                reason=f"dangling (untagged), used by no container, created {_age(age.total_seconds())} ago",
                bytes=sizes.get(image_id, 0),
            )
        )
    return found


def _image_of(images: list[ImageView], reference: str) -> str:
    return next((i.id for i in images if reference in i.tags), "")


def _stopped_at(engine: Engine, containers: list[ContainerView], cfg: Config) -> dict[str, datetime]:
    """When each container the opt-in rule might remove stopped (its creation, if it never ran)."""
    rule = cfg.gc.stopped_containers
    found: dict[str, datetime] = {}
    if rule is None:
        return found
    for container in containers:
        if container.state not in STOPPED_STATES or not matches(container.labels, rule.labels):
            continue
        try:
            finished = engine.container_view(container.id).finished_at  # the list API has no stop time
        except EngineError:
            continue  # gone meanwhile
        found[container.id] = finished or container.created
    return found


def _disk_usage(
    engine: Engine, images: list[ImageView], quiet: bool = False
) -> tuple[int, dict[str, int], bool]:
    """(bytes of all image layers, image ID -> bytes only it uses, whether the engine measured them).

    One `GET /system/df`: the engine sizes every image for it. That call fails now and then on the
    containerd image store while containers are being created (a snapshot it lists is gone before it
    sizes it: "snapshot ... not found"), and on every store while another df runs (the engine runs one
    at a time: "a disk usage operation is already running", moby daemon/disk_usage.go; any `docker system
    df` on the host is enough); then each image's own `Size` from the list stands in (shared layers
    counted in each image, so an over-estimate) and the collection goes on. Raises nothing."""
    try:
        total, sizes = engine.disk_usage()
    except EngineError as exc:
        if not quiet:
            structlog.get_logger("dockwarden.gc").warning(
                "gc.sizes_estimated",
                error=str(exc),
                effect="bytes are each image's size from the image list, shared layers included",
            )
        return sum(i.size for i in images), {i.id: i.size for i in images}, False
    return total, sizes, True


def collect(
    engine: Engine,
    cfg: Config,
    dry_run: bool = False,
    cancel: threading.Event | None = None,
) -> Result:
    """Plan and, unless `dry_run`, carry out one garbage collection; each removal is logged and, for a
    real run, recorded in the history. Never raises for the engine: `Result.error` says why it could not
    read, each removal's `error` why the engine refused it."""
    log = structlog.get_logger("dockwarden.gc")
    try:
        containers = engine.containers()
        images = engine.images()
        before, sizes, measured = _disk_usage(engine, images)
        records = recovery.recorded(cfg.state_dir, [s.container for s in cfg.services])
        todo = plan(
            cfg, containers, images, sizes, _stopped_at(engine, containers, cfg), datetime.now(UTC), records
        )
    except EngineError as exc:
        log.error("gc.failed", error=str(exc))
        return Result(dry_run=dry_run, error=str(exc))
    if dry_run:
        return Result(removals=todo, dry_run=True)
    journal = History.of(cfg)
    done = [_carry_out(engine, cfg, removal, journal, cancel) for removal in todo]
    reclaimed = sum(r.bytes for r in done if r.done)  # the plan's figures, unless measured like for like
    with contextlib.suppress(EngineError):
        after, _, again = _disk_usage(engine, engine.images(), quiet=True)
        if again == measured:
            reclaimed = max(0, before - after)
    log.info(
        "gc.finished",
        removed=sum(1 for r in done if r.done),
        kept=sum(1 for r in done if r.error or r.left),
        reclaimed_bytes=reclaimed,
    )
    return Result(removals=done, reclaimed=reclaimed)


def _carry_out(
    engine: Engine, cfg: Config, removal: Removal, journal: History, cancel: threading.Event | None
) -> Removal:
    """One removal, logged; returns it marked done, left (and why) or refused (and the engine's error)."""
    log = structlog.get_logger("dockwarden.gc")
    if cancel is not None and cancel.is_set():
        return dataclasses.replace(removal, left="dockwarden is stopping")
    try:
        _remove(engine, cfg, removal)
    except Busy as exc:
        log.info("gc.kept", kind=removal.kind, target=removal.name, left=str(exc))
        return dataclasses.replace(removal, left=str(exc))  # its upgrade runs: the next collection sees
    except (EngineError, OSError) as exc:
        log.warning("gc.kept", kind=removal.kind, target=removal.name, error=str(exc))
        return dataclasses.replace(removal, error=str(exc))
    log.info("gc.removed", kind=removal.kind, target=removal.name, reason=removal.reason, bytes=removal.bytes)
    journal.record(
        Event.GC,
        removal.service,
        kind=removal.kind,
        id=removal.target,
        name=removal.name,
        reason=removal.reason,
        bytes=removal.bytes,
    )
    return dataclasses.replace(removal, done=True)


def _remove(engine: Engine, cfg: Config, removal: Removal) -> None:
    if removal.leftover is not None:
        service = cfg.service(removal.leftover.service)
        assert service is not None  # noqa: S101 -- plan() only names this config's services
        policy = gate.policy_for(service, cfg.health_timeout_max)
        recovery.resolve(engine, cfg.state_dir, removal.leftover, policy)
        return
    match removal.kind:
        case Kind.CONTAINER:
            engine.remove(removal.target, force=False)  # refused if it runs again: then it is not garbage
        case Kind.IMAGE:
            with contextlib.suppress(NotFound):  # deleted meanwhile along with a tag: the aim is met
                engine.remove_image(removal.target)
        case Kind.TAG | Kind.RECOVER:
            service = cfg.service(str(removal.service))
            assert service is not None  # noqa: S101 -- plan() only names this config's services
            with ContainerLock(cfg.state_dir, service.container):  # not while that service upgrades
                engine.remove_image(removal.target)
        case _:
            assert_never(removal.kind)
