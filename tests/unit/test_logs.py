"""Logging: one JSON renderer for our events and the libraries', and no secrets in any line."""

from __future__ import annotations

import io
import json
import logging

import structlog

from dockwarden import logs


def test_json_lines_for_ours_and_stdlib_loggers() -> None:
    """structlog events and stdlib records (docker, urllib3, apscheduler) come out as the same JSON schema."""
    stream = io.StringIO()
    logs.configure(stream, json=True)
    structlog.get_logger("dockwarden.check").info("service.checked", service="web", status="up-to-date")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by %s", "0:00:02")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "service.checked"
    assert lines[0]["service"] == "web"
    assert lines[1]["event"] == "Run time of job was missed by 0:00:02"
    assert lines[1]["logger"] == "apscheduler.scheduler"
    for line in lines:
        assert {"event", "level", "logger", "timestamp"} <= set(line)
        assert line["timestamp"].endswith("Z")


def test_library_info_chatter_is_kept_out() -> None:
    """urllib3's per-connection INFO/DEBUG lines do not reach the log."""
    stream = io.StringIO()
    logs.configure(stream, json=True)
    logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection (1): registry")
    assert stream.getvalue() == ""


def test_secrets_are_masked_in_fields_and_text() -> None:
    """Secret-named fields, Basic/Bearer values, URL passwords, `secret:` values and JWTs are redacted,
    whoever logged them."""
    stream = io.StringIO()
    logs.configure(stream, json=True)
    log = structlog.get_logger("test")
    log.info("login", password="hunter2-secret", auth="dXNlcjpwYXNz", registry="r.example")
    logs.configure(stream, json=True)
    logging.getLogger("docker.api").warning("header Authorization: Bearer abcdefghijklmnop1234 sent")
    logging.getLogger("urllib3").warning("retrying https://bob:hunter2@r.example/v2/")
    log.warning(
        "helper.said", error="lease eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl secret: s3cr3t-x"
    )
    text = stream.getvalue()
    for secret in ("hunter2", "dXNlcjpwYXNz", "abcdefghijklmnop1234", "eyJzdWIiOiJhIn0", "s3cr3t-x"):
        assert secret not in text
    assert "r.example" in text


def test_console_rendering_for_a_terminal() -> None:
    """With json=False the output is a readable line, not JSON."""
    stream = io.StringIO()
    logs.configure(stream, json=False)
    structlog.get_logger("x").info("cycle.finished", checked=3)
    line = stream.getvalue()
    assert "cycle.finished" in line
    assert "checked=3" in line
    assert not line.startswith("{")
