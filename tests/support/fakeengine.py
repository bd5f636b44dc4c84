"""An in-memory Docker Engine implementing `upgrade.TransactionEngine`, for fast tests of failure paths.

Containers and images are inspect documents in two dicts, keyed by ID. The fake keeps the engine semantics
the transaction relies on (Engine API reference v1.41 to v1.45, and moby's daemon where the reference is
silent): names are unique (create and rename refuse a taken one, 409); unknown names and IDs raise
NotFound; stop and start change `State` and are no-ops on a container already there (304); remove refuses
a running container unless forced (409); remove_image untags and deletes the image with its last tag,
refusing while a container uses it (409); pull fetches from a dict of registry contents; create builds
the container from the create body plus the image's config, so `recreate.differences` finds nothing on a
faithful create. A container with HostConfig.AutoRemove is deleted when it stops (moby: at once after
the stop returns); a crash-looping one shows `restarting`, and rename refuses it (Engine 20.10 and 26.1
answer "sandbox ... not found" between two restarts) while stop ends the loop at once.

Test controls:
    fake.fail(Op.RENAME, EngineError("boom"), nth=2)       raise on the second rename
    fake.fail(Op.START, EngineError("boom"), when=pred)     raise on every start whose Call `pred` accepts
    fake.on_start[image_id] = Behaviour(exit_code=1)        containers of that image exit once started
    fake.on_start[image_id] = Behaviour(health=Health.UNHEALTHY)
    fake.on_start[image_id] = Behaviour(crash_loop=True)     ... are restarting (a crash loop) once started
    fake.pause(container_id)                                pause a running container
    fake.ignored_host_config.add("CapAdd")                  create drops that key, as an older engine would

It is a test double for failure paths, never the only proof: the integration tests run the same
transaction on real engines.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dockwarden.engine import EngineError, NotFound

_NEVER = "0001-01-01T00:00:00Z"  # the engine's zero time, for StartedAt/FinishedAt not yet reached
_CREATED_AT = "2026-01-01T00:00:00.000000000Z"  # every fake object's creation time: tests do not read it


class Op(StrEnum):
    """The fake's engine methods, named as in `upgrade.TransactionEngine`."""

    INSPECT_CONTAINER = "inspect_container"
    INSPECT_IMAGE = "inspect_image"
    PULL = "pull"
    TAG = "tag"
    RENAME = "rename"
    CREATE = "create"
    CONNECT_NETWORK = "connect_network"
    DISCONNECT_NETWORK = "disconnect_network"
    STOP = "stop"
    START = "start"
    REMOVE = "remove"
    REMOVE_IMAGE = "remove_image"
    DEFAULTS = "defaults"
    COPY_FILE = "copy_file"
    EVENTS = "stopped_by_request"


@dataclass(frozen=True, kw_only=True)
class Call:
    """One call the fake received: the method and its positional arguments (documents as passed)."""

    op: Op
    args: tuple[Any, ...]


@dataclass(frozen=True, kw_only=True)
class Fault:
    op: Op
    error: BaseException  # a BaseException that is not an Exception stands for the process being killed
    nth: int | None = None  # raise on this call of `op`, counted from the fake's creation (1 = first)
    when: Callable[[Call], bool] | None = None  # or on every call of `op` this accepts


class Health(StrEnum):
    """`State.Health.Status` values the gate reads (Engine API: HealthcheckResult / Health)."""

    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """What a container does once started. Set per image: a version that crashes crashes wherever it runs."""

    exit_code: int | None = None  # None: keeps running; a number: exits at once with it
    health: Health = Health.HEALTHY  # what its HEALTHCHECK reports while it runs, if its config has one
    crash_loop: bool = False  # restarting, as inspect shows a crash loop between two restarts


