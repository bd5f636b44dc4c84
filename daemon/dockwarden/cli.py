"""The command line: the only place that turns outcomes into exit codes.

Exit codes: 0 success; 1 the command ran but something failed (a service errored, the engine was
unreachable); 2 the config or the command line is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType

from dockwarden import __version__, check, gc, logs, report, status, update, upgrade
from dockwarden import config as configuration
from dockwarden.engine import Engine, EngineError
from dockwarden.history import History
from dockwarden.notify import Notifier

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
    add("run", "Run the daemon: check and upgrade on the configured schedule until stopped (SIGHUP reloads).")
    return parser


def _digest(text: str) -> str:
    value = text.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{12,64}", value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a digest (sha256:<hex>, at least 12 hex digits)")
    return f"sha256:{value}"


def _load(args: argparse.Namespace) -> configuration.Config | None:
    try:
        return configuration.load(configuration.resolve_path(args.config))
    except configuration.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    print(
        f"{cfg.path}: valid; {len(cfg.services)} services, {cfg.describe_schedule()}, "
        f"keep_previous {cfg.keep_previous}, {cfg.describe_gc()}"
    )
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    # stdout carries the report; logs go to stderr so `--json` output stays parseable.
    logs.configure(sys.stderr, level=logging.WARNING if args.json else logging.INFO)
    try:
        checker = check.open_checker(cfg)
    except EngineError as exc:
        print(f"dockwarden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        summary = checker.cycle(cfg.services, cfg.check_concurrency)
    finally:
        checker.close()
    update.record_checks(History.of(cfg), summary.results)
    print(report.check_json(summary.results) if args.json else report.check_table(summary.results))
    return EXIT_FAILED if summary.count(check.ERROR) else EXIT_OK


def _pause_hook() -> upgrade.Checkpoint | None:
    """Test-only: DOCKWARDEN_TEST_PAUSE_BEFORE=STEP parks the transaction before STEP, to be killed there."""
    step = os.environ.get("DOCKWARDEN_TEST_PAUSE_BEFORE")
    if not step:
        return None

    def pause(current: str) -> None:
        if current == step:
            print(f"dockwarden: paused before {step}", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)

    return pause


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


def cmd_update(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    known = {s.name: s for s in cfg.services}
    unknown = [name for name in args.services if name not in known]
    if unknown:
        print(f"dockwarden: no such service in {cfg.path}: {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    # Every step is worth keeping in the log; stdout alone carries the report, so --json stays parseable.
    logs.configure(sys.stderr)
    try:
        updater = update.open_updater(cfg)
    except EngineError as exc:
        print(f"dockwarden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        with _cancel_on_signals() as cancel:
            options = update.Options(
                named=bool(args.services),
                force=args.force,
                dry_run=args.dry_run,
                cancel=cancel,
                checkpoint=_pause_hook(),
                progress=_terminal_progress(),
            )
            result = updater.cycle(cfg, [known[n] for n in args.services] or cfg.services, options)
    finally:
        updater.close()
    print(report.update_json(result) if args.json else report.update_table(result))
    return EXIT_FAILED if result.failed() else EXIT_OK


def _connect(cfg: configuration.Config) -> Engine | None:
    """The engine, or None after saying why not (the commands that need no registry)."""
    try:
        return Engine.connect(cfg.docker_host)
    except EngineError as exc:
        print(f"dockwarden: {exc}", file=sys.stderr)
        return None


def _service(cfg: configuration.Config, name: str) -> configuration.Service | None:
    found = cfg.service(name)
    if found is None:
        print(f"dockwarden: no such service in {cfg.path}: {name}", file=sys.stderr)
    return found


def cmd_rollback(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    service = _service(cfg, args.service)
    if service is None:
        return EXIT_USAGE
    logs.configure(sys.stderr)
    engine = _connect(cfg)
    if engine is None:
        return EXIT_FAILED
    # Only the engine is needed: a rollback never asks the registry anything.
    updater = update.Updater(engine)
    try:
        with _cancel_on_signals() as cancel:
            options = update.Options(named=True, cancel=cancel, checkpoint=_pause_hook())
            outcome = updater.rollback(cfg, service, args.to, options)
    finally:
        updater.close()
    result = update.Report([outcome])
    print(report.update_json(result) if args.json else report.update_table(result))
    return EXIT_OK if outcome.result in (update.REVERTED, upgrade.UP_TO_DATE) else EXIT_FAILED


def cmd_gc(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    logs.configure(sys.stderr, level=logging.WARNING if args.json else logging.INFO)
    engine = _connect(cfg)
    if engine is None:
        return EXIT_FAILED
    try:
        with _cancel_on_signals() as cancel:
            result = gc.collect(engine, cfg, dry_run=args.dry_run, cancel=cancel)
    finally:
        engine.close()
    print(report.gc_json(result) if args.json else report.gc_table(result))
    return EXIT_FAILED if result.failed() else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    if args.service is not None and _service(cfg, args.service) is None:
        return EXIT_USAGE
    if args.limit < 0:
        print("dockwarden: --limit must be 0 (all) or more", file=sys.stderr)
        return EXIT_USAGE
    entries = History.of(cfg).entries(args.service)
    if args.limit:
        entries = entries[: args.limit]
    print(report.history_json(entries) if args.json else report.history_table(entries))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    engine = _connect(cfg)
    if engine is None:
        return EXIT_FAILED
    try:
        found = status.gather(engine, cfg)
    except EngineError as exc:
        print(f"dockwarden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.close()
    print(report.status_json(found) if args.json else report.status_table(found))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    logs.configure(sys.stdout)
    from dockwarden import daemon  # noqa: PLC0415 -- APScheduler's import cost is only the daemon's to pay

    try:
        running = daemon.run(cfg, Notifier(), _pause_hook())
    except EngineError as exc:
        print(f"dockwarden: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    running.serve()
    if not running.stop():
        # A check still blocked on the network holds a worker thread; it touches nothing, so do not let
        # it hold up the exit systemd is waiting for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


COMMANDS = {
    "validate": cmd_validate,
    "check": cmd_check,
    "update": cmd_update,
    "rollback": cmd_rollback,
    "gc": cmd_gc,
    "history": cmd_history,
    "status": cmd_status,
    "run": cmd_run,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
