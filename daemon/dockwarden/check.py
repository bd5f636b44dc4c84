"""One check cycle: which watched services run an image older than the one their tag points to now.

A plain function of its inputs (services, engine, registry client), so the daemon, `dockwarden check` and
the upgrade path all run the same code. Cost model: one HEAD per distinct image reference per cycle;
GETs only when a digest differs from what the container runs, and then at most once per digest for the
life of the process (digests are content addresses, so what we learn about one never goes stale).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import structlog

from dockwarden import digests, imageref, registry
from dockwarden.config import Config, Service
from dockwarden.digests import DigestCache
from dockwarden.distribution import Manifest
from dockwarden.engine import (
    ContainerState,
    Engine,
    EngineError,
    Platform,
    RegistryConfig,
    Snapshot,
    registry_credentials,
)
from dockwarden.engine import NotFound as ContainerMissing
from dockwarden.imageref import ImageRef

T = TypeVar("T")


class Status(StrEnum):
    """What a check found for one service (`check --json`'s `status`)."""

    UP_TO_DATE = "up-to-date"
    UPDATE_AVAILABLE = "update-available"
    # Created from `repo@sha256:...` or `repo:tag@sha256:...` and the service names no `image:` to follow:
    # the digest is the user's choice of version, so there is nothing to check and nothing to upgrade.
    PINNED = "pinned"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    service: str
    container: str
    image: str
    running_digest: str | None
    registry_digest: str | None
    status: Status
    error: str | None = None
    reason: str | None = None  # stable short code for an error, e.g. "unreachable", "rate-limited"
    duration: float = 0.0
    ratelimit_remaining: str | None = None  # Docker Hub's pull budget, as its header says it
    state: ContainerState | None = None  # the container's, when the check found it

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "container": self.container,
            "image": self.image,
            "running_digest": self.running_digest,
            "registry_digest": self.registry_digest,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True)
class _Running:
    """What a service runs now, read from the engine."""

    service: Service
    ref: ImageRef
    image_id: str
    digests: frozenset[str]  # RepoDigests of the running image that belong to ref's repository
    state: ContainerState
    # Every digest naming what runs, whatever the image store: the image ID (config digest on the classic
    # store, manifest or index digest on the containerd store), the digests of all its repository
    # references, and the platform manifest the container runs (containerd store). sha256 content
    # addresses, so any one equal to what the registry serves means the same content.
    content: frozenset[str] = frozenset()
    manifest: str | None = None  # the platform manifest it runs, when the engine says (containerd store)


class Unfollowable(Exception):
    """The container names no reference to follow (it was created from an image ID) and the service sets
    no `image:`: a config problem, not the engine's."""


class Pinned(Exception):
    """The container was created from a reference pinned to a digest and the service sets no `image:`."""

    def __init__(self, ref: ImageRef, state: ContainerState) -> None:
        super().__init__(f"{ref} is pinned to a digest")
        self.ref = ref
        self.state = state


class PlatformMissing(registry.RegistryError):
    reason = "platform-missing"


def select_platform(index: Manifest, platform: Platform) -> str:
    """The child manifest digest for `platform` in a manifest list / OCI index (validated by `registry`)."""
    candidates = [
        entry
        for entry in index.entries
        if entry.os == platform.os and entry.architecture == platform.architecture
    ]
    for entry in candidates:
        if entry.variant == platform.variant:
            return entry.digest
    if len(candidates) == 1 or (candidates and platform.variant is None):
        return candidates[0].digest
    raise PlatformMissing(f"the image index has no manifest for {platform}")


def _identity(
    client: registry.RegistryClient,
    ref: ImageRef,
    digest: str,
    platform: Platform,
    cache: DigestCache,
    fetched: Manifest | None = None,
) -> tuple[str, str]:
    """(platform manifest digest, config digest) that `digest` means on this platform: the manifest itself
    or, for an index, its child for this platform. GETs only on a cache miss, and none for `fetched`, the
    manifest of `digest` already in hand."""
    known = cache.get(digest)
    if known:
        return known
    manifest = (
        fetched if fetched is not None and fetched.digest == digest else client.get_manifest(ref, digest)
    )
    if manifest.is_index:
        child, config = _identity(client, ref, select_platform(manifest, platform), platform, cache)
    else:
        child, config = digest, str(manifest.config_digest)
    cache.put(digest, config, child)
    return child, config


