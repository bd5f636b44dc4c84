"""`dockwarden run`: the check cycle on a schedule, under systemd's eye.

The main thread only waits for signals and feeds the watchdog; APScheduler's thread runs the cycle. A
signal handler just records what was asked, because doing real work inside a handler can deadlock on a
lock the interrupted code holds.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger

from dockwarden import config as configuration
from dockwarden import cycle, gc, liveness, schedule, statefiles
from dockwarden.check import Checker
from dockwarden.history import History
from dockwarden.liveness import Liveness
from dockwarden.neighbours import Refresher
from dockwarden.notify import Notifier
from dockwarden.runner import Runner
from dockwarden.upgrade import Checkpoint, Hooks, Progress

JOB_ID = "check-cycle"
GC_JOB_ID = "gc"
STOP_GRACE = 6.0  # seconds a running cycle gets to finish after SIGTERM; we promise to stop within 10 s
# An upgrade in flight is never abandoned half-way (the service would stay down until our next start):
# cancelling makes it roll back, which needs the old container's stop and start; systemd waits 90 s.
UPGRADE_STOP_GRACE = 75.0
TICK = 0.2


def cycle_trigger(cfg: configuration.Config) -> BaseTrigger:
    """When check cycles run: on the cron `schedule` (UTC) if the config sets one, else every `interval`."""
    if cfg.schedule is not None:
        return schedule.cron_trigger(cfg.schedule)
    return schedule.interval_trigger(cfg.interval)


class Daemon:
    def __init__(
        self,
        cfg: configuration.Config,
        checker: Checker,
        notifier: Notifier,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.config = cfg
        self.checker = checker  # and its engine: opened and closed by the caller
        self.upgrading = threading.Event()  # set while a transaction runs, so a stop waits for its end
        self.neighbours = Refresher()  # one for the process: a missing capability is logged once
        self.checkpoint = checkpoint
        self.liveness = Liveness()
        self.notifier = notifier
        self.log = structlog.get_logger("dockwarden.daemon")
        self.cancel = threading.Event()
        self.cycle_done = threading.Event()
        self.cycle_done.set()
        self.gc_done = threading.Event()
        self.gc_done.set()
        self.requested: str | None = None
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={
                # A late run still runs (None = no grace limit); several missed runs collapse into one;
                # a cycle never overlaps the previous one.
                "misfire_grace_time": None,
                "coalesce": True,
                "max_instances": 1,
            },
        )

    # -- the job ---------------------------------------------------------------------------------

    def _cycle(self) -> None:
        self.cycle_done.clear()
        try:
            cfg = self.config  # read once: a reload may replace it meanwhile
            limits = liveness.bounds(cfg)
            self.liveness.enter("check cycle", limits.check)
            hooks = Hooks(
                cancel=self.cancel, checkpoint=self._step_watch(limits), progress=self._pull_watch(limits)
            )
            runner = Runner(
                self.checker.engine, cfg.state_dir, History.of(cfg), hooks, self.upgrading, self.neighbours
            )
            report = cycle.run(self.checker, runner, cfg, cfg.services, cycle.Options(cancel=self.cancel))
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            self.notifier.status(f"last cycle {stamp}: {cycle.describe(report)}")
        finally:
            self.liveness.idle()
            self.cycle_done.set()

    def _step_watch(self, limits: liveness.Bounds) -> Checkpoint:
        """A checkpoint that tells the liveness each step's bound, then runs the test's own, if any."""

        def entered(step: str) -> None:
            self.liveness.enter(f"upgrade step {step}", liveness.step_bound(step, limits))
            if self.checkpoint is not None:
                self.checkpoint(step)

        return entered

    def _pull_watch(self, limits: liveness.Bounds) -> Progress:
        def moved(_message: dict[str, Any]) -> None:
            self.liveness.enter("upgrade step pull", limits.pull)

        return moved

    def _gc(self) -> None:
        self.gc_done.clear()
        try:
            gc.collect(self.checker.engine, self.config, cancel=self.cancel)
        finally:
            self.gc_done.set()

    def _schedule_gc(self, cfg: configuration.Config) -> None:
        if self.scheduler.get_job(GC_JOB_ID) is not None:
            self.scheduler.remove_job(GC_JOB_ID)
        if cfg.gc.enabled:
            self.scheduler.add_job(
                self._gc,
                trigger=schedule.cron_trigger(cfg.gc.schedule),
                id=GC_JOB_ID,
                name="garbage collection",
            )

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.log.warning("cycle.skipped", reason="the previous cycle is still running")
        elif event.code == EVENT_JOB_MISSED:
            self.log.warning(
                "cycle.skipped", reason="missed its scheduled time", scheduled=str(event.scheduled_run_time)
            )
        elif event.code == EVENT_JOB_ERROR:
            self.log.error("cycle.crashed", error=repr(event.exception), exc_info=event.exception)

    # -- signals ---------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.requested = self.requested or "reload"
        else:
            self.requested = "stop"

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    # -- lifecycle ------------------------------------------------------------------------------

    def scheduler_alive(self) -> bool:
        thread: Any = getattr(self.scheduler, "_thread", None)
        return bool(self.scheduler.state == STATE_RUNNING and thread is not None and thread.is_alive())

    def start(self) -> None:
        self.scheduler.add_listener(
            self._on_job_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR
        )
        self.scheduler.add_job(
            self._cycle,
            trigger=cycle_trigger(self.config),
            id=JOB_ID,
            name="check cycle",
            next_run_time=datetime.now(UTC),
        )
        self._schedule_gc(self.config)
        self.scheduler.start()
        self.log.info(
            "daemon.started",
            config=str(self.config.path),
            services=len(self.config.services),
            schedule=self.config.describe_schedule(),
            gc=self.config.describe_gc(),
            engine_api=self.checker.engine.api_version,
            platform=str(self.checker.platform),
        )
        self.notifier.ready(
            f"watching {len(self.config.services)} services, {self.config.describe_schedule()}"
        )

    def reload(self) -> None:
        try:
            new = configuration.load(self.config.path)
            statefiles.verify(new.state_dir)
        except Exception as exc:  # whatever the new file or a bug in loading raises, the old config stays
            self._reload_failed(exc)
            return
        if new.docker_host != self.config.docker_host:
            self.log.warning("config.restart_needed", key="docker_host", kept=self.config.docker_host)
        self.config = new
        self.scheduler.reschedule_job(JOB_ID, trigger=cycle_trigger(new))
        self._schedule_gc(new)
        self.log.info("config.reloaded", services=len(new.services), schedule=new.describe_schedule())
        self.notifier.status(f"config reloaded: watching {len(new.services)} services")

    def _reload_failed(self, exc: Exception) -> None:
        """Log why a reload was refused (each problem a line; a bug in loading with its traceback)."""
        kept = "previous config"
        if isinstance(exc, configuration.ConfigError):
            self.log.error("config.reload_failed", problems=[str(p) for p in exc.problems], kept=kept)
        elif isinstance(exc, statefiles.UnsafeStateDir | OSError):
            self.log.error("config.reload_failed", problems=[str(exc)], kept=kept)
        else:
            self.log.exception("config.reload_failed", problems=[repr(exc)], kept=kept)
        self.notifier.status("config reload failed; still running the previous config")

    def serve(self) -> None:
        """Wait for signals until asked to stop, feeding the watchdog while the scheduler lives and the
        cycle, if one runs, is within its bound (see `liveness`)."""
        interval = self.notifier.watchdog_interval
        next_ping = 0.0
        starved: tuple[str, float] | None = None
        while True:
            request, self.requested = self.requested, None
            if request == "stop":
                return
            if request == "reload":
                self.reload()
            overdue = self.liveness.overdue()
            if overdue is not None and starved is None:
                self.log.error("watchdog.starved", stuck_in=overdue[0], for_s=round(overdue[1], 1))
                self.notifier.status(f"stuck in {overdue[0]} for {overdue[1]:.0f} s; systemd will restart us")
            starved = overdue
            if interval and time.monotonic() >= next_ping and self.scheduler_alive() and overdue is None:
                self.notifier.watchdog()
                next_ping = time.monotonic() + interval / 3
            time.sleep(TICK)

    def stop(self) -> bool:
        """Stop scheduling, ask a running cycle to finish early; True if it finished within the grace."""
        self.notifier.stopping()
        self.log.info("daemon.stopping")
        self.cancel.set()
        if self.scheduler.state == STATE_RUNNING:
            self.scheduler.shutdown(wait=False)
        grace = UPGRADE_STOP_GRACE if self.upgrading.is_set() else STOP_GRACE
        deadline = time.monotonic() + grace
        finished = self.cycle_done.wait(grace)
        finished = self.gc_done.wait(max(0.0, deadline - time.monotonic())) and finished
        finished = self.checker.wait_idle(max(0.0, deadline - time.monotonic())) and finished
        self.log.info("daemon.stopped", cycle_abandoned=not finished)
        return finished


def run(
    cfg: configuration.Config, checker: Checker, notifier: Notifier, checkpoint: Checkpoint | None = None
) -> Daemon:
    """Start on a connected checker; the caller serves, stops, then closes what it opened."""
    daemon = Daemon(cfg, checker, notifier, checkpoint)
    daemon.install_signal_handlers()
    daemon.start()
    return daemon
