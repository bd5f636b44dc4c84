"""What notifications say and when: the message builder on recorded outcomes, and the `notify:` config."""

from __future__ import annotations

import os
import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from dockwarden import config as configuration
from dockwarden import delivery, gate, gc, notifications
from dockwarden.config import NotifyEvent
from dockwarden.cycle import MONITOR_REASON, STOPPING_REASON
from dockwarden.notifications import Announced, cycle_message, gc_message
from dockwarden.upgrade import Outcome, Result, Step

ROOT = Path(__file__).resolve().parents[2]
OLD = "sha256:" + "a1" * 32
NEW = "sha256:" + "b2" * 32
NEWER = "sha256:" + "c3" * 32
ALL = tuple(NotifyEvent)
DEFAULT = configuration.DEFAULT_NOTIFY_EVENTS


def outcome(service: str, result: Result, **fields: object) -> Outcome:
    values: dict[str, object] = {"container": service, "from_digest": OLD, "to_digest": NEW}
    values.update(fields)
    return Outcome(service=service, result=result, **values)  # type: ignore[arg-type]


# A cycle as the update cycle recorded it: one upgrade, one rollback at the gate, one up to date, a
# monitor-only service with a newer digest, a skip-listed digest, and a registry error.
RECORDED = [
    outcome("web", Result.UPGRADED, container="web-1"),
    outcome(
        "api",
        Result.ROLLED_BACK,
        step=Step.GATE,
        error="the container exited (code 3) after 0.4 s",
        cause=gate.Cause.CONTAINER,
        started_new=True,
    ),
    outcome("db", Result.UP_TO_DATE, to_digest=OLD),
    outcome("cache", Result.SKIPPED, error=MONITOR_REASON),
    outcome("queue", Result.SKIPPED, error=f"{NEW[:19]} failed before (gate: unhealthy)"),
    outcome("proxy", Result.ERROR, to_digest=None, error="timeout: the registry did not answer in 10 s"),
]


def test_one_message_groups_the_services_with_counts_in_the_title() -> None:
    """A cycle's outcomes make one message: the title counts each event, worst first; the body has a line
    per service with from → to as short digests, and the failed step and error."""
    message, _ = cycle_message(RECORDED, DEFAULT, {}, "host1")
    assert message is not None
    assert message.title == "dockwarden on host1: 1 rolled-back, 1 error, 1 upgraded"
    assert message.bad
    assert message.body.splitlines() == [
        "web (container web-1): upgraded a1a1a1a1a1a1 → b2b2b2b2b2b2",
        "api: rolled-back a1a1a1a1a1a1 → b2b2b2b2b2b2; at gate: the container exited (code 3) after 0.4 s "
        "(cause: container)",
        "proxy: error a1a1a1a1a1a1 → -; timeout: the registry did not answer in 10 s",
    ]


def test_opted_in_events_add_update_available_and_skips() -> None:
    """With every event configured, the monitor service's update and the skip are in the message too."""
    message, _ = cycle_message(RECORDED, ALL, {}, "h")
    assert message is not None
    assert "1 update-available, 1 skipped" in message.title
    assert "cache: update-available a1a1a1a1a1a1 → b2b2b2b2b2b2" in message.body.splitlines()
    assert any(
        line.startswith("queue: skipped") and "failed before" in line for line in message.body.splitlines()
    )


def test_nothing_when_nothing_matches_the_events() -> None:
    """A cycle of up-to-date services, or of results outside the configured events, sends nothing."""
    quiet = [
        outcome("db", Result.UP_TO_DATE, to_digest=OLD),
        outcome("cache", Result.SKIPPED, error=MONITOR_REASON),
    ]
    assert cycle_message(quiet, DEFAULT, {}, "h")[0] is None
    assert cycle_message(RECORDED, (NotifyEvent.GC,), {}, "h")[0] is None


def test_a_stop_is_not_news() -> None:
    """Services not reached because dockwarden stops are not reported as skipped."""
    stopping = [outcome("web", Result.SKIPPED, error=STOPPING_REASON)]
    assert cycle_message(stopping, ALL, {}, "h")[0] is None


def test_update_available_is_announced_once_per_digest() -> None:
    """A monitor service's new digest is announced in the first cycle only; a newer digest is news again,
    and so is the same one after the condition ended."""
    events = (NotifyEvent.UPDATE_AVAILABLE,)
    first = [outcome("cache", Result.SKIPPED, error=MONITOR_REASON)]
    message, announced = cycle_message(first, events, {}, "h")
    assert message is not None
    assert announced == {"cache": {"update-available": NEW}}
    assert cycle_message(first, events, announced, "h") == (None, announced)
    newer = [outcome("cache", Result.SKIPPED, error=MONITOR_REASON, to_digest=NEWER)]
    message, announced = cycle_message(newer, events, announced, "h")
    assert message is not None
    assert NEWER.removeprefix("sha256:")[:12] in message.body
    ended, announced = cycle_message([outcome("cache", Result.UP_TO_DATE)], events, announced, "h")
    assert (ended, announced) == (None, {})
    assert cycle_message(first, events, announced, "h")[0] is not None