def _resolve(service: Service, engine: Engine, snapshot: Snapshot) -> _Running:
    info = snapshot.containers.get(service.container)
    if info is None:
        raise ContainerMissing(f"container {service.container!r} does not exist")
    if service.image is not None:
        ref = service.image
    else:
        # The list API shows an image ID once the tag has moved on; only inspect has the original reference.
        info = engine.container(info.id)
        if info.config_image.startswith("sha256:"):
            raise Unfollowable(
                f"container {service.container!r} was created from an image ID, not a tag; "
                "set `image:` for this service"
            )
        try:
            ref = imageref.parse(info.config_image)
        except imageref.InvalidReference as exc:
            raise Unfollowable(f"container {service.container!r} image {info.config_image!r}: {exc}") from exc
        if ref.digest is not None:
            raise Pinned(ref, info.state)
    if ref.tag is None:
        raise Unfollowable(f"{ref} names a digest, not a tag to follow; set `image:` with a tag")
    ref = ImageRef(ref.registry, ref.repository, ref.tag, None)
    repo_digests = snapshot.repo_digests.get(info.image_id)
    content = snapshot.content.get(info.image_id, frozenset())
    if repo_digests is None:  # created after the snapshot was taken
        image = engine.image(info.image_id)
        repo_digests, content = image.repo_digests, image.content
    running = info.manifest_digest
    return _Running(
        service=service,
        ref=ref,
        image_id=info.image_id,
        digests=frozenset(imageref.digests_for(ref.name, list(repo_digests))),
        state=info.state,
        content=content | {info.image_id, *((running,) if running else ())},
        manifest=running,
    )


def _check_group(
    ref: ImageRef,
    members: list[_Running],
    client: registry.RegistryClient,
    platform: Platform,
    cache: DigestCache,
) -> list[CheckResult]:
    """The results for every service following `ref`. Whatever goes wrong is these services' error: a
    registry's answer must never end the cycle for the services behind other registries."""
    started = time.monotonic()
    try:
        head = client.head_manifest(ref)
        return [_compare(ref, member, head, client, platform, cache, started) for member in members]
    except registry.RegistryError as exc:
        message, reason = str(exc), exc.reason
    except Exception as exc:  # the last line of defence: registry validates all it knows of
        message = f"checking {ref} failed unexpectedly: {type(exc).__name__}: {str(exc)[:200]}"
        reason = registry.ProtocolError.reason
    took = time.monotonic() - started
    return [
        CheckResult(
            service=m.service.name,
            container=m.service.container,
            image=str(ref),
            running_digest=_one(m.digests) or m.manifest,
            registry_digest=None,
            status=Status.ERROR,
            error=message,
            reason=reason,
            duration=took,
            state=m.state,
        )
        for m in members
    ]


def _compare(
    ref: ImageRef,
    member: _Running,
    head: registry.ManifestHead,
    client: registry.RegistryClient,
    platform: Platform,
    cache: DigestCache,
    started: float,
) -> CheckResult:
    """One service's result once its tag's digest is known: a registry error on the way is its own.

    Compared by content, never by whichever ID field the image store uses: the tag's digest, this
    platform's child of it and its config digest against every digest naming what runs. A tag moved
    locally (a build, a pull) takes the running image's references away, not its content: not an update."""
    running = _one(member.digests) or member.manifest
    if head.digest in member.digests or head.digest in member.content:
        status, error, reason = Status.UP_TO_DATE, None, None
        running = head.digest
    else:
        try:
            child, config = _identity(client, ref, head.digest, platform, cache, head.manifest)
            same = child in member.content or config in member.content
            status, error, reason = (Status.UP_TO_DATE if same else Status.UPDATE_AVAILABLE), None, None
        except registry.RegistryError as exc:
            status, error, reason = Status.ERROR, str(exc), exc.reason
    return CheckResult(
        service=member.service.name,
        container=member.service.container,
        image=str(ref),
        running_digest=running,
        registry_digest=head.digest,
        status=status,
        error=error,
        reason=reason,
        duration=time.monotonic() - started,
        ratelimit_remaining=head.ratelimit_remaining,
        state=member.state,
    )


