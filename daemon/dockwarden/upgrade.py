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
# The steps in order; a test hook can pause before any of them.
STEPS = (
    "pull",
    "plan",
    "set-aside",
    "tag",
    "create",
    "connect",
    "verify",
    "stop-old",
    "start",
    "gate",
    "commit",
    "remove-old",
)

UP_TO_DATE = "up-to-date"
UPGRADED = "upgraded"
ROLLED_BACK = "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
SKIPPED = "skipped"
ERROR = "error"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Outcome:
    service: str
    container: str
    from_digest: str | None
    to_digest: str | None
    result: str
    error: str | None = None
    step: str | None = None  # where it failed
    duration: float = 0.0
    rollback_error: str | None = None
    replaced: str | None = None  # ID of the container that was set aside, once one was
    old_image: str | None = None  # image IDs the service ran before, and was switched to
    new_image: str | None = None
    verdict: str | None = None  # the gate's, when it passed

    @property
    def switched(self) -> bool:
        """The service now runs another image than before (the transaction committed)."""
        return self.result == UPGRADED and self.old_image is not None and self.old_image != self.new_image

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
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


Checkpoint = Callable[[str], None]
Progress = Callable[[dict[str, Any]], None]


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

    def containers_named(self, suffix: str) -> list[str]:
        """Names (without the leading `/`) of all containers, running or not, ending with `suffix`, sorted."""
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

    def remove(self, container_id: str, force: bool = True) -> None:
        """Remove a container, keeping its volumes; without `force`, EngineError if it runs (409)."""
        ...

    def remove_image(self, reference: str) -> list[dict[str, str]]:
        """`docker rmi` without force: untag `reference`, deleting the image with its last tag; EngineError
        (409) if a container uses an image it would delete. Returns the engine's Untagged/Deleted items."""
        ...


