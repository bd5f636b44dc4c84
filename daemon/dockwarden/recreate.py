"""The create body for a container's successor: a pure function of three inspect documents.

Input: the old container's inspect, the old image's inspect and the new image's inspect. Output: the body
for `POST /containers/create` that keeps everything the user set and nothing the old image set, plus the
networks to connect before start (API 1.41 accepts one network at create). Every peer loses something
here (see the field notes); each rule below names what it protects.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dockwarden import compose

REPLACES_LABEL = "dockwarden.replaces"  # on a successor: the ID of the container it replaced

# Config keys whose value, when equal to the old image's, came from the image and must not be frozen
# into the container: the new image's value has to apply.
_IMAGE_DEFAULTS = ("Cmd", "Entrypoint", "Healthcheck", "WorkingDir", "User", "Shell", "ArgsEscaped")
# Config keys the user can set on a container and create accepts back unchanged.
_PASSTHROUGH = (
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "NetworkDisabled",
    "StopSignal",
    "StopTimeout",
)
_HEX_NAME = re.compile(r"[0-9a-f]{64}\Z")
_DEFAULT_BRIDGE = "bridge"


@dataclass(frozen=True, kw_only=True)
class CreatePlan:
    """What to send to the engine: the body, the name, and the networks to connect before start."""

    name: str
    body: dict[str, Any]
    connect: dict[str, dict[str, Any]] = field(default_factory=dict)  # network -> EndpointConfig
    notes: tuple[str, ...] = ()  # what was dropped or re-attached, for the dry run and the log


def _config(image: dict[str, Any]) -> dict[str, Any]:
    return dict(image.get("Config") or {})


def _short_id(container: dict[str, Any]) -> str:
    return str(container["Id"])[:12]


def network_mode(container: dict[str, Any]) -> str:
    return str((container.get("HostConfig") or {}).get("NetworkMode") or "default")


def shares_namespace(mode: str) -> bool:
    """host, none and container:X modes have no endpoints of their own."""
    return mode in ("host", "none") or mode.startswith("container:")


def _kept_config(
    container: dict[str, Any], old_image: dict[str, Any], notes: list[str], mode: str
) -> dict[str, Any]:
    have = dict(container.get("Config") or {})
    old = _config(old_image)
    published = ((container.get("HostConfig") or {}).get("PortBindings") or {}).keys()
    body = _user_values(have, old, published, notes)
    labels = {
        k: v
        for k, v in (have.get("Labels") or {}).items()
        if (old.get("Labels") or {}).get(k) != v and k != REPLACES_LABEL
    }
    labels[REPLACES_LABEL] = str(container["Id"])
    body["Labels"] = labels

    for key in _PASSTHROUGH:
        if have.get(key) not in (None, ""):
            body[key] = copy.deepcopy(have[key])

    hostname = have.get("Hostname") or ""
    if shares_namespace(mode) and mode != "none":
        pass  # the hostname belongs to the host or the other container; create refuses one
    elif hostname and hostname != _short_id(container):
        body["Hostname"] = hostname
    elif hostname:
        notes.append(f"Hostname {hostname} was the old container's ID; the new one gets its own")

    # Config.MacAddress holds only a MAC the user set; engine-generated ones live in NetworkSettings and
    # must not be copied (two containers with one MAC).
    if have.get("MacAddress") and not shares_namespace(mode):
        body["MacAddress"] = have["MacAddress"]
    return body


def _user_values(
    have: dict[str, Any], old: dict[str, Any], published: Iterable[str], notes: list[str]
) -> dict[str, Any]:
    """Env, the image-default keys, ExposedPorts and Volumes, minus whatever equals the old image's."""
    body: dict[str, Any] = {}
    env = [e for e in have.get("Env") or [] if e not in set(old.get("Env") or [])]
    dropped_env = [e.partition("=")[0] for e in have.get("Env") or [] if e not in env]
    if dropped_env:
        notes.append(f"Env from the old image not copied: {', '.join(dropped_env)}")
    if env:
        body["Env"] = env

    for key in _IMAGE_DEFAULTS:
        value = have.get(key)
        if value in (None, "", [], {}):
            continue
        if value == old.get(key):
            notes.append(f"{key} came from the old image; the new image's applies")
            continue
        body[key] = copy.deepcopy(value)

    for key in ("ExposedPorts", "Volumes"):
        image_keys = set((old.get(key) or {}).keys())
        # A published port stays exposed even if the image declared it: the engine publishes only exposed
        # ports, so a new image without that EXPOSE would silently unpublish it.
        image_keys -= set(published)
        kept = {k: v for k, v in (have.get(key) or {}).items() if k not in image_keys}
        if kept:
            body[key] = kept

    return body


