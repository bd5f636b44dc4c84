"""The only module that talks to the Docker Engine (and the only one that imports docker-py).

It negotiates the API version instead of pinning one (pinning broke Watchtower and Ouroboros on newer
engines), gives every call a timeout, and turns docker-py's and requests' exceptions into EngineError with
a message fit for a log line. It also reads registry credentials from the Docker config, because docker-py
already implements `auths`, `credsStore` and `credHelpers` faithfully.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import posixpath
import re
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.utils
import requests
from docker.utils.json_stream import json_stream

DEFAULT_TIMEOUT = 60.0
PROBE_LABEL = "dockwarden.probe"  # on the throwaway container `Engine.defaults` creates and removes


class EngineError(Exception):
    """The engine could not do what was asked; the message is safe to log."""


class NotFound(EngineError):
    """The named container or image does not exist."""


class Unreachable(EngineError):
    """The engine did not answer at all (no connection, or no answer in time): says nothing about what
    was asked of it."""


@dataclass(frozen=True, kw_only=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class ContainerState(StrEnum):
    """A container's state: inspect's `State.Status`, the list API's `State` (Engine API: ContainerState)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"
    UNKNOWN = "unknown"  # a state a newer engine may add: never a reason to fail a check or a GC

    @classmethod
    def _missing_(cls, value: object) -> ContainerState:
        return cls.UNKNOWN


class Health(StrEnum):
    """A container's HEALTHCHECK status: inspect's `State.Health.Status` (Engine API: HealthcheckResult)."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"  # a status a newer engine may add

    @classmethod
    def _missing_(cls, value: object) -> Health:
        return cls.UNKNOWN


def _time(value: Any) -> datetime:
    """A creation time: Unix seconds in lists, RFC 3339 with nanoseconds in inspect; missing is the epoch."""
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value).astimezone(UTC)  # 3.11 parses "Z" and drops digits past 6
    return datetime.fromtimestamp(int(value or 0), UTC)


def _finished_at(text: str) -> datetime | None:
    """Inspect's `State.FinishedAt` (RFC 3339, nanoseconds, "Z"); None for the zero time (it never
    stopped), for nothing, and for what does not parse."""
    if not text or text.startswith("0001-"):
        return None
    head, _, fraction = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head + (f".{fraction[:6]}" if fraction else "")).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True, kw_only=True)
class ContainerView:
    """One container as the list API (`GET /containers/json`) or inspect (`GET /containers/{id}/json`)
    describes it; `from_list` and `from_inspect` read their different field names."""

    id: str
    name: str  # without the leading "/"
    image_id: str  # "sha256:<hex>"
    # The reference it was created from, as the user wrote it; from the list API, the image ID instead
    # once that reference points at another image.
    config_image: str
    state: ContainerState
    labels: Mapping[str, str] = field(hash=False)  # a dict: left out of the hash, so views stay hashable
    created: datetime  # UTC
    # HostConfig.NetworkMode: default, bridge, host, none, container:<ID or name>, or a network's name.
    network_mode: str
    # From inspect only (None from the list API, whose health is only words in its `Status` text):
    health: Health | None  # None without a HEALTHCHECK
    finished_at: datetime | None  # UTC, when it last stopped; None if it never did
    raw: dict[str, Any] = field(repr=False, compare=False)  # the document, for what the view leaves out
    # The platform manifest the container runs (`ImageManifestDescriptor`, API 1.48+ on the containerd image
    # store; None elsewhere): an image there is its manifest or index, and this is the index's child.
    manifest_digest: str | None = None
    # From the list API only (() from inspect): the containers that link to this one with `--link`. The
    # list names a container also as /LINKER/ALIAS for each such link (moby daemon/links.go registers
    # them in its name index); the engine moves them along with a rename of either container.
    linked_by: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state is ContainerState.RUNNING

    @classmethod
    def from_list(cls, item: dict[str, Any]) -> ContainerView:
        """From one item of `GET /containers/json` (a state it does not know reads as UNKNOWN)."""
        names = [str(n) for n in item.get("Names") or ()]
        # Legacy links add "/<linker>/<alias>" names; the container's own name is the one without a
        # second slash, which need not come first.
        own = next((n for n in names if "/" not in n[1:]), names[0] if names else "")
        return cls(
            id=str(item["Id"]),
            name=own.lstrip("/"),
            image_id=str(item.get("ImageID") or ""),
            config_image=str(item.get("Image") or ""),
            state=ContainerState(str(item.get("State"))),
            labels=dict(item.get("Labels") or {}),
            created=_time(item.get("Created")),
            network_mode=str((item.get("HostConfig") or {}).get("NetworkMode") or "default"),
            health=None,
            finished_at=None,
            raw=item,
            linked_by=tuple(sorted({n.split("/")[1] for n in names if n.count("/") == 2})),
            manifest_digest=_descriptor_digest(item.get("ImageManifestDescriptor")),
        )

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> ContainerView:
        """From `GET /containers/{id}/json` (a state it does not know reads as UNKNOWN)."""
        config, state = data.get("Config") or {}, data.get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        return cls(
            id=str(data["Id"]),
            name=str(data.get("Name") or "").lstrip("/"),
            image_id=str(data.get("Image") or ""),
            config_image=str(config.get("Image") or ""),
            state=ContainerState(str(state.get("Status"))),
            labels=dict(config.get("Labels") or {}),
            created=_time(data.get("Created")),
            network_mode=str((data.get("HostConfig") or {}).get("NetworkMode") or "default"),
            health=Health(str(health)) if health else None,
            finished_at=_finished_at(str(state.get("FinishedAt") or "")),
            raw=data,
            manifest_digest=_descriptor_digest(data.get("ImageManifestDescriptor")),
        )


_UNTAGGED = "<none>:<none>"  # Engine 20.10 lists an untagged image with this tag ...
_UNDIGESTED = "<none>@<none>"  # ... and this digest; 26.1 with empty lists


def _descriptor_digest(descriptor: Any) -> str | None:
    """The `digest` of an OCI descriptor object (`Descriptor`, `ImageManifestDescriptor`), if any."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    return str(digest) if isinstance(digest, str) and digest.startswith("sha256:") else None