class Upgrade:
    def __init__(
        self,
        engine: TransactionEngine,
        target: Target,
        checkpoint: Checkpoint | None = None,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.t = target
        self.checkpoint = checkpoint
        self.cancel = cancel
        self.progress = progress
        self.log = structlog.get_logger("dockwarden.upgrade").bind(
            service=target.service,
            container=target.container,
            from_digest=target.from_digest,
            to_digest=target.to_digest,
        )
        self.step = ""
        self._step_started = 0.0
        self._entered: set[str] = set()
        self.old: dict[str, Any] = {}
        self.new_image: dict[str, Any] = {}
        self.verdict: str | None = None
        self.pulled_ref: str | None = None
        self.was_running = True

    def _enter(self, step: str) -> None:
        self._leave()
        if self.checkpoint is not None:
            self.checkpoint(step)
        self._entered.add(step)
        self.step = step
        self._step_started = time.monotonic()

    def _leave(self, **fields: Any) -> None:
        if self.step:
            took = round((time.monotonic() - self._step_started) * 1000, 1)
            self.log.info("upgrade.step", step=self.step, duration_ms=took, **fields)
        self.step = ""

    def run(self) -> Outcome:
        try:
            return self._run()
        finally:
            if self.pulled_ref is not None:
                # Its job (keeping prunes away from an image no container used yet) is done. After a
                # rollback this deletes the image that failed, if nothing else holds it.
                with contextlib.suppress(EngineError):
                    self.engine.remove_image(self.pulled_ref)

    def _run(self) -> Outcome:  # noqa: PLR0912, PLR0915 -- the transaction is meant to read top to bottom
        started = time.monotonic()
        t = self.t
        self.log.info("upgrade.started", image=str(t.ref))
        try:
            # Nothing below touches the running service until "set-aside": a failure up to there
            # leaves it exactly as it was.
            new_image: dict[str, Any] | None = None
            if t.to_digest is not None and t.image_id is None:
                self._enter("pull")
                pinned = f"{t.ref.name}@{t.to_digest}"
                self.engine.pull(pinned, self.progress)
                new_image = self.engine.inspect_image(pinned)
                # Untagged until the "tag" step, and unused until "create": any prune would take it.
                self.pulled_ref = f"{t.ref.name}:{retention.pulled_tag(t.container)}"
                self.engine.tag(new_image["Id"], self.pulled_ref)

            self._enter("plan")
            if t.image_id is not None:
                new_image = self.engine.inspect_image(t.image_id)  # a version kept here: never pulled
            self.old = self.engine.inspect_container(t.container)
            self.was_running = bool((self.old.get("State") or {}).get("Running"))
            if not self.was_running and not t.stopped_ok:
                raise StepFailed("plan", "the container is not running; upgrade it after starting it")
            old_image = self.engine.inspect_image(self.old["Image"])
            switching = new_image is not None
            if new_image is None:
                new_image, image_text = old_image, str(self.old["Config"]["Image"])
            elif old_image["Id"] == new_image["Id"]:
                self._leave()
                return self._outcome(UP_TO_DATE, started)
            else:
                image_text = image_string(self.old, t.ref)
            self.new_image = new_image
            plan = recreate.plan(self.old, old_image, new_image, image_text, t.network_mode)
            if self.cancel is not None and self.cancel.is_set():
                self._leave()  # stopping: nothing is touched yet, so leave the service as it is
                return self._outcome(SKIPPED, started, "not started: dockwarden is stopping", "plan")

            self._enter("set-aside")
            self.engine.rename(self.old["Id"], t.container + OLD_SUFFIX)

            if switching:
                self._enter("tag")
                self.engine.tag(new_image["Id"], image_text)

            self._enter("create")
            new_id = self.engine.create(plan.body, t.container)

            self._enter("connect")
            for network, endpoint in plan.connect.items():
                self.engine.connect_network(new_id, network, endpoint)

            self._enter("verify")
            problems = recreate.differences(plan, self.engine.inspect_container(new_id))
            if problems:
                raise StepFailed("verify", "the new container differs from the old: " + "; ".join(problems))

            # Only now does the service stop: everything that can be prepared while the old version
            # serves (tag, create, connect, verify) is done, so the outage is stop + start.
            self._enter("stop-old")
            self.engine.stop(self.old["Id"], stop_timeout(self.old))

            self._enter("start")
            self.engine.start(new_id)

            self._enter("gate")
            verdict = gate.wait(self.engine, new_id, t.policy, 0, self.cancel)
            if not verdict.passed:
                raise StepFailed("gate", verdict.reason)
            self.verdict = verdict.reason
            self._leave(verdict=verdict.reason)

            self._enter("commit")
            # The rename is the commit record: from here on, a restart finishes instead of undoing.
            self.engine.rename(self.old["Id"], t.container + DONE_SUFFIX)

            self._enter("remove-old")
            self.engine.remove(self.old["Id"])
            self._leave()
        except (EngineError, StepFailed) as exc:
            return self._failed(exc, started)
        except Exception as exc:
            # Whatever the surprise, a transaction half-way must still roll back, never strand the service.
            self.log.exception("upgrade.crashed", step=self.step)
            return self._failed(exc, started)
        outcome = self._outcome(UPGRADED, started)
        self.log.info("upgrade.finished", result=UPGRADED, duration_ms=round(outcome.duration * 1000, 1))
        return outcome

    def _failed(self, exc: Exception, started: float) -> Outcome:
        failed_at = exc.step if isinstance(exc, StepFailed) else self.step
        self._leave(failed=True)
        if failed_at == "remove-old":
            # Committed: the new container passed and holds the name. The old one stays as
            # NAME--dockwarden-done, which the next start's recovery removes.
            self.log.warning("upgrade.cleanup_failed", step=failed_at, error=str(exc))
            return self._outcome(UPGRADED, started, str(exc), failed_at)
        self.log.warning("upgrade.failed", step=failed_at, error=str(exc) or type(exc).__name__)
        if failed_at in ("pull", "plan"):
            return self._outcome(ERROR, started, str(exc), failed_at)
        return self._roll_back(started, str(exc), failed_at)

    def _roll_back(self, started: float, error: str, step: str) -> Outcome:
        self.log.warning("rollback.started", step=step)
        undo_started = time.monotonic()
        try:
            undo(self.engine, self.t.container, self.old, self.t.policy, self.checkpoint, self.was_running)
        except Exception as exc:  # any failure here is reported as rollback-failed, with its message
            self.log.error("rollback.failed", error=str(exc), duration_ms=_ms(undo_started))
            return self._outcome(ROLLBACK_FAILED, started, error, step, rollback_error=str(exc))
        self.log.warning("rollback.finished", duration_ms=_ms(undo_started))
        return self._outcome(ROLLED_BACK, started, error, step)

    def _outcome(
        self,
        result: str,
        started: float,
        error: str | None = None,
        step: str | None = None,
        rollback_error: str | None = None,
    ) -> Outcome:
        t = self.t
        return Outcome(
            t.service,
            t.container,
            t.from_digest,
            t.to_digest,
            result,
            error,
            step,
            time.monotonic() - started,
            rollback_error,
            self.old.get("Id") if self.step_reached("set-aside") else None,
            self.old.get("Image"),
            self.new_image.get("Id"),
            self.verdict,
        )

    def step_reached(self, step: str) -> bool:
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


UNDO_STEPS = ("undo-remove-new", "undo-start-old", "undo-rename-old")


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
                "rollback", f"{name} is held by container {holder['Id'][:12]}, which is not ours"
            )
        step("undo-remove-new")
        with contextlib.suppress(NotFound):  # already gone: the name is free, which is the aim
            engine.remove(holder["Id"])
    current = engine.inspect_container(old["Id"])
    _retag(engine, current)
    if not restart:
        if current["Name"].lstrip("/") != name:
            step("undo-rename-old")
            engine.rename(old["Id"], name)
        return
    step("undo-start-old")
    _start_with_retries(engine, old["Id"])
    if current["Name"].lstrip("/") != name:
        step("undo-rename-old")
        engine.rename(old["Id"], name)
    # Check the old version runs again: healthy if it has a HEALTHCHECK, else up for a short while.
    check = gate.Policy(stability=min(policy.stability, 2.0), health_timeout_max=policy.health_timeout_max)
    verdict = gate.wait(engine, old["Id"], check, int(current.get("RestartCount") or 0))
    if not verdict.passed:
        raise StepFailed("rollback", f"the old container did not come back: {verdict.reason}")


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


def interrupted(engine: TransactionEngine) -> list[str]:
    """Container names with a half-done upgrade, found by the names the transaction leaves."""
    names = {n.removesuffix(OLD_SUFFIX) for n in engine.containers_named(OLD_SUFFIX)}
    names |= {n.removesuffix(DONE_SUFFIX) for n in engine.containers_named(DONE_SUFFIX)}
    return sorted(names)
