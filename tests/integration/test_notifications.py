"""Notifications end to end: real upgrades on Engine 20.10, delivered by Apprise to a JSON webhook and an
SMTP server on 127.0.0.1, and receivers that refuse or hang."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from dockwarden import config as configuration
from dockwarden import gc, notifications
from dockwarden.report import short_digest
from tests.integration.helpers import cli, spawn, wait_for_text
from tests.integration.upgrade_lab import Side, config, push_version, update
from tests.support.receivers import JsonWebhook, SmtpReceiver, free_port
from tests.support.registry import Registry

HOST = socket.gethostname()
CRASH = ["sh", "-c", "exit 3"]


@pytest.fixture
def webhook() -> Iterator[JsonWebhook]:
    receiver = JsonWebhook()
    yield receiver
    receiver.stop()


@pytest.fixture
def hanging() -> Iterator[JsonWebhook]:
    receiver = JsonWebhook(hang=True)
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    yield receiver
    receiver.stop()


def notify_block(*urls: str, events: str | None = None, timeout: str = "10s") -> str:
    lines = ["notify:", f"  urls: {json.dumps(list(urls))}", f"  timeout: {timeout}"]
    if events:
        lines.append(f"  events: {events}")
    return "\n".join(lines)


def mail_text(message: Message) -> str:
    """The plain-text body of a mail Apprise sent (a part of a multipart one, or the whole)."""
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError(f"no text/plain part in {message}")


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.engine
def test_upgrade_and_rollback_each_send_one_message_and_a_quiet_cycle_none(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path, webhook: JsonWebhook, smtp: SmtpReceiver
) -> None:
    """A real upgrade sends exactly one message to the webhook and one mail, naming the service and its
    digests; a cycle with nothing new sends nothing; a real rollback sends one more each, with the step
    that failed and the cause."""
    name, _port, side = web
    cfg = config(tmp_path, {"web": {"container": name}}, extra=notify_block(webhook.url(), smtp.url()))

    _, _, new = push_version(side, registry, "app")
    code, rows, err = update(cfg)
    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    line = f"web (container {name}): upgraded {short_digest(rows[0]['from_digest'])} → {short_digest(new)}"
    assert len(webhook.received) == 1
    assert webhook.received[0]["title"] == f"dockwarden on {HOST}: 1 upgraded"
    assert webhook.received[0]["message"] == line
    assert webhook.received[0]["type"] == "info"
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["Subject"] == f"dockwarden on {HOST}: 1 upgraded"
    assert line in mail_text(smtp.messages[0])
    assert any(e["event"] == "notify.sent" for e in events(err))

    code, rows, err = update(cfg)
    assert (code, rows[0]["result"]) == (0, "up-to-date"), err
    assert (len(webhook.received), len(smtp.messages)) == (1, 1)

    _, _, bad = push_version(side, registry, "app", cmd=CRASH)
    code, rows, err = update(cfg)
    assert (code, rows[0]["result"], rows[0]["step"]) == (1, "rolled-back", "gate"), err
    assert (len(webhook.received), len(smtp.messages)) == (2, 2)
    rolled = webhook.received[1]
    assert rolled["title"] == f"dockwarden on {HOST}: 1 rolled-back"
    assert rolled["type"] == "failure"
    assert rolled["message"].startswith(
        f"web (container {name}): rolled-back {short_digest(new)} → {short_digest(bad)}; at gate: "
    )
    assert rolled["message"].endswith("(cause: container)")
    assert rows[0]["error"] in rolled["message"]
    assert rolled["message"] in mail_text(smtp.messages[1])


@pytest.mark.engine
def test_update_available_is_sent_once_per_digest_over_cycles(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path, webhook: JsonWebhook
) -> None:
    """A monitor-only service whose tag moved is announced in the first of two cycles only; a newer push
    is announced again."""
    name, _port, side = web
    block = notify_block(webhook.url(), events="[update-available]")
    cfg = config(tmp_path, {"web": {"container": name, "update": "monitor"}}, extra=block)

    _, _, first = push_version(side, registry, "app")
    for _ in range(2):
        code, rows, err = update(cfg)
        assert (code, rows[0]["result"], rows[0]["error"]) == (0, "skipped", "update: monitor"), err
    assert len(webhook.received) == 1
    assert webhook.received[0]["title"] == f"dockwarden on {HOST}: 1 update-available"
    assert webhook.received[0]["message"].endswith(f"→ {short_digest(first)}")
    announced = json.loads((tmp_path / "state" / "announced.json").read_text())
    assert announced == {"web": {"update-available": first}}

    _, _, second = push_version(side, registry, "app")
    code, _, err = update(cfg)
    assert code == 0, err
    assert len(webhook.received) == 2
    assert webhook.received[1]["message"].endswith(f"→ {short_digest(second)}")


@pytest.mark.engine
def test_refused_receiver_is_logged_and_the_upgrade_still_succeeds(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path, webhook: JsonWebhook
) -> None:
    """A receiver that refuses the connection is logged as notify.failed (its URL masked) while the
    other receiver gets the message, and the upgrade's result and exit code are unchanged."""
    name, _port, side = web
    refused = f"json://user:hunter2@127.0.0.1:{free_port()}/hook"
    cfg = config(tmp_path, {"web": {"container": name}}, extra=notify_block(refused, webhook.url()))

    push_version(side, registry, "app")
    code, rows, err = update(cfg)
    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    failed = [e for e in events(err) if e["event"] == "notify.failed"]
    assert len(failed) == 1
    assert "refused it or failed" in str(failed[0]["reason"])
    assert "hunter2" not in err
    assert any("127.0.0.1" in str(t) for t in failed[0]["targets"])  # type: ignore[attr-defined]
    assert len(webhook.received) == 1


