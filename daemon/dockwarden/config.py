"""The watched-services file: its schema, its defaults, and errors that point at FILE:LINE:COL.

pydantic does the type checking and collects every problem in one pass; yamlsource supplies where each value
came from, so a message names the exact line and column a user must edit.
"""

from __future__ import annotations

import graphlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from dockwarden import imageref, schedule, yamlsource

DEFAULT_PATH = Path("/etc/dockwarden/dockwarden.yaml")
DEFAULT_INTERVAL = "5m"
MAX_SERVICE_NAME = 64
MAX_KEEP = 100
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid container name (letters, digits, _ . -; not first)")
    return value


def _check_duration(value: str) -> str:
    try:
        schedule.parse_duration(value)
    except schedule.ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_image(value: str) -> str:
    try:
        imageref.parse(value)
    except imageref.InvalidReference as exc:
        raise ValueError(f"invalid image reference {value!r}: {exc}") from None
    return value


def _check_cron(value: str) -> str:
    try:
        schedule.cron_trigger(value)
    except schedule.ScheduleError as exc:
        raise ValueError(str(exc)) from None
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Duration = Annotated[str, AfterValidator(_check_duration)]
ImageText = Annotated[str, AfterValidator(_check_image)]
CronText = Annotated[str, AfterValidator(_check_cron)]


class _Strict(BaseModel):
    # strict: YAML's `1.10` is a float and `yes` a bool; coercing them to strings would hide the mistake.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_tcp(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"tcp probe {value!r} must be HOST:PORT")
    return value


def _check_url(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"http probe {value!r} must be an http:// or https:// URL")
    return value


class HealthSpec(_Strict):
    http: Annotated[str, AfterValidator(_check_url)] | None = None
    tcp: Annotated[str, AfterValidator(_check_tcp)] | None = None
    timeout: Duration = "30s"


def _check_label_selector(value: str) -> str:
    key = value.partition("=")[0]
    if not key or key != key.strip() or any(c.isspace() for c in key):
        raise ValueError(f"label selector {value!r} must be KEY or KEY=VALUE")
    return value


class StoppedContainersSpec(_Strict):
    labels: list[Annotated[str, AfterValidator(_check_label_selector)]] = Field(min_length=1)
    min_age: Duration = "24h"


class GcSpec(_Strict):
    enabled: bool = True
    schedule: CronText = "0 4 * * *"
    min_age: Duration = "1h"
    stopped_containers: StoppedContainersSpec | None = None


def _check_tag_safe_name(value: str) -> str:
    _check_name(value)
    # The service's container defaults to its name, and retained versions are tagged
    # dockwarden-CONTAINER-TIMESTAMP: a tag holds at most 128 characters.
    if len(value) > MAX_SERVICE_NAME:
        raise ValueError(f"{value!r} is longer than {MAX_SERVICE_NAME} characters")
    return value


TagSafeName = Annotated[str, AfterValidator(_check_tag_safe_name)]


class ServiceSpec(_Strict):
    container: TagSafeName | None = None
    image: ImageText | None = None
    update: Literal["auto", "monitor"] = "auto"
    depends_on: list[Name] = Field(default_factory=list)
    health: HealthSpec | None = None
    stability_window: Duration | None = None
    keep_previous: int | None = Field(default=None, ge=0, le=MAX_KEEP)


class ConfigSpec(_Strict):
    interval: Duration | None = None
    schedule: CronText | None = None
    state_dir: str = "/var/lib/dockwarden"
    docker_host: str | None = None
    check_concurrency: int = Field(default=32, ge=1, le=256)
    registry_timeout: Duration = "10s"
    stability_window: Duration = "10s"
    health_timeout_max: Duration = "5m"
    keep_previous: int = Field(default=2, ge=0, le=MAX_KEEP)
    gc: GcSpec = Field(default_factory=GcSpec)
    history_max_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    services: dict[TagSafeName, ServiceSpec] = Field(default_factory=dict)

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"state_dir {value!r} must be an absolute path")
        return value

    @field_validator("interval")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                schedule.check_interval(schedule.parse_duration(value))
            except schedule.ScheduleError as exc:
                raise ValueError(str(exc)) from None
        return value


@dataclass(frozen=True)
class Probe:
    kind: str  # "http" or "tcp"
    target: str
    timeout: timedelta


@dataclass(frozen=True)
class Service:
    name: str
    container: str
    image: imageref.ImageRef | None
    update: str
    depends_on: tuple[str, ...] = ()
    probe: Probe | None = None
    stability_window: timedelta | None = None  # None: the global one
    keep_previous: int = 2


@dataclass(frozen=True)
class StoppedContainers:
    labels: tuple[str, ...]  # all must match: KEY (present) or KEY=VALUE
    min_age: timedelta


@dataclass(frozen=True)
class Gc:
    enabled: bool = True
    schedule: str = "0 4 * * *"
    min_age: timedelta = timedelta(hours=1)
    stopped_containers: StoppedContainers | None = None

    def trigger(self) -> Any:
        return schedule.cron_trigger(self.schedule)


