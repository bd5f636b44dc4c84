"""The upgrade transaction: replace one container by its successor, never destroying before proving.

Reads top to bottom in `Upgrade.run`. Every state it passes through is visible in Docker itself, through
container names and one label, so a process killed at any point leaves enough for `converge` to finish
or undo the work on the next start:

    X                      the service's container (old, then new)
    X--dockwarden-old      the old container, set aside while its successor is tried
    X--dockwarden-done     the old container after the successor passed its gate (the commit point)
    label dockwarden.replaces=<old ID> on the successor, so we never remove a container that is not ours

Undo = remove the successor, rename the old one back, start it, check it runs. Commit = remove the old one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog

from dockwarden import gate, imageref, recreate, retention
from dockwarden.engine import EngineError, NotFound
from dockwarden.imageref import ImageRef

OLD_SUFFIX = "--dockwarden-old"
DONE_SUFFIX = "--dockwarden-done"
START_ATTEMPTS = 5  # for the old container during an undo
START_RETRY_DELAY = 1.0
DEFAULT_STOP_TIMEOUT = 10  # the engine's own default when a container sets no StopTimeout


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


class UndoStep(StrEnum):
    """The steps of putting the old container back; ROLLBACK names a failure of the undo as a whole."""

    REMOVE_NEW = "undo-remove-new"
    START_OLD = "undo-start-old"
    RENAME_OLD = "undo-rename-old"
    ROLLBACK = "rollback"


STEPS = tuple(Step)
UNDO_STEPS = (UndoStep.REMOVE_NEW, UndoStep.START_OLD, UndoStep.RENAME_OLD)


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
    # A rollback may replace a container that is not running: its version may be what crashed. An
    # upgrade may not: starting a service the user stopped is not our call.
    stopped_ok: bool = False


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
        }


class StepFailed(Exception):
    def __init__(self, step: Step | UndoStep, message: str) -> None:
        super().__init__(message)
        self.step = step


Checkpoint = Callable[[str], None]
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """What a caller may attach to a transaction: a stop request, a test's pause point, pull progress."""

    cancel: threading.Event | None = None  # set: roll back out of the gate; start nothing new
    checkpoint: Checkpoint | None = None  # called with each step's name before the step runs
    progress: Progress | None = None  # called with each message of the pull's stream


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
        self.new_image: dict[str, Any] = {}
        self.verdict: str | None = None
        self.pulled_ref: str | None = None
        self.was_running = True

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
        if isinstance(prepared, Result):
            self._leave()
            if prepared == Result.SKIPPED:  # stopping: nothing is touched yet, so leave it as it is
                return self._outcome(prepared, started, "not started: dockwarden is stopping", Step.PLAN)
            return self._outcome(prepared, started)
        plan, image_text, switching = prepared

        self._enter(Step.SET_ASIDE)
        self.engine.rename(self.old["Id"], t.container + OLD_SUFFIX)

        if switching:
            self._enter(Step.TAG)
            self.engine.tag(self.new_image["Id"], image_text)

        self._enter(Step.CREATE)
        new_id = self.engine.create(plan.body, t.container)
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

        # Only now does the service stop: everything that can be prepared while the old version
        # serves (tag, create, connect, verify) is done, so the outage is stop + start.
        self._enter(Step.STOP_OLD)
        self.engine.stop(self.old["Id"], stop_timeout(self.old))

        self._enter(Step.START)
        self.engine.start(new_id)

        self._enter(Step.GATE)
        verdict = gate.wait(self.engine, new_id, t.policy, 0, self.hooks.cancel)
        if not verdict.passed:
            raise StepFailed(Step.GATE, verdict.reason)
        self.verdict = verdict.reason
        self._leave(verdict=verdict.reason)

        self._enter(Step.COMMIT)
        # The rename is the commit record: from here on, a restart finishes instead of undoing.
        self.engine.rename(self.old["Id"], t.container + DONE_SUFFIX)

        self._enter(Step.REMOVE_OLD)
        self.engine.remove(self.old["Id"])
        self._leave()
        return self._outcome(Result.UPGRADED, started)

    def _pull(self) -> dict[str, Any]:
        """PULL: fetch the target by digest and protect it with the `-pulled` tag; its inspect."""
        self._enter(Step.PULL)
        pinned = f"{self.t.ref.name}@{self.t.to_digest}"
        self.engine.pull(pinned, self.hooks.progress)
        image = self.engine.inspect_image(pinned)
        # Untagged until the TAG step, and unused until CREATE: any prune would take it.
        self.pulled_ref = f"{self.t.ref.name}:{retention.pulled_tag(self.t.container)}"
        self.engine.tag(image["Id"], self.pulled_ref)
        return image

    def _plan(self, pulled: dict[str, Any] | None) -> tuple[recreate.CreatePlan, str, bool] | Result:
        """PLAN: read the old container and both images, and compute the successor's create body.

        Returns (plan, the successor's Config.Image, whether it switches image), or the final result when
        there is nothing to do (UP_TO_DATE) or dockwarden is stopping (SKIPPED)."""
        t = self.t
        new_image = self.engine.inspect_image(t.image_id) if t.image_id is not None else pulled
        self.old = self.engine.inspect_container(t.container)
        self.was_running = bool((self.old.get("State") or {}).get("Running"))
        if not self.was_running and not t.stopped_ok:
            raise StepFailed(Step.PLAN, "the container is not running; upgrade it after starting it")
        old_image = self.engine.inspect_image(self.old["Image"])
        switching = new_image is not None
        if new_image is None:
            new_image, image_text = old_image, str(self.old["Config"]["Image"])
        elif old_image["Id"] == new_image["Id"]:
            return Result.UP_TO_DATE
        else:
            image_text = image_string(self.old, t.ref)
        self.new_image = new_image
        # Read now, while the old version serves: HostConfig values equal to these follow the engine.
        defaults = recreate.EngineDefaults.from_probe(self.engine.defaults(old_image["Id"]))
        lent = frozenset().union(
            *(recreate.mount_paths(self.engine.inspect_container(c)) for c in recreate.volumes_from(self.old))
        )
        plan = recreate.plan(
            self.old, old_image, new_image, image_text, t.network_mode, defaults=defaults, lent=lent
        )
        if self.hooks.cancel is not None and self.hooks.cancel.is_set():
            return Result.SKIPPED
        return plan, image_text, switching

    def _failed(self, exc: Exception, started: float) -> Outcome:
        failed_at = exc.step if isinstance(exc, StepFailed) else self.step
        self._leave(failed=True)
        if failed_at == Step.REMOVE_OLD:
            # Committed: the new container passed and holds the name. The old one stays as
            # NAME--dockwarden-done, which the next start's recovery removes.
            self.log.warning("upgrade.cleanup_failed", step=failed_at, error=str(exc))
            return self._outcome(Result.UPGRADED, started, str(exc), failed_at)
        self.log.warning("upgrade.failed", step=failed_at, error=str(exc) or type(exc).__name__)
        if failed_at in (Step.PULL, Step.PLAN):
            return self._outcome(Result.ERROR, started, str(exc), failed_at)
        return self._roll_back(started, str(exc), failed_at)

    def _roll_back(self, started: float, error: str, step: Step | UndoStep | None) -> Outcome:
        self.log.warning("rollback.started", step=step)
        undo_started = time.monotonic()
        try:
            undo(
                self.engine,
                self.t.container,
                self.old,
                self.t.policy,
                self.hooks.checkpoint,
                self.was_running,
            )
        except Exception as exc:  # any failure here is reported as rollback-failed, with its message
            self.log.error("rollback.failed", error=str(exc), duration_ms=_ms(undo_started))
            return self._outcome(Result.ROLLBACK_FAILED, started, error, step, rollback_error=str(exc))
        self.log.warning("rollback.finished", duration_ms=_ms(undo_started))
        return self._outcome(Result.ROLLED_BACK, started, error, step)

    def _outcome(
        self,
        result: Result,
        started: float,
        error: str | None = None,
        step: Step | UndoStep | None = None,
        rollback_error: str | None = None,
    ) -> Outcome:
        t = self.t
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
            replaced=self.old.get("Id") if self.step_reached(Step.SET_ASIDE) else None,
            old_image=self.old.get("Image"),
            new_image=self.new_image.get("Id"),
            verdict=self.verdict,
        )

    def step_reached(self, step: Step) -> bool:
        return step in self._entered


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def _find(engine: TransactionEngine, name: str) -> dict[str, Any] | None:
    try:
        return engine.inspect_container(name)
    except NotFound:
        return None


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
) -> None:
    """Put `old` back as `name`: remove our successor if it holds the name, start the old one, rename it
    back, check it runs. With `restart` False (it was not running before), only rename it back.

    Started before it is renamed back, so that a kill in between leaves a running container that still
    carries the set-aside name, which the next recovery finds; the reverse order could leave the old one
    stopped under its own name, where nothing would look for it.
    """
    step = checkpoint or (lambda _step: None)
    holder = _find(engine, name)
    if holder is not None and holder["Id"] != old["Id"]:
        if (holder.get("Config") or {}).get("Labels", {}).get(recreate.REPLACES_LABEL) != old["Id"]:
            raise StepFailed(
                UndoStep.ROLLBACK, f"{name} is held by container {holder['Id'][:12]}, which is not ours"
            )
        step(UndoStep.REMOVE_NEW)
        with contextlib.suppress(NotFound):  # already gone: the name is free, which is the aim
            # With the anonymous volumes the engine made for it (a VOLUME only the new image declares);
            # the old container's, which it mounts by name, stay.
            engine.remove(holder["Id"], volumes=True)
    current = engine.inspect_container(old["Id"])
    _retag(engine, current)
    if not restart:
        if current["Name"].lstrip("/") != name:
            step(UndoStep.RENAME_OLD)
            engine.rename(old["Id"], name)
        return
    step(UndoStep.START_OLD)
    _start_with_retries(engine, old["Id"])
    if current["Name"].lstrip("/") != name:
        step(UndoStep.RENAME_OLD)
        engine.rename(old["Id"], name)
    # Check the old version runs again: healthy if it has a HEALTHCHECK, else up for a short while.
    check = gate.Policy(stability=min(policy.stability, 2.0), health_timeout_max=policy.health_timeout_max)
    verdict = gate.wait(engine, old["Id"], check, int(current.get("RestartCount") or 0))
    if not verdict.passed:
        raise StepFailed(UndoStep.ROLLBACK, f"the old container did not come back: {verdict.reason}")


