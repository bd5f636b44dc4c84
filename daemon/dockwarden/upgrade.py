"""The upgrade transaction: replace one container by its successor, never destroying before proving.

Reads top to bottom in `Upgrade._steps`. Every state it passes through is visible in Docker itself, through
container names and one label, so a process killed at any point leaves enough for `converge` to finish
or undo the work on the next start:

    X                           the service's container (old, then new)
    X--dockwarden-old           the old container, set aside while its successor is tried; undo starts it
    X--dockwarden-old-stopped   the same for a container that was not running; undo leaves it stopped
    X--dockwarden-done          the old container after the successor passed its gate (the commit point)
    label dockwarden.replaces=<old ID> on the successor, so we never remove a container that is not ours
    state_dir/locks/X.aside     the old container's ID, written before its set-aside rename: the proof that
                                it is ours while no successor exists yet (`not_ours`, `Hooks.set_aside`)

Undo = remove the successor, start the old one (unless it was stopped), rename it back, check it runs.
Commit = remove the old one.

How the old container is replaced depends on its state (`left_alone`, `mode_for`): a paused one is left
alone; a crash-looping one is stopped first (the engine refuses to rename it between two restarts); one
with AutoRemove (`--rm`) vanishes when it stops, so a created copy of it (its stand-in, made from its
inspect document by `recreate`) is what is set aside, and what an undo starts; a stopped one is recreated
stopped when its service says `stopped: recreate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, cast

import structlog

from dockwarden import compose, gate, imageref, recreate, retention
from dockwarden.config import Stopped, Strategy
from dockwarden.engine import ContainerState, EngineError, NotFound, Unreachable
from dockwarden.imageref import ImageRef

OLD_SUFFIX = "--dockwarden-old"
STOPPED_SUFFIX = "--dockwarden-old-stopped"
DONE_SUFFIX = "--dockwarden-done"
NEW_SUFFIX = "--dockwarden-new"  # start-first: the successor, until it takes the service's name
# Every name a half-done upgrade leaves (recovery and GC look for them).
SUFFIXES = (OLD_SUFFIX, STOPPED_SUFFIX, DONE_SUFFIX, NEW_SUFFIX)
START_ATTEMPTS = 5  # for the old container during an undo
START_RETRY_DELAY = 1.0
UNDO_ATTEMPTS = 3  # a live undo that met an engine error is made again from where it stopped
UNDO_RETRY_DELAY = 1.0
DEFAULT_STOP_TIMEOUT = 10  # the engine's own default when a container sets no StopTimeout
GONE_TIMEOUT = 30.0  # seconds for the engine to delete an AutoRemove container once it stopped
GONE_POLL = 0.1
NEVER = "0001-01-01T00:00:00Z"  # the engine's zero time: State.StartedAt of a container never started
# The gate's verdict for a successor that is created and left stopped (`stopped: recreate`): nothing runs,
# so nothing can be gated; what vouches for it is VERIFY, which found it to be what was planned.
NOT_STARTED = "not started (stopped: recreate): created as planned, left stopped"


class Step(StrEnum):
    """The transaction's steps, in the order it runs them; a test hook can pause before any of them."""

    PULL = "pull"
    PLAN = "plan"
    SET_ASIDE = "set-aside"
    TAG = "tag"
    CREATE = "create"
    CONNECT = "connect"
    VERIFY = "verify"
    STOP_OLD = "stop-old"
    START = "start"
    GATE = "gate"
    COMMIT = "commit"
    REMOVE_OLD = "remove-old"
    # start-first only (START_FIRST_STEPS): the successor takes the name, then the aliases; the old one
    # serves beside it for `drain`.
    TAKE_NAME = "take-name"
    MOVE_ALIASES = "move-aliases"
    DRAIN = "drain"


class UndoStep(StrEnum):
    """The steps of putting the old container back; ROLLBACK names a failure of the undo as a whole."""

    REMOVE_NEW = "undo-remove-new"
    START_OLD = "undo-start-old"
    RENAME_OLD = "undo-rename-old"
    ROLLBACK = "rollback"


# The steps of each strategy, in the order they run.
STEPS = tuple(s for s in Step if s not in (Step.TAKE_NAME, Step.MOVE_ALIASES, Step.DRAIN))
START_FIRST_STEPS = (
    Step.PULL,
    Step.PLAN,
    Step.TAG,
    Step.CREATE,
    Step.CONNECT,
    Step.VERIFY,
    Step.START,
    Step.GATE,
    Step.SET_ASIDE,
    Step.TAKE_NAME,
    Step.MOVE_ALIASES,
    Step.COMMIT,
    Step.DRAIN,
    Step.STOP_OLD,
    Step.REMOVE_OLD,
)
UNDO_STEPS = (UndoStep.REMOVE_NEW, UndoStep.START_OLD, UndoStep.RENAME_OLD)


class Mode(StrEnum):
    """How the transaction replaces a container, from the state it found it in (`mode_for`)."""

    RUNNING = "running"  # set aside while it serves; the outage is its stop plus the successor's start
    # Running with AutoRemove (`--rm`): the engine deletes it when it stops, so a created copy of it (its
    # stand-in) is set aside instead, and it is stopped before the successor is created (its name frees
    # only then): the outage is stop + create + start.
    AUTO_REMOVE = "auto-remove"
    # Restarting (a crash loop): stopped first, since the engine refuses to rename it between two restarts
    # (Engine 20.10 and 26.1: "sandbox ... not found"); a stop of a restarting container is immediate and
    # ends the loop (moby daemon/kill.go: a manual stop cancels the restart). It served nothing anyway.
    CRASH_LOOP = "restarting"
    STOPPED = "stopped"  # exited or created, `stopped: recreate`: the successor is created and left stopped
    REVIVE = "revive"  # exited or created, a rollback: the successor is started and gated

    @property
    def restores_running(self) -> bool:
        """Whether an undo starts the old container again (else it puts it back stopped)."""
        return self in (Mode.RUNNING, Mode.AUTO_REMOVE, Mode.CRASH_LOOP)

    @property
    def starts_new(self) -> bool:
        return self is not Mode.STOPPED

    @property
    def aside_suffix(self) -> str:
        """The set-aside name's suffix, which tells recovery whether to start the old one again."""
        return OLD_SUFFIX if self.restores_running else STOPPED_SUFFIX


STOPPED_STATES = (ContainerState.EXITED, ContainerState.CREATED)


def left_alone(state: ContainerState | None, stopped: Stopped, *, stopped_ok: bool = False) -> str | None:
    """Why a container in `state` (None: not known yet) is not to be replaced, or None if it may be.

    The reason starts with the state's word (`paused`, `exited`, ...), a stable code for logs and history.
    `stopped` is the service's choice for a container that is not running; `stopped_ok` (a rollback by
    hand) replaces such a container whatever the choice."""
    if state in (None, ContainerState.RUNNING, ContainerState.RESTARTING):
        return None
    if state is ContainerState.PAUSED:
        return (
            "paused: the container is paused (docker pause); dockwarden leaves it alone until it is unpaused"
        )
    if state in STOPPED_STATES:
        if stopped_ok or stopped is Stopped.RECREATE:
            return None
        return (
            f"{state}: the container is not running and starting it is not dockwarden's call; set "
            "`stopped: recreate` for this service to recreate it on the new image and leave it stopped"
        )
    return f"{state}: dockwarden replaces only running, restarting and stopped (exited, created) containers"