@pytest.mark.engine
def test_hanging_receiver_does_not_hold_the_daemon(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path, hanging: JsonWebhook
) -> None:
    """`dockwarden run` gives up on a receiver that accepted the request and never answers after the
    timeout, logs notify.failed, and still stops at once on SIGTERM while the receiver holds the request."""
    name, _port, side = web
    block = notify_block(hanging.url(), events="[update-available]", timeout="2s")
    cfg = config(tmp_path, {"web": {"container": name, "update": "monitor"}}, extra=block)
    push_version(side, registry, "app")

    log = tmp_path / "daemon.log"
    proc = spawn("run", cfg, log)
    try:
        wait_for_text(log, '"notify.failed"', timeout=60)
        assert hanging.held  # the receiver still holds the request: the cycle did not wait for it
        assert "no answer within 2 s" in log.read_text()
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - stop_at < 10
        assert hanging.held
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "state" / "announced.json").exists()  # not delivered, so not remembered


def test_notify_test_delivers_to_webhook_and_mail(
    tmp_path: Path, webhook: JsonWebhook, smtp: SmtpReceiver
) -> None:
    """`dockwarden notify-test` sends one test message to each URL and exits 0."""
    cfg = tmp_path / "dw.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\n{notify_block(webhook.url(), smtp.url())}\nservices: {{}}\n"
    )
    proc = cli("notify-test", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "sent a test notification to 2 URL(s)" in proc.stdout
    assert [m["title"] for m in webhook.received] == [f"dockwarden on {HOST}: test notification"]
    assert [m["Subject"] for m in smtp.messages] == [f"dockwarden on {HOST}: test notification"]


def test_notify_test_fails_clearly_when_delivery_fails(tmp_path: Path) -> None:
    """`dockwarden notify-test` against a port nobody listens on exits 1 with a one-line reason, no
    traceback; without a `notify:` section it is a usage error."""
    cfg = tmp_path / "dw.yaml"
    cfg.write_text(f"{notify_block(f'json://127.0.0.1:{free_port()}/x', timeout='2s')}\nservices: {{}}\n")
    proc = cli("notify-test", "-c", str(cfg))
    assert proc.returncode == 1
    assert "dockwarden: the test notification was not delivered" in proc.stderr
    assert "Traceback" not in proc.stderr
    cfg.write_text("services: {}\n")
    proc = cli("notify-test", "-c", str(cfg))
    assert proc.returncode == 2
    assert "has no `notify:` section" in proc.stderr


def test_gc_result_is_sent_only_with_the_gc_event(tmp_path: Path, webhook: JsonWebhook) -> None:
    """A garbage collection that removed something is delivered when `gc` is among the events, and not
    otherwise (the default events)."""
    cfg = tmp_path / "dw.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path}\n{notify_block(webhook.url(), events='[gc, error]')}\nservices: {{}}\n"
    )
    removed = gc.Removal(kind=gc.Kind.IMAGE, target="sha256:1", name="app:old", reason="dangling", done=True)
    result = gc.Result(removals=[removed], reclaimed=2_000_000)
    notifications.gc_finished(configuration.load(cfg), result)
    assert [m["title"] for m in webhook.received] == [f"dockwarden on {HOST}: gc removed 1, reclaimed 2.0 MB"]
    assert webhook.received[0]["message"] == "removed image app:old: dangling"
    cfg.write_text(f"state_dir: {tmp_path}\n{notify_block(webhook.url())}\nservices: {{}}\n")
    notifications.gc_finished(configuration.load(cfg), result)
    assert len(webhook.received) == 1