def _bind_destination(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _host_config(container: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    host = copy.deepcopy(dict(container.get("HostConfig") or {}))
    binds = list(host.get("Binds") or [])
    covered = {_bind_destination(b) for b in binds}
    covered |= {str(m.get("Target")) for m in host.get("Mounts") or []}
    if host.get("VolumesFrom"):
        # Their mounts come back through VolumesFrom itself; binding them too would duplicate a mount point.
        covered |= {
            str(m.get("Destination")) for m in container.get("Mounts") or [] if m.get("Type") == "volume"
        }
    for mount in container.get("Mounts") or []:
        destination = str(mount.get("Destination"))
        if mount.get("Type") != "volume" or destination in covered:
            continue
        name = str(mount.get("Name"))
        # An anonymous volume is lost unless re-attached by name: the new container would get a fresh one.
        binds.append(f"{name}:{destination}" + ("" if mount.get("RW", True) else ":ro"))
        label = "anonymous volume" if _HEX_NAME.match(name) else "volume"
        notes.append(f"{label} {name[:12]} re-attached at {destination}")
    if binds:
        host["Binds"] = binds
    if host.get("Links"):
        # Inspect shows "/target:/this/alias"; create wants "target:alias".
        host["Links"] = [_create_link(link) for link in host["Links"]]
    return host


def _create_link(link: str) -> str:
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}"


def _endpoint(
    container: dict[str, Any], network: str, settings: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    endpoint: dict[str, Any] = {}
    ipam = {k: v for k, v in (settings.get("IPAMConfig") or {}).items() if v}
    if ipam:
        endpoint["IPAMConfig"] = ipam
    aliases = list(settings.get("Aliases") or [])
    if _short_id(container) in aliases:
        aliases.remove(_short_id(container))
        notes.append(f"alias {_short_id(container)} (the old ID) on {network} not copied")
    # The default bridge and host networks refuse aliases; setting one fails the create.
    if aliases and network not in (_DEFAULT_BRIDGE, "host"):
        endpoint["Aliases"] = aliases
    if settings.get("Links") and network != _DEFAULT_BRIDGE:
        endpoint["Links"] = list(settings["Links"])
    if settings.get("DriverOpts"):
        endpoint["DriverOpts"] = dict(settings["DriverOpts"])
    return endpoint


def plan(
    container: dict[str, Any],
    old_image: dict[str, Any],
    new_image: dict[str, Any],
    image: str,
    mode_override: str | None = None,
) -> CreatePlan:
    """The successor of `container` running `image` (a reference that resolves to `new_image`).

    `mode_override` replaces a `container:X` network mode whose X has itself been recreated.
    """
    notes: list[str] = []
    mode = network_mode(container)
    body = _kept_config(container, old_image, notes, mode)
    body["Image"] = image
    _follow_compose(body, new_image)
    body["HostConfig"] = _host_config(container, notes)
    if mode_override is not None:
        body["HostConfig"]["NetworkMode"] = mode_override
        notes.append(f"network mode {mode} -> {mode_override}")
    connect: dict[str, dict[str, Any]] = {}
    if not shares_namespace(mode):
        networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
        primary = _DEFAULT_BRIDGE if mode == "default" else mode
        endpoints = {net: _endpoint(container, net, settings, notes) for net, settings in networks.items()}
        if primary not in endpoints and endpoints:
            primary = next(iter(endpoints))
        if primary in endpoints:
            body["NetworkingConfig"] = {"EndpointsConfig": {primary: endpoints.pop(primary)}}
        connect = endpoints
    return CreatePlan(name=str(container["Name"]).lstrip("/"), body=body, connect=connect, notes=tuple(notes))


def _follow_compose(body: dict[str, Any], new_image: dict[str, Any]) -> None:
    """A compose service's successor names the image it runs in compose's image label, as `docker compose
    up` would have; with the old image's ID there, compose would recreate it once more (`compose`)."""
    if new_image.get("Id"):  # the dry run plans without the new image: the label is left as it is
        body["Labels"] = compose.successor_labels(body["Labels"], str(new_image["Id"]))


# -- after create: is the new container what we asked for? ---------------------------------------


def _norm(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


_EMPTY: tuple[Any, ...] = (None, "", [], {}, 0, False)


def differences(intended: CreatePlan, actual: dict[str, Any]) -> list[str]:
    """Every way the created container differs from the plan; [] when it is faithful."""
    return [
        *_config_differences(intended.body, actual.get("Config") or {}),
        *_host_differences(intended.body["HostConfig"], actual.get("HostConfig") or {}),
        *_network_differences(intended, (actual.get("NetworkSettings") or {}).get("Networks") or {}),
    ]


def _config_differences(body: dict[str, Any], have: dict[str, Any]) -> list[str]:
    found = []
    for key, want in body.items():
        if key in ("HostConfig", "NetworkingConfig"):
            continue
        got = have.get(key)
        if key == "Env":
            # The new image's variables join ours; each of ours must be there unchanged.
            missing = [e.partition("=")[0] for e in want if e not in (got or [])]
        elif key in ("Labels", "ExposedPorts", "Volumes"):
            present: dict[str, Any] = got or {}
            missing = [k for k in want if k not in present or (key == "Labels" and present[k] != want[k])]
        else:
            missing = [] if _norm(got) == _norm(want) else [f"{got!r}, not {want!r}"]
        if missing:
            found.append(f"{key}: {', '.join(missing)}")
    return found


def _host_differences(want_host: dict[str, Any], host: dict[str, Any]) -> list[str]:
    found = []
    for key, want in want_host.items():
        got = host.get(key)
        if key == "Links":
            got = [_create_link(link) for link in got or []]
        if want in _EMPTY and got in _EMPTY:
            continue
        if _norm(got) != _norm(want):
            found.append(f"HostConfig.{key} is {got!r}, not {want!r}")
    return found


def _network_differences(intended: CreatePlan, networks: dict[str, Any]) -> list[str]:
    found = []
    wanted = dict(intended.connect)
    wanted.update((intended.body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    for net, endpoint in wanted.items():
        if net not in networks:
            found.append(f"not connected to network {net}")
            continue
        settings = networks[net] or {}
        for k, v in (endpoint.get("IPAMConfig") or {}).items():
            if (settings.get("IPAMConfig") or {}).get(k) != v:
                found.append(f"network {net}: {k} is not {v}")
        missing = [a for a in endpoint.get("Aliases") or [] if a not in (settings.get("Aliases") or [])]
        if missing:
            found.append(f"network {net}: aliases {', '.join(missing)} missing")
    return found


def describe(container: dict[str, Any], new: CreatePlan) -> list[str]:
    """Human-readable differences between the old container and its planned successor (for --dry-run)."""
    was = (container.get("Config") or {}).get("Image")
    lines = [f"image: {was} ({str(container.get('Image'))[:19]}) -> {new.body['Image']}"]
    lines.extend(new.notes)
    if new.connect:
        lines.append(f"networks connected before start: {', '.join(sorted(new.connect))}")
    return lines
