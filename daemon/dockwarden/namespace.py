"""Containers bound to another container's identity: sharing its network namespace (`--network
container:X`), or linking to it (`--link X:alias`, the legacy links of the default bridge).

Such a container breaks when X is replaced: a namespace child loses its network with X, and a link
follows X through every rename to its set-aside name, which goes when X is removed. So when another
container takes X's name (an upgrade, or a rollback onto the stand-in of an AutoRemove container), each of
them is recreated (same image) to join or link to it: a link is pointed back at X's name, a namespace by
ID at the new ID. When X itself comes back (a rollback), namespace children are restarted to rejoin it,
and links need nothing: they followed X back, and the engine rewrites the linkers' /etc/hosts when X
starts again. In a cycle, X is upgraded before them (`parents`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from dockwarden.config import Service, Stopped
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


def linkers(engine: Engine, container: str) -> list[str]:
    """The containers linking to `container`, read before its transaction (the links follow it to its
    set-aside name, and go with the old container). Failures are logged: then none are redone."""
    try:
        return engine.linkers_of(container)
    except EngineError as exc:
        structlog.get_logger("dockwarden.update").error(
            "namespace.refresh_failed", container=container, error=str(exc)
        )
        return []


def follow_up(
    engine: Engine,
    state_dir: Path,
    target: Target,
    outcome: Outcome,
    hooks: Hooks,
    linked: Sequence[str] = (),
) -> None:
    """After `target`'s transaction set its container aside: recreate (another container holds the name
    now) or restart (the old one is back) every container that shared the old container's namespace, and
    recreate every container in `linked` (those that linked to it) if another holds the name. Failures are
    logged, never raised."""
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
    replaced = new.id != old_id and outcome.result in (Result.UPGRADED, Result.ROLLED_BACK)
    for child in children:
        if replaced:
            _rejoin(engine, state_dir, target, child, old_id, new.id, hooks)
        else:
            try:
                engine.restart(child)
            except EngineError as exc:
                log.error("namespace.refresh_failed", container=child, error=str(exc))
    for linker in linked if replaced else ():
        _recreate(engine, state_dir, target, linker, hooks, relink=target.container)


def _rejoin(
    engine: Engine, state_dir: Path, parent: Target, child: str, old_id: str, new_id: str, hooks: Hooks
) -> None:
    """Recreate `child` (same image) in the new parent's namespace; a mode naming the parent by name
    resolves again by itself, one naming the old ID is pointed at the new one."""
    try:
        mode = engine.container_view(child).network_mode
    except EngineError as exc:
        structlog.get_logger("dockwarden.update").error(
            "namespace.refresh_failed", container=child, error=str(exc)
        )
        return
    override = f"container:{new_id}" if mode == f"container:{old_id}" else None
    _recreate(engine, state_dir, parent, child, hooks, network_mode=override)


def _recreate(
    engine: Engine,
    state_dir: Path,
    parent: Target,
    child: str,
    hooks: Hooks,
    *,
    network_mode: str | None = None,
    relink: str | None = None,
) -> None:
    """Recreate `child` on its own image under its lock, gated like its parent. One that is stopped is
    recreated stopped: left as it is, it could never start again."""
    log = structlog.get_logger("dockwarden.update")
    target = Target(
        service=child,
        container=child,
        ref=parent.ref,
        from_digest=None,
        to_digest=None,
        policy=parent.policy,
        network_mode=network_mode,
        stopped=Stopped.RECREATE,
        relink=relink,
    )
    try:
        with ContainerLock(state_dir, child):
            result = Upgrade(engine, target, Hooks(cancel=hooks.cancel, started=hooks.started)).run()
    except (Busy, OSError) as exc:
        log.error("namespace.refresh_failed", container=child, error=str(exc))
        return
    log.info("namespace.recreated", container=child, parent=parent.container, result=result.result)
