"""The command line: the only place that turns outcomes into exit codes.

Exit codes: 0 success; 1 the command ran but something failed (a service errored, the engine was
unreachable); 2 the config or the command line is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from dockwarden import __version__, check, cycle, gc, logs, notifications, report, statefiles, status, upgrade
from dockwarden import config as configuration
from dockwarden.engine import Engine, EngineError
from dockwarden.history import History
from dockwarden.notify import Notifier
from dockwarden.rollback import parse_digest, rollback
from dockwarden.runner import Runner

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors, which is our code for them too; keep its message short.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dockwarden",
        description="Keep Docker containers up to date, safely.",
        epilog="Config: -c FILE, else $DOCKWARDEN_CONFIG, else /etc/dockwarden/dockwarden.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"dockwarden {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", metavar="FILE", help="the watched-services YAML file")
        return sub

    add("validate", "Check the config file; print every problem as FILE:LINE:COL: message.")
    check_cmd = add("check", "Run one check cycle now and report which services have a newer image.")
    check_cmd.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    update_cmd = add(
        "update", "Run one update cycle now: upgrade the named (or all) services with newer images."
    )
    update_cmd.add_argument(
        "services", nargs="*", metavar="SERVICE", help="services to update (default: all)"
    )
    update_cmd.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    update_cmd.add_argument("--force", action="store_true", help="also try digests that failed before")
    update_cmd.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    rollback_cmd = add(
        "rollback",
        "Switch a service back to a version kept on this host (never pulls), gated like an upgrade.",
    )
    rollback_cmd.add_argument("service", metavar="SERVICE", help="the service to roll back")
    rollback_cmd.add_argument(
        "--to",
        metavar="DIGEST",
        type=_digest,
        help="manifest digest (or image ID) to go to; default: the newest version older than the running one",
    )
    rollback_cmd.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    gc_cmd = add("gc", "Remove dangling images, dockwarden's leftovers and (opt-in) old stopped containers.")
    gc_cmd.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    gc_cmd.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    history_cmd = add("history", "List every recorded decision, newest first.")
    history_cmd.add_argument("service", nargs="?", metavar="SERVICE", help="only this service's entries")
    history_cmd.add_argument("--limit", type=int, default=0, metavar="N", help="at most N entries (0: all)")
    history_cmd.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    status_cmd = add("status", "Show each service's container, digests, retained versions and last upgrade.")
    status_cmd.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    add("notify-test", "Send a test notification to every URL of the config's `notify:`; fail if one fails.")
    add("run", "Run the daemon: check and upgrade on the configured schedule until stopped (SIGHUP reloads).")
    return parser


def _digest(text: str) -> str:
    try:
        return parse_digest(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Exit(Exception):
    """End the command with `code`, after printing `message` (if any) to stderr."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _config(args: argparse.Namespace, quiet: bool = False, state: bool = True) -> configuration.Config:
    """The loaded config, after configuring logs to stderr (`quiet`: warnings only, for --json output);
    every problem is printed as FILE:LINE:COL and the command ends with EXIT_USAGE. With `state`, its
    state_dir is created or checked (`statefiles.verify`); an unsafe one ends the command with EXIT_FAILED."""
    try:
        cfg = configuration.load(configuration.resolve_path(args.config))
    except configuration.ConfigError as exc:
        raise _Exit(EXIT_USAGE, "\n".join(str(p) for p in exc.problems)) from None
    # stdout carries the report; logs go to stderr so `--json` output stays parseable.
    logs.configure(sys.stderr, level=logging.WARNING if quiet else logging.INFO)
    if state:
        try:
            statefiles.verify(cfg.state_dir)
        except (statefiles.UnsafeStateDir, OSError) as exc:
            raise _Exit(EXIT_FAILED, f"dockwarden: {exc}") from None
    return cfg


def _service(cfg: configuration.Config, name: str) -> configuration.Service:
    found = cfg.service(name)
    if found is None:
        raise _Exit(EXIT_USAGE, f"dockwarden: no such service in {cfg.path}: {name}")
    return found


@contextlib.contextmanager
def _engine(cfg: configuration.Config) -> Iterator[Engine]:
    """The engine alone, for the commands that need no registry; closed on exit."""
    engine = Engine.connect(cfg.docker_host, cfg.engine_timeout.total_seconds())
    try:
        yield engine
    finally:
        engine.close()


def _show(args: argparse.Namespace, as_json: str, as_table: str) -> None:
    print(as_json if args.json else as_table)


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _config(args, quiet=True, state=False)
    print(
        f"{cfg.path}: valid; {len(cfg.services)} services, {cfg.describe_schedule()}, "
        f"keep_previous {cfg.keep_previous}, {cfg.describe_gc()}"
    )
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args, quiet=args.json)
    with check.connect(cfg) as checker:
        summary = checker.cycle(cfg.services, cfg.check_concurrency)
    cycle.record_checks(History.of(cfg), summary.results)
    _show(args, report.check_json(summary.results), report.check_table(summary.results))
    return EXIT_FAILED if summary.count(check.Status.ERROR) else EXIT_OK


def _terminal_progress() -> upgrade.Progress | None:
    if not sys.stderr.isatty():
        return None

    def show(message: dict[str, object]) -> None:
        layer = message.get("id", "")
        text = f"{layer}: {message.get('status', '')} {message.get('progress', '')}".strip()
        sys.stderr.write("\r\033[K" + text[:120])
        sys.stderr.flush()

    return show


