"""Containers that share another container's network namespace (`--network container:X`).

Such a container loses its network with X: when X is replaced, each of them is recreated (same image) to
join the successor, or restarted after a rollback to rejoin the old one. And in a cycle, X is upgraded
before them (`parents`).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from dockwarden.config import Service
from dockwarden.engine import ContainerView, Engine, EngineError
from dockwarden.locks import Busy, ContainerLock
from dockwarden.upgrade import Hooks, Outcome, Result, Target, Upgrade


def parents(services: list[Service], inspected: dict[str, ContainerView]) -> dict[str, str]:
    """service -> the service whose container's network namespace it joins (named by name or by ID).

    `inspected`: service name -> its container (`Engine.container_view`)."""
    owner: dict[str, str] = {}  # container name and ID -> service
    for service in services:
        if service.name in inspected:
            owner[service.container] = owner[inspected[service.name].id] = service.name
    found = {}
    for name, container in inspected.items():
        mode = container.network_mode
        target = mode.removeprefix("container:")
        if mode.startswith("container:") and owner.get(target, name) != name:
            found[name] = owner[target]
    return found


def follow_up(engine: Engine, state_dir: Path, target: Target, outcome: Outcome, hooks: Hooks) -> None:
    """After `target`'s transaction set its container aside: recreate (upgraded) or restart (rolled back)
    every container that shared the old container's namespace. Failures are logged, never raised."""
    log = structlog.get_logger("dockwarden.update")
    old_id = outcome.replaced
    if old_id is None:
        return
    try:
        new = engine.container_view(target.container)
        children = engine.containers_in_namespace_of(old_id, target.container)
    except EngineError as exc:
        log.error("namespace.refresh_failed", container=target.container, error=str(exc))
        return
    for child in children:
        if outcome.result == Result.UPGRADED:
            _rejoin(engine, state_dir, target, child, old_id, new.id, hooks)
        else:
            try:
                engine.restart(child)
            except EngineError as exc:
                log.error("namespace.refresh_failed", container=child, error=str(exc))


def _rejoin(
    engine: Engine, state_dir: Path, parent: Target, child: str, old_id: str, new_id: str, hooks: Hooks
) -> None:
    """Recreate `child` (same image) in the new parent's namespace; a mode naming the parent by name
    resolves again by itself, one naming the old ID is pointed at the new one."""
    log = structlog.get_logger("dockwarden.update")
    try:
        mode = engine.container_view(child).network_mode
    except EngineError as exc:
        log.error("namespace.refresh_failed", container=child, error=str(exc))
        return
    override = f"container:{new_id}" if mode == f"container:{old_id}" else None
    target = Target(
        service=child,
        container=child,
        ref=parent.ref,
        from_digest=None,
        to_digest=None,
        policy=parent.policy,
        network_mode=override,
    )
    try:
        with ContainerLock(state_dir, child):
            result = Upgrade(engine, target, Hooks(cancel=hooks.cancel)).run()
    except (Busy, OSError) as exc:
        log.error("namespace.refresh_failed", container=child, error=str(exc))
        return
    log.info("namespace.recreated", container=child, parent=parent.container, result=result.result)