@dataclass(frozen=True)
class Config:
    path: Path
    interval: timedelta | None
    schedule: str | None
    state_dir: Path
    docker_host: str | None
    check_concurrency: int
    registry_timeout: timedelta
    services: tuple[Service, ...]
    stability_window: timedelta = timedelta(seconds=10)
    health_timeout_max: timedelta = timedelta(minutes=5)
    gc: Gc = Gc()
    history_max_bytes: int = 10 * 1024 * 1024
    keep_previous: int = 2  # the default of the services' own

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def trigger(self) -> Any:
        if self.schedule is not None:
            return schedule.cron_trigger(self.schedule)
        return schedule.interval_trigger(self.interval or schedule.parse_duration(DEFAULT_INTERVAL))

    def describe_gc(self) -> str:
        return f"gc cron {self.gc.schedule} (UTC)" if self.gc.enabled else "gc off"

    def describe_schedule(self) -> str:
        if self.schedule is not None:
            return f"cron {self.schedule} (UTC)"
        return f"every {schedule.format_duration(self.interval or schedule.parse_duration(DEFAULT_INTERVAL))}"


@dataclass(frozen=True)
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
    if kind == "literal_error":
        return f"{error['msg'].replace('Input should be', 'must be')}, not {error['input']!r}"
    if kind in ("string_type", "int_type", "dict_type", "model_type", "bool_type", "list_type"):
        wanted = {
            "string_type": "a string",
            "int_type": "a whole number",
            "dict_type": "a mapping",
            "model_type": "a mapping",
            "bool_type": "true or false",
            "list_type": "a list",
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
        # pydantic adds the validator's name for Annotated/function validators; the file has no such key.
        is_key = "[key]" in error["loc"]
        loc = tuple(part for part in error["loc"] if not str(part).startswith(("function-", "[key]")))
        if error["type"] == "extra_forbidden" or is_key:
            line, col = doc.locate_key(loc)
        else:
            line, col = doc.locate(loc)
        problems.append(ConfigProblem(path, line, col, _message(error)))
    return sorted(problems, key=lambda p: (p.line, p.column))


def load(path: Path) -> Config:
    """Read and validate the config file; raise ConfigError with every problem found."""
    try:
        doc = yamlsource.load(path)
    except yamlsource.YamlSourceError as exc:
        raise ConfigError([ConfigProblem(path, e.line, e.column, e.message) for e in exc.errors]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigProblem(path, 1, 1, "the file must be a mapping with a `services:` key")])
    problems: list[ConfigProblem] = []
    if "interval" in doc.data and "schedule" in doc.data:
        line, col = doc.locate_key(("schedule",))
        problems.append(ConfigProblem(path, line, col, "set either `interval` or `schedule`, not both"))
    try:
        spec = ConfigSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_problems(path, doc, exc))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line, p.column)))
    problems.extend(_relation_problems(path, doc, spec))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line, p.column)))
    services = tuple(
        Service(
            name=name,
            container=item.container or name,
            image=imageref.parse(item.image) if item.image else None,
            update=item.update,
            depends_on=tuple(item.depends_on),
            probe=_probe(item.health),
            stability_window=schedule.parse_duration(item.stability_window)
            if item.stability_window
            else None,
            keep_previous=spec.keep_previous if item.keep_previous is None else item.keep_previous,
        )
        for name, item in spec.services.items()
    )
    return Config(
        path=path,
        interval=schedule.parse_duration(spec.interval) if spec.interval else None,
        schedule=spec.schedule,
        state_dir=Path(spec.state_dir),
        docker_host=spec.docker_host,
        check_concurrency=spec.check_concurrency,
        registry_timeout=schedule.parse_duration(spec.registry_timeout),
        services=services,
        stability_window=schedule.parse_duration(spec.stability_window),
        health_timeout_max=schedule.parse_duration(spec.health_timeout_max),
        gc=_gc(spec.gc),
        history_max_bytes=spec.history_max_bytes,
        keep_previous=spec.keep_previous,
    )


def _gc(spec: GcSpec) -> Gc:
    stopped = None
    if spec.stopped_containers is not None:
        stopped = StoppedContainers(
            tuple(spec.stopped_containers.labels), schedule.parse_duration(spec.stopped_containers.min_age)
        )
    return Gc(spec.enabled, spec.schedule, schedule.parse_duration(spec.min_age), stopped)


def _probe(health: HealthSpec | None) -> Probe | None:
    if health is None:
        return None
    kind, target = ("http", health.http) if health.http else ("tcp", health.tcp or "")
    return Probe(kind, target, schedule.parse_duration(health.timeout))


def _relation_problems(path: Path, doc: yamlsource.YamlDocument, spec: ConfigSpec) -> list[ConfigProblem]:
    """depends_on must name services in this file and must not loop; health needs one probe."""
    problems = []
    for name, item in spec.services.items():
        for index, other in enumerate(item.depends_on):
            if other not in spec.services or other == name:
                line, col = doc.locate(("services", name, "depends_on", index))
                what = "itself" if other == name else f"{other!r}, which is not a service in this file"
                problems.append(ConfigProblem(path, line, col, f"depends_on names {what}"))
        if item.health is not None and (item.health.http is None) == (item.health.tcp is None):
            line, col = doc.locate(("services", name, "health"))
            problems.append(ConfigProblem(path, line, col, "health needs exactly one of `http` or `tcp`"))
    if not problems:
        sorter = graphlib.TopologicalSorter({n: s.depends_on for n, s in spec.services.items()})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            loop = list(exc.args[1])
            line, col = doc.locate_key(("services", loop[0], "depends_on"))
            problems.append(ConfigProblem(path, line, col, f"depends_on loops: {' -> '.join(loop)}"))
    return problems