@contextlib.contextmanager
def _cancel_on_signals() -> Iterator[threading.Event]:
    """Yield an event that the first Ctrl-C or SIGTERM sets: finish cleanly (an upgrade in its gate rolls
    back; none starts after it). A second one interrupts at once; the next run's recovery converges
    whatever it left. The previous handlers are back afterwards."""
    cancel = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("dockwarden: stopping; an upgrade in progress rolls back first", file=sys.stderr, flush=True)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def cmd_update(args: argparse.Namespace, checkpoint: upgrade.Checkpoint | None = None) -> int:
    # Every step is worth keeping in the log, even with --json.
    cfg = _config(args)
    unknown = [name for name in args.services if cfg.service(name) is None]
    if unknown:
        raise _Exit(EXIT_USAGE, f"dockwarden: no such service in {cfg.path}: {', '.join(unknown)}")
    services = [_service(cfg, name) for name in args.services] or list(cfg.services)
    with check.connect(cfg) as checker, _cancel_on_signals() as cancel:
        hooks = upgrade.Hooks(cancel=cancel, checkpoint=checkpoint, progress=_terminal_progress())
        runner = Runner(checker.engine, cfg.state_dir, History.of(cfg), hooks)
        options = cycle.Options(
            named=bool(args.services), force=args.force, dry_run=args.dry_run, cancel=cancel
        )
        result = cycle.run(checker, runner, cfg, services, options)
    if not args.dry_run:
        notifications.cycle_finished(cfg, result.outcomes)
    _show(args, report.update_json(result), report.update_table(result))
    return EXIT_FAILED if result.failed() else EXIT_OK


def cmd_rollback(args: argparse.Namespace, checkpoint: upgrade.Checkpoint | None = None) -> int:
    cfg = _config(args)
    service = _service(cfg, args.service)
    # Only the engine is needed: a rollback never asks the registry anything.
    with _engine(cfg) as engine, _cancel_on_signals() as cancel:
        runner = Runner(
            engine, cfg.state_dir, History.of(cfg), upgrade.Hooks(cancel=cancel, checkpoint=checkpoint)
        )
        outcome = rollback(runner, cfg, service, args.to)
    result = cycle.Report(outcomes=[outcome])
    _show(args, report.update_json(result), report.update_table(result))
    return EXIT_OK if outcome.result in (upgrade.Result.REVERTED, upgrade.Result.UP_TO_DATE) else EXIT_FAILED


def cmd_gc(args: argparse.Namespace) -> int:
    cfg = _config(args, quiet=args.json)
    with _engine(cfg) as engine, _cancel_on_signals() as cancel:
        result = gc.collect(engine, cfg, dry_run=args.dry_run, cancel=cancel)
    notifications.gc_finished(cfg, result)  # nothing for a dry run
    _show(args, report.gc_json(result), report.gc_table(result))
    return EXIT_FAILED if result.failed() else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    cfg = _config(args, quiet=True)
    if args.service is not None:
        _service(cfg, args.service)
    if args.limit < 0:
        raise _Exit(EXIT_USAGE, "dockwarden: --limit must be 0 (all) or more")
    entries = History.of(cfg).entries(args.service)
    if args.limit:
        entries = entries[: args.limit]
    _show(args, report.history_json(entries), report.history_table(entries))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args, quiet=True)
    with _engine(cfg) as engine:
        found = status.gather(engine, cfg)
    _show(args, report.status_json(found), report.status_table(found))
    return EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    cfg = _config(args, state=False)
    if cfg.notify is None:
        raise _Exit(EXIT_USAGE, f"dockwarden: {cfg.path} has no `notify:` section")
    if not notifications.deliver(cfg.notify, notifications.trial_message(socket.gethostname())):
        raise _Exit(EXIT_FAILED, "dockwarden: the test notification was not delivered (see the log above)")
    print(f"sent a test notification to {len(cfg.notify.targets)} URL(s)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, checkpoint: upgrade.Checkpoint | None = None) -> int:
    cfg = _config(args)
    logs.configure(sys.stdout)
    from dockwarden import daemon  # noqa: PLC0415 -- APScheduler's import cost is only the daemon's to pay

    try:
        with check.connect(cfg) as checker:
            running = daemon.run(cfg, checker, Notifier(), checkpoint)
            running.serve()
            finished = running.stop()
    except EngineError as exc:
        raise _Exit(EXIT_FAILED, f"dockwarden: cannot start: {exc}") from None
    if not finished:
        # A check still blocked on the network holds a worker thread; it touches nothing, so do not let
        # it hold up the exit systemd is waiting for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate,
    "check": cmd_check,
    "gc": cmd_gc,
    "history": cmd_history,
    "status": cmd_status,
    "notify-test": cmd_notify_test,
}
# The commands that run transactions, which a test entry point can park before a step (tests/support).
TRANSACTION_COMMANDS: dict[str, Callable[[argparse.Namespace, upgrade.Checkpoint | None], int]] = {
    "update": cmd_update,
    "rollback": cmd_rollback,
    "run": cmd_run,
}


def main(argv: Sequence[str] | None = None, checkpoint: upgrade.Checkpoint | None = None) -> int:
    """Run one command; returns its exit code. `checkpoint` is for tests: called before each step of a
    transaction that `update`, `rollback` or `run` starts."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command in TRANSACTION_COMMANDS:
            return TRANSACTION_COMMANDS[args.command](args, checkpoint)
        return COMMANDS[args.command](args)
    except _Exit as end:
        if end.message:
            print(end.message, file=sys.stderr)
        return end.code
    except EngineError as exc:
        print(f"dockwarden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