def _one(digests: Iterable[str]) -> str | None:
    ordered = sorted(digests)
    return ordered[0] if ordered else None


def _group_by_image(
    services: list[Service], engine: Engine, snapshot: Snapshot, results: dict[str, CheckResult]
) -> dict[ImageRef, list[_Running]]:
    """Services by the image reference they follow; those that cannot be resolved go to `results`."""
    groups: dict[ImageRef, list[_Running]] = {}
    for service in services:
        started = time.monotonic()
        try:
            running = _resolve(service, engine, snapshot)
        except ContainerMissing as exc:
            results[service.name] = _failure(service, str(exc), "container-not-found", started)
            continue
        except Unfollowable as exc:
            results[service.name] = _failure(service, str(exc), "config-problem", started)
            continue
        except Pinned as pin:
            results[service.name] = _pinned(service, pin, started)
            continue
        except EngineError as exc:
            results[service.name] = _failure(service, str(exc), "engine-error", started)
            continue
        groups.setdefault(running.ref, []).append(running)
    return groups


def _collect(
    pending: set[Future[list[CheckResult]]], results: dict[str, CheckResult], cancel: threading.Event | None
) -> None:
    while pending:
        if cancel is not None and cancel.is_set():
            for future in pending:
                future.cancel()
            return
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for future in done:
            for result in future.result():
                results[result.service] = result


def run_checks(
    services: Iterable[Service],
    engine: Engine,
    client: registry.RegistryClient,
    platform: Platform,
    cache: DigestCache,
    pool: Executor,
    cancel: threading.Event | None = None,
) -> list[CheckResult]:
    """Check every service; errors are per service and never stop the others. Results keep config order."""
    log = structlog.get_logger("dockwarden.check")
    services = list(services)
    results: dict[str, CheckResult] = {}
    try:
        snapshot = engine.snapshot()
    except EngineError as exc:
        for service in services:
            results[service.name] = _failure(service, str(exc), "engine-error", time.monotonic())
    else:
        groups = _group_by_image(services, engine, snapshot, results)
        # The pool's size is the concurrency bound: at most that many registry requests are in flight.
        _collect(
            {
                pool.submit(_check_group, ref, members, client, platform, cache)
                for ref, members in groups.items()
            },
            results,
            cancel,
        )
    for service in services:
        if service.name not in results:  # only when cancelled: report it, do not drop it from the counts
            results[service.name] = _failure(service, "not checked: dockwarden is stopping", "cancelled")
    ordered = [results[s.name] for s in services]
    for result in ordered:
        _log_result(log, result)
    return ordered


def _pinned(service: Service, pin: Pinned, started: float) -> CheckResult:
    """A pinned service: it runs the digest it names (the engine resolves a digest reference exactly), and
    no registry is asked anything."""
    return CheckResult(
        service=service.name,
        container=service.container,
        image=str(pin.ref),
        running_digest=pin.ref.digest,
        registry_digest=None,
        status=Status.PINNED,
        duration=time.monotonic() - started,
        state=pin.state,
    )


def _failure(service: Service, message: str, reason: str, started: float | None = None) -> CheckResult:
    """A service that never reached the registry: its container or the engine failed, or the cycle stopped."""
    took = time.monotonic() - started if started is not None else 0.0
    return CheckResult(
        service=service.name,
        container=service.container,
        image=str(service.image or ""),
        running_digest=None,
        registry_digest=None,
        status=Status.ERROR,
        error=message,
        reason=reason,
        duration=took,
    )


