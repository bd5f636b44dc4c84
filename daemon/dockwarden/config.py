"""The watched-services file: its schema, its defaults, and errors that point at FILE:LINE:COL.

One frozen pydantic model per level (`Config`, `Service`, `Probe`, `Gc`, `StoppedContainers`) is both the
file's schema and the record the rest of dockwarden reads, with typed values (durations as `timedelta`, the
image as an `ImageRef`) and each default written once. pydantic does the type checking and collects every
problem in one pass; yamlsource supplies where each value came from, so a message names the exact line and
column a user must edit. `load` adds what the file does not say (its own path, each service's name: its
key) and checks what spans several services.
"""

from __future__ import annotations

import contextlib
import graphlib
import ipaddress
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticKnownError, core_schema

from dockwarden import imageref, schedule, yamlsource

DEFAULT_PATH = Path("/etc/dockwarden/dockwarden.yaml")
MAX_SERVICE_NAME = 64
MAX_KEEP = 100
# The two defaults a service shares with the top level (where the file sets them for every service).
KEEP_PREVIOUS = 2
STABILITY_WINDOW = timedelta(seconds=10)
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
# Keys that have always accepted an empty value (`key:` alone) as "the default", as if absent.
_EMPTY_IS_DEFAULT = frozenset({"interval"})
_SERVICE_EMPTY_IS_DEFAULT = frozenset({"container", "keep_previous", "stability_window"})


class Update(StrEnum):
    """What the daemon does when a service's tag points at a new image."""

    AUTO = "auto"  # upgrade the container (gated, rolled back on failure)
    MONITOR = "monitor"  # only report it; `dockwarden update SERVICE` still upgrades it


class Stopped(StrEnum):
    """What an upgrade does with a service whose container is not running (exited or created)."""

    SKIP = "skip"  # leave it alone, and say so: starting or replacing it is not dockwarden's call
    RECREATE = "recreate"  # recreate it on the new image and leave it stopped (a job started by a timer)


class Strategy(StrEnum):
    """How an upgrade switches a running container to its successor (README: Upgrades)."""

    STOP_FIRST = "stop-first"  # stop the old one, then start the new one: down for the engine's stop + start
    # Start and gate the new one under a temporary name while the old one serves, then move the name and
    # the network aliases, drain and stop the old one. Two containers run at once for a while.
    START_FIRST = "start-first"
    AUTO = "auto"  # start-first when nothing the container holds on the host would be held twice


DRAIN = timedelta(seconds=10)
_Choice = TypeVar("_Choice", bound=StrEnum)


class NotifyEvent(StrEnum):
    """What a notification can be about: a service's result in a cycle, or a garbage collection."""

    UPGRADED = "upgraded"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    ERROR = "error"
    UPDATE_AVAILABLE = "update-available"  # a `monitor` service's tag moved
    SKIPPED = "skipped"
    GC = "gc"


DEFAULT_NOTIFY_EVENTS = (
    NotifyEvent.UPGRADED,
    NotifyEvent.ROLLED_BACK,
    NotifyEvent.ROLLBACK_FAILED,
    NotifyEvent.ERROR,
)


class ProbeKind(StrEnum):
    """How a `Probe` reaches its target."""

    HTTP = "http"
    TCP = "tcp"


# -- value types: each accepts the file's spelling (strictly) and, in code, the typed value itself ----------


