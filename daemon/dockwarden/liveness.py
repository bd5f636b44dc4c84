"""Is the update cycle making progress? The systemd watchdog is fed only while it is.

APScheduler's thread being alive says nothing about the cycle it runs: a call blocked on a registry or the
engine leaves the scheduler healthy and the cycle stuck forever. So the cycle reports where it is (the check,
each step of each upgrade, each message of a pull), and each place has a deadline derived from the config:
the longest it may legitimately stay there. Past it, the daemon stops feeding the watchdog and logs where it
is stuck; systemd then restarts it (`WatchdogSec=`), and the next start's recovery converges whatever the
stuck upgrade left.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockwarden.config import Config
from dockwarden.upgrade import Step, UndoStep

# Requests one image's check may make in sequence: HEAD, a token, HEAD again, then an index, a token and its
# child manifest when the digest moved (check.py).
REQUESTS_PER_CHECK = 6
# Engine calls before the registry is asked (recovery's lists and converges, the snapshot, an inspect per
# service that names no image), and between two upgrade steps (retention, namespace follow-up).
ENGINE_CALLS_PER_PHASE = 3
# A container's own StopTimeout can be anything; beyond this the step is treated as stuck.
LONGEST_STOP = 600.0


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """Seconds each place in a cycle may last before it counts as stuck."""

    check: float  # from the cycle's start (recovery, the check) until its first upgrade step
    step: float  # one transaction step, or between two (engine calls)
    stop: float  # the STOP_OLD step: the container's stop timeout, then the engine's
    gate: float  # the GATE step: the longest wait for healthy, a stability window, a probe
    drain: float = 0.0  # the DRAIN step (start-first): the longest `drain`, plus an engine call
    pull: float  # silence between two messages of a pull's progress stream


def bounds(cfg: Config) -> Bounds:
    """The bounds for `cfg`'s services: each is what the config and the engine's call timeout allow."""
    images = max(1, len(cfg.services))
    registry = (
        math.ceil(images / cfg.check_concurrency) * REQUESTS_PER_CHECK * cfg.registry_timeout.total_seconds()
    )
    longest_window = max((s.stability_window.total_seconds() for s in cfg.services), default=0.0)
    longest_probe = max((s.probe.timeout.total_seconds() for s in cfg.services if s.probe), default=0.0)
    call = cfg.engine_timeout.total_seconds()
    engine = ENGINE_CALLS_PER_PHASE * call
    gate = cfg.health_timeout_max.total_seconds() + longest_window + longest_probe + engine
    return Bounds(
        # Recovery may undo a killed upgrade first, which gates the old version again.
        check=engine + registry + gate,
        step=engine,
        stop=LONGEST_STOP + call,
        gate=gate,
        pull=engine,
        drain=max((s.drain.total_seconds() for s in cfg.services), default=0.0) + call,
    )


class Liveness:
    """Where the cycle is and by when it must have moved on. Written by the cycle's thread, read by the
    main thread; each update replaces one tuple, so a reader never sees half of one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._where: tuple[str, float, float] | None = None  # (what, since, deadline); None: idle

    def enter(self, what: str, within: float) -> None:
        """The cycle is now doing `what`, which must end (or report progress) within `within` seconds."""
        now = self._clock()
        with self._lock:
            self._where = (what, now, now + within)

    def idle(self) -> None:
        with self._lock:
            self._where = None

    def overdue(self) -> tuple[str, float] | None:
        """(what, seconds spent on it) when the cycle has been there past its deadline; else None."""
        with self._lock:
            where = self._where
        if where is None:
            return None
        what, since, deadline = where
        now = self._clock()
        return (what, now - since) if now > deadline else None


def step_bound(step: str, limits: Bounds) -> float:
    """The bound for a transaction step (or an undo step) by its name. The undo's steps end with a gate
    of the old version, so they get the gate's bound."""
    if step == Step.GATE or step in tuple(UndoStep):
        return limits.gate
    if step == Step.STOP_OLD:
        return limits.stop
    if step == Step.DRAIN:
        return limits.drain
    return limits.step
