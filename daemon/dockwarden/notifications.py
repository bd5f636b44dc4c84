"""Notifications through Apprise: what a finished cycle or garbage collection tells people, and sending it.

Build, then send. `cycle_message` and `gc_message` are pure: from a cycle's outcomes (or a GC's result),
the configured events and what was announced before, they make at most one message, grouping the services.
A result is either an event (upgraded, rolled back, rollback failed: each attempt is news) or a standing
condition (an update available to a `monitor` service, a skip, an error), which is announced when it
starts or changes, not every cycle; `Announced` remembers those in `state_dir/announced.json`. `deliver`
is the thin part: it hands the message to Apprise in a child process (`delivery`, the only module that
imports Apprise, whose plugins would add about 20 MiB to the daemon for good), killed at the configured
timeout, so a slow or dead receiver costs a cycle that timeout and never an exception. URLs are logged
masked (Apprise's privacy form): they often carry tokens or passwords.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from dockwarden import gc, statefiles
from dockwarden.config import Config, Notify, NotifyEvent
from dockwarden.cycle import MONITOR_REASON, STOPPING_REASON
from dockwarden.locks import serialised
from dockwarden.logs import mask_text
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


# -- sending: through the child process of `delivery` -------------------------------------------------

# The sender: Apprise runs in a child process (see `delivery`), so the daemon never holds its plugins.
SENDER = (sys.executable, "-m", "dockwarden.delivery")
CHECK_TIMEOUT = 60.0  # seconds for checking a config's URLs: loading Apprise, no network
# Seconds the sender may take to load Apprise and the URLs (about half a second of CPU, more on a busy
# machine) before `notify.timeout` starts to count.
SENDER_START = 20.0
_REASON_LINES = 3  # Apprise's last warnings kept in a notify.failed reason


class SenderError(Exception):
    """The sender child could not be run or answered nonsense; the message says why."""


def _text(output: str | bytes | None) -> str:
    # A TimeoutExpired carries what was read before the kill as bytes, even for a text-mode run.
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else output or ""


def _answers(stdout: str) -> dict[str, Any]:
    """The sender's JSON lines merged into one object (lines that are not JSON objects are ignored)."""
    found: dict[str, Any] = {}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.update(item)
    return found


def url_problems(urls: Sequence[str]) -> list[str | None]:
    """For each URL, why Apprise cannot send to it, or None (`delivery.url_problem`, in the child).
    Raises SenderError if the child cannot be run or does not answer within CHECK_TIMEOUT."""
    if not urls:
        return []
    request = json.dumps({"check": list(urls)})
    try:
        proc = subprocess.run(
            SENDER, input=request, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SenderError(f"cannot check the notify URLs with Apprise: {exc}") from None
    problems = _answers(proc.stdout).get("problems")
    if proc.returncode != 0 or not isinstance(problems, list) or len(problems) != len(urls):
        last = mask_text(proc.stderr.strip().splitlines()[-1]) if proc.stderr.strip() else "no answer"
        raise SenderError(f"cannot check the notify URLs with Apprise (exit {proc.returncode}): {last}")
    return [None if p is None else str(p) for p in problems]


def _schemes(urls: Iterable[str]) -> list[str]:
    """Where a message was going, when the child never said: only each URL's scheme, which is no secret."""
    return [f"{url.partition('://')[0]}://..." for url in urls]


@dataclass(frozen=True, kw_only=True)
class _Conversation:
    answers: dict[str, Any]  # the sender's JSON lines, merged
    stderr: str  # Apprise's warnings
    returncode: int | None  # None: killed
    started: bool  # it loaded the URLs and began sending


def _pump(source: IO[str], into: queue.Queue[str | None]) -> None:
    """Put each line of `source` into `into`, then None at its end."""
    for line in source:
        into.put(line)
    into.put(None)


def _drained(source: queue.Queue[str | None]) -> str:
    """What `source` holds now, up to its end mark."""
    parts = []
    with contextlib.suppress(queue.Empty):
        while (item := source.get_nowait()) is not None:
            parts.append(item)
    return "".join(parts)


def _converse(request: str, timeout: float) -> _Conversation:
    """Run the sender on `request`: it gets SENDER_START to load Apprise and the URLs (until its `targets`
    line), then `timeout` to deliver (until its `sent` line); past either it is killed. Raises OSError if
    it cannot be started."""
    proc = subprocess.Popen(
        SENDER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    if stdin is None or stdout is None or stderr is None:  # unreachable: all three are PIPEs
        proc.kill()
        raise OSError("the sender has no pipes")
    lines: queue.Queue[str | None] = queue.Queue()
    errors: queue.Queue[str | None] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=pair, daemon=True) for pair in ((stdout, lines), (stderr, errors))
    ]
    for reader in readers:
        reader.start()
    with contextlib.suppress(BrokenPipeError):  # a sender that died at once: its exit status says why
        stdin.write(request)
        stdin.close()
    answers: dict[str, Any] = {}
    deadline = time.monotonic() + SENDER_START
    while "sent" not in answers:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            break
        if line is None:
            break
        started = "targets" in answers
        answers.update(_answers(line))
        if not started and "targets" in answers:
            deadline = time.monotonic() + timeout  # the receivers' time starts now
    returncode = proc.wait()
    for reader in readers:
        reader.join(1.0)
    said = _drained(errors)
    killed = returncode < 0 and "sent" not in answers
    return _Conversation(
        answers=answers,
        stderr=said,
        returncode=None if killed else returncode,
        started="targets" in answers,
    )


def deliver(notify: Notify, message: Message) -> bool:
    """Send `message` to every URL of `notify`; True if all of them took it within `notify.timeout`
    (counted once the sender has loaded Apprise, which may take SENDER_START). Logs `notify.sent` or
    `notify.failed` with the URLs masked; never raises. A sender still busy at the timeout is killed."""
    log = structlog.get_logger("dockwarden.notify")
    seconds = notify.timeout.total_seconds()
    request: dict[str, Any] = {"send": list(notify.targets), "title": message.title, "body": message.body}
    request.update({"bad": message.bad, "timeout": seconds})
    try:
        talk = _converse(json.dumps(request), seconds)
    except OSError as exc:
        reason = f"cannot start the sender: {exc}"
        log.warning("notify.failed", targets=_schemes(notify.targets), title=message.title, reason=reason)
        return False
    targets = talk.answers.get("targets") or _schemes(notify.targets)
    if talk.answers.get("sent") is True:
        log.info("notify.sent", targets=targets, title=message.title)
        return True
    said = [mask_text(line) for line in talk.stderr.strip().splitlines()[-_REASON_LINES:]]
    if talk.returncode is None:
        reason = f"no answer within {seconds:g} s"
        if not talk.started:
            reason = f"the sender did not start within {SENDER_START:g} s"
    elif talk.returncode != 0:
        reason = f"the sender failed (exit {talk.returncode}): {'; '.join(said)}"
    else:
        reason = "a receiver refused it or failed: " + ("; ".join(said) or "Apprise did not say why")
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