def mode_for(state: ContainerState, *, auto_remove: bool, stopped_ok: bool) -> Mode:
    """How to replace a container in `state` that `left_alone` lets through; `auto_remove` is its
    HostConfig.AutoRemove (which the engine refuses together with a restart policy, so never restarting)."""
    if state is ContainerState.RESTARTING:
        return Mode.CRASH_LOOP
    if state is ContainerState.RUNNING:
        return Mode.AUTO_REMOVE if auto_remove else Mode.RUNNING
    return Mode.REVIVE if stopped_ok else Mode.STOPPED


def _host_ports(host: dict[str, Any]) -> bool:
    # Any binding publishes, even one with an empty HostPort (the engine picks a free port).
    return bool(host.get("PublishAllPorts")) or any((host.get("PortBindings") or {}).values())


def _fixed_address(container: dict[str, Any]) -> bool:
    networks = ((container.get("NetworkSettings") or {}).get("Networks") or {}).values()
    return any(
        any((settings.get("IPAMConfig") or {}).get(k) for k in ("IPv4Address", "IPv6Address"))
        for settings in networks
        if settings
    ) or bool((container.get("Config") or {}).get("MacAddress"))


def twice_held(container: dict[str, Any], *, careful: bool) -> str | None:
    """What of `container` (an inspect document) two containers could not hold at once, or None: a
    published host port (or -P), the host's or another container's network namespace, a fixed IP or MAC;
    `careful` (for `auto`) adds devices and writable mounts (two processes on one device or one data
    directory, such as a database and its lock file)."""
    host = container.get("HostConfig") or {}
    mode = str(host.get("NetworkMode") or "")
    if _host_ports(host):
        return "it publishes host ports"
    if mode == "host" or mode.startswith("container:"):
        return f"it uses network mode {mode}"
    if _fixed_address(container):
        return "it has a fixed IP or MAC address"
    if careful and host.get("Devices"):
        return "it uses host devices"
    writable = [
        m for m in container.get("Mounts") or [] if m.get("Type") in ("bind", "volume") and m.get("RW")
    ]
    if careful and writable:
        return f"it mounts {writable[0].get('Destination')} writable"
    return None


def strategy_for(wanted: Strategy, mode: Mode, container: dict[str, Any]) -> tuple[Strategy, str | None]:
    """The strategy an upgrade uses for `container` found in `mode`, and why it is not start-first when
    `wanted` (start-first or auto) hoped for it (None otherwise): start-first only replaces a running
    container (`Mode.RUNNING`) holding nothing two containers could not hold at once (`twice_held`)."""
    if wanted is Strategy.STOP_FIRST:
        return Strategy.STOP_FIRST, None
    careful = wanted is Strategy.AUTO
    reason: str | None
    if mode is not Mode.RUNNING:
        reason = f"start-first needs a running container without --rm; this one is {mode}"
    else:
        reason = twice_held(container, careful=careful)
    if reason is None:
        return Strategy.START_FIRST, None
    return Strategy.STOP_FIRST, reason


class Result(StrEnum):
    """How a service's turn in a cycle, or a rollback, ended (`update --json`'s and history's `result`)."""

    UP_TO_DATE = "up-to-date"
    UPGRADED = "upgraded"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    SKIPPED = "skipped"
    ERROR = "error"
    WOULD_UPGRADE = "would-upgrade"  # --dry-run: it would be upgraded
    REVERTED = "reverted"  # `dockwarden rollback`: the service runs the older version now

    @property
    def failed(self) -> bool:
        return self in (Result.ROLLED_BACK, Result.ROLLBACK_FAILED, Result.ERROR)


@dataclass(frozen=True, kw_only=True)
class Target:
    service: str
    container: str
    ref: ImageRef  # the tag the service follows
    from_digest: str | None
    to_digest: str | None  # None: recreate on the same image (a container sharing a recreated namespace)
    policy: gate.Policy
    network_mode: str | None = None  # replaces HostConfig.NetworkMode (container:X whose X was recreated)
    image_id: str | None = None  # switch to this local image instead of pulling (a rollback)
    # A rollback replaces (and starts) a container that is not running: its version may be what crashed.
    # An upgrade does what `stopped` says: starting a service the user stopped is not our call.
    stopped_ok: bool = False
    stopped: Stopped = Stopped.SKIP
    # Legacy links (`--link`) of this container to `relink`, whatever set-aside name they followed it to,
    # are pointed back at `relink` (a container linking to one that was replaced).
    relink: str | None = None
    strategy: Strategy = Strategy.STOP_FIRST  # the service's; `strategy_for` decides at plan
    drain: float = 10.0  # seconds, start-first: the old container serves beside the new one


@dataclass(frozen=True, kw_only=True)
class Outcome:
    service: str
    container: str
    from_digest: str | None
    to_digest: str | None
    result: Result
    error: str | None = None
    step: Step | UndoStep | None = None  # where it failed
    duration: float = 0.0
    rollback_error: str | None = None
    replaced: str | None = None  # ID of the container that was set aside, once one was
    old_image: str | None = None  # image IDs the service ran before, and was switched to
    new_image: str | None = None
    verdict: str | None = None  # the gate's, when it passed
    started_new: bool = False  # the successor was started: only then can its digest be blamed
    cause: gate.Cause | None = None  # for a failure: what it is about (`failure_cause`, `undo_cause`)

    @property
    def switched(self) -> bool:
        """The service now runs another image than before (the transaction committed)."""
        return (
            self.result == Result.UPGRADED and self.old_image is not None and self.old_image != self.new_image
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "container": self.container,
            "from_digest": self.from_digest,
            "to_digest": self.to_digest,
            "result": self.result,
            "error": self.error,
            "step": self.step,
            "rollback_error": self.rollback_error,
            "cause": self.cause,
        }


class StepFailed(Exception):
    def __init__(self, step: Step | UndoStep, message: str, cause: gate.Cause = gate.Cause.CONTAINER) -> None:
        super().__init__(message)
        self.step = step
        self.cause = cause


def failure_cause(exc: BaseException, step: Step | UndoStep | None) -> gate.Cause:
    """Whom a failure at `step` is about. The gate's verdict says so itself; an engine that does not
    answer is never the image's fault; an engine refusing to start the successor (no such executable, an
    OCI runtime error: 4xx or 5xx) is; any other engine error is the engine's; anything else is ours."""
    if isinstance(exc, StepFailed):
        return exc.cause
    if isinstance(exc, Unreachable):
        return gate.Cause.ENGINE
    if isinstance(exc, EngineError):
        return gate.Cause.CONTAINER if step == Step.START else gate.Cause.ENGINE
    return gate.Cause.DOCKWARDEN


