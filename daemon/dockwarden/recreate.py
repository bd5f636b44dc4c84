"""The create body for a container's successor: a pure function of inspect documents.

Input: the old container's inspect, the old and new images' inspects, and what the engine fills in by itself
(`EngineDefaults`). Output: the `POST /containers/create` body that `docker create` with the user's own
flags would send for the new image, the networks to connect before start (API 1.41 takes one network at
create), the volume each path must mount, and the files to copy in after create.

The rule. A container's inspect is what the user set, plus what the image and the engine filled into what
the user left empty. A value is the user's when it differs from what would have been filled in, and only
the user's values go into the body, so that the new image and the running engine fill in the rest again:

- `Config` from the image, as moby `daemon/commit.go` `merge` does (v20.10 to v26.1): the image's `Env`
  entries are appended after the user's ones whose name they do not share, its `Labels`, `ExposedPorts` and
  `Volumes` join the user's, `Cmd` fills in only when the user gave neither a command nor an entrypoint,
  `Entrypoint` only when the user did not give one (an entrypoint of one empty string clears it, and the
  engine then records none: `daemon/create.go`), each `Healthcheck` sub-field the user left zero is the
  image's, and `User`, `WorkingDir` and `StopSignal` are the image's when the user left them empty.
- `HostConfig` from the engine (`daemon/daemon_unix.go` `adaptContainerSettings`: ShmSize, IpcMode,
  CgroupnsMode; `daemon/create_unix.go`: MaskedPaths, ReadonlyPaths; `daemon/daemon_unix.go`
  `verifyPlatformContainerSettings`: Runtime; `daemon/logs.go` `mergeAndVerifyLogConfig`: LogConfig;
  `daemon/create.go` `generateSecurityOpt`: a trailing `label=disable`): compared with what the same engine
  fills into a container created with nothing set (`EngineDefaults`, read from a throwaway container).

A value the user set equal to the default is indistinguishable from it, and follows the default too.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dockwarden import compose

REPLACES_LABEL = "dockwarden.replaces"  # on a successor: the ID of the container it replaced

_HEX_NAME = re.compile(r"[0-9a-f]{64}\Z")
_DEFAULT_BRIDGE = "bridge"
_NO_VALUE: tuple[Any, ...] = (None, "", [], {})
# Config keys the user sets with a flag and create accepts back as they are; the image has no say in them.
_PASSTHROUGH = (
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "NetworkDisabled",
    "StopTimeout",
)
# Config keys `merge` fills from the image when the user left them empty (Shell: only the API sets it).
_IMAGE_SCALARS = ("User", "WorkingDir", "StopSignal", "Shell")
_HEALTH_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")
# HostConfig keys the engine fills with its own default when the create request leaves them empty.
ENGINE_FILLED = ("ShmSize", "IpcMode", "CgroupnsMode", "Runtime")
_PATH_LISTS = ("MaskedPaths", "ReadonlyPaths")

# moby oci/defaults.go: the paths masked in every unprivileged container, across releases (20.10 to 23.0 mask
# ten; 24.0 added powercap; 28.3 /proc/interrupts, and each CPU's thermal_throttle on hosts that have it).
_KNOWN_MASKED = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
_THERMAL = re.compile(r"/sys/devices/system/cpu/cpu\d+/thermal_throttle\Z")
_KNOWN_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# docker CLI 28 `run --use-api-socket` (cli/command/container/create.go) binds the engine's socket at
# /var/run/docker.sock, sets DOCKER_CONFIG to this file's directory and, after create, writes the user's
# registry credentials there through the archive API: no inspect field records the file.
API_SOCKET_CONFIG = "/run/secrets/docker/config.json"
_API_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True, kw_only=True)
class EngineDefaults:
    """What an engine fills into a container when the create request leaves a field empty.

    `host`: the HostConfig of a container that engine created with an empty one (`Engine.defaults`);
    `host_name`: the engine host's name (`GET /info` `Name`), the hostname of a `--network host` container
    that sets none; None when unknown (then such a hostname is kept as it is); `networks_at_create`: the
    engine's API is 1.44 or later. `BUILTIN` holds moby's compiled-in defaults (daemon/config,
    oci/defaults.go, v26.1), used where no engine is asked: the dry run and tests.
    """

    host: Mapping[str, Any] = field(hash=False)
    host_name: str | None = None
    # API 1.44+ creates a container on several networks at once, with a MAC each; before, create takes
    # one and the others are connected after it (Engine 26.1 also ignores a MAC given at connect).
    networks_at_create: bool = False
    # API 1.46+ (Engine 27+): the bridge driver gives an endpoint without a configured MAC a random one, no
    # longer one derived from its IPv4 address, so inspect cannot tell a generated MAC from a
    # `--mac-address` on any network but the primary one (which `Config.MacAddress` still names).
    random_macs: bool = False

    @classmethod
    def from_probe(cls, probe: Mapping[str, Any]) -> EngineDefaults:
        """From `Engine.defaults`: `{"HostConfig": {...}, "Name": host name, "ApiVersion": "1.45"}`."""
        major, _, minor = str(probe.get("ApiVersion") or "1.41").partition(".")
        version = (int(major), int(minor or 0))
        return cls(
            host=dict(probe.get("HostConfig") or {}),
            host_name=probe.get("Name") or None,
            networks_at_create=version >= (1, 44),
            random_macs=version >= (1, 46),
        )

    def is_default_paths(self, key: str, paths: Iterable[str]) -> bool:
        """MaskedPaths/ReadonlyPaths that an engine filled in: every path is one this engine or a known
        moby release masks (or makes read-only) by default. The lists only grew across releases, so an older
        engine's list passes; the CLI itself can only send an empty list (`--security-opt
        systempaths=unconfined`), which is the user's."""
        known = set(self.host.get(key) or ())
        known |= set(_KNOWN_MASKED if key == "MaskedPaths" else _KNOWN_READONLY)
        listed = list(paths)
        return bool(listed) and all(
            p in known or (key == "MaskedPaths" and _THERMAL.match(p)) for p in listed
        )


BUILTIN = EngineDefaults(
    host=MappingProxyType(
        {
            "ShmSize": 64 * 1024 * 1024,
            "IpcMode": "private",
            "Runtime": "runc",
            "LogConfig": {"Type": "json-file", "Config": {}},
            # No CgroupnsMode: "host" on cgroup v1 hosts, "private" on v2, so only a probe can tell.
        }
    ),
)


@dataclass(frozen=True, kw_only=True)
class CreatePlan:
    """What to send to the engine: the body, the name, the networks to connect before start, the volume
    each path must mount (destination -> volume name, checked after create), and the files to copy from
    the old container into the new one after create (absolute paths in the container)."""

    name: str
    body: dict[str, Any]
    connect: dict[str, dict[str, Any]] = field(default_factory=dict)  # network -> EndpointConfig
    volumes: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what was dropped or re-attached, for the dry run and the log


def _config(image: Mapping[str, Any]) -> dict[str, Any]:
    return dict(image.get("Config") or {})


def _short_id(container: Mapping[str, Any]) -> str:
    return str(container["Id"])[:12]


def network_mode(container: Mapping[str, Any]) -> str:
    return str((container.get("HostConfig") or {}).get("NetworkMode") or "default")


def shares_namespace(mode: str) -> bool:
    """host, none and container:X modes have no endpoints of their own."""
    return mode in ("host", "none") or mode.startswith("container:")


# -- Config: what the user set, given what the old image filled in ------------------------------------


def user_env(env: list[str], image_env: list[str]) -> list[str]:
    """The entries the user gave: `merge` appends the image's entries the user did not name after the
    user's own, so the user's are the longest prefix after which exactly those image entries follow.

    A user entry equal to the image's is the user's when the order shows it (it comes before one of the
    user's own); otherwise it cannot be told from the image's."""
    for split in range(len(env) + 1):
        named = {entry.partition("=")[0] for entry in env[:split]}
        if env[split:] == [e for e in image_env if e.partition("=")[0] not in named]:
            return env[:split]
    return list(env)  # not merge's shape (written by another tool): every entry is kept


def _command(have: Mapping[str, Any], image: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """Entrypoint and Cmd as the user gave them. Once the user names an entrypoint the engine never fills
    in the image's Cmd, so the Cmd is the user's too, even one equal to the image's."""
    entry, cmd = have.get("Entrypoint") or None, have.get("Cmd") or None
    image_entry, image_cmd = image.get("Entrypoint") or None, image.get("Cmd") or None
    body: dict[str, Any] = {}
    if entry is None and image_entry is not None:
        # `--entrypoint ""`: the CLI sends [""], the engine records none; sent back the same way.
        body["Entrypoint"] = [""]
        notes.append("Entrypoint cleared by the user: kept cleared")
    elif entry is not None and (entry != image_entry or (cmd is None and image_cmd is not None)):
        # Different from the image's, or equal but the image's Cmd was not filled in: given by the user.
        body["Entrypoint"] = copy.deepcopy(entry)
    if "Entrypoint" in body:
        if cmd is not None:
            body["Cmd"] = copy.deepcopy(cmd)
    elif cmd is not None and cmd != image_cmd:
        body["Cmd"] = copy.deepcopy(cmd)
    elif cmd is not None:
        notes.append("Cmd came from the old image; the new image's applies")
    return body


def user_healthcheck(have: Mapping[str, Any] | None, image: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `--health-*` sub-fields the user gave: those that differ from the old image's HEALTHCHECK.
    The engine fills each one the user left zero from the image, so a partial override keeps only its own
    sub-fields and takes the rest from the new image."""
    image = image or {}
    return {
        key: copy.deepcopy(value)
        for key, value in (have or {}).items()
        if key in _HEALTH_FIELDS and value not in (*_NO_VALUE, 0) and value != image.get(key)
    }


def _image_fields(have: Mapping[str, Any], old: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """Env, Cmd/Entrypoint, Healthcheck, User, WorkingDir, StopSignal, Shell: the user's part of each."""
    body: dict[str, Any] = {}
    env = list(have.get("Env") or [])
    own = user_env(env, list(old.get("Env") or []))
    dropped = [e.partition("=")[0] for e in env[len(own) :]]
    if dropped:
        notes.append(f"Env from the old image not copied: {', '.join(dropped)}")
    if own:
        body["Env"] = own
    body.update(_command(have, old, notes))
    health = user_healthcheck(have.get("Healthcheck"), old.get("Healthcheck"))
    if health:
        body["Healthcheck"] = health
    if have.get("Healthcheck") and health != have["Healthcheck"]:
        notes.append("Healthcheck: the new image's applies to every sub-field the user did not set")
    for key in _IMAGE_SCALARS:
        value = have.get(key)
        if value in _NO_VALUE:
            continue
        if value == old.get(key):
            notes.append(f"{key} came from the old image; the new image's applies")
        else:
            body[key] = copy.deepcopy(value)
    return body


def _ports_and_volumes(
    have: Mapping[str, Any], old: Mapping[str, Any], published: Iterable[str]
) -> dict[str, Any]:
    """ExposedPorts and Volumes the user added: those the old image did not declare. A published port
    stays exposed even if the image declared it: the engine publishes only exposed ports, so a new image
    without that EXPOSE would silently unpublish it (the CLI's `-p` exposes it too)."""
    body: dict[str, Any] = {}
    for key in ("ExposedPorts", "Volumes"):
        image_keys = set((old.get(key) or {}).keys()) - set(published)
        kept = {k: v for k, v in (have.get(key) or {}).items() if k not in image_keys}
        if kept:
            body[key] = kept
    return body


def _hostname(
    container: Mapping[str, Any], mode: str, defaults: EngineDefaults, notes: list[str]
) -> str | None:
    """The hostname the user chose, if any. The engine's own: the short ID (bridge and user networks,
    none), the host's name (host network), the other container's (container:X, where create refuses one)."""
    hostname = str((container.get("Config") or {}).get("Hostname") or "")
    if not hostname or mode.startswith("container:"):
        return None
    if mode == "host":
        if hostname == defaults.host_name:
            notes.append(f"Hostname {hostname} is the host's; the new container gets the host's")
            return None
        return hostname
    if hostname == _short_id(container):
        notes.append(f"Hostname {hostname} was the old container's ID; the new one gets its own")
        return None
    return hostname


def _kept_config(
    container: Mapping[str, Any],
    old_image: Mapping[str, Any],
    defaults: EngineDefaults,
    notes: list[str],
    mode: str,
) -> dict[str, Any]:
    have = dict(container.get("Config") or {})
    old = _config(old_image)
    published = ((container.get("HostConfig") or {}).get("PortBindings") or {}).keys()
    body = _image_fields(have, old, notes)
    body.update(_ports_and_volumes(have, old, published))
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
    hostname = _hostname(container, mode, defaults, notes)
    if hostname is not None:
        body["Hostname"] = hostname
    # Config.MacAddress holds only a MAC the user set (the primary network's); engine-generated ones live
    # in NetworkSettings and must not be copied (two containers with one MAC).
    if have.get("MacAddress") and not shares_namespace(mode):
        body["MacAddress"] = have["MacAddress"]
    return body


# -- HostConfig: what the user set, given what the engine fills in ------------------------------------


def _engine_values(host: dict[str, Any], defaults: EngineDefaults, notes: list[str]) -> None:
    """Drop (in place) every HostConfig value the engine filled in, so that the engine the successor is
    created on fills in its own."""
    followed = []
    for key in ENGINE_FILLED:
        if key in host and key in defaults.host and host[key] == defaults.host[key]:
            del host[key]
            followed.append(key)
    for key in _PATH_LISTS:
        if host.get(key) and defaults.is_default_paths(key, host[key]):
            del host[key]
            followed.append(key)
    log = _user_log_config(host.get("LogConfig"), defaults.host.get("LogConfig"))
    if log is None and "LogConfig" in host:
        del host["LogConfig"]
        followed.append("LogConfig")
    elif log is not None:
        host["LogConfig"] = log
    if "SecurityOpt" in host:
        host["SecurityOpt"] = user_security_options(host)
    if followed:
        notes.append(f"engine defaults not copied (the running engine's apply): {', '.join(followed)}")


def user_security_options(host: Mapping[str, Any]) -> list[str] | None:
    """HostConfig.SecurityOpt without the `label=disable` moby appends to a privileged or host-IPC/PID
    container when the user gave no label option (`generateSecurityOpt`): sent back, it would be there
    twice."""
    options = host.get("SecurityOpt")
    if not options:
        return options
    shared = host.get("Privileged") or host.get("IpcMode") == "host" or host.get("PidMode") == "host"
    added = options[-1] == "label=disable" and not any(o.startswith("label") for o in options[:-1])
    return list(options[:-1] if shared and added else options)


def _user_log_config(have: Any, default: Any) -> dict[str, Any] | None:
    """The log driver and options the user gave; None when all of it is the engine's: its driver, the
    daemon's log-opts (which it merges into a container of its default driver), and the daemon's
    `cache-*` options (which it merges into every container: daemon/logger/loggerutils/cache)."""
    have, default = dict(have or {}), dict(default or {})
    default_options = dict(default.get("Config") or {})
    driver = str(have.get("Type") or "")
    if driver == default.get("Type"):
        driver = ""
    options = {
        k: v
        for k, v in (have.get("Config") or {}).items()
        if default_options.get(k) != v or (driver and not k.startswith("cache-"))
    }
    if not driver and not options:
        return None
    return {"Type": driver, "Config": options}


def _bind_parts(bind: str) -> tuple[str, str]:
    """(source, destination) of a Binds entry `source:destination[:options]`."""
    parts = bind.split(":")
    return (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])


def _clean(path: Any) -> str:
    return posixpath.normpath(str(path))


def _is_volume_name(source: str) -> bool:
    return bool(source) and not source.startswith("/")


def _volumes(
    container: Mapping[str, Any],
    host: dict[str, Any],
    declared: set[str],
    lent: frozenset[str] | None,
    notes: list[str],
) -> dict[str, str]:
    """Re-attach (in `host`) the old container's anonymous volumes, so their data is the successor's.

    An anonymous `--mount type=volume,dst=D` gets the old volume as its Source; an anonymous volume of
    `Config.Volumes` (`-v D`, or an image's `VOLUME D`) is bound by name if the successor still declares D
    (the user's `-v D`, or the new image's VOLUME), as Compose inherits them; one the new image dropped
    is not mounted, and stays on the host. `lent`: the paths `--volumes-from` mounts (those come back
    through it); None when unknown, then every volume of a container with VolumesFrom is taken for lent.
    Returns destination -> volume name for every volume the successor must mount."""
    mounted = {
        _clean(m.get("Destination")): m for m in container.get("Mounts") or () if m.get("Type") == "volume"
    }
    binds = list(host.get("Binds") or [])
    planned = {_clean(d): s for s, d in map(_bind_parts, binds) if _is_volume_name(s)}
    covered = {_clean(_bind_parts(b)[1]) for b in binds}
    mounts = copy.deepcopy(list(host.get("Mounts") or []))
    for mount in mounts:
        target = _clean(mount.get("Target"))
        covered.add(target)
        if mount.get("Type") == "volume" and not mount.get("Source") and target in mounted:
            mount["Source"] = str(mounted[target].get("Name"))
            notes.append(f"anonymous volume {mount['Source'][:12]} re-attached at {target}")
        if mount.get("Type") == "volume" and mount.get("Source"):
            planned[target] = str(mount["Source"])
    if mounts:
        host["Mounts"] = mounts
    if host.get("VolumesFrom"):
        # Their mounts come back through VolumesFrom itself; binding them too would duplicate a mount point.
        covered |= set(mounted) if lent is None else {_clean(path) for path in lent}
    for destination, mount in mounted.items():
        if destination in covered:
            continue
        name = str(mount.get("Name"))
        label = "anonymous volume" if _HEX_NAME.match(name) else "volume"
        if destination not in declared:
            notes.append(f"{label} {name[:12]} at {destination} not carried: the new image drops that VOLUME")
            continue
        binds.append(f"{name}:{destination}" + ("" if mount.get("RW", True) else ":ro"))
        planned[destination] = name
        notes.append(f"{label} {name[:12]} re-attached at {destination}")
    if binds:
        host["Binds"] = binds
    return planned


def _host_config(
    container: Mapping[str, Any],
    defaults: EngineDefaults,
    declared: set[str],
    lent: frozenset[str] | None,
    notes: list[str],
) -> tuple[dict[str, Any], dict[str, str]]:
    host = copy.deepcopy(dict(container.get("HostConfig") or {}))
    _engine_values(host, defaults, notes)
    volumes = _volumes(container, host, declared, lent, notes)
    if host.get("Links"):
        # Inspect shows "/target:/this/alias"; create wants "target:alias".
        host["Links"] = [_create_link(link) for link in host["Links"]]
    return host, volumes


def volumes_from(container: Mapping[str, Any]) -> list[str]:
    """The containers (names or IDs) whose mounts `--volumes-from` lends this one: "name[:ro|:rw]"."""
    return [entry.partition(":")[0] for entry in (container.get("HostConfig") or {}).get("VolumesFrom") or ()]


def mount_paths(container: Mapping[str, Any]) -> frozenset[str]:
    """Every path a container mounts (inspect's `Mounts`), which --volumes-from lends another."""
    return frozenset(_clean(m.get("Destination")) for m in container.get("Mounts") or ())


def _create_link(link: str) -> str:
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}"


def _copied_files(env: Iterable[str], host: Mapping[str, Any]) -> tuple[str, ...]:
    """Files a client wrote into the container after creating it, which create alone cannot recreate."""
    sockets = {_clean(_bind_parts(b)[1]) for b in host.get("Binds") or ()}
    sockets |= {_clean(m.get("Target")) for m in host.get("Mounts") or ()}
    if f"DOCKER_CONFIG={posixpath.dirname(API_SOCKET_CONFIG)}" in env and _API_SOCKET in sockets:
        return (API_SOCKET_CONFIG,)
    return ()


# -- networks ------------------------------------------------------------------------------------------


def generated_mac(ipv4: str) -> str:
    """The MAC moby's bridge driver derives from an endpoint's IPv4 address when none is set (02:42 and
    the four address bytes; libnetwork netutils.GenerateMACFromIP, through v26.1); "" without one."""
    try:
        octets = [int(part) for part in ipv4.split(".")]
    except ValueError:
        return ""
    if len(octets) != 4:
        return ""
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)


def _endpoint(
    container: Mapping[str, Any],
    network: str,
    settings: Mapping[str, Any],
    notes: list[str],
    random_macs: bool,
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
    # API 1.44+ sets a MAC per network (EndpointSettings.MacAddress); inspect shows the one in use, so one
    # the engine derived from the address is not the user's.
    mac = str(settings.get("MacAddress") or "")
    if mac and random_macs:
        # Not copied: it may be the engine's random one (the primary network's own, if the user set it,
        # comes from Config.MacAddress in `_networking`); copying it would pin it, and a start-first
        # successor would carry the running container's MAC.
        notes.append(f"MAC {mac} on {network} not copied (this engine generates random MACs)")
    elif mac and mac != generated_mac(str(settings.get("IPAddress") or "")):
        endpoint["MacAddress"] = mac
    return endpoint


def _networking(
    container: Mapping[str, Any], mode: str, body: dict[str, Any], defaults: EngineDefaults, notes: list[str]
) -> dict[str, dict[str, Any]]:
    """Put the primary network's endpoint into `body` (every endpoint if the engine takes them at create);
    returns the ones to connect after create."""
    if shares_namespace(mode):
        return {}
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    primary = _DEFAULT_BRIDGE if mode == "default" else mode
    endpoints = {
        net: _endpoint(container, net, settings, notes, defaults.random_macs)
        for net, settings in networks.items()
    }
    at_create = defaults.networks_at_create
    if primary not in endpoints and endpoints:
        primary = next(iter(endpoints))
    if body.get("MacAddress") and primary in endpoints:
        endpoints[primary]["MacAddress"] = body["MacAddress"]
    if primary in endpoints:
        first = {primary: endpoints.pop(primary)}
        body["NetworkingConfig"] = {"EndpointsConfig": {**first, **endpoints} if at_create else first}
    return {} if at_create else endpoints


def plan(
    container: dict[str, Any],
    old_image: dict[str, Any],
    new_image: dict[str, Any],
    image: str,
    mode_override: str | None = None,
    *,
    defaults: EngineDefaults = BUILTIN,
    lent: frozenset[str] | None = None,
) -> CreatePlan:
    """The successor of `container` running `image` (a reference that resolves to `new_image`), on an
    engine whose own defaults are `defaults` (moby's built-in ones unless given). `lent`: the paths the
    containers named in its VolumesFrom mount (`mount_paths` of each), so that its own anonymous volumes
    are told from theirs; None when they were not read.

    `mode_override` replaces a `container:X` network mode whose X has itself been recreated. Pure: raises
    nothing but KeyError for a container document without `Id`."""
    notes: list[str] = []
    mode = network_mode(container)
    body = _kept_config(container, old_image, defaults, notes, mode)
    body["Image"] = image
    _follow_compose(body, new_image)
    declared = {
        _clean(path) for path in (*(body.get("Volumes") or ()), *(_config(new_image).get("Volumes") or ()))
    }
    body["HostConfig"], volumes = _host_config(container, defaults, declared, lent, notes)
    if mode_override is not None:
        body["HostConfig"]["NetworkMode"] = mode_override
        notes.append(f"network mode {mode} -> {mode_override}")
    connect = _networking(container, mode, body, defaults, notes)
    return CreatePlan(
        name=str(container["Name"]).lstrip("/"),
        body=body,
        connect=connect,
        volumes=volumes,
        files=_copied_files(body.get("Env") or (), body["HostConfig"]),
        notes=tuple(notes),
    )


def without_aliases(plan: CreatePlan) -> CreatePlan:
    """`plan` with no network aliases on any endpoint: a start-first successor is created so while the old
    container answers them (it gets them once it takes over, `upgrade.Upgrade._move_aliases`)."""

    def bare(endpoints: Mapping[str, Any]) -> dict[str, Any]:
        return {net: {k: v for k, v in (e or {}).items() if k != "Aliases"} for net, e in endpoints.items()}

    body = dict(plan.body)
    networking = body.get("NetworkingConfig") or {}
    if networking.get("EndpointsConfig"):
        body["NetworkingConfig"] = {**networking, "EndpointsConfig": bare(networking["EndpointsConfig"])}
    return dataclasses.replace(plan, body=body, connect=bare(plan.connect))


def _follow_compose(body: dict[str, Any], new_image: dict[str, Any]) -> None:
    """A compose service's successor names the image it runs in compose's image label, as `docker compose
    up` would have; with the old image's ID there, compose would recreate it once more (`compose`)."""
    if new_image.get("Id"):  # the dry run plans without the new image: the label is left as it is
        labels = body.get("Labels") or {}
        updated = compose.successor_labels(labels, str(new_image["Id"]))
        if updated != labels:
            body["Labels"] = updated


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
        *_volume_differences(intended.volumes, actual.get("Mounts") or []),
    ]


def _missing(key: str, want: Any, got: Any) -> list[str]:
    """What of `want` (the planned Config[key]) the created container's `got` lacks."""
    if key == "Env":
        # The new image's variables join ours; each of ours must be there unchanged.
        return [e.partition("=")[0] for e in want if e not in (got or [])]
    if key in ("Labels", "ExposedPorts", "Volumes"):
        present: dict[str, Any] = got or {}
        return [k for k in want if k not in present or (key == "Labels" and present[k] != want[k])]
    if key == "Healthcheck":  # the sub-fields we set; the image fills in the others
        return [
            f"{k} is {(got or {}).get(k)!r}, not {v!r}" for k, v in want.items() if (got or {}).get(k) != v
        ]
    if key == "Entrypoint" and want == [""]:  # cleared: the engine records none
        return [] if not got else [f"{got!r}, not cleared"]
    return [] if _norm(got) == _norm(want) else [f"{got!r}, not {want!r}"]


def _config_differences(body: dict[str, Any], have: dict[str, Any]) -> list[str]:
    found = []
    for key, want in body.items():
        if key in ("HostConfig", "NetworkingConfig"):
            continue
        missing = _missing(key, want, have.get(key))
        if missing:
            found.append(f"{key}: {', '.join(missing)}")
    return found


def _host_differences(want_host: dict[str, Any], host: dict[str, Any]) -> list[str]:
    found = []
    for key, want in want_host.items():
        got = host.get(key)
        if key == "Links":
            got = [_create_link(link) for link in got or []]
        if key == "SecurityOpt":
            got = user_security_options(host)
        if key == "LogConfig":  # the driver if we named one, and our options; the engine adds its own
            options = (got or {}).get("Config") or {}
            same = (not want["Type"] or want["Type"] == (got or {}).get("Type")) and all(
                options.get(k) == v for k, v in want["Config"].items()
            )
            got = want if same else got
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
        mac = settings.get("MacAddress")  # a created container shows it on API 1.44+, "" before
        if endpoint.get("MacAddress") and mac and mac != endpoint["MacAddress"]:
            found.append(f"network {net}: MAC {mac}, not {endpoint['MacAddress']}")
    return found


def _volume_differences(volumes: Mapping[str, str], mounts: list[dict[str, Any]]) -> list[str]:
    have = {_clean(m.get("Destination")): m.get("Name") for m in mounts if m.get("Type") == "volume"}
    return [
        f"{destination} mounts volume {str(have.get(destination))[:12]}, not {name[:12]}"
        for destination, name in volumes.items()
        if have.get(destination) != name
    ]


def describe(container: dict[str, Any], new: CreatePlan) -> list[str]:
    """Human-readable differences between the old container and its planned successor (for --dry-run)."""
    was = (container.get("Config") or {}).get("Image")
    lines = [f"image: {was} ({str(container.get('Image'))[:19]}) -> {new.body['Image']}"]
    lines.extend(new.notes)
    if new.connect:
        lines.append(f"networks connected before start: {', '.join(sorted(new.connect))}")
    if new.files:
        lines.append(f"files copied from the old container: {', '.join(new.files)}")
    return lines
