"""What a killed upgrade leaves behind, found from the engine's lists and resolved one item at a time.

A transaction killed half-way leaves its state in Docker itself (see `upgrade`): the old container set
aside as `NAME--dockwarden-old` or `NAME--dockwarden-old-stopped` (not committed: undo) or
`NAME--dockwarden-done` (committed: finish), and the pulled image's protective tag
`REPO:dockwarden-NAME-pulled`. The update cycle resolves every leftover of its services before it checks;
garbage collection lists and resolves them too. `leftovers` is pure; `resolve` takes the container's lock,
so it never touches an upgrade that is still alive.

Only what `upgrade.not_ours` proves ours is listed: a container that merely carries a set-aside name is
another's, reported by `converge` (`recovery.not_ours`) and left alone. The proof for a container set aside
while nothing holds its service's name yet is a record in `state_dir/locks/NAME.aside`, written under the
container's lock before the set-aside rename (`record`): the engine cannot add a label to an existing
container, and the name alone proves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dockwarden import gate, retention, statefiles, upgrade
from dockwarden.config import Service
from dockwarden.engine import ContainerState, ContainerView, Engine, EngineError, ImageView, NotFound
from dockwarden.locks import DIR_NAME, ContainerLock

RECORD_SUFFIX = ".aside"


def _record_path(state_dir: Path, container: str) -> Path:
    return state_dir / DIR_NAME / f"{container}{RECORD_SUFFIX}"


def record(state_dir: Path, container: str, aside_id: str) -> None:
    """Write the ID of the container about to be set aside as `container` (the caller holds its lock);
    OSError if it cannot be written, which fails the set-aside before anything was renamed."""
    statefiles.replace(_record_path(state_dir, container), aside_id + "\n")


def recorded(state_dir: Path, containers: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Container name -> the ID its set-aside record names, for those of `containers` that have one (an
    unreadable or malformed record proves nothing and is skipped)."""
    found = {}
    for container in containers:
        try:
            text = statefiles.read_text(_record_path(state_dir, container)).strip()
        except OSError:
            continue
        if text.isalnum():
            found[container] = text
    return found


def _document(view: ContainerView) -> dict[str, Any]:
    """The parts of an inspect document `upgrade.not_ours` reads, from a container list entry."""
    running = view.state in (ContainerState.RUNNING, ContainerState.RESTARTING, ContainerState.PAUSED)
    return {
        "Id": view.id,
        "Name": view.name,
        "Config": {"Labels": dict(view.labels)},
        "State": {"Running": running},
    }


class LeftoverKind(StrEnum):
    FINISH = "finish"  # NAME--dockwarden-done: the successor passed its gate; remove the old container
    # NAME--dockwarden-old(-stopped): put the old container back (started, or stopped); NAME--dockwarden-new:
    # remove a start-first successor that never took over.
    UNDO = "undo"
    PULLED = "pulled"  # REPO:dockwarden-NAME-pulled: an image tag protecting a pull; drop it


@dataclass(frozen=True, kw_only=True)
class Leftover:
    kind: LeftoverKind
    service: str  # the watched service it belongs to
    container: str  # that service's container name (the lock's name)
    name: str  # the set-aside container's name, or the tag reference
    id: str  # the set-aside container's ID, or the tagged image's ID


def leftovers(
    services: tuple[Service, ...] | list[Service],
    containers: list[ContainerView],
    images: list[ImageView],
    records: Mapping[str, str] | None = None,
) -> list[Leftover]:
    """Half-done upgrades (in the container list's order), then pulled tags (in service order), of the
    given services only: another dockwarden with another state_dir (so other locks) may be in the middle
    of its own upgrade of a container these services do not name.

    `containers` and `images`: the engine's lists (`Engine.containers`, `Engine.images`); `records`: the
    set-aside records (`recorded`). A set-aside container `upgrade.not_ours` cannot prove ours is left out.
    """
    watched = {s.container: s for s in services}
    by_name = {c.name: c for c in containers}
    found = []
    for container in containers:
        name = container.name
        for suffix, kind in (
            (upgrade.OLD_SUFFIX, LeftoverKind.UNDO),
            (upgrade.STOPPED_SUFFIX, LeftoverKind.UNDO),
            (upgrade.DONE_SUFFIX, LeftoverKind.FINISH),
            (upgrade.NEW_SUFFIX, LeftoverKind.UNDO),
        ):
            base = name.removesuffix(suffix)
            if name.endswith(suffix) and base in watched:
                holder = by_name.get(base)
                proof = upgrade.not_ours(
                    suffix,
                    _document(container),
                    None if holder is None else _document(holder),
                    (records or {}).get(base),
                )
                if proof is not None:
                    continue  # not ours: converge reports it, if it is asked to look
                service = watched[base]
                found.append(
                    Leftover(kind=kind, service=service.name, container=base, name=name, id=container.id)
                )
    for service in services:
        for reference in retention.pulled_references(images, service.container):
            image_id = next((i.id for i in images if reference in i.tags), "")
            found.append(
                Leftover(
                    kind=LeftoverKind.PULLED,
                    service=service.name,
                    container=service.container,
                    name=reference,
                    id=image_id,
                )
            )
    return found


def resolve(engine: Engine, state_dir: Path, leftover: Leftover, policy: gate.Policy) -> None:
    """Resolve one leftover under its container's lock: finish or undo the upgrade (`upgrade.converge`,
    which logs the outcome), or drop the pulled tag (the image goes too if nothing else holds it).

    Raises locks.Busy while the container's upgrade is alive, OSError if state_dir is unusable, and
    EngineError if the engine refused or the set-aside container is still there afterwards.
    """
    with ContainerLock(state_dir, leftover.container):
        if leftover.kind == LeftoverKind.PULLED:
            engine.remove_image(leftover.name)
            return
        upgrade.converge(
            engine,
            leftover.container,
            policy,
            recorded(state_dir, [leftover.container]).get(leftover.container),
        )
        try:
            engine.inspect_container(leftover.name)
        except NotFound:
            return
        raise EngineError(f"{leftover.name} is still there (see the recovery.failed event)")
