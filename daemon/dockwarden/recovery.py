"""What a killed upgrade leaves behind, found from the engine's lists and resolved one item at a time.

A transaction killed half-way leaves its state in Docker itself (see `upgrade`): the old container set
aside as `NAME--dockwarden-old` or `NAME--dockwarden-old-stopped` (not committed: undo) or
`NAME--dockwarden-done` (committed: finish), and the pulled image's protective tag
`REPO:dockwarden-NAME-pulled`. The update cycle resolves every leftover of its services before it checks;
garbage collection lists and resolves them too. `leftovers` is pure; `resolve` takes the container's lock,
so it never touches an upgrade that is still alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dockwarden import gate, retention, upgrade
from dockwarden.config import Service
from dockwarden.engine import ContainerView, Engine, EngineError, ImageView, NotFound
from dockwarden.locks import ContainerLock


class LeftoverKind(StrEnum):
    FINISH = "finish"  # NAME--dockwarden-done: the successor passed its gate; remove the old container
    UNDO = "undo"  # NAME--dockwarden-old(-stopped): put the old container back (started, or stopped)
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
) -> list[Leftover]:
    """Half-done upgrades (in the container list's order), then pulled tags (in service order), of the
    given services only: another dockwarden with another state_dir (so other locks) may be in the middle
    of its own upgrade of a container these services do not name.

    `containers` and `images`: the engine's lists (`Engine.containers`, `Engine.images`).
    """
    watched = {s.container: s for s in services}
    found = []
    for container in containers:
        name = container.name
        for suffix, kind in (
            (upgrade.OLD_SUFFIX, LeftoverKind.UNDO),
            (upgrade.STOPPED_SUFFIX, LeftoverKind.UNDO),
            (upgrade.DONE_SUFFIX, LeftoverKind.FINISH),
        ):
            base = name.removesuffix(suffix)
            if name.endswith(suffix) and base in watched:
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
        upgrade.converge(engine, leftover.container, policy)
        try:
            engine.inspect_container(leftover.name)
        except NotFound:
            return
        raise EngineError(f"{leftover.name} is still there (see the recovery.failed event)")