def _start_with_retries(engine: TransactionEngine, container_id: str) -> None:
    # What made the successor fail (a port grabbed by another process, a dying predecessor still holding
    # it) can be transient; the old version is the one thing that must come back, so try a few times.
    for attempt in range(START_ATTEMPTS):
        try:
            engine.start(container_id)
            return
        except EngineError:
            if attempt == START_ATTEMPTS - 1:
                raise
            time.sleep(START_RETRY_DELAY)


def converge(engine: TransactionEngine, name: str, policy: gate.Policy) -> None:
    """Finish or undo a half-done upgrade of container `name` (each outcome is logged)."""
    log = structlog.get_logger("dockwarden.upgrade").bind(container=name)
    done = _find(engine, name + DONE_SUFFIX)
    aside = _find(engine, name + OLD_SUFFIX)
    try:
        if done is not None:
            # The successor passed its gate before the process died: finish the commit.
            current = _find(engine, name)
            if current is not None:
                if not (current.get("State") or {}).get("Running"):
                    engine.start(current["Id"])
                _retag(engine, current)
            engine.remove(done["Id"])
            log.warning("recovery.finished", old=done["Id"][:12])
        elif aside is not None:
            undo(engine, name, aside, policy)
            log.warning("recovery.undone", old=aside["Id"][:12])
    except (EngineError, StepFailed) as exc:
        log.error("recovery.failed", error=str(exc))