def undo_cause(failure: gate.Cause, undo_error: BaseException | None) -> gate.Cause:
    """The cause of a rolled-back transaction: the failure's, unless the undo met the engine failing. An
    engine that restarts stops the successor before it goes away (the gate reads that as the container
    exiting), and it is often still away during the undo: then the engine is to blame, not the image."""
    if undo_error is not None and failure_cause(undo_error, UndoStep.ROLLBACK) is gate.Cause.ENGINE:
        return gate.Cause.ENGINE
    return failure


Checkpoint = Callable[[str], None]
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """What a caller may attach to a transaction: a stop request, a test's pause point, pull progress."""

    cancel: threading.Event | None = None  # set: roll back out of the gate; start nothing new
    checkpoint: Checkpoint | None = None  # called with each step's name before the step runs
    progress: Progress | None = None  # called with each message of the pull's stream
    # Called with the old container's ID just before it is renamed aside, under its lock: the record that
    # proves a set-aside container ours while no successor holds its name yet (`not_ours`).
    set_aside: Callable[[str], None] | None = None
    # Called with a container's ID right after the transaction or its undo started it (the runner refreshes
    # the host's neighbour entry for it: `neighbours`); it must not raise.
    started: Callable[[str], None] | None = None


def image_string(container: dict[str, Any], ref: ImageRef) -> str:
    """What the successor's Config.Image says: the old text if it names the same tag, else the ref."""
    text = str((container.get("Config") or {}).get("Image") or "")
    try:
        parsed = imageref.parse(text).with_tag_default()
    except imageref.InvalidReference:
        return str(ref)
    return text if (parsed.name, parsed.tag) == (ref.name, ref.tag) and parsed.digest is None else str(ref)


def stop_timeout(container: dict[str, Any]) -> int:
    value = (container.get("Config") or {}).get("StopTimeout")
    return int(value) if isinstance(value, int) and value >= 0 else DEFAULT_STOP_TIMEOUT


class TransactionEngine(gate.Inspector, Protocol):
    """Every engine call the transaction, its undo and recovery make: `engine.Engine` satisfies it, and so
    can an in-memory fake for tests. Documents are the Engine API's JSON as dicts; references are Docker's
    (`repo:tag`, `repo@sha256:...`, an image ID). Every method raises NotFound for an unknown container or
    image and EngineError for any other refusal or failure, with a message fit for a log line. Status codes
    in parentheses are the Engine API reference's (v1.41 to v1.45)."""

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """The image's inspect document (`GET /images/{ref}/json`)."""
        ...

    def pull(self, reference: str, progress: Progress | None = None) -> None:
        """Pull `reference` (`POST /images/create`), passing each progress message to `progress`; an error
        inside the stream raises EngineError too."""
        ...

    def tag(self, image_id: str, reference: str) -> None:
        """Point `reference` (`repo:tag`, `:latest` if no tag) at the image, taking it from any other."""
        ...

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container; EngineError if another container has that name (409)."""
        ...

    def create(self, body: dict[str, Any], name: str) -> str:
        """Create a container from a `POST /containers/create` body under `name` (EngineError if taken,
        409); its image must be here (NotFound otherwise: create never pulls). Returns its ID."""
        ...

    def connect_network(self, container_id: str, network: str, endpoint: dict[str, Any]) -> None:
        """Connect a container to `network` with an EndpointConfig (Aliases, IPAMConfig, Links, ...)."""
        ...

    def disconnect_network(self, container_id: str, network: str) -> None:
        """Disconnect a container from `network` (`POST /networks/{id}/disconnect`): its endpoint there goes,
        with its address and DNS records (aliases); EngineError if it is not connected."""
        ...

    def stop(self, container_id: str, timeout: int) -> None:
        """Send its StopSignal, then SIGKILL after `timeout` seconds; a stopped one is left as it is (304)."""
        ...

    def start(self, container_id: str) -> None:
        """Start a container; one already running is left as it is (304)."""
        ...

    def remove(self, container_id: str, force: bool = True, volumes: bool = False) -> None:
        """Remove a container, keeping its volumes unless `volumes` (then the anonymous volumes created for
        it go too, never one it mounts by name); without `force`, EngineError if it runs (409)."""
        ...

    def defaults(self, image: str) -> dict[str, Any]:
        """What the engine fills in by itself (`recreate.EngineDefaults.from_probe` reads it): the
        HostConfig of a container created from `image` with nothing set, which is removed again, and the
        host's name."""
        ...

    def copy_file(self, source_id: str, target_id: str, path: str) -> bool:
        """Copy one file between containers, at the same absolute path (archive API); False if the source
        has none."""
        ...

    def remove_image(self, reference: str) -> list[dict[str, str]]:
        """`docker rmi` without force: untag `reference`, deleting the image with its last tag; EngineError
        (409) if a container uses an image it would delete. Returns the engine's Untagged/Deleted items."""
        ...


@dataclass(frozen=True, kw_only=True)
class _Final:
    """How a transaction ends at PLAN without touching anything."""

    result: Result
    reason: str | None = None
    step: Step | None = None


