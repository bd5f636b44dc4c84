"""Previous versions kept for an instant rollback, and which of them to let go.

A retained version is an image tagged `REPO:dockwarden-CONTAINER-TIMESTAMP`, the timestamp being when it
stopped running. A tag, not just a digest reference, because `docker image prune` and the post's
`docker images -f dangling=true | xargs docker rmi` remove every untagged image, digest references or not.
By container name, not service name: container names are unique on an engine, service names only within
one config file, and two configs may watch one host. The tags are the whole state: `docker images` shows
them, and nothing is lost with `state_dir`.

While an upgrade runs, the image it pulled carries `REPO:dockwarden-CONTAINER-pulled`, so that no prune
removes it between the pull and the moment a container uses it; the tag goes when the upgrade ends.

What to tag and untag is computed here from the engine's image and container lists (pure); `apply`
executes it, never forcing: the engine itself refuses to delete an image a container uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from dockwarden import imageref
from dockwarden.engine import ContainerView, Engine, EngineError, ImageView
from dockwarden.history import Event

PREFIX = "dockwarden-"
PULLED = "pulled"
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_STAMP_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z\Z")


def version_tag(container: str, at: datetime) -> str:
    return f"{PREFIX}{container}-{at.astimezone(UTC).strftime(_STAMP)}"


def pulled_tag(container: str) -> str:
    return f"{PREFIX}{container}-{PULLED}"


def _split(reference: str) -> tuple[str, str]:
    repo, _, tag = reference.rpartition(":")
    return (repo, tag) if "/" not in tag else (reference, "")


def _stamp(tag: str, container: str) -> datetime | None:
    head = f"{PREFIX}{container}-"
    rest = tag.removeprefix(head)
    if rest == tag or not _STAMP_RE.match(rest):
        return None  # another container's tag, even if its name starts like this one ("web" vs "web-2")
    return datetime.strptime(rest, _STAMP).replace(tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Version:
    reference: str  # REPO:dockwarden-CONTAINER-TIMESTAMP
    image_id: str
    retired_at: datetime
    digests: tuple[str, ...]  # manifest digests the image is known by in its repository
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "image_id": self.image_id,
            "digests": list(self.digests),
            "retired_at": self.retired_at.isoformat(),
        }


def versions(images: list[ImageView], container: str) -> list[Version]:
    """The retained versions of the service run by `container` among the engine's images, newest first."""
    found = []
    for image in images:
        for reference in image.tags:
            repo, tag = _split(reference)
            at = _stamp(tag, container)
            if at is None:
                continue
            digests = imageref.digests_for(_full_name(repo), list(image.repo_digests))
            found.append(
                Version(
                    reference=reference,
                    image_id=image.id,
                    retired_at=at,
                    digests=tuple(sorted(digests)),
                    size=image.size,
                )
            )
    return sorted(found, key=lambda v: v.retired_at, reverse=True)


def _full_name(repo: str) -> str:
    try:
        return imageref.parse(repo).name
    except imageref.InvalidReference:
        return repo


def pulled_references(images: list[ImageView], container: str) -> list[str]:
    wanted = pulled_tag(container)
    return [r for image in images for r in image.tags if _split(r)[1] == wanted]


def digests_of(images: list[ImageView], image_id: str, repo: str) -> list[str]:
    """The manifest digests image `image_id` is known by in repository `repo`, sorted."""
    image = next((i for i in images if i.id == image_id), None)
    return sorted(imageref.digests_for(repo, list(image.repo_digests if image else ())))


def users(containers: list[ContainerView]) -> dict[str, list[str]]:
    """Image ID -> names of the containers (running or stopped) created from it."""
    found: dict[str, list[str]] = {}
    for container in containers:
        found.setdefault(container.image_id, []).append(container.name)
    return found


@dataclass(kw_only=True)
class Plan:
    tag: list[tuple[str, str]] = field(default_factory=list)  # (image ID, reference to add)
    untag: list[tuple[Version, str]] = field(default_factory=list)  # (version, why)
    remove: list[tuple[str, str]] = field(default_factory=list)  # (image ID, why): untagged and unused
    kept: list[tuple[Version, str]] = field(default_factory=list)  # beyond keep_previous, but in use