def _names(data: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tags, digest references) of an image document. The containerd image store lists an image pulled by
    digest as `repo@sha256:...` in `RepoTags` (moby daemon/containerd/image_list.go names every reference
    the image has there): a digest reference, not a tag, so it joins `RepoDigests` instead."""
    names = [str(t) for t in data.get("RepoTags") or () if t != _UNTAGGED]
    digests = [str(d) for d in data.get("RepoDigests") or () if d != _UNDIGESTED]
    digests += [n for n in names if "@" in n and n not in digests]
    return tuple(n for n in names if "@" not in n), tuple(digests)


@dataclass(frozen=True, kw_only=True)
class ImageView:
    """One image as the list API (`GET /images/json`) or inspect (`GET /images/{id}/json`) describes it."""

    # "sha256:<hex>": the config digest on the classic store; the manifest or index digest on the containerd
    # image store (then `manifest_digest` says so).
    id: str
    tags: tuple[
        str, ...
    ]  # "repo:tag" references, never a digest reference; () when untagged, on every engine
    repo_digests: tuple[str, ...]  # "repo@sha256:<hex>" manifest references
    labels: Mapping[str, str] = field(hash=False)
    created: datetime  # UTC, when the image was built (the engine records no pull time)
    size: int  # bytes of all its layers, shared ones included
    raw: dict[str, Any] = field(repr=False, compare=False)
    # `Descriptor.digest` (API 1.48+, containerd image store only): the manifest or index the image is.
    manifest_digest: str | None = None

    @property
    def content(self) -> frozenset[str]:
        """Every digest that names this image's content: its ID, its manifest or index, and the digests of
        its repository references (sha256 content addresses: equal digests are equal content)."""
        found = {self.id, *(d.partition("@")[2] for d in self.repo_digests)}
        if self.manifest_digest:
            found.add(self.manifest_digest)
        return frozenset(d for d in found if d)

    @classmethod
    def from_list(cls, item: dict[str, Any]) -> ImageView:
        """From one item of `GET /images/json`."""
        return cls._of(item, item.get("Labels"))

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> ImageView:
        """From `GET /images/{id}/json`."""
        return cls._of(data, (data.get("Config") or {}).get("Labels"))

    @classmethod
    def _of(cls, data: dict[str, Any], labels: dict[str, str] | None) -> ImageView:
        # Both documents name the ID, tags, digests, creation and size alike; only the labels differ.
        tags, digests = _names(data)
        return cls(
            id=str(data["Id"]),
            tags=tags,
            repo_digests=digests,
            labels=dict(labels or {}),
            created=_time(data.get("Created")),
            size=int(data.get("Size") or 0),
            raw=data,
            manifest_digest=_descriptor_digest(data.get("Descriptor")),
        )


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Every container and image at one moment, from two list calls whatever the number of services."""

    containers: dict[str, ContainerView]  # by every name it has, from the list API
    repo_digests: dict[str, tuple[str, ...]]  # image ID -> RepoDigests (digest references in RepoTags too)
    content: dict[str, frozenset[str]] = field(default_factory=dict)  # image ID -> ImageView.content