class Upgrade:
    def __init__(self, engine: TransactionEngine, target: Target, hooks: Hooks | None = None) -> None:
        self.engine = engine
        self.t = target
        self.hooks = hooks or Hooks()
        self.log = structlog.get_logger("dockwarden.upgrade").bind(
            service=target.service,
            container=target.container,
            from_digest=target.from_digest,
            to_digest=target.to_digest,
        )
        self.step: Step | None = None
        self._step_started = 0.0
        self._entered: set[Step] = set()
        self.old: dict[str, Any] = {}
        self.old_image: dict[str, Any] = {}
        self.new_image: dict[str, Any] = {}
        self.verdict: str | None = None
        self.pulled_ref: str | None = None
        self.mode = Mode.RUNNING
        self.stand_in: str | None = None  # ID of the old container's created copy (AutoRemove)
        self.defaults = recreate.BUILTIN  # replaced by the engine's own, read at plan
        self.lent: frozenset[str] = frozenset()  # paths its --volumes-from containers lend it
        self.held = False  # a crash-looping old container was stopped at SET_ASIDE
        self.strategy = Strategy.STOP_FIRST  # decided at plan (`strategy_for`)
        self.new_id: str | None = None  # the successor, once created

    def _enter(self, step: Step) -> None:
        self._leave()
        if self.hooks.checkpoint is not None:
            self.hooks.checkpoint(step)
        self._entered.add(step)
        self.step = step
        self._step_started = time.monotonic()

    def _leave(self, **fields: Any) -> None:
        if self.step:
            took = round((time.monotonic() - self._step_started) * 1000, 1)
            self.log.info("upgrade.step", step=self.step, duration_ms=took, **fields)
        self.step = None

    def run(self) -> Outcome:
        try:
            return self._run()
        finally:
            if self.pulled_ref is not None:
                # Its job (keeping prunes away from an image no container used yet) is done. After a
                # rollback this deletes the image that failed, if nothing else holds it.
                with contextlib.suppress(EngineError):
                    self.engine.remove_image(self.pulled_ref)

    def _run(self) -> Outcome:
        started = time.monotonic()
        self.log.info("upgrade.started", image=str(self.t.ref))
        try:
            outcome = self._steps(started)
        except (EngineError, StepFailed) as exc:
            return self._failed(exc, started)
        except Exception as exc:
            # Whatever the surprise, a transaction half-way must still roll back, never strand the service.
            self.log.exception("upgrade.crashed", step=self.step)
            return self._failed(exc, started)
        if outcome.result == Result.UPGRADED:
            self.log.info(
                "upgrade.finished", result=Result.UPGRADED, duration_ms=round(outcome.duration * 1000, 1)
            )
        return outcome

    def _steps(self, started: float) -> Outcome:
        """The transaction, step by step; a failure raises, and `_run` rolls back from where it was."""
        t = self.t
        # Nothing below touches the running service until SET_ASIDE: a failure up to there leaves it
        # exactly as it was.
        pulled = self._pull() if t.to_digest is not None and t.image_id is None else None
        self._enter(Step.PLAN)
        prepared = self._plan(pulled)
        if isinstance(prepared, _Final):
            self._leave()
            return self._outcome(prepared.result, started, prepared.reason, prepared.step)
        plan, image_text, switching = prepared
        if self.strategy is Strategy.START_FIRST:
            return self._start_first(plan, image_text, switching, started)

        self._enter(Step.SET_ASIDE)
        aside = self._set_aside()
        if self.mode is Mode.AUTO_REMOVE:
            self._stop_old()  # the engine deletes it, freeing its name for the successor

        if switching:
            self._enter(Step.TAG)
            self.engine.tag(self.new_image["Id"], image_text)

        new_id = self._create(plan, t.container)
        if self.mode.starts_new:
            self._switch(new_id)
        else:
            self.verdict = NOT_STARTED

        self._enter(Step.COMMIT)
        # The rename is the commit record: from here on, a restart finishes instead of undoing.
        self.engine.rename(aside, t.container + DONE_SUFFIX)

        self._enter(Step.REMOVE_OLD)
        self.engine.remove(aside)
        self._leave()
        return self._outcome(Result.UPGRADED, started)

    def _create(self, plan: recreate.CreatePlan, name: str) -> str:
        """CREATE, CONNECT, VERIFY: the successor as `plan` says, under `name`; returns its ID."""
        self._enter(Step.CREATE)
        self.new_id = new_id = self.engine.create(plan.body, name)
        for path in plan.files:  # what the creating client wrote in after its create, as it did
            if not self.engine.copy_file(self.old["Id"], new_id, path):
                self.log.info("upgrade.file_absent", path=path)

        self._enter(Step.CONNECT)
        for network, endpoint in plan.connect.items():
            self.engine.connect_network(new_id, network, endpoint)

        self._enter(Step.VERIFY)
        problems = recreate.differences(plan, self.engine.inspect_container(new_id))
        if problems:
            raise StepFailed(Step.VERIFY, "the new container differs from the old: " + "; ".join(problems))
        return new_id

    def _switch(self, new_id: str) -> None:
        """STOP_OLD, START, GATE: the outage, then the proof that the successor is good enough to keep."""
        # Only now does the service stop: everything that can be prepared while the old version
        # serves (tag, create, connect, verify) is done, so the outage is stop + start.
        if self.mode is not Mode.AUTO_REMOVE:  # that one was stopped before create
            self._stop_old()
        self._start_and_gate(new_id)

    def _start_and_gate(self, new_id: str) -> None:
        """START (then the `started` hook: the neighbour refresh) and GATE."""
        self._enter(Step.START)
        self.engine.start(new_id)
        if self.hooks.started is not None:
            self.hooks.started(new_id)

        self._enter(Step.GATE)
        verdict = gate.wait(self.engine, new_id, self.t.policy, 0, self.hooks.cancel)
        if not verdict.passed:
            raise StepFailed(Step.GATE, verdict.reason, verdict.cause)
        self.verdict = verdict.reason
        self._leave(verdict=verdict.reason)

    def _start_first(
        self, plan: recreate.CreatePlan, image_text: str, switching: bool, started: float
    ) -> Outcome:
        """The start-first transaction: the successor is created, started and gated as NAME--dockwarden-new
        without the service's aliases while the old container serves untouched; a failure up to there
        only removes it. Then the old one is set aside (as in stop-first, and still serving), the successor
        takes the name and the aliases, and the commit comes while both serve; the old one drains and
        stops. Every state between is one `converge` knows (see `not_ours`)."""
        t = self.t
        if switching:
            self._enter(Step.TAG)
            self.engine.tag(self.new_image["Id"], image_text)
        new_id = self._create(recreate.without_aliases(plan), t.container + NEW_SUFFIX)
        self._start_and_gate(new_id)

        self._enter(Step.SET_ASIDE)
        aside = self._set_aside()
        self._enter(Step.TAKE_NAME)
        self.engine.rename(new_id, t.container)
        self._enter(Step.MOVE_ALIASES)
        self._move_aliases(plan, new_id)

        self._enter(Step.COMMIT)
        # The old one still serves: a `-done` container beside a successor naming it is finished by
        # recovery (stopped, then removed), so from here on a restart finishes instead of undoing.
        self.engine.rename(aside, t.container + DONE_SUFFIX)
        self._enter(Step.DRAIN)
        if self.hooks.cancel is not None:
            self.hooks.cancel.wait(t.drain)  # dockwarden stopping: no reason to drain any longer
        else:
            time.sleep(t.drain)
        self._enter(Step.STOP_OLD)
        # Stopped, not disconnected first: its StopSignal lets it finish what it serves, and a client (or a
        # proxy) still sending to it meanwhile is refused at once; a disconnect would drop its in-flight
        # connections silently, leaving their clients to time out.
        self.engine.stop(aside, stop_timeout(self.old))
        self._enter(Step.REMOVE_OLD)
        self.engine.remove(aside)
        self._leave()
        return self._outcome(Result.UPGRADED, started)

    def _move_aliases(self, plan: recreate.CreatePlan, new_id: str) -> None:
        """MOVE_ALIASES: reconnect the successor to each network where the service has aliases, now with
        them (the engine cannot add aliases to an endpoint), check it is what `plan` says, and refresh the
        host's neighbour entries of its new endpoints. Both containers answer the aliases now."""
        endpoints = {
            **plan.connect,
            **((plan.body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}),
        }
        for network, endpoint in endpoints.items():
            if endpoint.get("Aliases"):
                self.engine.disconnect_network(new_id, network)
                self.engine.connect_network(new_id, network, endpoint)
        problems = recreate.differences(plan, self.engine.inspect_container(new_id))
        if problems:
            raise StepFailed(
                Step.MOVE_ALIASES, "the new container differs from the old: " + "; ".join(problems)
            )
        if self.hooks.started is not None:
            self.hooks.started(new_id)

    def _stop_old(self) -> None:
        """STOP_OLD, honouring StopSignal and StopTimeout (with AutoRemove: until the engine deleted it)."""
        self._enter(Step.STOP_OLD)
        self.engine.stop(self.old["Id"], stop_timeout(self.old))
        if self.mode is Mode.AUTO_REMOVE:
            _wait_gone(self.engine, self.old["Id"], Step.STOP_OLD)

    def _set_aside(self) -> str:
        """SET_ASIDE: free the service's name, keeping the old version under a set-aside name where undo and
        recovery find it. Returns the ID of the container set aside (the old one, or its stand-in)."""
        old_id, name = self.old["Id"], self.t.container
        if self.mode is Mode.AUTO_REMOVE:
            return self._make_stand_in()
        if self.hooks.set_aside is not None:
            self.hooks.set_aside(str(old_id))
        if self.mode is Mode.CRASH_LOOP:
            self._hold()
        try:
            self.engine.rename(old_id, name + self.mode.aside_suffix)
        except EngineError:
            if self.mode is not Mode.RUNNING or not _crash_looping(self.engine, self.old):
                raise
            # It crashed again since PLAN, and the engine refuses to rename it between two restarts.
            self.mode = Mode.CRASH_LOOP
            self._hold()
            self.engine.rename(old_id, name + self.mode.aside_suffix)
        return str(old_id)

    def _hold(self) -> None:
        """Stop a crash-looping container (immediate between two restarts) so that it can be renamed."""
        self.held = True
        self.engine.stop(self.old["Id"], stop_timeout(self.old))

    def _make_stand_in(self) -> str:
        """A created, never started copy of the old container under the set-aside name, made from its inspect
        document as a successor is: the engine deletes the old one when it stops (AutoRemove), so this copy
        is what an undo starts. Returns its ID."""
        text = str(self.old["Config"]["Image"])
        try:
            resolves_to = self.engine.inspect_image(text)["Id"]
        except NotFound:
            resolves_to = None
        if resolves_to != self.old["Image"]:
            _retag(self.engine, self.old)  # the copy must be created from the image the old one runs
        # The engine's defaults and lent paths as read at plan, so the copy is the old container, not one
        # with moby's built-in defaults.
        copy = recreate.plan(
            self.old, self.old_image, self.old_image, text, defaults=self.defaults, lent=self.lent
        )
        self.stand_in = self.engine.create(copy.body, self.t.container + OLD_SUFFIX)
        for network, endpoint in copy.connect.items():
            self.engine.connect_network(self.stand_in, network, endpoint)
        problems = recreate.differences(copy, self.engine.inspect_container(self.stand_in))
        if problems:
            raise StepFailed(Step.SET_ASIDE, "the old container's stand-in differs: " + "; ".join(problems))
        return self.stand_in

    def _pull(self) -> dict[str, Any]:
        """PULL: fetch the target by digest and protect it with the `-pulled` tag; its inspect."""
        self._enter(Step.PULL)
        pinned = f"{self.t.ref.name}@{self.t.to_digest}"
        self.engine.pull(pinned, self.hooks.progress)
        image = self.engine.inspect_image(pinned)
        if image["Id"] == self.engine.inspect_container(self.t.container).get("Image"):
            # The pull found the running image (a tag moved locally took its references away): a container
            # uses it, so nothing needs protecting, and a `-pulled` tag on it could not be removed without
            # force afterwards (the containerd store refuses to untag the last name of an image in use).
            return image
        # Untagged until the TAG step, and unused until CREATE: any prune would take it.
        self.pulled_ref = f"{self.t.ref.name}:{retention.pulled_tag(self.t.container)}"
        self.engine.tag(image["Id"], self.pulled_ref)
        return image

    def _plan(self, pulled: dict[str, Any] | None) -> tuple[recreate.CreatePlan, str, bool] | _Final:
        """PLAN: read the old container and both images, decide how to replace it, and compute the
        successor's create body.

        Returns (plan, the successor's Config.Image, whether it switches image), or how the transaction
        ends without touching anything: UP_TO_DATE, or SKIPPED (a state left alone, or dockwarden is
        stopping)."""
        t = self.t
        new_image = self.engine.inspect_image(t.image_id) if t.image_id is not None else pulled
        self.old = self.engine.inspect_container(t.container)
        refused = compose.refusal((self.old.get("Config") or {}).get("Labels") or {})
        if refused is not None:
            raise StepFailed(Step.PLAN, refused)
        self.old_image = old_image = self.engine.inspect_image(self.old["Image"])
        switching = new_image is not None
        if new_image is None:
            new_image, image_text = old_image, str(self.old["Config"]["Image"])
        elif old_image["Id"] == new_image["Id"]:
            return _Final(result=Result.UP_TO_DATE)
        else:
            image_text = image_string(self.old, t.ref)
        state = _state(self.old)
        refusal = left_alone(state, t.stopped, stopped_ok=t.stopped_ok)
        if refusal is not None:
            self.log.warning("upgrade.skipped", reason=refusal)
            return _Final(result=Result.SKIPPED, reason=refusal)
        auto_remove = bool((self.old.get("HostConfig") or {}).get("AutoRemove"))
        self.mode = mode_for(state, auto_remove=auto_remove, stopped_ok=t.stopped_ok)
        self.strategy, why = strategy_for(t.strategy, self.mode, self.old)
        if t.strategy is not Strategy.STOP_FIRST:
            self.log.info("upgrade.strategy", wanted=t.strategy, strategy=self.strategy, reason=why)
        self.new_image = new_image
        # Read now, while the old version serves: HostConfig values equal to these follow the engine.
        self.defaults = defaults = recreate.EngineDefaults.from_probe(self.engine.defaults(old_image["Id"]))
        self.lent = lent = frozenset().union(
            *(recreate.mount_paths(self.engine.inspect_container(c)) for c in recreate.volumes_from(self.old))
        )
        plan = recreate.plan(
            self.old, old_image, new_image, image_text, t.network_mode, defaults=defaults, lent=lent
        )
        if t.relink is not None:
            plan = relinked(plan, t.relink)
        if self.hooks.cancel is not None and self.hooks.cancel.is_set():
            return _Final(result=Result.SKIPPED, reason="not started: dockwarden is stopping", step=Step.PLAN)
        return plan, image_text, switching

    def _failed(self, exc: Exception, started: float) -> Outcome:
        failed_at = exc.step if isinstance(exc, StepFailed) else self.step
        self._leave(failed=True)
        if self.step_reached(Step.COMMIT) and failed_at != Step.COMMIT:
            # Committed: the new container passed and holds the name. The old one stays as
            # NAME--dockwarden-done, which the next start's recovery (stops and) removes.
            self.log.warning("upgrade.cleanup_failed", step=failed_at, error=str(exc))
            return self._outcome(Result.UPGRADED, started, str(exc), failed_at)
        cause = failure_cause(exc, failed_at)
        self.log.warning("upgrade.failed", step=failed_at, error=str(exc) or type(exc).__name__, cause=cause)
        first = self.strategy is Strategy.START_FIRST
        if failed_at in (Step.PULL, Step.PLAN) or (
            failed_at == Step.SET_ASIDE and not first and self._untouched()
        ):
            return self._outcome(Result.ERROR, started, str(exc), failed_at, cause=cause)
        return self._roll_back(started, str(exc), failed_at, cause)

    def _untouched(self) -> bool:
        """After a failed SET_ASIDE: True when the old container still holds its name, once what the step
        began is taken back (a stand-in removed, a held crash loop started again); then nothing changed."""
        try:
            if _name(self.engine.inspect_container(self.old["Id"])) != self.t.container:
                return False
            if self.stand_in is not None:
                with contextlib.suppress(NotFound):
                    self.engine.remove(self.stand_in)
            if self.held:
                self.engine.start(self.old["Id"])  # its restart policy takes over again
        except EngineError:
            return False  # then the undo takes it from here, and reports what fails
        return True

    def _roll_back(
        self, started: float, error: str, step: Step | UndoStep | None, cause: gate.Cause
    ) -> Outcome:
        self.log.warning("rollback.started", step=step)
        undo_started = time.monotonic()
        # Notes each time the engine does not answer, whoever absorbs the error (a retried start).
        witness = _Witness(self.engine)
        for attempt in range(1, UNDO_ATTEMPTS + 1):
            try:
                if self.strategy is Strategy.START_FIRST:
                    self._undo_start_first(cast(TransactionEngine, witness))
                else:
                    self._undo(cast(TransactionEngine, witness))
                break
            except (EngineError, StepFailed) as exc:
                # The undo starts from whatever it finds, so a failed attempt is simply made again: one
                # engine error must not leave the service down until the next cycle. A container that is
                # not ours, or an old version that does not come back, is not the engine's doing.
                if isinstance(exc, StepFailed) and exc.cause is not gate.Cause.ENGINE:
                    return self._rollback_failed(started, error, step, cause, exc, undo_started)
                if attempt == UNDO_ATTEMPTS:
                    return self._rollback_failed(started, error, step, cause, exc, undo_started)
                self.log.warning("rollback.retrying", error=str(exc), attempt=attempt)
                time.sleep(UNDO_RETRY_DELAY)
            except Exception as exc:  # any other failure is reported as rollback-failed, with its message
                return self._rollback_failed(started, error, step, cause, exc, undo_started)
        if witness.away:
            # The engine went away during the undo and came back: it restarted (or lost its socket) while
            # the transaction ran, which is what the gate saw, not the image failing.
            cause = gate.Cause.ENGINE
        self.log.warning("rollback.finished", duration_ms=_ms(undo_started), cause=cause)
        return self._outcome(Result.ROLLED_BACK, started, error, step, cause=cause)

    def _rollback_failed(
        self,
        started: float,
        error: str,
        step: Step | UndoStep | None,
        cause: gate.Cause,
        exc: BaseException,
        undo_started: float,
    ) -> Outcome:
        cause = undo_cause(cause, exc)
        self.log.error("rollback.failed", error=str(exc), duration_ms=_ms(undo_started), cause=cause)
        return self._outcome(
            Result.ROLLBACK_FAILED, started, error, step, rollback_error=str(exc), cause=cause
        )

    def _undo(self, engine: TransactionEngine) -> None:
        undo(
            engine,
            self.t.container,
            self._aside_document(),
            self.t.policy,
            self.hooks.checkpoint,
            self.mode.restores_running,
            # A crash loop comes back as it was: crash-looping, which no check would pass.
            check=self.mode is not Mode.CRASH_LOOP,
            live=True,
            started=self.hooks.started,
        )

    def _undo_start_first(self, engine: TransactionEngine) -> None:
        """Undo a start-first transaction before its commit: remove the successor (whatever its name), then
        give the old container, which never stopped, its name back if it was set aside."""
        step = self.hooks.checkpoint or (lambda _step: None)
        if self.new_id is not None:
            step(UndoStep.REMOVE_NEW)
            _remove_successor(engine, self.new_id, live=True)
        current = engine.inspect_container(self.old["Id"])
        if _name(current) == self.t.container:
            _retag(engine, current)  # only the tag moved
            return
        self._undo(engine)

    def _aside_document(self) -> dict[str, Any]:
        """What an undo puts back: the old container, or its stand-in if one was made and still exists."""
        if self.stand_in is None:
            return self.old
        try:
            return self.engine.inspect_container(self.stand_in)
        except NotFound:
            return self.old

    def _outcome(
        self,
        result: Result,
        started: float,
        error: str | None = None,
        step: Step | UndoStep | None = None,
        rollback_error: str | None = None,
        cause: gate.Cause | None = None,
    ) -> Outcome:
        t = self.t
        touched = self.step_reached(Step.SET_ASIDE) and result != Result.ERROR
        return Outcome(
            service=t.service,
            container=t.container,
            from_digest=t.from_digest,
            to_digest=t.to_digest,
            result=result,
            error=error,
            step=step,
            duration=time.monotonic() - started,
            rollback_error=rollback_error,
            replaced=self.old.get("Id") if touched else None,
            old_image=self.old.get("Image"),
            new_image=self.new_image.get("Id"),
            verdict=self.verdict,
            started_new=self.step_reached(Step.START),
            cause=cause,
        )

    def step_reached(self, step: Step) -> bool:
        return step in self._entered


