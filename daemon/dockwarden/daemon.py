"""`dockwarden run`: the check cycle on a schedule, under systemd's eye.

The main thread only waits for signals and feeds the watchdog; APScheduler's thread runs the cycle. A
signal handler just records what was asked, because doing real work inside a handler can deadlock on a
lock the interrupted code holds.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger

from dockwarden import config as configuration
from dockwarden import cycle, gc, liveness, notifications, retention, schedule, statefiles
from dockwarden.check import Checker
from dockwarden.engine import EngineError
from dockwarden.history import History
from dockwarden.liveness import Liveness
from dockwarden.neighbours import Refresher
from dockwarden.notify import Notifier
from dockwarden.rollback import rollback as roll_back
from dockwarden.runner import Runner
from dockwarden.skiplist import SkipList
from dockwarden.upgrade import Checkpoint, Hooks, Outcome, Progress

if TYPE_CHECKING:
    from dockwarden.listener import Listener
    from dockwarden.metrics import Metrics

JOB_ID = "check-cycle"
GC_JOB_ID = "gc"
STOP_GRACE = 6.0  # seconds a running cycle gets to finish after SIGTERM; we promise to stop within 10 s
# An upgrade in flight is never abandoned half-way (the service would stay down until our next start):
# cancelling makes it roll back, which needs the old container's stop and start; systemd waits 90 s.
UPGRADE_STOP_GRACE = 75.0
TICK = 0.2
# Seconds beyond the delivery timeout: the sender's start (notifications.SENDER_START), building the message.
NOTIFY_SLACK = notifications.SENDER_START + 5.0


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
        self.skips = SkipList(cfg.state_dir)  # for the process's life: it remembers what it cannot write
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
        # Held by every update cycle and rollback, scheduled or asked for through the API: one at a time.
        self.cycle_lock = threading.Lock()
        self.metrics: Metrics | None = None  # made with the API (prometheus_client only then)
        self.listener: Listener | None = None
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
        with self.cycle_lock:  # after an update the API asked for, if one runs
            if self.cancel.is_set():
                return
            cfg = self.config  # read once: a reload may replace it meanwhile
            self.run_cycle(cfg, cfg.services, cycle.Options(cancel=self.cancel))

    def _runner(self, cfg: configuration.Config, limits: liveness.Bounds) -> Runner:
        hooks = Hooks(
            cancel=self.cancel, checkpoint=self._step_watch(limits), progress=self._pull_watch(limits)
        )
        if self.skips.path.parent != cfg.state_dir:  # a reload moved the state directory
            self.skips = SkipList(cfg.state_dir)
        return Runner(
            self.checker.engine,
            cfg.state_dir,
            History.of(cfg),
            hooks,
            self.upgrading,
            skips=self.skips,
            neighbours=self.neighbours,
        )

    def run_cycle(
        self, cfg: configuration.Config, services: Iterable[configuration.Service], options: cycle.Options
    ) -> cycle.Report:
        """One update cycle of `services` (the scheduled one, or one the API asked for); the caller holds
        `cycle_lock`."""
        self.cycle_done.clear()
        started = time.monotonic()
        try:
            limits = liveness.bounds(cfg)
            self.liveness.enter("check cycle", limits.check)
            report = cycle.run(self.checker, self._runner(cfg, limits), cfg, services, options)
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            self.notifier.status(f"last cycle {stamp}: {cycle.describe(report)}")
            self._notify(cfg, lambda: notifications.cycle_finished(cfg, report.outcomes))
            if self.metrics is not None:
                ended = None if self.cancel.is_set() else time.time()
                self.metrics.observe_cycle(report.checks, report.outcomes, time.monotonic() - started, ended)
                self._observe_retained(cfg)
            return report
        finally:
            self.liveness.idle()
            self.cycle_done.set()

    def rollback(self, cfg: configuration.Config, service: configuration.Service, to: str | None) -> Outcome:
        """`dockwarden rollback` for the API; the caller holds `cycle_lock`."""
        self.cycle_done.clear()
        try:
            outcome = roll_back(self._runner(cfg, liveness.bounds(cfg)), cfg, service, to)
            if self.metrics is not None:
                self.metrics.observe_rollback(outcome)
                self._observe_retained(cfg)
            return outcome
        finally:
            self.liveness.idle()
            self.cycle_done.set()

    def _observe_retained(self, cfg: configuration.Config) -> None:
        try:
            images = self.checker.engine.images()
        except EngineError:
            return  # the gauges keep their last values; the cycle logged the engine's failure
        assert self.metrics is not None  # noqa: S101 -- only called once the metrics exist
        self.metrics.observe_retained(
            {s.name: len(retention.versions(images, s.container)) for s in cfg.services}
        )

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

    def _notify(self, cfg: configuration.Config, send: Callable[[], None]) -> None:
        """Run `send` (a notifications hook) under a liveness bound of the delivery timeout, plus slack."""
        if cfg.notify is not None:
            self.liveness.enter("notification", cfg.notify.timeout.total_seconds() + NOTIFY_SLACK)
            send()

    def _gc(self) -> None:
        self.gc_done.clear()
        try:
            cfg = self.config
            result = gc.collect(self.checker.engine, cfg, cancel=self.cancel)
            notifications.gc_finished(cfg, result)
            if self.metrics is not None and result.reclaimed:
                self.metrics.observe_gc(result.reclaimed)
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

    # -- the API ---------------------------------------------------------------------------------

    def _start_api(self, cfg: configuration.Config) -> None:
        """Listen on `cfg.api` if set. A failure (port taken, token unreadable) is logged and leaves the
        daemon running without the API: updates matter more than their dashboard; a reload retries."""
        if cfg.api is None:
            return
        from dockwarden import api, control, listener, metrics  # noqa: PLC0415 -- their cost only with `api:`

        if self.metrics is None:
            self.metrics = metrics.Metrics()
        try:
            server = listener.Listener(
                cfg.api, api.App(control.Control(self), api.read_token(cfg.api.token_file))
            )
            server.start()
        except (OSError, ValueError) as exc:
            self.log.error("api.failed", listen=cfg.api.listen, error=str(exc))
            return
        self.listener = server
        self.log.info("api.listening", listen=cfg.api.listen)

    def _stop_api(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.log.info("api.stopped", listen=self.listener.cfg.listen)
            self.listener = None

    def _reload_api(self, old: configuration.Config, new: configuration.Config) -> None:
        """Move the listener when `api:` changed (or start it if it failed before); otherwise only read the
        token file again, so a rotated token applies at once."""
        if new.api != old.api or self.listener is None:
            self._stop_api()
            self._start_api(new)
            return
        from dockwarden import api  # noqa: PLC0415 -- loaded already, with the listener

        assert new.api is not None  # noqa: S101 -- same as old.api, which a listener implies
        try:
            token = api.read_token(new.api.token_file)
        except (OSError, ValueError) as exc:
            self.log.error("api.failed", listen=new.api.listen, error=f"token kept: {exc}")
            return
        app = self.listener.app
        assert isinstance(app, api.App)  # noqa: S101 -- the listener serves our App
        app.token = token

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
        self._start_api(self.config)
        self.log.info(
            "daemon.started",
            config=str(self.config.path),
            services=len(self.config.services),
            schedule=self.config.describe_schedule(),
            gc=self.config.describe_gc(),
            engine_api=self.checker.engine.api_version,
            platform=str(self.checker.platform),
            api=self.config.api.listen if self.config.api else "off",
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
        old, self.config = self.config, new
        self.scheduler.reschedule_job(JOB_ID, trigger=cycle_trigger(new))
        self._schedule_gc(new)
        self._reload_api(old, new)
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
        self._stop_api()
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