def test_a_repeated_error_is_announced_once_but_each_upgrade_always() -> None:
    """The same error in two cycles is one notification; an upgrade or a rollback is news every time."""
    message, announced = cycle_message(RECORDED, DEFAULT, {}, "h")
    again, _ = cycle_message(RECORDED, DEFAULT, announced, "h")
    assert message is not None
    assert again is not None
    assert "proxy" in message.body
    assert "proxy" not in again.body
    assert again.title == "dockwarden on h: 1 rolled-back, 1 upgraded"


def test_services_outside_the_cycle_keep_their_announcements() -> None:
    """`update SERVICE` reports one service: what was announced for the others is kept."""
    before = {"other": {"error": "boom"}}
    _, after = cycle_message([outcome("web", Result.UPGRADED)], DEFAULT, before, "h")
    assert after == before


def test_rollback_failed_names_both_errors() -> None:
    """A rollback that failed says where the upgrade failed and why the old version did not come back."""
    failed = outcome(
        "web",
        Result.ROLLBACK_FAILED,
        step=Step.START,
        error="port is already allocated",
        rollback_error="the old container did not start",
        cause=gate.Cause.CONTAINER,
    )
    message, _ = cycle_message([failed], DEFAULT, {}, "h")
    assert message is not None
    assert message.body == (
        "web: rollback-failed a1a1a1a1a1a1 → b2b2b2b2b2b2; at start: port is already allocated; "
        "rollback failed: the old container did not start (cause: container)"
    )


def test_gc_message_lists_removals_and_refusals() -> None:
    """A GC that removed something reports each removal and the bytes; refusals make it a failure; a GC
    that did nothing, and a dry run, send nothing."""
    removed = gc.Removal(kind=gc.Kind.IMAGE, target="sha256:1", name="app:old", reason="dangling", done=True)
    refused = gc.Removal(
        kind=gc.Kind.IMAGE, target="sha256:2", name="app:x", reason="dangling", error="in use"
    )
    message = gc_message(gc.Result(removals=[removed, refused], reclaimed=12_300_000), "h")
    assert message is not None
    assert message.title == "dockwarden on h: gc removed 1, reclaimed 12.3 MB, 1 refused"
    assert message.body.splitlines() == [
        "removed image app:old: dangling",
        "NOT removed image app:x: in use",
    ]
    assert message.bad
    assert gc_message(gc.Result(removals=[], reclaimed=0), "h") is None
    assert gc_message(gc.Result(removals=[removed], dry_run=True), "h") is None
    failed = gc_message(gc.Result(error="engine unreachable"), "h")
    assert failed is not None
    assert failed.bad


def test_announced_state_round_trips_and_survives_garbage(tmp_path: Path) -> None:
    """The announced conditions are written whole to state_dir and read back; a corrupt file reads as
    nothing announced."""
    state = Announced(tmp_path)
    state.write({"cache": {"update-available": NEW}})
    assert state.read() == {"cache": {"update-available": NEW}}
    assert oct((tmp_path / "announced.json").stat().st_mode & 0o777) == oct(0o600)
    (tmp_path / "announced.json").write_text("[not json")
    assert state.read() == {}


# -- config ---------------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> configuration.Config:
    path = tmp_path / "dw.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return configuration.load(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(configuration.ConfigError) as caught:
        load(tmp_path, text)
    return [str(p) for p in caught.value.problems]


def test_notify_defaults(tmp_path: Path) -> None:
    """Without `notify:` nothing is sent; with only URLs, the default events and a 10 s timeout apply."""
    assert load(tmp_path, "services: {}\n").notify is None
    cfg = load(tmp_path, 'notify: {urls: ["json://127.0.0.1:9/hook"]}\nservices: {}\n')
    assert cfg.notify is not None
    assert cfg.notify.events == DEFAULT
    assert cfg.notify.timeout == timedelta(seconds=10)
    assert cfg.notify.targets == ("json://127.0.0.1:9/hook",)


def test_notify_problems_are_located(tmp_path: Path) -> None:
    """An unknown event, a bad timeout and an unknown key are FILE:LINE:COL problems."""
    found = problems(
        tmp_path,
        """
        notify:
          urls: ["json://127.0.0.1:9/hook"]
          events: [upgraded, restarted]
          timeout: 0s
          extra: 1
        services: {}
        """,
    )
    path = tmp_path / "dw.yaml"
    assert found[0].startswith(f"{path}:3:22: must be 'upgraded' or")
    assert found[1] == f"{path}:4:12: must be longer than 0s"
    assert found[2] == f"{path}:5:3: unknown key 'extra'"
    assert len(found) == 3


