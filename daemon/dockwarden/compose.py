"""Docker Compose v2's view of a container: the labels an upgrade keeps coherent, the order they imply, and
the compose features a recreate cannot carry.

Compose recognises its containers by labels alone, so an upgraded container stays a compose service when
it keeps them, and `docker compose up -d` leaves it alone when two of them still match what compose
computes from the project (`mustRecreate`, pkg/compose/convergence.go):

- `com.docker.compose.config-hash`: a SHA-256 of the service's YAML model less build, pull_policy, scale,
  replicas, depends_on and profiles (`ServiceHash`, pkg/compose/hash.go). The image ID is not in it (it is
  a custom label, left out of the JSON), so the upgrade keeps it as it was.
- `com.docker.compose.image`: the ID of the image the service's `image:` reference names locally
  (`getLocalImagesDigests`, pkg/compose/build.go). The upgrade re-points that tag, so the successor gets
  the new image's ID (`successor_labels`).

The others (project, service, container-number, oneoff, version, working_dir, config_files, depends_on)
name the container's place in its project and are copied as they are. The depends_on label also orders
upgrades (`needs`), and its `restart: true` items name the containers compose restarts after it recreates
a service (`dependents`). Facts are from Compose v2.40.3's source (github.com/docker/compose, tag v2.40.3;
label names in pkg/api/labels.go).

A recreate from inspect documents loses what compose does to a container outside its create body:
`secrets:` and `configs:` whose source is `content:` or `environment:` are copied into the container
after create (`injectFileReferences`, pkg/compose/secrets.go), and `post_start:` hooks run after start
(`startService`, pkg/compose/convergence.go). `refusal` finds them in the project's compose files, which
the container's labels name, and refuses such a service rather than drop them. File-based secrets and
configs are bind mounts, which the recreate keeps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog
import yaml

from dockwarden.config import Service
from dockwarden.engine import ContainerState, ContainerView, Engine, EngineError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
IMAGE_LABEL = "com.docker.compose.image"
DEPENDS_ON_LABEL = "com.docker.compose.depends_on"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"  # absolute paths, joined by ","

# The depends_on label grew: Compose 2.0 wrote SERVICE, 2.5 SERVICE:CONDITION, 2.17 SERVICE:CONDITION:RESTART
# (pkg/compose/create.go at those tags). Compose reads a missing condition as this one (projectFromName,
# pkg/compose/compose.go).
LEGACY_CONDITION = "running_or_healthy"
MAX_INCLUDE_DEPTH = 16  # compose files including each other; deeper means a loop we failed to see
_FILE_OBJECTS = ("secrets", "configs")
_COPIED_SOURCES = ("content", "environment")  # file objects compose copies in instead of mounting


@dataclass(frozen=True, kw_only=True)
class Member:
    """A container's place in a compose project: the project's and the compose service's names."""

    project: str
    service: str


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """One item of a container's `com.docker.compose.depends_on` label: `SERVICE:CONDITION:RESTART`
    (pkg/compose/create.go, prepareLabels), the compose service it waits for in the same project."""

    service: str
    condition: str  # service_started, service_healthy, service_completed_successfully (or LEGACY_CONDITION)
    restart: bool  # compose restarts this container after it recreates `service`


class ProjectUnreadable(Exception):
    """A compose file of the project could not be read or parsed; the message names it and why."""


def member(labels: Mapping[str, str]) -> Member | None:
    """The container's compose project and service, or None if compose did not create it."""
    project, service = labels.get(PROJECT_LABEL), labels.get(SERVICE_LABEL)
    if not project or not service:
        return None
    return Member(project=project, service=service)


def successor_labels(labels: Mapping[str, str], image_id: str) -> dict[str, str]:
    """`labels` for the container that replaces a compose service's container and runs `image_id`
    ("sha256:<hex>"): compose's image label names that image, as compose would have set it. Labels of a
    container compose did not create come back unchanged."""
    kept = dict(labels)
    if member(labels) is not None and image_id:
        kept[IMAGE_LABEL] = image_id
    return kept