class _Witness:
    """An engine that counts the calls it did not answer at all (Unreachable), whoever catches the error:
    evidence that it went away (restarted) while a transaction ran."""

    def __init__(self, engine: TransactionEngine) -> None:
        self._engine = engine
        self.away = 0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._engine, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return found(*args, **kwargs)
            except Unreachable:
                self.away += 1
                raise

        return call


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def _find(engine: TransactionEngine, name: str) -> dict[str, Any] | None:
    try:
        return engine.inspect_container(name)
    except NotFound:
        return None


def _state(container: dict[str, Any]) -> ContainerState:
    return ContainerState(str((container.get("State") or {}).get("Status")))


def _name(container: dict[str, Any]) -> str:
    return str(container.get("Name") or "").lstrip("/")


def _replaces(container: dict[str, Any]) -> str | None:
    """The ID of the container this one was created to replace (a successor, or a stand-in), if any."""
    return ((container.get("Config") or {}).get("Labels") or {}).get(recreate.REPLACES_LABEL) or None


def _has_run(container: dict[str, Any]) -> bool:
    return str((container.get("State") or {}).get("StartedAt") or NEVER) != NEVER


def _wait_gone(engine: TransactionEngine, container_id: str, step: Step | UndoStep) -> None:
    """Wait until the engine has deleted a stopped AutoRemove container (it does so just after the stop
    returns: Engine 26.1 shows it `dead` or `removing` meanwhile); StepFailed after GONE_TIMEOUT."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while _find(engine, container_id) is not None:
        if time.monotonic() >= deadline:
            raise StepFailed(step, f"{container_id[:12]} (AutoRemove) was not deleted after its stop")
        time.sleep(GONE_POLL)


def relinked(plan: recreate.CreatePlan, target: str) -> recreate.CreatePlan:
    """`plan` with each legacy link to `target`, or to a set-aside name of it, pointed at `target`: the
    engine moves links along with a rename, so a container linking to a replaced one links to the
    set-aside name (moby daemon/rename.go), which goes with the old container."""
    host = plan.body.get("HostConfig") or {}
    links = []
    for link in host.get("Links") or []:  # create's "name:alias" form (recreate.plan)
        linked, _, alias = str(link).partition(":")
        base = next((linked.removesuffix(s) for s in SUFFIXES if linked.endswith(s)), linked)
        links.append(f"{target}:{alias}" if base == target else link)
    if not links:
        return plan
    body = {**plan.body, "HostConfig": {**host, "Links": links}}
    return dataclasses.replace(plan, body=body)


def _retag(engine: TransactionEngine, container: dict[str, Any]) -> None:
    """Point the tag the container was created from at the image it runs, as `docker pull` would."""
    text = str((container.get("Config") or {}).get("Image") or "")
    try:
        ref = imageref.parse(text)
    except imageref.InvalidReference:
        return
    if ref.digest is None and not text.startswith("sha256:"):
        engine.tag(container["Image"], text)


def undo(
    engine: TransactionEngine,
    name: str,
    old: dict[str, Any],
    policy: gate.Policy,
    checkpoint: Checkpoint | None = None,
    restart: bool = True,
    *,
    check: bool = True,
    live: bool = False,
    started: Callable[[str], None] | None = None,
) -> None:
    """Put `old` (the set-aside container, or a stand-in for it) back as `name`: remove our successor if it
    holds the name, start the old one, rename it back, check it runs (healthy if it has a HEALTHCHECK).
    With `restart` False (it was not running before), only rename it back; with `check` False (it was
    crash-looping), do not expect it to come back well. `live`: the transaction that created the successor
    undoes it, so it is known ours and is removed at once (the service is down until the old version
    starts); recovery, which only proved it ours, stops it gracefully first and never forces. `started` is
    called with the old container's ID once it started again (`Hooks.started`).

    Started before it is renamed back, so that a kill in between leaves a running container that still
    carries the set-aside name, which the next recovery finds; the reverse order could leave the old one
    stopped under its own name, where nothing would look for it.
    """
    step = checkpoint or (lambda _step: None)
    if not _free_the_name(engine, name, old, step, live=live):
        return
    current = engine.inspect_container(old["Id"])
    _retag(engine, current)
    if not restart:
        if _name(current) != name:
            step(UndoStep.RENAME_OLD)
            engine.rename(old["Id"], name)
        return
    step(UndoStep.START_OLD)
    _start_with_retries(engine, old["Id"])
    if started is not None:
        started(old["Id"])
    if _name(current) != name:
        step(UndoStep.RENAME_OLD)
        _rename_back(engine, current, name)
    if not check:
        return
    # Check the old version runs again: healthy if it has a HEALTHCHECK, else up for a short while.
    quick = gate.Policy(stability=min(policy.stability, 2.0), health_timeout_max=policy.health_timeout_max)
    verdict = gate.wait(engine, old["Id"], quick, int(current.get("RestartCount") or 0))
    if not verdict.passed:
        raise StepFailed(
            UndoStep.ROLLBACK, f"the old container did not come back: {verdict.reason}", verdict.cause
        )


def _free_the_name(
    engine: TransactionEngine, name: str, old: dict[str, Any], step: Checkpoint, *, live: bool = False
) -> bool:
    """Remove what holds `name` if it is ours: a successor of the old container (or of what `old` stands
    in for). False when there is nothing left to do: `old` is a stand-in and the container it stands in
    for still runs under `name`, so the stand-in is removed instead. StepFailed if a container that is not
    ours holds the name."""
    holder = _find(engine, name)
    if holder is None or holder["Id"] == old["Id"]:
        return True
    original = _replaces(old)
    if holder["Id"] == original:  # `old` is a stand-in, made before the original stopped
        if _state(holder) is ContainerState.RUNNING:
            step(UndoStep.REMOVE_NEW)
            engine.remove(old["Id"], force=False)  # created, never started
            return False
        # Stopped, so the engine is deleting it (AutoRemove): the stand-in takes its place.
        with contextlib.suppress(EngineError):  # "removal already in progress", or gone already
            engine.remove(holder["Id"], force=False)
        _wait_gone(engine, holder["Id"], UndoStep.REMOVE_NEW)
        return True
    if _replaces(holder) not in {old["Id"], original} - {None}:
        raise StepFailed(
            UndoStep.ROLLBACK, f"{name} is held by container {holder['Id'][:12]}, which is not ours"
        )
    step(UndoStep.REMOVE_NEW)
    _remove_successor(engine, holder["Id"], live=live)
    return True


def _crash_looping(engine: TransactionEngine, before: dict[str, Any]) -> bool:
    """Whether the container `before` describes is in a crash loop now: restarting, or restarted since."""
    now = engine.inspect_container(before["Id"])
    restarted = int(now.get("RestartCount") or 0) > int(before.get("RestartCount") or 0)
    return restarted or _state(now) is ContainerState.RESTARTING


def _remove_successor(engine: TransactionEngine, container_id: str, *, live: bool = False) -> None:
    """Remove a successor; one the engine is deleting already (AutoRemove, once it exited) is waited for.
    With the anonymous volumes the engine made for it (a VOLUME only the new image declares); the old
    container's, which it mounts by name, stay. `live` (the transaction that made it): removed at once,
    since every second here is outage. Otherwise (recovery) stopped first, then removed without force: a
    removal that still finds it running (restarted meanwhile) is refused rather than forced."""
    if not live:
        found = _find(engine, container_id)
        if found is None:
            return
        if (found.get("State") or {}).get("Running"):
            engine.stop(container_id, stop_timeout(found))
    try:
        engine.remove(container_id, force=live, volumes=True)
    except NotFound:
        return  # already gone: the name is free, which is the aim
    except EngineError:
        found = _find(engine, container_id)
        if found is not None and _state(found) not in (ContainerState.REMOVING, ContainerState.DEAD):
            raise
        _wait_gone(engine, container_id, UndoStep.REMOVE_NEW)


def _rename_back(engine: TransactionEngine, container: dict[str, Any], name: str) -> None:
    """Rename a container that was just started back to `name`. The engine refuses to rename one that
    crashes again at once while it is between two restarts, or even as the exit is processed (its state
    may read running then); stopped (immediate then), it can be renamed, and is started again."""
    try:
        engine.rename(container["Id"], name)
    except EngineError:
        engine.stop(container["Id"], stop_timeout(container))
        try:
            engine.rename(container["Id"], name)
        finally:  # renamed or not, it runs again (if not renamed, where recovery looks)
            engine.start(container["Id"])


def _start_with_retries(engine: TransactionEngine, container_id: str) -> None:
    # What made the successor fail (a port grabbed by another process, a dying predecessor still holding
    # it, an engine restarting) can be transient; the old version is the one thing that must come back,
    # so try a few times.
    for attempt in range(START_ATTEMPTS):
        try:
            engine.start(container_id)
            return
        except EngineError:
            if attempt == START_ATTEMPTS - 1:
                raise
            time.sleep(START_RETRY_DELAY)


def not_ours(
    suffix: str, aside: dict[str, Any], holder: dict[str, Any] | None, recorded: str | None
) -> str | None:
    """Why the container set aside as NAME+`suffix` (inspect document `aside`) is not provably left by a
    dockwarden upgrade of NAME, or None when it is. `holder`: the container named NAME, if any; `recorded`:
    the ID the transaction wrote in state_dir before its set-aside rename (`Hooks.set_aside`).

    What proves it (README "Crash safety"): the successor holding NAME names it, or the container it stands
    in for, in `dockwarden.replaces`; or a stand-in sits beside its original, which still holds NAME. With
    nothing holding NAME (killed after set-aside, before create; or during an undo, after the successor
    went): a stand-in's own label, or the state_dir record naming this very ID. A `-done` container is
    ours only beside its successor (running, it is a start-first upgrade's, committed while both served).

    A start-first successor, NAME--dockwarden-new, is ours when its own `dockwarden.replaces` names the
    container holding NAME (killed before the set-aside) or, with nothing holding NAME (killed between
    the set-aside and the successor's rename), the container the state_dir record names.
    """
    if suffix == NEW_SUFFIX:
        return _new_not_ours(aside, holder, recorded)
    claims = {aside.get("Id"), _replaces(aside)} - {None}
    if holder is not None:
        if _replaces(holder) in claims:
            return None
        if suffix == OLD_SUFFIX and holder.get("Id") == _replaces(aside):
            return None  # a stand-in made beside its original, which was never stopped
        return f"the container named {_name(holder) or 'NAME'} does not name it in {recreate.REPLACES_LABEL}"
    return _alone_not_ours(suffix, aside, recorded)


def _new_not_ours(new: dict[str, Any], holder: dict[str, Any] | None, recorded: str | None) -> str | None:
    replaced = _replaces(new)
    if replaced is None:
        return f"it has no {recreate.REPLACES_LABEL} label"
    if holder is not None:
        if holder.get("Id") == replaced:
            return None
        return (
            f"it does not name the container holding {_name(holder) or 'NAME'} in {recreate.REPLACES_LABEL}"
        )
    if recorded is not None and recorded == replaced:
        return None
    return "nothing holds the service's name and state_dir records no set-aside of what it replaces"


def _alone_not_ours(suffix: str, aside: dict[str, Any], recorded: str | None) -> str | None:
    """`not_ours` when nothing holds NAME: no successor exists, so only the container itself or the
    state_dir record can prove it."""
    if suffix == DONE_SUFFIX:
        return "no successor holds the service's name"
    if suffix == OLD_SUFFIX and _replaces(aside) is not None:
        return None  # a stand-in whose original the engine deleted (AutoRemove)
    if recorded is not None and recorded == aside.get("Id"):
        return None
    return "nothing holds the service's name and state_dir records no set-aside of this container"


def converge(engine: TransactionEngine, name: str, policy: gate.Policy, recorded: str | None = None) -> None:
    """Finish or undo a half-done upgrade of container `name` that `not_ours` proves ours (each outcome is
    logged); any other container with a set-aside name is reported (`recovery.not_ours`) and left alone.
    `recorded`: the ID in state_dir's set-aside record, if any. An engine error is met by looking again
    and going on from what is there (up to UNDO_ATTEMPTS times): one failed call must not leave the
    service down, or half undone, until the next run."""
    log = structlog.get_logger("dockwarden.upgrade").bind(container=name)
    for attempt in range(1, UNDO_ATTEMPTS + 1):
        try:
            found = _provably_ours(engine, name, recorded, report=attempt == 1)
            if found is not None:
                _converge_one(engine, name, *found, policy)
            _remove_staged(engine, name, recorded, report=attempt == 1)
            return
        except (EngineError, StepFailed) as exc:
            if (
                isinstance(exc, StepFailed) and exc.cause is not gate.Cause.ENGINE
            ) or attempt == UNDO_ATTEMPTS:
                log.error("recovery.failed", error=str(exc))
                return
            log.warning("recovery.retrying", error=str(exc), attempt=attempt)
            time.sleep(UNDO_RETRY_DELAY)


def _remove_staged(engine: TransactionEngine, name: str, recorded: str | None, *, report: bool) -> None:
    """Remove a start-first successor that never took over (`NAME--dockwarden-new`), once the old one is
    back under NAME (or was never moved), if `not_ours` proves it ours; else report it (with `report`)."""
    staged = _find(engine, name + NEW_SUFFIX)
    if staged is None:
        return
    log = structlog.get_logger("dockwarden.upgrade").bind(container=name)
    reason = not_ours(NEW_SUFFIX, staged, _find(engine, name), recorded)
    if reason is not None:
        if report:
            log.warning("recovery.not_ours", name=name + NEW_SUFFIX, id=str(staged["Id"])[:12], reason=reason)
        return
    _remove_successor(engine, staged["Id"])  # stopped gracefully, never forced
    log.warning("recovery.undone", new=staged["Id"][:12])


def _provably_ours(
    engine: TransactionEngine, name: str, recorded: str | None, *, report: bool
) -> tuple[dict[str, Any] | None, str, dict[str, Any]] | None:
    """(the container holding `name`, the suffix, the set-aside container) of the first leftover that
    `not_ours` proves ours, or None; with `report`, the others are logged as `recovery.not_ours`."""
    log = structlog.get_logger("dockwarden.upgrade").bind(container=name)
    holder = _find(engine, name)
    found = None
    for suffix in (DONE_SUFFIX, OLD_SUFFIX, STOPPED_SUFFIX):
        aside = _find(engine, name + suffix)
        if aside is None:
            continue
        reason = not_ours(suffix, aside, holder, recorded)
        if reason is None:
            found = found or (holder, suffix, aside)
        elif report:
            log.warning("recovery.not_ours", name=name + suffix, id=str(aside.get("Id"))[:12], reason=reason)
    return found


def _converge_one(
    engine: TransactionEngine,
    name: str,
    current: dict[str, Any] | None,
    suffix: str,
    aside: dict[str, Any],
    policy: gate.Policy,
) -> None:
    """Finish (`-done`) or undo (`-old`, `-old-stopped`) the upgrade `aside` was set aside by."""
    log = structlog.get_logger("dockwarden.upgrade").bind(container=name)
    if suffix == DONE_SUFFIX:
        # The successor passed its gate (or, created stopped, its verification) before the process
        # died: finish the commit.
        if current is not None:
            if not (current.get("State") or {}).get("Running") and _has_run(current):
                engine.start(current["Id"])
            _retag(engine, current)
        if (aside.get("State") or {}).get("Running"):  # start-first: committed while it drained
            engine.stop(aside["Id"], stop_timeout(aside))
        engine.remove(aside["Id"], force=False)  # proved stopped (or stopped just now): never forced
        log.warning("recovery.finished", old=aside["Id"][:12])
    else:
        undo(engine, name, aside, policy, restart=suffix == OLD_SUFFIX)
        log.warning("recovery.undone", old=aside["Id"][:12])