def test_bad_apprise_url_is_located_without_its_secret(tmp_path: Path) -> None:
    """A URL Apprise cannot use is a problem at its place in the list, reported with the file's other
    problems, and the message never repeats the URL (it may hold a secret)."""
    found = problems(
        tmp_path,
        """
        notify:
          urls: ["json://127.0.0.1:9/hook", "nosuch://user:hunter2@host"]
        services:
          web: {depends_on: [nothere]}
        """,
    )
    path = tmp_path / "dw.yaml"
    assert found == [
        f"{path}:2:37: not a URL Apprise can send to (scheme 'nosuch'; see Apprise's list of services)",
        f"{path}:4:22: depends_on names 'nothere', which is not a service in this file",
    ]


def test_notify_needs_a_url(tmp_path: Path) -> None:
    """A `notify:` without any URL is a problem at the key, not a silent no-op."""
    assert problems(tmp_path, "notify: {events: [gc]}\nservices: {}\n") == [
        f"{tmp_path / 'dw.yaml'}:1:1: notify needs a URL: set `urls` or `urls_file`"
    ]


def test_urls_file_is_read_with_comments_and_its_bad_lines_located(tmp_path: Path) -> None:
    """`urls_file` adds one URL per line (comments and blank lines skipped); a bad URL is reported at
    its own line and column in that file."""
    urls = tmp_path / "urls"
    urls.write_text("# the team's webhook\n\njson://127.0.0.1:9/a\n   nosuch://secret@x\n")
    urls.chmod(0o600)
    text = f'notify:\n  urls: ["json://127.0.0.1:9/b"]\n  urls_file: {urls}\nservices: {{}}\n'
    assert problems(tmp_path, text) == [
        f"{urls}:4:4: not a URL Apprise can send to (scheme 'nosuch'; see Apprise's list of services)"
    ]
    urls.write_text("# the team's webhook\n\njson://127.0.0.1:9/a\n")
    cfg = load(tmp_path, text)
    assert cfg.notify is not None
    assert cfg.notify.targets == ("json://127.0.0.1:9/b", "json://127.0.0.1:9/a")


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_urls_file_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A `urls_file` that group or others can write is refused at the `urls_file` value, as state_dir is."""
    urls = tmp_path / "urls"
    urls.write_text("json://127.0.0.1:9/a\n")
    urls.chmod(mode)
    found = problems(tmp_path, f"notify:\n  urls_file: {urls}\nservices: {{}}\n")
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'dw.yaml'}:2:14: urls_file: refused: ")
    assert "writable by its group or by others" in found[0]


def test_urls_file_symlink_and_missing_file_are_refused(tmp_path: Path) -> None:
    """A `urls_file` that is a symlink, or does not exist, is a located problem, never a traceback."""
    target = tmp_path / "real"
    target.write_text("json://127.0.0.1:9/a\n")
    os.symlink(target, tmp_path / "link")
    for name in ("link", "missing"):
        found = problems(tmp_path, f"notify:\n  urls_file: {tmp_path / name}\nservices: {{}}\n")
        assert len(found) == 1
        assert re.match(rf"{re.escape(str(tmp_path))}/dw.yaml:2:14: urls_file: ", found[0])


def test_example_notify_block_is_valid(tmp_path: Path) -> None:
    """The commented `notify:` block of config/dockwarden.yaml validates once uncommented."""
    example = (ROOT / "config" / "dockwarden.yaml").read_text()
    block = re.search(r"^# notify:\n(?:#   .*\n)+", example, re.MULTILINE)
    assert block is not None, "config/dockwarden.yaml has no commented `notify:` block"
    text = re.sub(r"^# ", "", block.group(0), flags=re.MULTILINE)
    text = re.sub(r"^\s*urls_file:.*\n", "", text, flags=re.MULTILINE)  # a path on the documented host
    cfg = load(tmp_path, text + "services: {}\n")
    assert cfg.notify is not None
    assert cfg.notify.targets


def test_url_problem_names_only_the_scheme() -> None:
    """url_problem accepts Apprise's URLs and, for others, says why without the rest of the URL."""
    assert (
        delivery.url_problem("mailto://127.0.0.1:25?smtp=127.0.0.1&from=d@b.invalid&to=a@b.invalid") is None
    )
    assert delivery.url_problem("no scheme at all") == "not an Apprise URL (SCHEME://...)"


def test_url_problems_asks_the_sender_child() -> None:
    """url_problems checks every URL in one child process and answers one result per URL, in order."""
    found = notifications.url_problems(["json://127.0.0.1:9/a", "nosuch://x", "json://127.0.0.1:9/b"])
    assert found[0] is None
    assert found[1] is not None
    assert found[2] is None
    assert notifications.url_problems([]) == []


def test_sender_child_that_cannot_start_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender that cannot run makes url_problems raise SenderError and deliver log notify.failed and
    return False, never a traceback."""
    monkeypatch.setattr(notifications, "SENDER", ("/nonexistent/python", "-m", "dockwarden.delivery"))
    with pytest.raises(notifications.SenderError, match="cannot check the notify URLs"):
        notifications.url_problems(["json://127.0.0.1:9/a"])
    notify = configuration.Notify(urls=("json://user:secret@127.0.0.1:9/a",))
    assert not notifications.deliver(notify, notifications.trial_message("h"))