def depends_on(labels: Mapping[str, str]) -> tuple[Dependency, ...]:
    """The compose services this container depends on, from its depends_on label (() without one)."""
    found = []
    for item in labels.get(DEPENDS_ON_LABEL, "").split(","):
        name, _, rest = item.partition(":")
        if not name:
            continue
        condition, _, restart = rest.partition(":")
        found.append(
            Dependency(
                service=name,
                condition=condition or LEGACY_CONDITION,
                # Go's ParseBool spellings of true. Without the flag, no restart: Compose before 2.17 had no
                # such feature, and `up` takes it from the YAML, where it defaults to false (compose's own
                # reader of old labels assumes true, for commands run without the project's files).
                restart=restart.lower() in ("true", "t", "1"),
            )
        )
    return tuple(found)


def needs(services: Iterable[Service], inspected: Mapping[str, ContainerView]) -> dict[str, set[str]]:
    """service -> the watched services whose containers its container's compose depends_on names, in the
    same compose project. `inspected`: service name -> its container, as in `namespace.parents`."""
    by_member: dict[Member, set[str]] = {}
    for service in services:
        view = inspected.get(service.name)
        found = member(view.labels) if view is not None else None
        if found is not None:
            by_member.setdefault(found, set()).add(service.name)
    result: dict[str, set[str]] = {}
    for name, view in inspected.items():
        own = member(view.labels)
        if own is None:
            continue
        wanted = {Member(project=own.project, service=d.service) for d in depends_on(view.labels)}
        result[name] = {other for m in wanted for other in by_member.get(m, set()) if other != name}
    return {name: found for name, found in result.items() if found}


def dependents(parent: ContainerView, containers: Iterable[ContainerView]) -> list[str]:
    """Names of the running containers of `parent`'s compose project whose depends_on label names its
    service with `restart: true`, which compose restarts once it has recreated that service
    (`stopDependentContainers` before, the start phase after; pkg/compose/convergence.go). [] when
    `parent` is no compose container."""
    who = member(parent.labels)
    if who is None:
        return []
    found = []
    for view in containers:
        own = member(view.labels)
        if own is None or own.project != who.project or view.id == parent.id or not view.name:
            continue
        wanted = any(d.service == who.service and d.restart for d in depends_on(view.labels))
        # Only running ones: starting a container the user stopped is not ours to do (nor compose's `up`
        # of one service's).
        if wanted and view.state is ContainerState.RUNNING:
            found.append(view.name)
    return sorted(found)


def restart_dependents(engine: Engine, container: str) -> None:
    """After `container` was replaced: restart its compose `dependents`, as compose would. Failures are
    logged (`compose.restart_failed`), never raised: the upgrade itself is done."""
    log = structlog.get_logger("dockwarden.update")
    try:
        parent = engine.container_view(container)
        names = dependents(parent, engine.containers())
    except EngineError as exc:
        log.error("compose.restart_failed", parent=container, error=str(exc))
        return
    for name in names:
        try:
            engine.restart(name)
        except EngineError as exc:
            log.error("compose.restart_failed", container=name, parent=container, error=str(exc))
            continue
        log.info("compose.restarted", container=name, parent=container)


# -- what a recreate cannot carry -------------------------------------------------------------------------


def refusal(labels: Mapping[str, str]) -> str | None:
    """Why a recreate of this container would lose part of its compose service, or None if nothing is lost
    (or compose did not create it). Reads the compose files the labels name (and those they include or
    extend); one that cannot be read is a refusal too, since what it says cannot be known."""
    who = member(labels)
    files = [Path(f) for f in labels.get(CONFIG_FILES_LABEL, "").split(",") if f]
    if who is None or not files:
        return None  # not compose, or Compose v1, which copies nothing in
    where = f"compose service {who.service!r} of project {who.project!r}"
    try:
        documents = read_project(files)
    except ProjectUnreadable as exc:
        return (
            f"{where}: {exc}; dockwarden reads the project's compose files to know what compose copies into "
            "the container, and refuses what it cannot check"
        )
    lost = uncarried(who.service, documents)
    if not lost:
        return None
    return (
        f"{where} has {', '.join(lost)}, which compose applies outside the container's configuration and a "
        f"recreate would lose; upgrade it with `docker compose pull {who.service} && docker compose up -d "
        f"{who.service}` instead"
    )


