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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

import structlog

from dockwarden import gate, recovery, retention, upgrade
from dockwarden.config import Config, StoppedContainers
from dockwarden.engine import Engine, EngineError, NotFound
from dockwarden.history import Event, History
from dockwarden.locks import Busy, ContainerLock


class Kind(StrEnum):
    """What a removal removes (`gc --json`'s `kind`)."""

    CONTAINER = "container"
    IMAGE = "image"
    TAG = "tag"
    RECOVER = "recover"  # a half-done upgrade, converged rather than deleted


STOPPED_STATES = ("exited", "created", "dead")


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
    reclaimed: int | None = None  # measured: layers on disk before minus after (None on a dry run)
    error: str | None = None  # the engine could not be read at all

    def failed(self) -> bool:
        return self.error is not None or any(r.error for r in self.removals)


def matches(labels: dict[str, str], selectors: tuple[str, ...]) -> bool:
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
    containers: list[dict[str, Any]],
    images: list[dict[str, Any]],
    sizes: dict[str, int],
    stopped_at: dict[str, datetime],
    now: datetime,
) -> list[Removal]:
    """Everything GC would remove, in the order it would: the four rules in turn, then each untag's bytes.

    `containers` and `images`: the engine's list API items; `sizes`: image ID -> bytes only that image
    uses; `stopped_at`: container ID -> when it stopped, for the containers the opt-in rule may remove.
    """
    stopped = _stopped_containers(cfg, containers, stopped_at, now)
    gone = {r.target for r in stopped}
    remaining = [c for c in containers if str(c["Id"]) not in gone]
    found = recovery.leftovers(cfg.services, containers, images)
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
    cfg: Config, containers: list[dict[str, Any]], stopped_at: dict[str, datetime], now: datetime
) -> list[Removal]:
    """Rule 1, opt-in: stopped containers matching every label selector, stopped for at least min_age;
    never a watched container or a set-aside one."""
    rule: StoppedContainers | None = cfg.gc.stopped_containers
    if rule is None:
        return []
    watched = {s.container for s in cfg.services}
    suffixes = (upgrade.OLD_SUFFIX, upgrade.DONE_SUFFIX)
    found = []
    for item in containers:
        name = retention.container_name(item)
        if item.get("State") not in STOPPED_STATES or name in watched or name.endswith(suffixes):
            continue
        stopped = stopped_at.get(str(item["Id"]))
        if (
            not matches(item.get("Labels") or {}, rule.labels)
            or stopped is None
            or now - stopped < rule.min_age
        ):
            continue
        reason = (
            f"{item.get('State')} for {_age((now - stopped).total_seconds())}, labels {list(rule.labels)}"
        )
        found.append(Removal(kind=Kind.CONTAINER, target=str(item["Id"]), name=name, reason=reason))
    return found


def _tags(
    cfg: Config,
    found: list[recovery.Leftover],
    images: list[dict[str, Any]],
    containers: list[dict[str, Any]],
    now: datetime,
) -> list[Removal]:
    """Rule 3, dockwarden's own tags, per service: `-pulled` tags a killed upgrade left (rule 2, the
    half-done upgrades, is `recovery`'s), then retained versions beyond keep_previous that nothing uses."""
    used_by = retention.users(containers)
    running_image = {retention.container_name(c): str(c.get("ImageID") or "") for c in containers}
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
    tags: list[Removal], images: list[dict[str, Any]], sizes: dict[str, int], used_by: dict[str, list[str]]
) -> None:
    """Bytes of an untag: the image's, when that was its last tag and nothing uses it (the engine deletes
    it then), credited once, to the last of its tags to go. Replaces items of `tags` in place."""
    untagged: dict[str, int] = {}  # image ID -> tags removed from it
    for removal in tags:
        image_id = _image_of(images, removal.target)
        untagged[image_id] = untagged.get(image_id, 0) + 1
    for index in reversed(range(len(tags))):
        image_id = _image_of(images, tags[index].target)
        image = next((i for i in images if i["Id"] == image_id), {})
        if len(retention.tags(image)) == untagged.pop(image_id, -1) and not used_by.get(image_id):
            tags[index] = dataclasses.replace(tags[index], bytes=sizes.get(image_id, 0))


def _dangling(
    cfg: Config,
    images: list[dict[str, Any]],
    containers: list[dict[str, Any]],
    sizes: dict[str, int],
    now: datetime,
) -> list[Removal]:
    """Rule 4: dangling (untagged) images nothing uses, old enough not to be a build in progress."""
    used_by = retention.users(containers)
    found = []
    for image in images:
        image_id = str(image["Id"])
        if retention.tags(image) or used_by.get(image_id):
            continue
        age = now - datetime.fromtimestamp(int(image.get("Created") or 0), UTC)
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


def _image_of(images: list[dict[str, Any]], reference: str) -> str:
    return next((str(i["Id"]) for i in images if reference in (i.get("RepoTags") or ())), "")


def _stopped_at(engine: Engine, containers: list[dict[str, Any]], cfg: Config) -> dict[str, datetime]:
    """When each container the opt-in rule might remove stopped (its creation, if it never ran)."""
    rule = cfg.gc.stopped_containers
    found: dict[str, datetime] = {}
    if rule is None:
        return found
    for item in containers:
        if item.get("State") not in STOPPED_STATES or not matches(item.get("Labels") or {}, rule.labels):
            continue
        try:
            state = engine.inspect_container(str(item["Id"])).get("State") or {}
        except EngineError:
            continue  # gone meanwhile
        finished = _parse_time(str(state.get("FinishedAt") or ""))
        found[str(item["Id"])] = finished or datetime.fromtimestamp(int(item.get("Created") or 0), UTC)
    return found


def _parse_time(text: str) -> datetime | None:
    # The engine writes nanoseconds ("2026-11-28T07:15:00.123456789Z"); the zero time means "never".
    if not text or text.startswith("0001-"):
        return None
    head, _, fraction = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head + (f".{fraction[:6]}" if fraction else "")).replace(tzinfo=UTC)
    except ValueError:
        return None


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
        before, sizes = engine.disk_usage()  # one df: the engine sizes every image and container for it
        todo = plan(cfg, containers, images, sizes, _stopped_at(engine, containers, cfg), datetime.now(UTC))
    except EngineError as exc:
        log.error("gc.failed", error=str(exc))
        return Result(dry_run=dry_run, error=str(exc))
    if dry_run:
        return Result(removals=todo, dry_run=True)
    journal = History.of(cfg)
    done = [_carry_out(engine, cfg, removal, journal, cancel) for removal in todo]
    try:
        reclaimed: int | None = max(0, before - engine.disk_usage()[0])
    except EngineError:
        reclaimed = None
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