# Positional on purpose: credential helpers' (username, secret) pairs read naturally that way, and outside
# code (the registry-realm field case) builds them so.
@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None
    identity_token: str | None = None

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"Credentials(username={self.username!r}, password=***)"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Every engine treats loopback as insecure whatever daemon.json says (moby registry/config.go adds 127.0.0.0/8
# to the insecure ranges "as a stop-gap for people running a private registry on localhost").
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, kw_only=True)
class RegistryConfig:
    """Which registries the engine reaches without TLS verification: `docker info`'s `RegistryConfig`
    (Engine API SystemInfo.RegistryConfig). Docker's rule (moby registry/config.go, isSecureIndex): a
    registry named in `IndexConfigs` is as its `Secure` flag says; any other is insecure when one of its
    addresses lies in `InsecureRegistryCIDRs`. The default is what an engine with no daemon.json reports."""

    insecure_cidrs: tuple[Network, ...] = LOOPBACK
    secure: Mapping[str, bool] = field(default_factory=dict, hash=False)  # IndexConfigs: name -> Secure

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> RegistryConfig:
        """From `GET /info`'s `RegistryConfig` object; entries that do not parse are left out."""
        cidrs = []
        for text in info.get("InsecureRegistryCIDRs") or ():
            try:
                cidrs.append(ipaddress.ip_network(str(text), strict=False))
            except ValueError:
                continue
        indexes = info.get("IndexConfigs") or {}
        secure = {
            str(name): bool(entry.get("Secure", True))
            for name, entry in (indexes.items() if isinstance(indexes, dict) else ())
            if isinstance(entry, dict)
        }
        return cls(insecure_cidrs=tuple(cidrs), secure=secure)

    def insecure(self, name: str, addresses: Callable[[], list[Address]]) -> bool:
        """Whether the engine would skip TLS verification for registry `name` ("host[:port]"), given a way to
        find the host's addresses (called only when the name is not listed, as Docker resolves it)."""
        listed = self.secure.get(name)
        if listed is not None:
            return not listed
        for found in addresses():
            # Go's IPNet.Contains matches an IPv4-mapped IPv6 address as the IPv4 address it carries.
            address = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else None
            if any((address or found) in network for network in self.insecure_cidrs):
                return True
        return False


BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"  # moby libnetwork/drivers/bridge: netlabel.go