class FakeEngine:
    """Implements `upgrade.TransactionEngine` in memory; seed it with `add_image` and `add_container`."""

    def __init__(self, *, registry: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.containers: dict[str, dict[str, Any]] = {}  # ID -> inspect document
        self.images: dict[str, dict[str, Any]] = {}  # ID ("sha256:...") -> inspect document
        # What `pull` can fetch: "repo@sha256:..." (or "repo:tag") -> the image's inspect document.
        self.registry = {ref: copy.deepcopy(doc) for ref, doc in (registry or {}).items()}
        self.on_start: dict[str, Behaviour] = {}  # image ID -> behaviour; default: runs, healthy
        self.ignored_host_config: set[str] = set()  # HostConfig keys create drops
        # What the engine fills into an empty HostConfig (Engine 26.1 on a cgroup v1 host), and its host name.
        self.host_defaults: dict[str, Any] = copy.deepcopy(HOST_DEFAULTS)
        self.host_name = "fakehost"
        self.files: dict[tuple[str, str], bytes] = {}  # (container ID, path) -> content
        self.volumes: set[str] = set()  # every volume's name
        self.anonymous: dict[str, set[str]] = {}  # container ID -> the volumes made for it (no Source given)
        self.calls: list[Call] = []
        self._faults: list[Fault] = []
        self.stop_requested: set[str] = set()  # IDs of containers `stop` was called for (kill events)
        self._serial = itertools.count(1)

    # -- seeding and looking, outside the engine API: no call is recorded, no fault fires ------------

    def add_image(self, document: dict[str, Any]) -> str:
        """Store an image inspect document (a copy); returns its ID."""
        image = copy.deepcopy(document)
        image["RepoTags"] = list(image.get("RepoTags") or [])
        image["RepoDigests"] = list(image.get("RepoDigests") or [])
        self.images[str(image["Id"])] = image
        return str(image["Id"])

    def add_container(self, document: dict[str, Any], *, running: bool = True) -> str:
        """Store a container inspect document (a copy) whose image is already here, running (as its
        image's `on_start` behaviour says) or exited with code 0; returns its ID.

        Raises ValueError if its name is taken or its image unknown: a mistake in the test, not a fault."""
        container = copy.deepcopy(document)
        name = str(container["Name"]).lstrip("/")
        if self.named(name) is not None or container["Image"] not in self.images:
            raise ValueError(f"cannot seed {name}: name taken or image {container['Image']} not added")
        container["Name"] = f"/{name}"
        container["RestartCount"] = 0
        self.volumes |= {str(m["Name"]) for m in container.get("Mounts") or () if m.get("Type") == "volume"}
        container["State"] = _state("exited", started=_CREATED_AT)
        if running:
            self._run(container)
        self.containers[str(container["Id"])] = container
        return str(container["Id"])

    def fail(
        self,
        op: Op,
        error: BaseException,
        *,
        nth: int | None = None,
        when: Callable[[Call], bool] | None = None,
    ) -> None:
        """Make `op` raise `error` on its `nth` call, or on every call `when` accepts (give one of them)."""
        if (nth is None) == (when is None):
            raise ValueError("give exactly one of nth and when")
        self._faults.append(Fault(op=op, error=error, nth=nth, when=when))

    def pause(self, container_id: str) -> None:
        """Pause a running container (`docker pause`): State.Status `paused`, Running and Paused true."""
        state = self.containers[container_id]["State"]
        state.update(Status="paused", Paused=True)

    def named(self, name: str) -> dict[str, Any] | None:
        """The live document of the container called `name`, if any."""
        return next((c for c in self.containers.values() if c["Name"] == f"/{name}"), None)

    def names(self) -> list[str]:
        """Every container's name, sorted."""
        return sorted(str(c["Name"]).lstrip("/") for c in self.containers.values())

    def tagged(self, reference: str) -> str | None:
        """The ID of the image `reference` (a tag) points at, if any."""
        wanted = _with_tag(reference)
        return next((i for i, image in self.images.items() if wanted in image["RepoTags"]), None)

    # -- upgrade.TransactionEngine --------------------------------------------------------------

    def inspect_container(self, name: str) -> dict[str, Any]:
        self._called(Op.INSPECT_CONTAINER, name)
        return copy.deepcopy(self._container(name, f"inspecting container {name}"))

    def inspect_image(self, ref: str) -> dict[str, Any]:
        self._called(Op.INSPECT_IMAGE, ref)
        return copy.deepcopy(self._image(ref, f"inspecting image {ref}"))

    def pull(self, reference: str, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._called(Op.PULL, reference)
        if reference not in self.registry:
            raise NotFound(f"pulling {reference}: manifest unknown")
        pulled = copy.deepcopy(self.registry[reference])
        image = self.images.setdefault(str(pulled["Id"]), {**pulled, "RepoTags": [], "RepoDigests": []})
        if "@" in reference:  # by digest: the engine records the digest, and adds no tag
            image["RepoDigests"] = sorted({*image["RepoDigests"], reference})
        else:
            self._move_tag(image, reference)
        if progress is not None:
            progress({"status": f"Downloaded newer image for {reference}"})

    def tag(self, image_id: str, reference: str) -> None:
        self._called(Op.TAG, image_id, reference)
        self._move_tag(self._image(image_id, f"tagging {image_id[:19]} as {reference}"), reference)

    def rename(self, container_id: str, name: str) -> None:
        self._called(Op.RENAME, container_id, name)
        what = f"renaming {container_id[:12]} to {name}"
        container = self._container(container_id, what)
        if container["State"]["Restarting"]:
            raise EngineError(f"{what}: Error response from daemon: sandbox {container_id} not found")
        if container["Name"] == f"/{name}":  # moby daemon/rename.go refuses a rename to the same name
            raise EngineError(f"{what}: Renaming a container with the same name as its current name")
        self._name_free(name, what)
        container["Name"] = f"/{name}"

    def create(self, body: dict[str, Any], name: str) -> str:
        self._called(Op.CREATE, body, name)
        what = f"creating {name}"
        self._name_free(name, what)
        image = self._image(str(body["Image"]), what)
        container_id = hashlib.sha256(f"fake-container-{next(self._serial)}".encode()).hexdigest()
        host = {k: copy.deepcopy(v) for k, v in (body.get("HostConfig") or {}).items()}
        for key in self.ignored_host_config:
            host.pop(key, None)
        host["NetworkMode"] = host.get("NetworkMode") or "default"
        endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        config = _merged_config(
            {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")},
            image.get("Config") or {},
        )
        config.setdefault("Hostname", container_id[:12])  # the engine's default hostname: the short ID
        _fill_defaults(host, self.host_defaults)
        mounts, anonymous = self._mounts(host, config)
        self.anonymous[container_id] = anonymous
        self.containers[container_id] = {
            "Id": container_id,
            "Name": f"/{name}",
            "Created": _CREATED_AT,
            "Image": image["Id"],
            "Config": config,
            "HostConfig": host,
            "NetworkSettings": {"Networks": _networks(host["NetworkMode"], endpoints)},
            "Mounts": mounts,
            "RestartCount": 0,
            "State": _state("created"),
        }
        return container_id

    def connect_network(self, container_id: str, network: str, endpoint: dict[str, Any]) -> None:
        self._called(Op.CONNECT_NETWORK, container_id, network, endpoint)
        what = f"connecting {container_id[:12]} to {network}"
        networks = self._container(container_id, what)["NetworkSettings"]["Networks"]
        if network in networks:
            raise EngineError(f"{what}: endpoint with name {container_id[:12]} already exists in network")
        networks[network] = _endpoint(endpoint)

    def disconnect_network(self, container_id: str, network: str) -> None:
        self._called(Op.DISCONNECT_NETWORK, container_id, network)
        what = f"disconnecting {container_id[:12]} from {network}"
        networks = self._container(container_id, what)["NetworkSettings"]["Networks"]
        if network not in networks:
            raise EngineError(f"{what}: container {container_id[:12]} is not connected to network {network}")
        del networks[network]

    def stopped_by_request(self, container_id: str, since: float) -> bool:
        """Whether `stop` was asked for this container since it last started (the engine logs a `kill`)."""
        self._called(Op.EVENTS, container_id, since)
        return container_id in self.stop_requested

    def stop(self, container_id: str, timeout: int) -> None:
        self._called(Op.STOP, container_id, timeout)
        container = self._container(container_id, f"stopping {container_id[:12]}")
        self.stop_requested.add(container["Id"])
        if container["State"]["Running"]:  # a stopped one: 304, which docker-py does not raise
            container["State"] = _state("exited", started=container["State"]["StartedAt"])
            self._removed_if_auto(container)

    def start(self, container_id: str) -> None:
        self._called(Op.START, container_id)
        container = self._container(container_id, f"starting {container_id[:12]}")
        if not container["State"]["Running"]:  # a running one: 304, which docker-py does not raise
            self.stop_requested.discard(container["Id"])  # only a stop since its last start is asked of it
            self._run(container)

    def remove(self, container_id: str, force: bool = True, volumes: bool = False) -> None:
        self._called(Op.REMOVE, container_id, force, volumes)
        what = f"removing {container_id[:12]}"
        container = self._container(container_id, what)
        if container["State"]["Running"] and not force:
            raise EngineError(
                f"{what}: You cannot remove a running container {container['Id']}. "
                "Stop the container before attempting removal or force remove"
            )
        del self.containers[container["Id"]]
        made = self.anonymous.pop(container["Id"], set())
        if volumes:  # the volumes made for it (moby: no Source in their spec), unless another uses them
            in_use = {m["Name"] for c in self.containers.values() for m in c["Mounts"] if m.get("Name")}
            self.volumes -= made - in_use

    def defaults(self, image: str) -> dict[str, Any]:
        self._called(Op.DEFAULTS, image)
        self._image(image, "creating a probe container")
        return {"HostConfig": copy.deepcopy(self.host_defaults), "Name": self.host_name}

    def copy_file(self, source_id: str, target_id: str, path: str) -> bool:
        self._called(Op.COPY_FILE, source_id, target_id, path)
        what = f"copying {path} from {source_id[:12]} to {target_id[:12]}"
        source, target = self._container(source_id, what), self._container(target_id, what)
        if (source["Id"], path) not in self.files:
            return False
        self.files[target["Id"], path] = self.files[source["Id"], path]
        return True

    def remove_image(self, reference: str) -> list[dict[str, str]]:
        self._called(Op.REMOVE_IMAGE, reference)
        what = f"removing image {reference}"
        image = self._image(reference, what)
        tag = _with_tag(reference)
        if tag in image["RepoTags"] and len(image["RepoTags"]) > 1:  # other tags remain: only untag
            image["RepoTags"].remove(tag)
            return [{"Untagged": tag}]
        user = next((c for c in self.containers.values() if c["Image"] == image["Id"]), None)
        if user is not None:
            raise EngineError(
                f"{what}: conflict: unable to remove repository reference {reference!r} (must force) - "
                f"container {user['Id'][:12]} is using its referenced image {image['Id'][7:19]}"
            )
        del self.images[image["Id"]]
        return [
            *({"Untagged": r} for r in image["RepoTags"] + image["RepoDigests"]),
            {"Deleted": image["Id"]},
        ]

    # -- inside -----------------------------------------------------------------------------------

    def _called(self, op: Op, *args: Any) -> None:
        call = Call(op=op, args=args)
        self.calls.append(call)
        count = sum(1 for c in self.calls if c.op is op)
        for fault in self._faults:
            if fault.op is op and (fault.nth == count or (fault.when is not None and fault.when(call))):
                raise fault.error

    def _container(self, ref: str, what: str) -> dict[str, Any]:
        # moby daemon.GetContainer: a full ID, then an exact name, then a unique ID prefix.
        if ref in self.containers:
            return self.containers[ref]
        found = self.named(ref.lstrip("/"))
        if found is not None:
            return found
        matches = [c for i, c in self.containers.items() if ref and i.startswith(ref)]
        if len(matches) > 1:
            raise EngineError(f"{what}: multiple IDs found with provided prefix: {ref}")
        if not matches:
            raise NotFound(f"{what}: No such container: {ref}")
        return matches[0]

    def _image(self, ref: str, what: str) -> dict[str, Any]:
        # An ID (with or without "sha256:", or a prefix of 12 hex digits or more), else a reference: a tag
        # (":latest" when none is given) or a digest reference.
        hex_id = ref.removeprefix("sha256:")
        if ref.startswith("sha256:") or (len(hex_id) >= 12 and all(c in "0123456789abcdef" for c in hex_id)):
            matches = [i for i in self.images if i.removeprefix("sha256:").startswith(hex_id)]
            if len(matches) == 1:
                return self.images[matches[0]]
        wanted = ref if "@" in ref else _with_tag(ref)
        for image in self.images.values():
            if wanted in image["RepoTags"] or wanted in image["RepoDigests"]:
                return image
        raise NotFound(f"{what}: No such image: {ref}")

    def _move_tag(self, image: dict[str, Any], reference: str) -> None:
        tag = _with_tag(reference)
        for other in self.images.values():  # a tag names one image; the previous one keeps its others
            if tag in other["RepoTags"]:
                other["RepoTags"].remove(tag)
        image["RepoTags"].append(tag)

    def _name_free(self, name: str, what: str) -> None:
        holder = self.named(name)
        if holder is not None:
            raise EngineError(
                f'{what}: Conflict. The container name "/{name}" is already in use by container '
                f'"{holder["Id"]}". You have to remove (or rename) that container to be able to reuse '
                "that name."
            )

    def _removed_if_auto(self, container: dict[str, Any]) -> None:
        # moby deletes an AutoRemove container (with its anonymous volumes) once it stopped.
        if (container.get("HostConfig") or {}).get("AutoRemove"):
            self.containers.pop(container["Id"], None)

    def _mounts(self, host: dict[str, Any], config: dict[str, Any]) -> tuple[list[dict[str, Any]], set[str]]:
        """`Mounts` of a new container, and the names of the volumes made for it: the volumes its Binds and
        Mounts name, a new one for a volume Mount without a Source, and one for every other path of
        `Config.Volumes` (moby daemon/create_unix.go)."""
        named = [b.split(":")[:2] for b in host.get("Binds") or () if not b.startswith("/")]
        named += [
            [m.get("Source"), m["Target"]] for m in host.get("Mounts") or () if m.get("Type") == "volume"
        ]
        named += [[None, path] for path in config.get("Volumes") or {} if path not in {d for _, d in named}]
        mounts, made = [], set()
        for source, destination in named:
            name = source or hashlib.sha256(f"volume-{next(self._serial)}".encode()).hexdigest()
            if not source:
                made.add(name)
            mounts.append({"Type": "volume", "Name": name, "Destination": destination, "RW": True})
        self.volumes |= {m["Name"] for m in mounts}
        return mounts, made

    def _run(self, container: dict[str, Any]) -> None:
        behaviour = self.on_start.get(str(container["Image"]), Behaviour())
        if behaviour.exit_code is not None:
            container["State"] = _state("exited", started=_CREATED_AT, exit_code=behaviour.exit_code)
            self._removed_if_auto(container)
            return
        if behaviour.crash_loop:
            container["RestartCount"] = int(container.get("RestartCount") or 0) + 1
            container["State"] = _state("restarting", started=_CREATED_AT, exit_code=1)
            return
        checked = _has_healthcheck(container.get("Config") or {})
        container["State"] = _state(
            "running", started=_CREATED_AT, health=behaviour.health if checked else None
        )


HOST_DEFAULTS: dict[str, Any] = {
    "ShmSize": 67108864,
    "IpcMode": "private",
    "CgroupnsMode": "host",
    "Runtime": "runc",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "MaskedPaths": ["/proc/asound", "/proc/kcore", "/sys/firmware", "/sys/devices/virtual/powercap"],
    "ReadonlyPaths": ["/proc/bus", "/proc/sys"],
}


def _fill_defaults(host: dict[str, Any], defaults: dict[str, Any]) -> None:
    """What the engine fills into a HostConfig the create request left empty (see HOST_DEFAULTS)."""
    for key, value in defaults.items():
        if key == "LogConfig":
            given = dict(host.get(key) or {})
            host[key] = {"Type": given.get("Type") or value["Type"], "Config": given.get("Config") or {}}
        elif host.get(key) is None or host.get(key) in ("", 0):
            host[key] = copy.deepcopy(value)


def _state(
    status: str, *, started: str = _NEVER, exit_code: int = 0, health: Health | None = None
) -> dict[str, Any]:
    """A `State` object as inspect shows it (Engine API: ContainerState)."""
    state: dict[str, Any] = {
        "Status": status,
        # moby container/state.go: a restarting container counts as running (SetRestarting).
        "Running": status in ("running", "restarting"),
        "Paused": False,
        "Restarting": status == "restarting",
        "OOMKilled": False,
        "Dead": False,
        "ExitCode": exit_code,
        "Error": "",
        "StartedAt": started,
        "FinishedAt": _CREATED_AT if status == "exited" else _NEVER,
    }
    if health is not None:
        state["Health"] = {"Status": str(health), "FailingStreak": 0, "Log": []}
    return state


def _has_healthcheck(config: dict[str, Any]) -> bool:
    # A HEALTHCHECK NONE (Test ["NONE"]) disables an inherited check: no Health in State then.
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def _with_tag(reference: str) -> str:
    """`reference` with `:latest` added when it names no tag (a `:` after the last `/` is a tag)."""
    return reference if ":" in reference.rpartition("/")[2] else f"{reference}:latest"


def _merged_config(body: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """The container's Config: the create body, with the image's values wherever the body sets none (moby
    daemon/commit.go `merge`: Env and Labels by key, ports and volumes as a union, the rest if unset)."""
    config = copy.deepcopy(body)
    own = {entry.partition("=")[0] for entry in config.get("Env") or []}
    inherited = [entry for entry in image.get("Env") or [] if entry.partition("=")[0] not in own]
    config["Env"] = [*(config.get("Env") or []), *inherited]
    config["Labels"] = {**(image.get("Labels") or {}), **(config.get("Labels") or {})}
    for key in ("ExposedPorts", "Volumes"):
        config[key] = {**(image.get(key) or {}), **(config.get(key) or {})} or None
    if not config.get("Entrypoint"):  # an Entrypoint in the body drops the image's Cmd too
        if not config.get("Cmd"):
            config["Cmd"] = copy.deepcopy(image.get("Cmd"))
            config["ArgsEscaped"] = image.get("ArgsEscaped")
        if config.get("Entrypoint") is None:
            config["Entrypoint"] = copy.deepcopy(image.get("Entrypoint"))
    if image.get("Healthcheck"):  # field by field: a body's check may set only its Test
        given = {k: v for k, v in (config.get("Healthcheck") or {}).items() if v}
        config["Healthcheck"] = {**copy.deepcopy(image["Healthcheck"]), **given}
    for key in ("WorkingDir", "User", "StopSignal"):
        if not config.get(key):
            config[key] = image.get(key)
    return config


def _networks(mode: str, endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """`NetworkSettings.Networks` of a new container: the endpoints given, else its network mode's own."""
    if endpoints:
        return {net: _endpoint(endpoint or {}) for net, endpoint in endpoints.items()}
    if mode.startswith("container:"):
        return {}  # it shares another container's namespace and has no endpoint of its own
    return {"bridge" if mode == "default" else mode: _endpoint({})}


def _endpoint(config: Mapping[str, Any]) -> dict[str, Any]:
    """An endpoint as inspect shows it, from the EndpointConfig it was made with."""
    given = {k: copy.deepcopy(config.get(k)) for k in ("Aliases", "IPAMConfig", "Links", "DriverOpts")}
    return {**given, "MacAddress": "", "NetworkID": ""}
