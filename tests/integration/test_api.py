"""The HTTP API of a real `dockwarden run` on Engine 20.10: tokens, the CLI's JSON, the deploy webhook,
rollback, metrics checked by promtool, the listener following SIGHUP and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.conftest import Deploy
from tests.integration.apilab import (
    TOKEN,
    Response,
    api_section,
    daemon,
    listening,
    promtool_check,
    request,
    wait_event,
    wait_healthy,
)
from tests.integration.helpers import cli, write_config
from tests.integration.upgrade_lab import Side, config, free_port, push_version, wait_serving
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


def _json_body(data: object) -> bytes:
    return json.dumps(data).encode()


def _refusals(listen: str, service: str) -> None:
    """Every endpoint but /healthz and /metrics refuses a missing or wrong token, saying nothing more."""
    for method, path in [
        ("GET", "/v1/status"),
        ("GET", "/v1/history"),
        ("POST", "/v1/update"),
        ("POST", "/v1/rollback"),
    ]:
        for token in (None, "wrong", TOKEN + "x"):
            answer = request(listen, method, path, token=token, body=b"{}")
            assert answer.status == 401, (method, path, token, answer)
            assert service.encode() not in answer.body
            assert answer.headers["www-authenticate"] == "Bearer"
    page = request(listen, "GET", "/", token=None)
    assert page.status == 401
    assert b'action="/login"' in page.body
    assert service.encode() not in page.body


def _same_as_cli(listen: str, cfg: Path) -> None:
    """/v1/status and /v1/history answer what `status --json` and `history --json` print."""
    status = request(listen, "GET", "/v1/status")
    assert status.status == 200
    assert status.headers["content-type"] == "application/json"
    assert status.body.decode() == cli("status", "-c", str(cfg), "--json").stdout
    history = request(listen, "GET", "/v1/history?service=web&limit=2")
    assert history.status == 200
    assert history.body.decode() == cli("history", "-c", str(cfg), "web", "--limit", "2", "--json").stdout
    everything = request(listen, "GET", "/v1/history")
    assert everything.body.decode() == cli("history", "-c", str(cfg), "--json").stdout


def _bad_requests(listen: str) -> None:
    """Bad bodies are 400s with a reason; unknown services 404; oversized bodies 413; wrong methods 405."""
    bad = request(listen, "POST", "/v1/update", body=b"{not json")
    assert (bad.status, "not valid JSON" in bad.json()["error"]) == (400, True)
    assert request(listen, "POST", "/v1/update", body=b"[1]").status == 400
    assert request(listen, "POST", "/v1/update", body=_json_body({"service": ["web"]})).status == 400
    unknown = request(listen, "POST", "/v1/update", body=_json_body({"services": ["nope"]}))
    assert (unknown.status, unknown.json()) == (404, {"error": "no such service: nope"})
    assert request(listen, "GET", "/v1/history?service=nope").status == 404
    assert request(listen, "GET", "/v1/history?limit=-1").status == 400
    assert (
        request(listen, "POST", "/v1/rollback", body=_json_body({"service": "web", "to": "zz"})).status == 400
    )
    assert request(listen, "POST", "/v1/update", body=b"x" * (65 * 1024)).status == 413
    wrong = request(listen, "GET", "/v1/update")
    assert (wrong.status, wrong.headers["allow"]) == (405, "POST")


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{wanted} not in the metrics:\n{text}")


def _metrics_checked(listen: str) -> str:
    answer = request(listen, "GET", "/metrics", token=None)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    checked = promtool_check(answer.body)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return answer.body.decode()


def test_api_serves_status_history_update_rollback_and_metrics(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """With `api:` set, the daemon refuses requests without the token, answers the CLI's JSON, upgrades a
    service whose tag moved on POST /v1/update, rolls it back on POST /v1/rollback, exposes metrics that
    promtool accepts, moves the listener on SIGHUP and removes its socket on SIGTERM."""
    name, port, side = web
    first_marker = wait_serving(port)
    listen = f"127.0.0.1:{free_port()}"
    cfg = config(tmp_path, {"web": {"container": name}}, side, extra=api_section(listen, tmp_path / "token"))
    cfg.write_text(cfg.read_text().replace("interval: 1m", "interval: 1h"))
    log = tmp_path / "daemon.log"
    with daemon(cfg, log) as proc:
        wait_healthy(listen)
        wait_event(log, "update.cycle_finished")  # the first scheduled cycle
        _refusals(listen, "web")
        _same_as_cli(listen, cfg)
        _bad_requests(listen)

        _, marker, digest = push_version(side, registry, "app")
        answer = request(listen, "POST", "/v1/update", body=_json_body({"services": ["web"]}))
        assert answer.status == 200, answer
        rows = answer.json()
        assert [(r["service"], r["to_digest"], r["result"]) for r in rows] == [("web", digest, "upgraded")]
        assert wait_serving(port) == marker
        again = request(listen, "POST", "/v1/update")  # no body: every service, as the scheduled cycle
        assert [r["result"] for r in again.json()] == ["up-to-date"]

        back = request(listen, "POST", "/v1/rollback", body=_json_body({"service": "web"}))
        assert back.status == 200, back
        assert [(r["service"], r["result"]) for r in back.json()] == [("web", "reverted")]
        assert wait_serving(port) == first_marker
        _same_as_cli(listen, cfg)

        text = _metrics_checked(listen)
        assert _metric(text, "dockwarden_upgrades_total", service="web", result="upgraded") == 1
        assert (
            _metric(text, "dockwarden_rollbacks_total", service="web", result="reverted", trigger="request")
            == 1
        )
        assert _metric(text, "dockwarden_checks_total", service="web", result="up-to-date") >= 2
        assert _metric(text, "dockwarden_checks_total", service="web", result="update-available") == 1
        assert _metric(text, "dockwarden_retained_versions", service="web") >= 1
        assert _metric(text, "dockwarden_update_available", service="web") == 0
        assert _metric(text, "dockwarden_cycle_duration_seconds_count") == 3
        assert _metric(text, "dockwarden_last_successful_cycle_timestamp_seconds") > 1.7e9

        moved = f"unix:{tmp_path / 'api.sock'}"
        cfg.write_text(cfg.read_text().replace(f'listen: "{listen}"', f'listen: "{moved}"'))
        proc.send_signal(signal.SIGHUP)
        wait_event(log, "api.listening", count=2)
        assert not listening(listen)
        with socket.socket() as sock:  # the port is free again
            host, _, number = listen.rpartition(":")
            sock.bind((host, int(number)))
        assert (tmp_path / "api.sock").stat().st_mode & 0o777 == 0o600
        assert request(moved, "GET", "/v1/status").status == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert not (tmp_path / "api.sock").exists()
    stopped = [e["event"] for e in (json.loads(line) for line in log.read_text().splitlines())]
    assert "api.stopped" in stopped


def test_a_second_update_while_one_runs_is_refused_with_409(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """While an update holds the cycle (its gate waits a 15 s stability window), a second POST /v1/update
    waits 10 s, then gets 409 with Retry-After; the first one answers its upgrade."""
    name, port, side = web
    listen = f"127.0.0.1:{free_port()}"
    cfg = config(tmp_path, {"web": {"container": name}}, side, extra=api_section(listen, tmp_path / "token"))
    cfg.write_text(
        cfg.read_text()
        .replace("interval: 1m", "interval: 1h")
        .replace("stability_window: 1s", "stability_window: 15s")
    )
    log = tmp_path / "daemon.log"
    with daemon(cfg, log):
        wait_healthy(listen)
        wait_event(log, "update.cycle_finished")
        _, marker, _digest = push_version(side, registry, "app")
        answers: dict[str, Response] = {}

        def first() -> None:
            answers["first"] = request(listen, "POST", "/v1/update", body=_json_body({"services": ["web"]}))

        thread = threading.Thread(target=first)
        thread.start()
        wait_event(log, "upgrade.started")
        second = request(listen, "POST", "/v1/update")
        thread.join(120)
        assert second.status == 409, second
        assert second.headers["retry-after"] == "10"
        assert "running" in second.json()["error"]
        assert answers["first"].status == 200
        assert [r["result"] for r in answers["first"].json()] == ["upgraded"]
        assert wait_serving(port) == marker
        assert request(listen, "GET", "/healthz", token=None).status == 200


def test_a_taken_address_leaves_the_daemon_running_and_a_reload_retries(
    deploy: Deploy, registry: Registry, tmp_path: Path
) -> None:
    """When the API's port is taken the daemon logs api.failed and keeps checking; after the port is freed,
    SIGHUP starts the listener."""
    name, _tag, _image_id, _digest = deploy(registry)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    listen = f"127.0.0.1:{holder.getsockname()[1]}"
    cfg = write_config(
        tmp_path / "dw.yaml", {"web": {"container": name}}, extra=api_section(listen, tmp_path / "t")
    )
    log = tmp_path / "daemon.log"
    with daemon(cfg, log) as proc:
        failed = wait_event(log, "api.failed")
        assert failed["listen"] == listen
        assert "in use" in failed["error"]
        wait_event(log, "update.cycle_finished")
        holder.close()
        proc.send_signal(signal.SIGHUP)
        wait_event(log, "api.listening")
        wait_healthy(listen)