@dataclass(frozen=True, kw_only=True)
class BridgeEndpoint:
    """A container's address on a bridge network, as the host sees it: the host interface the bridge
    driver made (`docker0`, `br-<network ID[:12]>`, or its `com.docker.network.bridge.name` option) and
    the container's addresses on it (NetworkSettings.Networks[...], Engine API EndpointSettings)."""

    interface: str
    ipv4: ipaddress.IPv4Address | None
    gateway4: ipaddress.IPv4Address | None  # the bridge's own IPv4 address
    ipv6: ipaddress.IPv6Address | None  # GlobalIPv6Address, on a dual-stack network


def bridge_interface(network: Mapping[str, Any]) -> str | None:
    """The host interface of a network inspect document (`GET /networks/{id}`): its
    `com.docker.network.bridge.name` option, else the bridge driver's default `br-` + the ID's first 12
    digits (moby libnetwork/drivers/bridge/bridge.go, `getBridgeName`'s caller); None for any driver but
    `bridge` (overlay, macvlan, host, none: no host bridge to refresh)."""
    if network.get("Driver") != "bridge":
        return None
    named = (network.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    return str(named) if named else "br-" + str(network.get("Id", ""))[:12]


def _address(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(text)) if text else None
    except ValueError:
        return None


def bridge_endpoint(interface: str, settings: Mapping[str, Any]) -> BridgeEndpoint:
    """A BridgeEndpoint from one EndpointSettings object; addresses that are empty or do not parse are
    None."""
    v4, gateway, v6 = (_address(settings.get(key)) for key in ("IPAddress", "Gateway", "GlobalIPv6Address"))
    return BridgeEndpoint(
        interface=interface,
        ipv4=v4 if isinstance(v4, ipaddress.IPv4Address) else None,
        gateway4=gateway if isinstance(gateway, ipaddress.IPv4Address) else None,
        ipv6=v6 if isinstance(v6, ipaddress.IPv6Address) else None,
    )


def _explain(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect to the Docker engine (is dockerd running, and may we use its socket?)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "the Docker engine did not answer in time"
    return str(exc) or type(exc).__name__


class Engine:
    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def connect(cls, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Engine:
        """Connect to `base_url`, else DOCKER_HOST, else the local socket, negotiating the API version."""
        # from_env either way, so DOCKER_TLS_VERIFY and DOCKER_CERT_PATH still apply to a configured host.
        environment = {**os.environ, "DOCKER_HOST": base_url} if base_url else None
        try:
            client = docker.from_env(version="auto", timeout=int(timeout), environment=environment)
        except docker.errors.DockerException as exc:
            raise EngineError(_explain(exc.__cause__ or exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise EngineError(_explain(exc)) from exc
        return cls(client)

    @property
    def api_version(self) -> str:
        return str(self._client.api.api_version)

    def close(self) -> None:
        self._client.close()

    def platform(self) -> Platform:
        """The OS and architecture images are pulled for, as the engine reports them."""
        try:
            version = self._client.version()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(_explain(exc)) from exc
        arch = str(version.get("Arch", "amd64"))
        # The engine says arm for 32-bit ARM; manifests name the variant separately (v7 is Docker's default).
        variant = "v7" if arch == "arm" else ("v8" if arch == "arm64" else None)
        return Platform(os=str(version.get("Os", "linux")), architecture=arch, variant=variant)

    def container(self, name: str) -> ContainerView:
        try:
            data = self._client.api.inspect_container(name)
        except docker.errors.NotFound as exc:
            raise NotFound(f"container {name!r} does not exist") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"inspecting container {name!r}: {_explain(exc)}") from exc
        return ContainerView.from_inspect(data)

    def image(self, image_id: str) -> ImageView:
        try:
            data = self._client.api.inspect_image(image_id)
        except docker.errors.NotFound as exc:
            raise NotFound(f"image {image_id} does not exist") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"inspecting image {image_id}: {_explain(exc)}") from exc
        return ImageView.from_inspect(data)

    def snapshot(self) -> Snapshot:
        try:
            containers = self._client.api.containers(all=True)
            images = self._client.api.images()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"listing containers and images: {_explain(exc)}") from exc
        by_name = {}
        for item in containers:
            view = ContainerView.from_list(item)
            for name in item.get("Names") or ():
                by_name[name.lstrip("/")] = view
        views = [ImageView.from_list(item) for item in images]
        return Snapshot(
            containers=by_name,
            repo_digests={view.id: view.repo_digests for view in views},
            content={view.id: view.content for view in views},
        )

    # -- what an upgrade needs: raw documents and single actions, every error an EngineError ----------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except docker.errors.NotFound as exc:
            raise NotFound(f"{what}: {_explain(exc)}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise Unreachable(f"{what}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"{what}: {_explain(exc)}") from exc

    def inspect_container(self, name: str) -> dict[str, Any]:
        return dict(self._call(f"inspecting container {name}", self._client.api.inspect_container, name))

    def container_view(self, name: str) -> ContainerView:
        """`inspect_container` read as a view, with its errors and their wording (NotFound, EngineError).

        `container` reads the same document but words its errors as the check reports them; status,
        rollback and the update's dry run report these words, so each keeps its own."""
        return ContainerView.from_inspect(self.inspect_container(name))

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return dict(self._call(f"inspecting image {ref}", self._client.api.inspect_image, ref))

    def linkers_of(self, name: str) -> list[str]:
        """Names of the containers that link to container `name` with `--link` (`ContainerView.linked_by`)."""
        return next((sorted(view.linked_by) for view in self.containers() if view.name == name), [])

    def containers_in_namespace_of(self, container_id: str, name: str) -> list[str]:
        """Names of containers that use `network_mode: container:X` with X this container (by ID or name)."""
        modes = {f"container:{container_id}", f"container:{name}"}
        return sorted(view.name for view in self.containers() if view.network_mode in modes and view.name)

    def pull(self, reference: str, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Pull `reference` with the streaming API (`POST /images/create`); an error inside the 200 stream
        raises too. Each read of the stream waits at most the call timeout, so an engine that stops
        answering mid-pull is Unreachable: docker-py's own `APIClient.pull` streams with no timeout at
        all, and hangs forever on such an engine. Sends what `APIClient.pull` sends: `fromImage`, `tag`
        (a tag or a digest) and the registry's `X-Registry-Auth` from the Docker config."""
        what = f"pulling {reference}"
        api = self._client.api
        try:
            repository, tag = docker.utils.parse_repository_tag(reference)
            registry, _ = docker.auth.resolve_repository_name(repository)
            header = docker.auth.get_config_header(api, registry)
            response = api.post(
                f"{api.base_url}/v{api.api_version}/images/create",
                params={"fromImage": repository, "tag": tag or "latest"},
                headers={"X-Registry-Auth": header} if header else {},
                stream=True,
                timeout=api.timeout,
            )
            with contextlib.closing(response):
                try:
                    response.raise_for_status()
                except requests.exceptions.HTTPError as exc:
                    raise docker.errors.create_api_error_from_http_exception(exc) from exc
                for message in json_stream(response.iter_content(chunk_size=None, decode_unicode=True)):
                    if "error" in message or "errorDetail" in message:
                        detail = (message.get("errorDetail") or {}).get("message") or message.get("error")
                        raise EngineError(f"{what}: {detail}")
                    if progress is not None:
                        progress(message)
        except docker.errors.NotFound as exc:
            raise NotFound(f"{what}: {_explain(exc)}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise Unreachable(f"{what}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"{what}: {_explain(exc)}") from exc

    def stopped_by_request(self, container_id: str, since: float) -> bool:
        """Whether the engine's events since `since` (Unix seconds) hold a `kill` or `stop` of the container:
        something asked the engine to stop it (the engine's own shutdown, or someone's `docker stop`), which
        a container that exits by itself, crashes or is OOM-killed never shows (moby daemon/kill.go logs
        `kill` with the signal; the events API serves the engine's in-memory log, the last 256 events of
        the running process). Each read waits at most the call timeout (docker-py's `events` has none).
        Raises Unreachable or EngineError as any call."""
        api = self._client.api
        what = f"reading the events of {container_id[:12]}"
        params = {
            "since": f"{since:.9f}",
            "until": f"{time.time():.9f}",  # now: the engine answers from its log and ends the stream
            "filters": json.dumps({"container": [container_id], "event": ["kill", "stop"]}),
        }
        try:
            response = api.get(
                f"{api.base_url}/v{api.api_version}/events", params=params, stream=True, timeout=api.timeout
            )
            with contextlib.closing(response):
                try:
                    response.raise_for_status()
                except requests.exceptions.HTTPError as exc:
                    raise docker.errors.create_api_error_from_http_exception(exc) from exc
                return any(
                    True for _ in json_stream(response.iter_content(chunk_size=None, decode_unicode=True))
                )
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise Unreachable(f"{what}: {_explain(exc)}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"{what}: {_explain(exc)}") from exc

    def tag(self, image_id: str, reference: str) -> None:
        repository, _, tag = reference.rpartition(":")
        if "/" in tag or not repository:
            repository, tag = reference, "latest"
        if not self._call(
            f"tagging {image_id[:19]} as {reference}",
            self._client.api.tag,
            image_id,
            repository,
            tag,
            force=True,
        ):
            raise EngineError(f"tagging {image_id[:19]} as {reference}: the engine refused")

    def rename(self, container_id: str, name: str) -> None:
        self._call(f"renaming {container_id[:12]} to {name}", self._client.api.rename, container_id, name)

    def stop(self, container_id: str, timeout: int) -> None:
        # docker-py adds `timeout` to the HTTP timeout: a StopTimeout over 60 s does not hit a read timeout.
        self._call(f"stopping {container_id[:12]}", self._client.api.stop, container_id, timeout=timeout)

    def restart(self, container_id: str) -> None:
        self._call(f"restarting {container_id[:12]}", self._client.api.restart, container_id)

    def start(self, container_id: str) -> None:
        self._call(f"starting {container_id[:12]}", self._client.api.start, container_id)

    def create(self, body: dict[str, Any], name: str) -> str:
        # The raw-body call: plain create_container would add proxy variables from the client's config file.
        created = self._call(f"creating {name}", self._client.api.create_container_from_config, body, name)
        return str(created["Id"])

    def connect_network(self, container_id: str, network: str, endpoint: dict[str, Any]) -> None:
        ipam = endpoint.get("IPAMConfig") or {}
        self._call(
            f"connecting {container_id[:12]} to {network}",
            self._client.api.connect_container_to_network,
            container_id,
            network,
            aliases=endpoint.get("Aliases"),
            links=endpoint.get("Links"),
            ipv4_address=ipam.get("IPv4Address"),
            ipv6_address=ipam.get("IPv6Address"),
            link_local_ips=ipam.get("LinkLocalIPs"),
            driver_opt=endpoint.get("DriverOpts"),
            mac_address=endpoint.get("MacAddress"),
        )

    def disconnect_network(self, container_id: str, network: str) -> None:
        self._call(
            f"disconnecting {container_id[:12]} from {network}",
            self._client.api.disconnect_container_from_network,
            container_id,
            network,
        )

    def remove(self, container_id: str, force: bool = True, volumes: bool = False) -> None:
        """Remove a container; by default its volumes stay (anonymous ones too: the old version may need
        them back).

        Without `force` the engine refuses a running container, which is what a sweep of stopped ones wants
        if one was started again since it was listed. With `volumes` (`docker rm -v`) the engine also removes
        the anonymous volumes created for this container, never one it mounts by name nor one another
        container uses (moby daemon/mounts.go `removeMountPoints`)."""
        self._call(
            f"removing {container_id[:12]}",
            self._client.api.remove_container,
            container_id,
            force=force,
            v=volumes,
        )

    def defaults(self, image: str) -> dict[str, Any]:
        """What this engine fills in by itself, and what it accepts: `{"HostConfig": ..., "Name": ...,
        "ApiVersion": ...}`, the HostConfig of a container created from `image` with nothing set, the host's
        name (`GET /info`), and the negotiated API version.

        The container is never started and is removed at once with the anonymous volumes its image's
        VOLUMEs made; it carries the label `dockwarden.probe`. About 100 ms. Raises NotFound if `image` is
        not here, EngineError otherwise."""
        body = {"Image": image, "Cmd": ["true"], "Labels": {PROBE_LABEL: "1"}, "HostConfig": {}}
        created = self._call(
            "creating a probe container", self._client.api.create_container_from_config, body
        )
        try:
            document = self.inspect_container(str(created["Id"]))
        finally:
            self.remove(str(created["Id"]), volumes=True)
        info = self._call("reading the engine's info", self._client.info)
        return {
            "HostConfig": document.get("HostConfig") or {},
            "Name": info.get("Name"),
            "ApiVersion": self.api_version,
        }

    def copy_file(self, source_id: str, target_id: str, path: str) -> bool:
        """Copy the file at `path` (absolute) from one container to the same path in another, with its
        mode and owner, creating missing parent directories (`GET` then `PUT /containers/{id}/archive`).
        False if the source has no such file; EngineError otherwise."""
        what = f"copying {path} from {source_id[:12]} to {target_id[:12]}"
        try:
            stream, _ = self._call(what, self._client.api.get_archive, source_id, path)
            fetched = b"".join(stream)
        except NotFound:
            return False
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"{what}: {_explain(exc)}") from exc
        # The archive names the file by its base name; rewritten with its directory so that extracting it
        # at / recreates the directories too, as the CLI's --use-api-socket does.
        out = io.BytesIO()
        with (
            tarfile.open(fileobj=io.BytesIO(fetched)) as source,
            tarfile.open(fileobj=out, mode="w") as target,
        ):
            for member in source.getmembers():
                data = source.extractfile(member) if member.isfile() else None
                member.name = posixpath.join(posixpath.dirname(path).lstrip("/"), member.name)
                target.addfile(member, data)
        if not self._call(what, self._client.api.put_archive, target_id, "/", out.getvalue()):
            raise EngineError(f"{what}: the engine refused")
        return True

    # -- what retention and garbage collection need ------------------------------------------------

    def containers(self) -> list[ContainerView]:
        """Every container, running or not, as the list API describes it (`GET /containers/json?all=1`)."""
        items = self._call("listing containers", self._client.api.containers, all=True)
        return [ContainerView.from_list(item) for item in items]

    def images(self) -> list[ImageView]:
        """Top-level images (not build intermediates), as the list API describes them (`GET /images/json`)."""
        return [ImageView.from_list(item) for item in self._call("listing images", self._client.api.images)]

    def disk_usage(self) -> tuple[int, dict[str, int]]:
        """What `docker system df` reports: bytes all image layers take on disk, and per image ID the bytes
        only that image uses (its size minus layers shared with others)."""
        usage = self._call("reading disk usage", self._client.api.df)
        sizes = {}
        for item in usage.get("Images") or ():
            size, shared = int(item.get("Size") or 0), int(item.get("SharedSize") or 0)
            sizes[str(item["Id"])] = max(0, size - max(0, shared))
        return int(usage.get("LayersSize") or 0), sizes

    def remove_image(self, reference: str) -> list[dict[str, str]]:
        """`docker rmi` without force: untags a reference, and deletes the image if that was its last one.

        The engine refuses (EngineError) if a container, running or stopped, uses an image it would delete;
        that refusal is part of the safety of garbage collection, so this never forces."""
        found = self._call(
            f"removing image {reference}", self._client.api.remove_image, reference, force=False
        )
        return list(found or ())

    def bridge_endpoints(self, container_id: str) -> list[BridgeEndpoint]:
        """The container's endpoints on bridge networks (NotFound, EngineError); one inspect of the
        container, then one of each network it is on."""
        container = self.inspect_container(container_id)
        found = []
        networks = ((container.get("NetworkSettings") or {}).get("Networks") or {}).items()
        for name, settings in networks:
            network_id = str((settings or {}).get("NetworkID") or name)
            document = self._call(f"inspecting network {name}", self._client.api.inspect_network, network_id)
            interface = bridge_interface(dict(document))
            if interface is not None:
                found.append(bridge_endpoint(interface, settings))
        return found

    def registry_config(self) -> RegistryConfig:
        """The engine's insecure registries (`docker info`'s `RegistryConfig`), for the registry client."""
        info = self._call("reading the engine's registry settings", self._client.info)
        return RegistryConfig.from_info(dict(info.get("RegistryConfig") or {}))

    def ping(self) -> None:
        try:
            self._client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(_explain(exc)) from exc


# What the docker CLI and docker-py ask a credential helper for Docker Hub, and the user name a helper answers
# with when its secret is an identity token (docker-credential-helpers: credentials.Credentials).
_HUB_SERVER = "https://index.docker.io/v1/"
_TOKEN_USERNAME = "<token>"  # noqa: S105 -- the helper protocol's marker, not a password
HELPER_TIMEOUT = 10.0  # seconds: a helper waiting on a locked keyring would otherwise hold a check forever
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CredentialsError(EngineError):
    """Registry credentials could not be read: the Docker config is unusable, or its credential helper is
    missing, failed or answered nonsense. The message names the file or helper, never the helper's output
    (which may hold a secret)."""


def registry_credentials(registry: str, timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    """Credentials for `registry` from the Docker config ($DOCKER_CONFIG or ~/.docker/config.json).

    Looks at `credHelpers` for this registry, then `credsStore`, then `auths`, as the docker CLI does
    (docker-py reads the file and picks the helper). The helper itself runs here rather than through
    docker-py, so that it gets `timeout` seconds and its stderr and stdout never reach our logs. Raises
    CredentialsError (an EngineError)."""
    try:
        config = docker.auth.load_config()
        helper = config.get_credential_store(registry)
    except (docker.errors.DockerException, OSError, ValueError, AttributeError, TypeError) as exc:
        raise CredentialsError(f"reading Docker credentials for {registry}: {type(exc).__name__}") from None
    if helper:
        found = _from_helper(str(helper), registry, timeout)
        if found is not None:
            return found
    try:
        entry = docker.auth.AuthConfig({"auths": config.auths}).resolve_authconfig(registry)
    except (docker.errors.DockerException, ValueError, AttributeError, TypeError) as exc:
        raise CredentialsError(f"reading Docker credentials for {registry}: {type(exc).__name__}") from None
    if not entry:
        return None
    return Credentials(
        username=entry.get("Username") or entry.get("username"),
        password=entry.get("Password") or entry.get("password"),
        identity_token=entry.get("IdentityToken"),
    )


def _from_helper(name: str, registry: str, timeout: float) -> Credentials | None:
    """Ask `docker-credential-NAME get` (the credential helper protocol: the server on stdin, JSON with
    `Username` and `Secret` on stdout); None when it has nothing for this registry."""
    program = f"docker-credential-{name}"
    what = f"credential helper {program} for {registry}"
    if not _HELPER_NAME.fullmatch(name):
        raise CredentialsError(f"credential helper name {name!r} for {registry} is not a program name")
    server = _HUB_SERVER if registry in ("", "docker.io") else registry
    try:
        done = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CredentialsError(f"{what} is not installed (not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"{what} did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise CredentialsError(f"{what} could not run: {exc.strerror}") from None
    if done.returncode != 0:
        if b"credentials not found in native keychain" in done.stdout:  # the protocol's "nothing stored"
            return None
        raise CredentialsError(
            f"{what} failed (exit status {done.returncode}); its output is not shown, as it may hold a secret"
        )
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{what} answered something other than credentials") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise CredentialsError(f"{what} answered something other than credentials")
    if not user and not secret:  # docker-credential-pass answers so for a server it does not know
        return None
    if user == _TOKEN_USERNAME:
        return Credentials(None, None, secret)
    return Credentials(user, secret)
