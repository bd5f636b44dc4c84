"""`dockwarden status`: where each service stands, from the engine and `state_dir` alone (no registry call).

The registry digest shown is the one the last check saw (from the history), so status works, and answers
at once, when the registry is down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dockwarden import imageref, retention
from dockwarden.config import Config, Service
from dockwarden.engine import ContainerView, Engine, EngineError, Health, ImageView, NotFound
from dockwarden.history import Event, History
from dockwarden.retention import Version
from dockwarden.skiplist import Entry, SkipList


@dataclass(kw_only=True)
class ServiceStatus:
    service: str
    container: str
    state: str  # the engine's: running, exited, ...; "missing" when there is no such container
    health: Health | None = None  # healthy / unhealthy / starting; None without a HEALTHCHECK
    image: str | None = None
    image_id: str | None = None
    running_digest: str | None = None
    registry_digest: str | None = None  # as of the last check
    checked_at: str | None = None
    retained: list[Version] = field(default_factory=list)
    last_upgrade: dict[str, Any] | None = None
    skipped: Entry | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "container": self.container,
            "state": self.state,
            "health": self.health,
            "image": self.image,
            "image_id": self.image_id,
            "running_digest": self.running_digest,
            "registry_digest": self.registry_digest,
            "checked_at": self.checked_at,
            "retained": [v.to_json() for v in self.retained],
            "last_upgrade": self.last_upgrade,
            "skipped": self.skipped.to_json() if self.skipped else None,
            "error": self.error,
        }


def describe(
    service: Service,
    container: ContainerView | None,
    images: list[ImageView],
    entries: list[dict[str, Any]],
    skipped: Entry | None,
) -> ServiceStatus:
    """One service's status from its container as inspect reads it (`Engine.container_view`; None:
    missing), the image list and its history entries (newest first)."""
    status = ServiceStatus(
        service=service.name, container=service.container, state="missing", skipped=skipped
    )
    status.retained = retention.versions(images, service.container)
    checked = next((e for e in entries if e.get("event") == Event.CHECKED), None)
    if checked is not None:
        status.registry_digest = checked.get("registry_digest")
        status.checked_at = checked.get("at")
    status.last_upgrade = next(
        (e for e in entries if e.get("event") in (Event.UPGRADE, Event.ROLLBACK)), None
    )
    if container is None:
        return status
    status.state = str(container.state)
    status.health = container.health
    status.image_id = container.image_id
    text = container.config_image
    try:
        ref = service.image or imageref.parse(text)
    except imageref.InvalidReference:
        ref = None
    status.image = str(ref.with_tag_default()) if ref is not None else text
    if ref is not None:
        found = retention.digests_of(images, status.image_id, ref.name)
        status.running_digest = found[0] if found else None
    return status


def gather(engine: Engine, cfg: Config) -> list[ServiceStatus]:
    journal = History.of(cfg)
    entries = journal.entries()
    skips = SkipList(cfg.state_dir).all()
    images = engine.images()
    found = []
    for service in cfg.services:
        error = None
        try:
            container: ContainerView | None = engine.container_view(service.container)
        except NotFound:
            container = None
        except EngineError as exc:
            container, error = None, str(exc)
        mine = [e for e in entries if e.get("service") == service.name]
        status = describe(service, container, images, mine, skips.get(service.name))
        status.error = error
        found.append(status)
    return found