def uncarried(service: str, documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """What compose does to `service`'s container that a recreate from its inspect cannot redo, as phrases
    ("secret 'token' (environment:)", "post_start hooks"), from the project's parsed compose files. Files are
    read as a union, as if every override only added: a definition one file resets still counts, so an
    unusual project may be refused when it need not be, never the reverse."""
    documents = list(documents)
    copied: dict[tuple[str, str], str] = {}  # (secrets|configs, name) -> the source key compose copies
    for document in documents:
        for kind in _FILE_OBJECTS:
            for name, spec in _mapping(document.get(kind)).items():
                source = next((key for key in _COPIED_SOURCES if key in _mapping(spec)), None)
                if source is not None:
                    copied[(kind, str(name))] = source
    lost: list[str] = []
    for spec in _service_specs(service, documents):
        for kind in _FILE_OBJECTS:
            for item in _sequence(spec.get(kind)):
                name = str(item.get("source") if isinstance(item, Mapping) else item)
                source = copied.get((kind, name))
                phrase = f"{kind[:-1]} {name!r} ({source}:)"  # "config 'app' (content:)"
                if source is not None and phrase not in lost:
                    lost.append(phrase)
        if _sequence(spec.get("post_start")) and "post_start hooks" not in lost:
            lost.append("post_start hooks")
    return lost


def _service_specs(service: str, documents: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every definition of `service` in the documents, and of the services it extends, by name."""
    names, specs, todo = {service}, [], [service]
    while todo:
        name = todo.pop()
        for document in documents:
            spec = _mapping(_mapping(document.get("services")).get(name))
            if not spec:
                continue
            specs.append(spec)
            extends = spec.get("extends")
            base = str(_mapping(extends).get("service") or "") if isinstance(extends, Mapping) else extends
            if isinstance(base, str) and base and base not in names:
                names.add(base)
                todo.append(base)
    return specs


def read_project(files: Iterable[Path]) -> list[dict[str, Any]]:
    """The parsed compose files, with every file they `include:` or `extends:` from (paths relative to the
    file naming them), each once. Raises ProjectUnreadable for a file that cannot be read or parsed, and
    for a path compose would interpolate or fetch (`${VAR}`, a remote include), which cannot be known here."""
    seen: set[Path] = set()
    documents: list[dict[str, Any]] = []
    todo = [(Path(f), 0) for f in files]
    while todo:
        path, depth = todo.pop(0)
        if path in seen:
            continue
        if depth > MAX_INCLUDE_DEPTH:
            raise ProjectUnreadable(f"compose files include each other more than {MAX_INCLUDE_DEPTH} deep")
        seen.add(path)
        document = _load(path)
        documents.append(document)
        todo.extend((reference, depth + 1) for reference in _references(path, document))
    return documents


def _load(path: Path) -> dict[str, Any]:
    if not path.is_absolute():
        raise ProjectUnreadable(f"compose file {str(path)!r} is not an absolute path (read from stdin?)")
    try:
        data = yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 -- a SafeLoader subclass
    except OSError as exc:
        raise ProjectUnreadable(f"cannot read compose file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ProjectUnreadable(f"cannot parse compose file {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _references(path: Path, document: Mapping[str, Any]) -> list[Path]:
    """The other files `document` (read from `path`) pulls in: `include:` entries and `extends.file`."""
    texts: list[str] = []
    for entry in _sequence(document.get("include")):
        where = entry.get("path") if isinstance(entry, Mapping) else entry
        texts.extend(str(p) for p in (where if isinstance(where, list) else [where]) if p)
    for spec in _mapping(document.get("services")).values():
        extends = _mapping(spec).get("extends")
        if isinstance(extends, Mapping) and extends.get("file"):
            texts.append(str(extends["file"]))
    found = []
    for text in texts:
        if "$" in text or "://" in text:
            raise ProjectUnreadable(f"{path} pulls in {text!r}, which only compose can resolve")
        # Lexically normal, so that files including each other are recognised as seen.
        found.append(Path(os.path.normpath(path.parent / text)))
    return found


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _untagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    # The node as if it had no tag: a mapping, a list, or a scalar resolved as plain YAML would (null, 1).
    # A copy: the tagged node itself is being constructed, and constructing it again reads as recursion.
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    tag = loader.resolve(type(node), value, (True, False))  # type: ignore[no-untyped-call]  # untyped stub
    return loader.construct_object(type(node)(tag, node.value, node.start_mark, node.end_mark), deep=True)


class _ComposeLoader(yaml.SafeLoader):
    """YAML's safe loader, plus compose's own tags (`!reset`, `!override`) read as the value they tag."""

    yaml_multi_constructors: ClassVar = {**yaml.SafeLoader.yaml_multi_constructors, "!": _untagged}
