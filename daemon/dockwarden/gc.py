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

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from dockwarden import history, retention, upgrade
from dockwarden.config import Config, StoppedContainers
from dockwarden.engine import Engine, EngineError, NotFound
from dockwarden.history import History
from dockwarden.locks import Busy, ContainerLock
from dockwarden.update import policy_for

CONTAINER = "container"
IMAGE = "image"
TAG = "tag"
RECOVER = "recover"  # a half-done upgrade, converged rather than deleted
STOPPED_STATES = ("exited", "created", "dead")


@dataclass
class Removal:
    kind: str
    target: str  # container or image ID, or a tag reference
    name: str  # what a person recognises: container name, tags, or the reference
    reason: str
    bytes: int = 0  # estimated: the image's own layers, not those it shares with images that stay
    service: str | None = None  # the watched service it belongs to, if any (its lock is taken)
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


@dataclass
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


def plan(  # noqa: PLR0912 -- one block per rule, in the order they run
    cfg: Config,
    containers: list[dict[str, Any]],
    images: list[dict[str, Any]],
    sizes: dict[str, int],
    stopped_at: dict[str, datetime],
    now: datetime,
) -> list[Removal]:
    """Everything GC would remove, in the order it would (`stopped_at`: container ID -> when it stopped,
    for the containers the opt-in rule may remove)."""
    todo: list[Removal] = []
    watched = {s.container: s for s in cfg.services}
    suffixes = (upgrade.OLD_SUFFIX, upgrade.DONE_SUFFIX)

    # 1. Opt-in: stopped containers, by label and age.
    removed_containers: set[str] = set()
    rule: StoppedContainers | None = cfg.gc.stopped_containers
    if rule is not None:
        for item in containers:
            name = retention.container_name(item)
            if item.get("State") not in STOPPED_STATES or name in watched or name.endswith(suffixes):
                continue
            if not matches(item.get("Labels") or {}, rule.labels):
                continue
            stopped = stopped_at.get(str(item["Id"]))
            if stopped is None or now - stopped < rule.min_age:
                continue
            removed_containers.add(str(item["Id"]))
            reason = (
                f"{item.get('State')} for {_age((now - stopped).total_seconds())}, labels {list(rule.labels)}"
            )
            todo.append(Removal(CONTAINER, str(item["Id"]), name, reason))

    # 2. Half-done upgrades of watched containers: converged (finished or undone), never just deleted.
    for item in containers:
        name = retention.container_name(item)
        for suffix in suffixes:
            base = name.removesuffix(suffix)
            if name.endswith(suffix) and base in watched:
                what = "finished" if suffix == upgrade.DONE_SUFFIX else "undone"
                todo.append(
                    Removal(
                        RECOVER,
                        str(item["Id"]),
                        name,
                        f"half-done upgrade left by a killed process: {what}",
                        service=watched[base].name,
                    )
                )

    remaining = [c for c in containers if str(c["Id"]) not in removed_containers]
    used_by = retention.users(remaining)
    running_image = {retention.container_name(c): str(c.get("ImageID") or "") for c in remaining}

    # 3. dockwarden's tags: -pulled left by a killed upgrade, retained versions beyond keep_previous.
    untagged: dict[str, int] = {}  # image ID -> tags removed from it
    for service in cfg.services:
        for reference in retention.pulled_references(images, service.container):
            todo.append(
                Removal(TAG, reference, reference, "left by an interrupted upgrade", service=service.name)
            )
            untagged[_image_of(images, reference)] = untagged.get(_image_of(images, reference), 0) + 1
        known = retention.versions(images, service.container)
        todo_versions = retention.plan(
            service.container,
            "",
            known,
            running_image.get(service.container, ""),
            None,
            service.keep_previous,
            now,
            used_by,
        )
        for version, reason in todo_versions.untag:
            todo.append(Removal(TAG, version.reference, version.reference, reason, service=service.name))
            untagged[version.image_id] = untagged.get(version.image_id, 0) + 1
    # Bytes of an untag: the image's, when that was its last tag and nothing uses it (the engine deletes
    # it then), credited once, to the last of its tags to go.
    for removal in reversed(todo):
        if removal.kind == TAG:
            image_id = _image_of(images, removal.target)
            image = next((i for i in images if i["Id"] == image_id), {})
            if len(retention.tags(image)) == untagged.pop(image_id, -1) and not used_by.get(image_id):
                removal.bytes = sizes.get(image_id, 0)

    # 4. Dangling images nothing uses, old enough not to be a build in progress.
    for image in images:
        image_id = str(image["Id"])
        if retention.tags(image) or used_by.get(image_id):
            continue
        age = now - datetime.fromtimestamp(int(image.get("Created") or 0), UTC)
        if age < cfg.gc.min_age:
            continue
        todo.append(
            Removal(
                IMAGE,
                image_id,
                image_id.removeprefix("sha256:")[:12],
                f"dangling (untagged), used by no container, created {_age(age.total_seconds())} ago",
                sizes.get(image_id, 0),
            )
        )
    return todo


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
    real run, recorded in the history."""
    log = structlog.get_logger("dockwarden.gc")
    result = Result(dry_run=dry_run)
    try:
        containers = engine.containers()
        images = engine.images()
        before, sizes = engine.disk_usage()  # one df: the engine sizes every image and container for it
        todo = plan(cfg, containers, images, sizes, _stopped_at(engine, containers, cfg), datetime.now(UTC))
    except EngineError as exc:
        result.error = str(exc)
        log.error("gc.failed", error=str(exc))
        return result
    result.removals = todo
    if dry_run:
        return result
    journal = History.of(cfg)
    policies = {s.name: s for s in cfg.services}
    for removal in todo:
        if cancel is not None and cancel.is_set():
            removal.left = "dockwarden is stopping"
            continue
        try:
            _remove(engine, cfg, removal, policies)
        except Busy as exc:
            removal.left = str(exc)  # its upgrade is running: the next collection will see to it
            log.info("gc.kept", kind=removal.kind, target=removal.name, left=removal.left)
            continue
        except (EngineError, OSError) as exc:
            removal.error = str(exc)
            log.warning("gc.kept", kind=removal.kind, target=removal.name, error=removal.error)
            continue
        removal.done = True
        log.info(
            "gc.removed", kind=removal.kind, target=removal.name, reason=removal.reason, bytes=removal.bytes
        )
        journal.record(
            history.GC,
            removal.service,
            kind=removal.kind,
            id=removal.target,
            name=removal.name,
            reason=removal.reason,
            bytes=removal.bytes,
        )
    try:
        result.reclaimed = max(0, before - engine.disk_usage()[0])
    except EngineError:
        result.reclaimed = None
    log.info(
        "gc.finished",
        removed=sum(1 for r in todo if r.done),
        kept=sum(1 for r in todo if r.error or r.left),
        reclaimed_bytes=result.reclaimed,
    )
    return result


def _remove(engine: Engine, cfg: Config, removal: Removal, services: dict[str, Any]) -> None:
    if removal.kind == CONTAINER:
        engine.remove(removal.target, force=False)  # refused if it runs again: then it is not garbage
    elif removal.kind == IMAGE:
        try:
            engine.remove_image(removal.target)
        except NotFound:
            return  # deleted meanwhile along with a tag: the aim is met
    else:
        service = services[str(removal.service)]
        with ContainerLock(cfg.state_dir, service.container):  # not while that service upgrades
            if removal.kind == RECOVER:
                upgrade.converge(engine, service.container, policy_for(cfg, service))
                try:
                    engine.inspect_container(removal.name)
                except NotFound:
                    return
                raise EngineError(f"{removal.name} is still there (see the recovery.failed event)")
            else:
                engine.remove_image(removal.target)