def _log_result(log: Any, result: CheckResult) -> None:
    fields = {
        "service": result.service,
        "container": result.container,
        "image": result.image,
        "running_digest": result.running_digest,
        "registry_digest": result.registry_digest,
        "status": result.status,
        "duration_ms": round(result.duration * 1000, 1),
    }
    if result.ratelimit_remaining is not None:
        fields["ratelimit_remaining"] = result.ratelimit_remaining
    if result.status == Status.ERROR:
        log.warning("check.failed", reason=result.reason, error=result.error, **fields)
        return
    log.info("service.checked", **fields)
    if result.status == Status.UPDATE_AVAILABLE:
        log.info(
            "update.available",
            service=result.service,
            image=result.image,
            from_digest=result.running_digest,
            to_digest=result.registry_digest,
        )


@dataclass(frozen=True, kw_only=True)
class CycleSummary:
    results: list[CheckResult]
    duration: float

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)


class _TrackedPool(Executor):
    """A thread pool that knows whether any of its tasks is still running, so a stop can wait for them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="check")
        self._busy = 0
        self._idle = threading.Condition()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        def tracked() -> T:
            with self._idle:
                self._busy += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return self._pool.submit(tracked)

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class Checker:
    """The long-lived parts a cycle needs: engine, registry client, platform and digest cache."""

    def __init__(
        self,
        engine: Engine,
        client: registry.RegistryClient,
        platform: Platform,
        cache: DigestCache | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.platform = platform
        self.cache = cache if cache is not None else DigestCache()
        # Kept across cycles: starting dozens of threads every cycle costs more than the checks themselves.
        self._pool: _TrackedPool | None = None

    def _executor(self, concurrency: int) -> _TrackedPool:
        if self._pool is None or self._pool.size != concurrency:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = _TrackedPool(concurrency)
        return self._pool

    def wait_idle(self, timeout: float) -> bool:
        """True once no check runs; a cancelled cycle can leave requests in flight until they time out."""
        return self._pool is None or self._pool.wait_idle(timeout)

    def close(self) -> None:
        """Stop the check threads; the engine and the registry client are their opener's to close."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def cycle(
        self, services: Iterable[Service], concurrency: int, cancel: threading.Event | None = None
    ) -> CycleSummary:
        log = structlog.get_logger("dockwarden.check")
        services = list(services)
        started = time.monotonic()
        log.info("cycle.started", services=len(services))
        results = run_checks(
            services, self.engine, self.client, self.platform, self.cache, self._executor(concurrency), cancel
        )
        self.cache.save()
        summary = CycleSummary(results=results, duration=time.monotonic() - started)
        log.info(
            "cycle.finished",
            checked=len(results),
            up_to_date=summary.count(Status.UP_TO_DATE),
            update_available=summary.count(Status.UPDATE_AVAILABLE),
            pinned=summary.count(Status.PINNED),
            errors=summary.count(Status.ERROR),
            cancelled=bool(cancel and cancel.is_set()),
            duration_ms=round(summary.duration * 1000, 1),
        )
        return summary


def _registry_config(engine: Engine) -> RegistryConfig:
    """The engine's insecure registries; Docker's defaults (loopback) if it will not say, which costs
    nothing but checks of registries it lists as insecure."""
    try:
        return engine.registry_config()
    except EngineError as exc:
        structlog.get_logger("dockwarden.check").warning("registry.config_defaulted", error=str(exc))
        return RegistryConfig()


@contextlib.contextmanager
def connect(cfg: Config) -> Iterator[Checker]:
    """Open the engine named by the config (or the environment) and a registry client, and yield a
    Checker on them; close all three on exit. Raises EngineError if the engine cannot be used."""
    engine = Engine.connect(cfg.docker_host, cfg.engine_timeout.total_seconds())
    try:
        engine.ping()
        platform = engine.platform()
        client = registry.RegistryClient(
            credentials=registry_credentials,
            timeout=cfg.registry_timeout.total_seconds(),
            pool_size=cfg.check_concurrency,
            engine_config=_registry_config(engine),
        )
        try:
            checker = Checker(
                engine, client, platform, DigestCache(cfg.state_dir / digests.FILE_NAME, str(platform))
            )
            try:
                yield checker
            finally:
                checker.close()
        finally:
            client.close()
    finally:
        engine.close()