def plan(
    container: str,
    repo: str,
    known: list[Version],
    running: str,
    retiring: str | None,
    keep: int,
    now: datetime,
    used_by: dict[str, list[str]],
    retiring_tags: tuple[str, ...] = (),
) -> Plan:
    """What to tag and untag so that the service in `container` keeps the `keep` newest previous versions
    besides `running`.

    `retiring` is the image the service ran until now (after an upgrade or a rollback), with the tags it
    still has; it becomes the newest previous version.
    """
    result = Plan()
    # (image ID, retired at, the version already tagged, if any), newest first
    previous: list[tuple[str, datetime, Version | None]] = []
    if retiring is not None and retiring != running:
        previous.append((retiring, now, None))
    for version in known:
        if version.image_id == running:
            result.untag.append((version, "it is running again"))
        elif version.image_id == retiring or any(version.image_id == p[0] for p in previous):
            result.untag.append((version, "a newer tag holds this version"))
        else:
            previous.append((version.image_id, version.retired_at, version))
    for index, (image_id, _at, tagged) in enumerate(previous):
        if index < keep:
            if tagged is None:
                result.tag.append((image_id, f"{repo}:{version_tag(container, now)}"))
            continue
        if tagged is None:
            # Not kept at all (keep_previous 0): the replaced image goes if the upgrade left it untagged.
            if not retiring_tags and not used_by.get(image_id):
                result.remove.append((image_id, f"replaced, beyond keep_previous={keep}"))
            continue
        if used_by.get(image_id):
            result.kept.append((tagged, f"used by container {', '.join(sorted(used_by[image_id]))}"))
        else:
            result.untag.append((tagged, f"beyond keep_previous={keep}"))
    return result


def choose(
    known: list[Version],
    running: str,
    images: list[ImageView],
    repo: str,
    to: str | None,
) -> tuple[str, str | None]:
    """The image (ID, manifest digest) a rollback goes to; raises LookupError saying why there is none.

    Without `to`: the newest retained version of `repo` that is not the running image. With `to` (a manifest
    digest, or an image ID or its prefix): any local image of the service's repository `repo` known by it;
    an image known by it only under other repositories is refused, so an operator command never switches a
    service to another repository's image. Never a pull.
    """
    known = [v for v in known if _full_name(_split(v.reference)[0]) == repo]
    if to is None:
        for version in known:
            if version.image_id != running:
                return version.image_id, (version.digests[0] if version.digests else None)
        raise LookupError("there is no retained version older than the running one")
    wanted = to if to.startswith("sha256:") else f"sha256:{to}"
    for version in known:
        if wanted in version.digests or version.image_id.startswith(wanted):
            return _not_running(version.image_id, running, wanted if wanted in version.digests else None)
    foreign: set[str] | None = None  # the repositories of images `to` names outside `repo`
    for image in images:
        digests = imageref.digests_for(repo, list(image.repo_digests))
        matches = image.id.startswith(wanted) or any(d.endswith("@" + wanted) for d in image.repo_digests)
        if wanted in digests or (matches and repo in repositories(image)):
            return _not_running(image.id, running, wanted if wanted in digests else _first(digests))
        if matches:
            foreign = (foreign or set()) | repositories(image)
    if foreign is not None:
        known_as = f" (it is {', '.join(sorted(foreign))})" if foreign else " (it is untagged)"
        raise LookupError(
            f"{to} is not an image of {repo}{known_as}: a rollback only switches a service to versions "
            "of its own repository"
        )
    raise LookupError(f"{to} is not on this host (a rollback never pulls)")


def repositories(image: ImageView) -> set[str]:
    """The full repository names (registry/repo) an image is known by, from its tags and RepoDigests."""
    names = {_full_name(_split(tag)[0]) for tag in image.tags}
    return names | {_full_name(entry.partition("@")[0]) for entry in image.repo_digests}


def _first(digests: set[str]) -> str | None:
    return sorted(digests)[0] if digests else None


class AlreadyRunning(LookupError):
    """The version asked for is the one running."""


def _not_running(image_id: str, running: str, digest: str | None) -> tuple[str, str | None]:
    if image_id == running:
        raise AlreadyRunning(f"{digest or image_id[:19]} is the version running now")
    return image_id, digest


Record = Callable[..., None]


def apply(engine: Engine, service: str, todo: Plan, record: Record) -> None:
    """Carry out a retention plan: tag first (so nothing is unprotected in between), then let go.

    Each step is independent: one the engine refuses is logged and the rest still happen."""
    log = structlog.get_logger("dockwarden.retention").bind(service=service)
    for image_id, reference in todo.tag:
        try:
            engine.tag(image_id, reference)
        except EngineError as exc:
            log.error("retention.failed", action="tag", image=image_id[:19], error=str(exc))
            continue
        log.info("retention.kept", image=image_id[:19], reference=reference)
        record(Event.RETAINED, image_id=image_id, reference=reference)
    for version, reason in todo.untag:
        _let_go(engine, log, record, version.reference, version.image_id, reason, version.size)
    for image_id, reason in todo.remove:
        _let_go(engine, log, record, image_id, image_id, reason, 0)
    for version, reason in todo.kept:
        log.info("retention.held", reference=version.reference, reason=reason)


def _let_go(
    engine: Engine, log: Any, record: Record, reference: str, image_id: str, reason: str, size: int
) -> None:
    try:
        removed = engine.remove_image(reference)
    except EngineError as exc:
        log.warning("retention.failed", action="untag", reference=reference, error=str(exc))
        return
    deleted = any("Deleted" in item for item in removed)
    log.info("retention.released", reference=reference, reason=reason, image_deleted=deleted)
    record(
        Event.RELEASED,
        reference=reference,
        image_id=image_id,
        reason=reason,
        image_deleted=deleted,
        image_size=size if deleted else None,  # shared layers included: not what the disk got back
    )
