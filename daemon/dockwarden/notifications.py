"""Notifications through Apprise: what a finished cycle or garbage collection tells people, and sending it.

Build, then send. `cycle_message` and `gc_message` are pure: from a cycle's outcomes (or a GC's result),
the configured events and what was announced before, they make at most one message, grouping the services.
A result is either an event (upgraded, rolled back, rollback failed: each attempt is news) or a standing
condition (an update available to a `monitor` service, a skip, an error), which is announced when it
starts or changes, not every cycle; `Announced` remembers those in `state_dir/announced.json`. `deliver`
is the thin part: the only place that imports Apprise (lazily: only a config with `notify:` pays for it),
on a thread of its own that the caller waits for at most the configured timeout, so a slow or dead
receiver costs a cycle that timeout and never an exception. URLs are logged masked (Apprise's privacy
form): they often carry tokens or passwords.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from dockwarden import gc, statefiles
from dockwarden.config import Config, Notify, NotifyEvent
from dockwarden.cycle import MONITOR_REASON, STOPPING_REASON
from dockwarden.locks import serialised
from dockwarden.report import short_digest, size
from dockwarden.upgrade import Outcome, Result

FILE_NAME = "announced.json"
_EVENT_OF = {
    Result.UPGRADED: NotifyEvent.UPGRADED,
    Result.ROLLED_BACK: NotifyEvent.ROLLED_BACK,
    Result.ROLLBACK_FAILED: NotifyEvent.ROLLBACK_FAILED,
    Result.ERROR: NotifyEvent.ERROR,
}
# Conditions that last across cycles: announced once per service and value (digest or error text).
STANDING = (NotifyEvent.UPDATE_AVAILABLE, NotifyEvent.SKIPPED, NotifyEvent.ERROR)
# The order of the counts in a title: the worst news first.
_ORDER = (
    NotifyEvent.ROLLBACK_FAILED,
    NotifyEvent.ROLLED_BACK,
    NotifyEvent.ERROR,
    NotifyEvent.UPGRADED,
    NotifyEvent.UPDATE_AVAILABLE,
    NotifyEvent.SKIPPED,
)
_BAD = frozenset({NotifyEvent.ROLLBACK_FAILED, NotifyEvent.ROLLED_BACK, NotifyEvent.ERROR})

# service -> event -> the value announced (a digest, or an error's text)
AnnouncedMap = dict[str, dict[str, str]]


@dataclass(frozen=True, kw_only=True)
class Message:
    """One notification: `title` (counts), `body` (a line per service or removal); `bad` when it reports
    a failure (Apprise's `failure` type, which many services show in red), else `info`."""

    title: str
    body: str
    bad: bool = False


def event_of(outcome: Outcome) -> NotifyEvent | None:
    """The event a service's outcome in a cycle is, if any: a `monitor` service's skip is an update
    available; a service not reached because dockwarden stops, and up-to-date ones, are none."""
    if outcome.result == Result.SKIPPED:
        if outcome.error == MONITOR_REASON:
            return NotifyEvent.UPDATE_AVAILABLE
        return None if outcome.error == STOPPING_REASON else NotifyEvent.SKIPPED
    return _EVENT_OF.get(outcome.result)


def _standing_value(outcome: Outcome, event: NotifyEvent) -> str:
    """What identifies a standing condition: the digest offered, or for an error its text."""
    if event == NotifyEvent.ERROR:
        return outcome.error or ""
    return f"{outcome.to_digest}"


def _line(outcome: Outcome, event: NotifyEvent) -> str:
    """`service: event from → to`, then where and why it failed (or why it was skipped)."""
    name = outcome.service
    if outcome.container != outcome.service:
        name += f" (container {outcome.container})"
    text = f"{name}: {event}"
    if outcome.from_digest or outcome.to_digest:
        text += f" {short_digest(outcome.from_digest)} → {short_digest(outcome.to_digest)}"
    if outcome.error and event != NotifyEvent.UPDATE_AVAILABLE:
        text += f"; at {outcome.step}: {outcome.error}" if outcome.step else f"; {outcome.error}"
    if outcome.rollback_error:
        text += f"; rollback failed: {outcome.rollback_error}"
    if outcome.cause is not None and event in _BAD:
        text += f" (cause: {outcome.cause})"
    return text


def _title(host: str, counts: Mapping[NotifyEvent, int]) -> str:
    parts = [f"{counts[event]} {event}" for event in _ORDER if counts.get(event)]
    return f"dockwarden on {host}: {', '.join(parts)}"


def cycle_message(
    outcomes: Iterable[Outcome],
    events: Iterable[NotifyEvent],
    announced: Mapping[str, Mapping[str, str]],
    host: str,
) -> tuple[Message | None, AnnouncedMap]:
    """The message for one cycle's `outcomes` (None when none matches `events` or is new), and what is
    announced after it (`announced` with each of these services' standing conditions as they are now; a
    condition that ended is forgotten, so its return is news again)."""
    wanted = set(events)
    after: AnnouncedMap = {service: dict(known) for service, known in announced.items()}
    lines: list[str] = []
    counts: dict[NotifyEvent, int] = {}
    for outcome in outcomes:
        event = event_of(outcome)
        before = after.pop(outcome.service, {})
        if event is None:
            continue
        if event in STANDING:
            value = _standing_value(outcome, event)
            after[outcome.service] = {event: value}
            if before.get(event) == value:
                continue
        if event in wanted:
            lines.append(_line(outcome, event))
            counts[event] = counts.get(event, 0) + 1
    if not lines:
        return None, after
    message = Message(title=_title(host, counts), body="\n".join(lines), bad=bool(_BAD & set(counts)))
    return message, after


def gc_message(result: gc.Result, host: str) -> Message | None:
    """The message for a garbage collection that removed something or failed (None otherwise, and for a
    dry run): a line per removal done or refused, and the bytes reclaimed."""
    if result.dry_run:
        return None
    if result.error is not None:
        return Message(title=f"dockwarden on {host}: gc failed", body=result.error, bad=True)
    done = [r for r in result.removals if r.done]
    refused = [r for r in result.removals if r.error is not None]
    if not done and not refused:
        return None
    lines = [f"removed {r.kind} {r.name}: {r.reason}" for r in done]
    lines += [f"NOT removed {r.kind} {r.name}: {r.error}" for r in refused]
    title = f"dockwarden on {host}: gc removed {len(done)}, reclaimed {size(result.reclaimed)}"
    if refused:
        title += f", {len(refused)} refused"
    return Message(title=title, body="\n".join(lines), bad=bool(refused))


def trial_message(host: str) -> Message:
    """What `dockwarden notify-test` sends."""
    return Message(
        title=f"dockwarden on {host}: test notification",
        body="If you read this, dockwarden's notifications reach you.",
    )


# -- state: what was announced ------------------------------------------------------------------------


class Announced:
    """`state_dir/announced.json`: {service: {event: value}}, the standing conditions already announced.
    An unreadable file is ignored with a warning (at worst a condition is announced again)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def read(self) -> AnnouncedMap:
        try:
            data = json.loads(statefiles.read_text(self.path))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._warn("state.ignored", f"unreadable: {exc}")
            return {}
        if not isinstance(data, dict):
            self._warn("state.ignored", f"a JSON {type(data).__name__}, not an object")
            return {}
        return {
            str(service): {str(k): str(v) for k, v in known.items()}
            for service, known in data.items()
            if isinstance(known, dict)
        }

    def write(self, announced: AnnouncedMap) -> None:
        try:
            with serialised(self.path):
                statefiles.replace(self.path, json.dumps(announced, indent=1, sort_keys=True))
        except OSError as exc:
            self._warn("state.unwritable", str(exc))

    def _warn(self, event: str, reason: str) -> None:
        structlog.get_logger("dockwarden.state").warning(event, file=str(self.path), reason=reason)


# -- sending ------------------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why Apprise cannot send to `url` (None if it can). The message names only the scheme: the rest of
    a URL may be a secret."""
    import apprise  # noqa: PLC0415 -- loads every Apprise plugin (~20 MiB): only for a config with notify

    if apprise.Apprise.instantiate(url) is not None:
        return None
    scheme = url.partition("://")[0] if "://" in url else None
    if scheme is None:
        return "not an Apprise URL (SCHEME://...)"
    return f"not a URL Apprise can send to (scheme {scheme!r}; see Apprise's list of services)"


def deliver(notify: Notify, message: Message) -> bool:
    """Send `message` to every URL of `notify`; True if all of them took it within `notify.timeout`.
    Logs `notify.sent` or `notify.failed` with the URLs masked; never raises. A receiver still busy at
    the timeout is left to a daemon thread, whose own sockets time out after the same time."""
    import apprise  # noqa: PLC0415 -- see url_problem

    log = structlog.get_logger("dockwarden.notify")
    seconds = notify.timeout.total_seconds()
    box = apprise.Apprise()
    for url in notify.targets:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:  # load checked every URL; a plugin may refuse on a later look
            continue
        # Apprise's per-request timeouts (its `cto` and `rto` URL parameters), so the thread ends too.
        plugin.socket_connect_timeout = seconds
        plugin.socket_read_timeout = seconds
        box.add(plugin)
    # Apprise's URL with its secrets masked (its `url` carries no annotations), less the query: Apprise's
    # own parameters there make a log line long and say nothing about where it went.
    targets = [str(plugin.url(privacy=True)).partition("?")[0] for plugin in box]  # type: ignore[no-untyped-call]
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["sent"] = bool(
                box.notify(
                    body=message.body,
                    title=message.title,
                    notify_type=apprise.NotifyType.FAILURE if message.bad else apprise.NotifyType.INFO,
                )
            )
        except Exception as exc:  # a plugin's bug must not reach the cycle
            outcome["error"] = repr(exc)

    worker = threading.Thread(target=send, name="notify", daemon=True)
    worker.start()
    worker.join(seconds)
    if outcome.get("sent"):
        log.info("notify.sent", targets=targets, title=message.title)
        return True
    if worker.is_alive():
        reason = f"no answer within {seconds:g} s"
    else:
        reason = outcome.get("error") or "a receiver refused it or failed (the `apprise` warning says why)"
    log.warning("notify.failed", targets=targets, title=message.title, reason=reason)
    return False


def _host() -> str:
    return socket.gethostname()


def cycle_finished(cfg: Config, outcomes: Iterable[Outcome]) -> None:
    """After a cycle (the daemon's, or `dockwarden update`): send its message if `cfg` sets `notify` and
    something worth it happened, and remember what was announced once it was delivered."""
    if cfg.notify is None:
        return
    state = Announced(cfg.state_dir)
    before = state.read()
    message, after = cycle_message(outcomes, cfg.notify.events, before, _host())
    if message is not None and not deliver(cfg.notify, message):
        return  # not announced: the next cycle tries again
    if after != before:
        state.write(after)


def gc_finished(cfg: Config, result: gc.Result) -> None:
    """After a garbage collection: send its message if `cfg` notifies about `gc` and it did something."""
    if cfg.notify is None or NotifyEvent.GC not in cfg.notify.events:
        return
    message = gc_message(result, _host())
    if message is not None:
        deliver(cfg.notify, message)
