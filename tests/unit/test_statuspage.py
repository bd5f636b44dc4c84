"""The status page's HTML: every field shown, everything escaped."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser

from dockwarden import statuspage
from dockwarden.engine import Health
from dockwarden.retention import Version
from dockwarden.skiplist import Entry, Skip
from dockwarden.status import ServiceStatus

EVIL = '<script>alert("x")</script>&'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _tags(page: str) -> list[str]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _status() -> ServiceStatus:
    return ServiceStatus(
        service="web",
        container=f"web-{EVIL}",
        state="running",
        health=Health.HEALTHY,
        image=f"127.0.0.1:5000/app:{EVIL}",
        running_digest="sha256:" + "b" * 64,
        registry_digest="sha256:" + "c" * 64,
        checked_at="2026-11-30T06:00:00+00:00",
        retained=[
            Version(
                reference="127.0.0.1:5000/app:dockwarden-web-20261130T060000Z",
                image_id="sha256:" + "d" * 64,
                retired_at=datetime(2026, 11, 30, tzinfo=UTC),
                digests=("sha256:" + "a" * 64,),
            )
        ],
        last_upgrade={
            "event": "upgrade",
            "result": "rolled-back",
            "from_digest": "sha256:" + "a" * 64,
            "to_digest": "sha256:" + "e" * 64,
            "step": "gate",
            "error": EVIL,
            "at": "2026-11-30T05:00:00+00:00",
        },
        skipped=Entry(
            skips=(Skip(digest="sha256:" + "e" * 64, reason=f"gate: {EVIL}", at="2026-11-30T05:00:01"),)
        ),
    )


def test_page_shows_every_field_of_a_service_and_the_timeline() -> None:
    """A card shows the state and health, the running and registry digests, the last upgrade with its
    failed step, the retained versions and the skipped digests with their reasons; the timeline lists
    entries."""
    entries = [
        {
            "event": "upgrade",
            "service": "web",
            "result": "rolled-back",
            "at": "2026-11-30T05:00:00",
            "error": "bad",
        },
        {"event": "checked", "service": "web", "status": "update-available", "at": "2026-11-30T04:59:00"},
    ]
    page = statuspage.render([_status()], entries, "2026-11-30 06:00:00Z")
    for shown in (
        "running",
        "healthy",
        "sha256:bbbbbbbbbbbb",
        "sha256:cccccccccccc",
        "rolled-back",
        "sha256:aaaaaaaaaaaa",
        "sha256:eeeeeeeeeeee",
        "dockwarden-web-20261130T060000Z",
        "2026-11-30T04:59:00",
        "update-available",
        'name="viewport"',
    ):
        assert shown in page, shown


def test_everything_from_outside_is_escaped() -> None:
    """Container names, image references, errors, skip reasons and history fields cannot add markup."""
    entries = [{"event": EVIL, "service": EVIL, "reason": EVIL, "error": EVIL, "at": EVIL}]
    page = statuspage.render([_status()], entries, EVIL)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "script" not in _tags(page)


def test_empty_config_and_history_say_so() -> None:
    """No services and no history are said in words, not an empty page."""
    page = statuspage.render([], [], "now")
    assert "No services configured." in page
    assert "No history yet." in page


def test_the_timeline_is_bounded() -> None:
    """Only the newest TIMELINE_LENGTH entries are shown."""
    entries = [{"event": "checked", "service": f"s{i}", "at": str(i)} for i in range(100)]
    page = statuspage.render([], entries, "now")
    assert page.count("<li>") == statuspage.TIMELINE_LENGTH


def test_login_form_escapes_its_message() -> None:
    """The login form posts the token to /login and escapes its message."""
    page = statuspage.login(EVIL)
    assert 'action="/login"' in page
    assert "<script>" not in page