def _text(value: object) -> str:
    """`value` if it is a string, else pydantic's `string_type` error (so YAML's `1.10` is not a tag)."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    return value


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return schedule.parse_duration(_text(value))
    except schedule.ScheduleError as exc:
        raise ValueError(str(exc)) from None


# A request timeout becomes a socket wait, which poll() takes in milliseconds as a C int (24.8 days); a
# registry that needs an hour to answer one request is down anyway.
MAX_REQUEST_TIMEOUT = timedelta(hours=1)
# The transaction's names for a container set aside (upgrade.OLD_SUFFIX, STOPPED_SUFFIX, DONE_SUFFIX), and
# for a start-first successor before it takes the service's name (upgrade.NEW_SUFFIX).
RESERVED_SUFFIXES = ("--dockwarden-old", "--dockwarden-old-stopped", "--dockwarden-done", "--dockwarden-new")


def _short_enough(value: timedelta) -> timedelta:
    if value > MAX_REQUEST_TIMEOUT:
        limit = schedule.format_duration(MAX_REQUEST_TIMEOUT)
        raise ValueError(f"{schedule.format_duration(value)} is too long for one request: at most {limit}")
    return value


# docker-py takes its timeout in whole seconds; below one second every engine call would time out.
MIN_ENGINE_TIMEOUT = timedelta(seconds=1)


def _engine_timeout(value: timedelta) -> timedelta:
    if value < MIN_ENGINE_TIMEOUT:
        raise ValueError(f"{schedule.format_duration(value)} is too short for an engine call: at least 1s")
    return _short_enough(value)


def _long_enough(value: timedelta) -> timedelta:
    try:
        return schedule.check_interval(value)
    except schedule.ScheduleError as exc:
        raise ValueError(str(exc)) from None


def _image(value: object) -> imageref.ImageRef:
    if isinstance(value, imageref.ImageRef):
        return value
    text = _text(value)
    try:
        return imageref.parse(text)
    except imageref.InvalidReference as exc:
        raise ValueError(f"invalid image reference {text!r}: {exc}") from None


def _choice(kind: type[_Choice]) -> Callable[[object], _Choice]:
    """A validator for one of `kind`'s words, strictly (YAML's `yes` is a bool, not a word)."""

    def validate(value: object) -> _Choice:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return kind(value)
        raise PydanticKnownError("enum", {"expected": " or ".join(repr(word.value) for word in kind)})

    return validate


def _state_dir(value: object) -> Path:
    text = str(value) if isinstance(value, Path) else _text(value)
    if not text.startswith("/"):
        raise ValueError(f"state_dir {text!r} must be an absolute path")
    return Path(text)


def _absolute(value: object) -> Path:
    text = str(value) if isinstance(value, Path) else _text(value)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path")
    return Path(text)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def _tuple(value: object) -> object:
    # The file's lists become tuples (the records are frozen); anything else fails as "must be a list".
    return tuple(value) if isinstance(value, list) else value


def _not_empty(value: tuple[str, ...]) -> tuple[str, ...]:
    # After the items, unlike a tuple's own min_length, which would count an invalid item as missing too.
    if not value:
        raise PydanticKnownError("too_short", {"field_type": "List", "min_length": 1, "actual_length": 0})
    return value


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid container name (letters, digits, _ . -; not first)")
    return value


def _check_tag_safe_name(value: str) -> str:
    _check_name(value)
    # The service's container defaults to its name, and retained versions are tagged
    # dockwarden-CONTAINER-TIMESTAMP: a tag holds at most 128 characters.
    if len(value) > MAX_SERVICE_NAME:
        raise ValueError(f"{value!r} is longer than {MAX_SERVICE_NAME} characters")
    return value


def _check_cron(value: str) -> str:
    try:
        schedule.cron_trigger(value)
    except schedule.ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_tcp(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"tcp probe {value!r} must be HOST:PORT")
    return value


def _check_url(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"http probe {value!r} must be an http:// or https:// URL")
    return value


def _check_label_selector(value: str) -> str:
    key = value.partition("=")[0]
    if not key or key != key.strip() or any(c.isspace() for c in key):
        raise ValueError(f"label selector {value!r} must be KEY or KEY=VALUE")
    return value


class _FromFile:
    """Stands in for what the file wrote under a key that `load` sets itself (`path`, a service's `name`)."""


def _not_from_file(value: object) -> object:
    if isinstance(value, _FromFile):
        raise PydanticKnownError("extra_forbidden")  # reported like any other unknown key
    return value


UNIX_PREFIX = "unix:"


def _check_listen(value: str) -> str:
    """`HOST:PORT` (an IPv6 host in brackets) or `unix:/absolute/path`."""
    if value.startswith(UNIX_PREFIX):
        if not value.removeprefix(UNIX_PREFIX).startswith("/"):
            raise ValueError(f"listen {value!r}: a unix socket needs an absolute path (unix:/run/...)")
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen {value!r} must be HOST:PORT (port 1-65535) or unix:/PATH")
    return value


Duration = Annotated[timedelta, PlainValidator(_duration)]  # `90s`, `5m`, `1h30m`, `7d`
RequestTimeout = Annotated[timedelta, PlainValidator(_duration), AfterValidator(_short_enough)]
EngineTimeout = Annotated[timedelta, PlainValidator(_duration), AfterValidator(_engine_timeout)]
Interval = Annotated[timedelta, PlainValidator(_duration), AfterValidator(_long_enough)]  # at least 10 s
Image = Annotated[imageref.ImageRef, PlainValidator(_image)]
UpdateMode = Annotated[Update, PlainValidator(_choice(Update))]
StoppedMode = Annotated[Stopped, PlainValidator(_choice(Stopped))]
StrategyMode = Annotated[Strategy, PlainValidator(_choice(Strategy))]
StateDir = Annotated[Path, PlainValidator(_state_dir)]  # absolute
AbsolutePath = Annotated[Path, PlainValidator(_absolute)]
NotifyEventName = Annotated[NotifyEvent, PlainValidator(_choice(NotifyEvent))]
Name = Annotated[str, AfterValidator(_check_name)]
TagSafeName = Annotated[str, AfterValidator(_check_tag_safe_name)]
Cron = Annotated[str, AfterValidator(_check_cron)]  # five fields, crontab's day-of-week, in UTC
LabelSelector = Annotated[str, AfterValidator(_check_label_selector)]  # KEY or KEY=VALUE
_SET_BY_LOAD = BeforeValidator(_not_from_file)


# -- the models ---------------------------------------------------------------------------------------


class _Model(BaseModel):
    # strict: YAML's `1.10` is a float and `yes` a bool; coercing them to strings would hide the mistake.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Probe(_Model):
    """A service's extra gate probe from the host (the file's `health:`): `http` (an http(s) URL, passing
    on a status below 400) or `tcp` (HOST:PORT, passing on a connect), which must succeed once within
    `timeout`. Exactly one of the two: `load` reports a probe with neither or both."""

    http: Annotated[str, AfterValidator(_check_url)] | None = None
    tcp: Annotated[str, AfterValidator(_check_tcp)] | None = None
    timeout: Duration = timedelta(seconds=30)

    @property
    def kind(self) -> ProbeKind:
        return ProbeKind.HTTP if self.http is not None else ProbeKind.TCP

    @property
    def target(self) -> str:
        """The URL or HOST:PORT."""
        return self.http if self.http is not None else self.tcp or ""


class StoppedContainers(_Model):
    """GC's opt-in rule: stopped containers (exited, created or dead) carrying every label selector
    (`KEY` present, or `KEY=VALUE`) and stopped at least `min_age` ago (created, if they never ran)."""

    labels: Annotated[tuple[LabelSelector, ...], BeforeValidator(_tuple), AfterValidator(_not_empty)]
    min_age: Duration = timedelta(hours=24)


class Gc(_Model):
    """Garbage collection: when the daemon runs it (`schedule`, cron in UTC, if `enabled`), how old a
    dangling image must be to go (`min_age`), and the opt-in rule for stopped containers."""

    enabled: bool = True
    schedule: Cron = "0 4 * * *"
    min_age: Duration = timedelta(hours=1)
    stopped_containers: StoppedContainers | None = None


class Notify(_Model):
    """Where and about what to send notifications (through Apprise): `urls` from the file, `file_urls`
    read by `load` from `urls_file` (one per line, `#` comments), the `events` that send one, and the
    `timeout` after which a delivery is given up."""

    urls: Annotated[tuple[str, ...], BeforeValidator(_tuple)] = ()  # Apprise URLs, checked by `load`
    urls_file: AbsolutePath | None = None
    events: Annotated[tuple[NotifyEventName, ...], BeforeValidator(_tuple), AfterValidator(_not_empty)] = (
        DEFAULT_NOTIFY_EVENTS
    )
    timeout: Annotated[RequestTimeout, AfterValidator(_positive)] = timedelta(seconds=10)
    file_urls: Annotated[tuple[str, ...], _SET_BY_LOAD] = ()

    @property
    def targets(self) -> tuple[str, ...]:
        """Every URL to send to: the file's own, then those of `urls_file`."""
        return self.urls + self.file_urls


class Api(_Model):
    """The local HTTP API (`api:`; absent: off): where it listens (`listen`: `HOST:PORT`, or `unix:/PATH`
    for a socket made with mode 0600), the file holding its bearer token (`token_file`, absolute, readable by
    its owner only), and whether a TCP address that is not loopback is meant (`allow_remote`)."""

    listen: Annotated[str, AfterValidator(_check_listen)]
    token_file: AbsolutePath
    allow_remote: bool = False

    @property
    def unix_path(self) -> Path | None:
        """The socket's path for `unix:/PATH`; None for a TCP address."""
        if self.listen.startswith(UNIX_PREFIX):
            return Path(self.listen.removeprefix(UNIX_PREFIX))
        return None

    @property
    def host(self) -> str:
        """The TCP host, without IPv6 brackets ("" for a unix socket)."""
        return "" if self.unix_path else self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return 0 if self.unix_path else int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        """A unix socket, `localhost`, or an address in 127.0.0.0/8 or ::1."""
        if self.unix_path is not None or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: whatever it resolves to, it is not known to be loopback


def _name_of(data: dict[str, Any]) -> str:
    # A service's container defaults to its name (pydantic passes the fields validated so far).
    return str(data["name"])


class Service(_Model):
    """One watched service; `name` is its key under `services:`. Built in code, `Service(name="web")`
    defaults like an empty entry in the file; in a Config, `keep_previous` and `stability_window` left
    unset take the Config's own."""

    name: Annotated[str, _SET_BY_LOAD]
    container: TagSafeName = Field(default_factory=_name_of)
    image: Image | None = None  # None: follow the reference the container was created from
    update: UpdateMode = Update.AUTO
    stopped: StoppedMode = Stopped.SKIP  # a container that is not running: skip it, or recreate it stopped
    strategy: StrategyMode = Strategy.STOP_FIRST
    drain: Duration = DRAIN  # start-first: how long the old container serves beside the new one
    depends_on: Annotated[tuple[Name, ...], BeforeValidator(_tuple)] = ()  # service names
    probe: Probe | None = Field(default=None, alias="health")  # `health:` in the file, `health=` in code
    stability_window: Duration = STABILITY_WINDOW
    keep_previous: int = Field(default=KEEP_PREVIOUS, ge=0, le=MAX_KEEP)


def _services_schema(_source: object, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # Validated as the file's mapping, so that a problem is located under its service's name and a bad name
    # at its key; held as a tuple in file order.
    by_name = handler.generate_schema(dict[TagSafeName, Service])
    return core_schema.no_info_after_validator_function(lambda found: tuple(found.values()), by_name)


class Config(_Model):
    """The whole file, from `path`. Durations are `timedelta`s; `schedule` (cron, UTC), when set, replaces
    `interval`; `services` are in file order, with their defaults resolved."""

    path: Annotated[Path, _SET_BY_LOAD]
    interval: Interval = timedelta(minutes=5)
    schedule: Cron | None = None
    state_dir: StateDir = Path("/var/lib/dockwarden")
    docker_host: str | None = None  # None: $DOCKER_HOST, else the local socket
    engine_timeout: EngineTimeout = timedelta(seconds=60)  # one engine call (a read of its answer)
    check_concurrency: int = Field(default=32, ge=1, le=256)
    registry_timeout: RequestTimeout = timedelta(seconds=10)
    stability_window: Duration = STABILITY_WINDOW
    health_timeout_max: Duration = timedelta(minutes=5)
    keep_previous: int = Field(default=KEEP_PREVIOUS, ge=0, le=MAX_KEEP)
    gc: Gc = Field(default_factory=Gc)
    history_max_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    notify: Notify | None = None  # None: no notifications (and Apprise is never imported)
    api: Api | None = None  # None: no HTTP API
    # Last: its validators read the fields above.
    services: Annotated[tuple[Service, ...], GetPydanticSchema(_services_schema)] = ()

    @field_validator("services", mode="before")
    @classmethod
    def _keyed_by_name(cls, value: object) -> object:
        # Built in code, services come as a tuple; key them like the file's mapping.
        if isinstance(value, tuple) and all(isinstance(service, Service) for service in value):
            keyed = {service.name: service for service in value}
            if len(keyed) != len(value):
                raise ValueError("two services have the same name")
            return keyed
        return value

    @field_validator("services")
    @classmethod
    def _inherit_defaults(cls, services: tuple[Service, ...], info: ValidationInfo) -> tuple[Service, ...]:
        """Each service's `keep_previous` and `stability_window` default to the top-level ones. A field
        validator, not a model one: the model is frozen once built, while `info.data` already holds the
        validated fields above (an invalid one is missing, and then validation fails anyway)."""
        inherited = {key: info.data[key] for key in ("keep_previous", "stability_window") if key in info.data}
        return tuple(
            service.model_copy(
                update={k: v for k, v in inherited.items() if k not in service.model_fields_set}
            )
            for service in services
        )

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def describe_gc(self) -> str:
        return f"gc cron {self.gc.schedule} (UTC)" if self.gc.enabled else "gc off"

    def describe_schedule(self) -> str:
        if self.schedule is not None:
            return f"cron {self.schedule} (UTC)"
        return f"every {schedule.format_duration(self.interval)}"


# -- loading ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConfigProblem:
    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        # One line per problem, whatever the message: tools read these like compiler errors.
        return f"{self.path}:{self.line}:{self.column}: {' '.join(self.message.split())}"


class ConfigError(Exception):
    """The config file is unusable; `problems` lists every reason with its position."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def resolve_path(cli_value: str | None) -> Path:
    """-c/--config wins, then DOCKWARDEN_CONFIG, then the default path."""
    if cli_value:
        return Path(cli_value)
    from_env = os.environ.get("DOCKWARDEN_CONFIG")
    return Path(from_env) if from_env else DEFAULT_PATH


def _message(error: Any) -> str:  # noqa: PLR0911 -- one return per kind of error reads as a table
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind in ("literal_error", "enum"):
        return f"{error['msg'].replace('Input should be', 'must be')}, not {error['input']!r}"
    if kind in ("string_type", "int_type", "dict_type", "model_type", "bool_type", "tuple_type"):
        wanted = {
            "string_type": "a string",
            "int_type": "a whole number",
            "dict_type": "a mapping",
            "model_type": "a mapping",
            "bool_type": "true or false",
            "tuple_type": "a list",  # YAML has lists; the records hold them as tuples
        }[kind]
        found = error["input"]
        if found is None:
            return f"must be {wanted}, but is empty"
        hint = " (quote it)" if isinstance(found, int | float | bool) and kind == "string_type" else ""
        return f"must be {wanted}, not {type(found).__name__} {found!r}{hint}"
    if kind == "too_short":
        return f"must have at least {error['ctx']['min_length']} item(s)"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").replace("Input should be", "must be")


def _problems(path: Path, doc: yamlsource.YamlDocument, exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        if error["type"] == "default_factory_not_called":
            continue  # a default taken from another field, whose own problem is reported
        # pydantic adds the validator's name for Annotated/function validators; the file has no such key.
        is_key = "[key]" in error["loc"]
        loc = tuple(part for part in error["loc"] if not str(part).startswith(("function-", "[key]")))
        if error["type"] == "extra_forbidden" or is_key:
            line, col = doc.locate_key(loc)
        else:
            line, col = doc.locate(loc)
        problems.append(ConfigProblem(path=path, line=line, column=col, message=_message(error)))
    return sorted(problems, key=lambda p: (p.line, p.column))


def _set_by_load(data: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    """`data` with `key` set to `value` from `load`; the file's own `key`, if any, is refused as unknown."""
    return {**data, key: _FromFile() if key in data else value}


def _without_empty(data: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None or key not in keys}


def _model_input(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's mapping as Config's input: plus `path`, each service named by its key, and less the
    empty values that mean "the default"."""
    shaped = _set_by_load(_without_empty(data, _EMPTY_IS_DEFAULT), "path", path)
    notify = data.get("notify")
    if isinstance(notify, dict):
        shaped["notify"] = _set_by_load(notify, "file_urls", ())
    services = data.get("services")
    if isinstance(services, dict):
        shaped["services"] = {
            name: _set_by_load(_without_empty(entry, _SERVICE_EMPTY_IS_DEFAULT), "name", name)
            if isinstance(entry, dict)
            else entry
            for name, entry in services.items()
        }
    return shaped


def load(path: Path) -> Config:
    """Read and validate the config file at `path`. Raises ConfigError with every problem found, in file
    order (problems between services only once each service is valid on its own)."""
    try:
        doc = yamlsource.load(path)
    except yamlsource.YamlSourceError as exc:
        raise ConfigError(
            [ConfigProblem(path=path, line=e.line, column=e.column, message=e.message) for e in exc.errors]
        ) from None
    if not isinstance(doc.data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    path=path, line=1, column=1, message="the file must be a mapping with a `services:` key"
                )
            ]
        )
    problems: list[ConfigProblem] = []
    if "interval" in doc.data and "schedule" in doc.data:
        line, col = doc.locate_key(("schedule",))
        problems.append(
            ConfigProblem(
                path=path, line=line, column=col, message="set either `interval` or `schedule`, not both"
            )
        )
    try:
        config = Config.model_validate(_model_input(doc.data, path))
    except ValidationError as exc:
        problems.extend(_problems(path, doc, exc))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line, p.column)))
    problems.extend(_relation_problems(path, doc, config))
    if config.notify is not None:
        notify, found = _notify_urls(path, doc, config.notify)
        config = config.model_copy(update={"notify": notify})
        problems.extend(found)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line, p.column)))
    return config


def _notify_urls(
    path: Path, doc: yamlsource.YamlDocument, notify: Notify
) -> tuple[Notify, list[ConfigProblem]]:
    """`notify` with the URLs of its `urls_file`, and the problems found: a URL Apprise cannot use at its
    place (in this file or in `urls_file`), a missing or unsafe `urls_file` at that key, no URL at all at
    `notify:`."""
    # Imported here: notifications imports this module.
    from dockwarden import notifications  # noqa: PLC0415

    placed = [(url, (path, *doc.locate(("notify", "urls", i)))) for i, url in enumerate(notify.urls)]
    from_file, problems = _read_urls_file(path, doc, notify.urls_file)
    placed += from_file
    if not placed and not problems:
        line, col = doc.locate_key(("notify",))
        what = f"{notify.urls_file} has none" if notify.urls_file else "set `urls` or `urls_file`"
        problems.append(
            ConfigProblem(path=path, line=line, column=col, message=f"notify needs a URL: {what}")
        )
    try:
        found = notifications.url_problems([url for url, _ in placed])
    except notifications.SenderError as exc:
        line, col = doc.locate_key(("notify",))
        found = []
        problems.append(ConfigProblem(path=path, line=line, column=col, message=str(exc)))
    for problem, (_, (where, line, col)) in zip(found, placed, strict=False):
        if problem is not None:
            problems.append(ConfigProblem(path=where, line=line, column=col, message=problem))
    file_urls = tuple(url for url, _ in from_file)
    return notify.model_copy(update={"file_urls": file_urls}), problems


def _read_urls_file(
    path: Path, doc: yamlsource.YamlDocument, urls_file: Path | None
) -> tuple[list[tuple[str, tuple[Path, int, int]]], list[ConfigProblem]]:
    """The URLs of `urls_file` with where each is (one a line; blank lines and `#` comments skipped), read
    now and refused unless private to this user: it holds secrets, and decides where root sends what it
    knows. A problem reading it is located at the `urls_file` value."""
    from dockwarden import statefiles  # noqa: PLC0415 -- statefiles is not needed for most loads

    if urls_file is None:
        return [], []
    try:
        text = statefiles.read_private(urls_file)
    except (OSError, statefiles.UnsafeStateDir) as exc:
        line, col = doc.locate(("notify", "urls_file"))
        return [], [ConfigProblem(path=path, line=line, column=col, message=f"urls_file: {exc}")]
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        url = raw.strip()
        if url and not url.startswith("#"):
            found.append((url, (urls_file, number, len(raw) - len(raw.lstrip()) + 1)))
    return found, []


def _container_problems(path: Path, doc: yamlsource.YamlDocument, config: Config) -> list[ConfigProblem]:
    """One container, one service: two services upgrading one container would race each other's locks and
    skip lists. And no container name may end like the names dockwarden gives containers it sets aside,
    which recovery would otherwise take for a half-done upgrade."""
    problems = []
    owner: dict[str, str] = {}
    for service in config.services:
        where = ("services", service.name, "container")
        written = (*where, "<key>") in doc.locations  # else the container is the service's name
        line, col = doc.locate_key(where if written else where[:2])
        message = None
        if service.container.endswith(RESERVED_SUFFIXES):
            message = (
                f"container {service.container!r} ends like a name dockwarden gives a container set aside"
            )
        elif service.container in owner:
            message = (
                f"container {service.container!r} is already watched by service {owner[service.container]!r}"
            )
        owner.setdefault(service.container, service.name)
        if message is not None:
            problems.append(ConfigProblem(path=path, line=line, column=col, message=message))
    return problems


def read_token(path: Path) -> str:
    """The API token in `path`, without surrounding whitespace (a trailing newline). Raises OSError if it
    cannot be read, ValueError if it is empty or not one word of printable ASCII (it goes in a header)."""
    token = path.read_text(encoding="ascii", errors="replace").strip()
    if not token or not token.isprintable() or not token.isascii() or " " in token:
        raise ValueError(f"{path}: the token must be one word of printable ASCII")
    return token


def token_file_problem(path: Path) -> str | None:
    """Why the API's token file cannot be used (missing, not a regular file, readable or writable by group
    or others: it is a secret, like an SSH key; empty; a token `read_token` refuses), or None. Symlinks are
    followed, as `open` would."""
    try:
        info = path.stat()
    except OSError as exc:
        return f"token_file {str(path)!r}: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"token_file {str(path)!r} is not a regular file"
    if info.st_mode & 0o077:
        mode = f"{info.st_mode & 0o777:04o}"
        return f"token_file {str(path)!r} is open to group or others (mode {mode}): chmod 600 it"
    if info.st_size == 0:
        return f"token_file {str(path)!r} is empty"
    try:
        read_token(path)
    except (OSError, ValueError) as exc:
        # ValueError names the file already; OSError is worded as for a missing file.
        return f"token_file {exc}" if isinstance(exc, ValueError) else f"token_file {str(path)!r}: {exc}"
    return None


def _api_problems(path: Path, doc: yamlsource.YamlDocument, config: Config) -> list[ConfigProblem]:
    """The token file must be usable; a TCP address that is not loopback needs `allow_remote: true`."""
    api = config.api
    if api is None:
        return []
    problems = []
    problem = token_file_problem(api.token_file)
    if problem is not None:
        line, col = doc.locate(("api", "token_file"))
        problems.append(ConfigProblem(path=path, line=line, column=col, message=problem))
    if not api.loopback and not api.allow_remote:
        line, col = doc.locate(("api", "listen"))
        message = (
            f"listen {api.listen!r} is not a loopback address: the API is plain HTTP, so anyone on the path "
            "sees its token; put a TLS proxy in front and set `allow_remote: true` to mean it"
        )
        problems.append(ConfigProblem(path=path, line=line, column=col, message=message))
    return problems


def _relation_problems(path: Path, doc: yamlsource.YamlDocument, config: Config) -> list[ConfigProblem]:
    """depends_on must name services in this file and must not loop; health needs one probe; each
    container is watched once (`_container_problems`)."""
    problems = _container_problems(path, doc, config) + _api_problems(path, doc, config)
    names = {service.name for service in config.services}
    for service in config.services:
        for index, other in enumerate(service.depends_on):
            if other not in names or other == service.name:
                line, col = doc.locate(("services", service.name, "depends_on", index))
                what = (
                    "itself" if other == service.name else f"{other!r}, which is not a service in this file"
                )
                problems.append(
                    ConfigProblem(path=path, line=line, column=col, message=f"depends_on names {what}")
                )
        probe = service.probe
        if probe is not None and (probe.http is None) == (probe.tcp is None):
            line, col = doc.locate(("services", service.name, "health"))
            problems.append(
                ConfigProblem(
                    path=path, line=line, column=col, message="health needs exactly one of `http` or `tcp`"
                )
            )
    if not problems:
        sorter = graphlib.TopologicalSorter({s.name: s.depends_on for s in config.services})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            loop = list(exc.args[1])
            line, col = doc.locate_key(("services", loop[0], "depends_on"))
            problems.append(
                ConfigProblem(
                    path=path, line=line, column=col, message=f"depends_on loops: {' -> '.join(loop)}"
                )
            )
    return problems
