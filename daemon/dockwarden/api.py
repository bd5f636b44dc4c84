"""The local HTTP API as a WSGI application: routing, authentication, request bodies and answers.

What each endpoint does is the `Backend`'s (the daemon's, `control.Control`); this module only speaks HTTP:

- `GET /healthz` and `GET /metrics` need no token (a probe and a scraper should not hold the secret);
  everything else needs `Authorization: Bearer TOKEN`, compared in constant time (`hmac.compare_digest`).
  A 401 says only that the token is missing or wrong.
- `GET /` (the status page) also accepts the cookie `POST /login` sets after a correct token: an HMAC of
  the token, HttpOnly and SameSite=Strict, so the token itself is never stored by the browser. The cookie
  opens the read-only page only: every `/v1/` request needs the header, so a cross-site form cannot make a
  signed-in browser start an update (no CSRF).
- Bodies are at most `MAX_BODY` bytes, JSON objects with known keys only; anything else is a 400 that says
  what is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

import structlog

from dockwarden import config

MAX_BODY = 64 * 1024  # bytes: a list of service names, or a login form
COOKIE = "dockwarden_session"
_COOKIE_PURPOSE = b"dockwarden status page session v1"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


class Busy(Exception):
    """Another update cycle or rollback holds the daemon's cycle lock past the wait's bound."""


class Stopping(Exception):
    """The daemon is stopping: no new update starts."""


class UnknownService(LookupError):
    """A request named a service that is not in the config."""


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What a backend call answers: the body and whether the operation succeeded (HTTP 200) or ran and
    failed (HTTP 422, as the CLI's exit code 1)."""

    body: str
    ok: bool = True


class Backend(Protocol):
    def status(self) -> Answer: ...
    def history(self, service: str | None, limit: int) -> Answer: ...
    def update(self, services: list[str]) -> Answer: ...
    def rollback(self, service: str, to: str | None) -> Answer: ...
    def health(self) -> tuple[bool, str]: ...
    def metrics(self) -> tuple[bytes, str]: ...
    def page(self) -> str: ...


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def read_token(path: Path) -> str:
    """The token in `path` (`config.read_token`: the one rule `validate` applies too). Raises OSError if it
    cannot be read, ValueError if it is unusable."""
    return config.read_token(path)


def session_cookie(token: str) -> str:
    """The cookie value the login sets for `token`: HMAC-SHA256 of a fixed purpose, hex."""
    return hmac.new(token.encode(), _COOKIE_PURPOSE, hashlib.sha256).hexdigest()


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode(), wanted.encode())


def _cookie(environ: WSGIEnvironment) -> str | None:
    for part in str(environ.get("HTTP_COOKIE", "")).split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _body(environ: WSGIEnvironment) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
    if length > MAX_BODY:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {MAX_BODY} bytes")
    return bytes(environ["wsgi.input"].read(length)) if length > 0 else b""


def json_object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` keys ({} for an empty body); HttpError 400 otherwise."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return data


def update_services(data: dict[str, Any]) -> list[str]:
    services = data.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise HttpError(HTTPStatus.BAD_REQUEST, '"services" must be a list of service names')
    return services


def rollback_request(data: dict[str, Any]) -> tuple[str, str | None]:
    service, to = data.get("service"), data.get("to")
    if not isinstance(service, str) or not service:
        raise HttpError(HTTPStatus.BAD_REQUEST, '"service" (a service name) is required')
    if to is not None and not isinstance(to, str):
        raise HttpError(HTTPStatus.BAD_REQUEST, '"to" must be a digest string or null')
    return service, to


def history_query(query: str) -> tuple[str | None, int]:
    params = parse_qs(query, keep_blank_values=True)
    service = (params.get("service") or [""])[-1] or None
    text = (params.get("limit") or ["0"])[-1] or "0"
    if not text.isdigit():
        raise HttpError(HTTPStatus.BAD_REQUEST, "limit must be 0 (all) or a positive whole number")
    return service, int(text)


Route = Callable[[WSGIEnvironment], tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]]


class App:
    """The WSGI application over `backend`, guarded by `token`."""

    def __init__(self, backend: Backend, token: str) -> None:
        self.backend = backend
        self.token = token
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/"): self._page,
            ("POST", "/login"): self._login,
            ("GET", "/v1/status"): self._status,
            ("GET", "/v1/history"): self._history,
            ("POST", "/v1/update"): self._update,
            ("POST", "/v1/rollback"): self._rollback,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method, path = str(environ.get("REQUEST_METHOD", "GET")), str(environ.get("PATH_INFO", "/"))
        try:
            route = self.routes.get((method, path))
            if route is None:
                allowed = sorted(m for m, p in self.routes if p == path)
                if allowed:
                    raise HttpError(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        f"use {', '.join(allowed)}",
                        [("Allow", ", ".join(allowed))],
                    )
                raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            if path.startswith("/v1/"):
                self._authorize(environ)
            status, content_type, body, headers = route(environ)
        except HttpError as err:
            status, content_type, headers = err.status, JSON_TYPE, err.headers
            body = json.dumps({"error": err.message}).encode()
        except Exception as exc:  # the engine went away, a bug: an answer, never a dropped connection
            structlog.get_logger("dockwarden.api").exception("api.failed", path=path, error=str(exc))
            status, content_type, headers = HTTPStatus.INTERNAL_SERVER_ERROR, JSON_TYPE, []
            body = json.dumps({"error": str(exc)}).encode()
        start_response(
            f"{status.value} {status.phrase}",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                *headers,
            ],
        )
        return [body]

    def _authorize(self, environ: WSGIEnvironment) -> None:
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not _same(given.strip(), self.token):
            raise HttpError(
                HTTPStatus.UNAUTHORIZED, "a valid bearer token is required", [("WWW-Authenticate", "Bearer")]
            )

    def _signed_in(self, environ: WSGIEnvironment) -> bool:
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.token):
            return True
        cookie = _cookie(environ)
        return cookie is not None and _same(cookie, session_cookie(self.token))

    def _healthz(self, _environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        healthy, text = self.backend.health()
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return status, TEXT_TYPE, f"{text}\n".encode(), []

    def _metrics(self, _environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        body, content_type = self.backend.metrics()
        return HTTPStatus.OK, content_type, body, []

    def _page(self, environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        from dockwarden import statuspage  # noqa: PLC0415 -- the page's code only when someone looks

        if not self._signed_in(environ):
            return HTTPStatus.UNAUTHORIZED, HTML_TYPE, statuspage.login().encode(), []
        return HTTPStatus.OK, HTML_TYPE, self.backend.page().encode(), []

    def _login(self, environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        from dockwarden import statuspage  # noqa: PLC0415 -- as for the page

        form = parse_qs(_body(environ).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[-1].strip()
        if not _same(given, self.token):
            return HTTPStatus.UNAUTHORIZED, HTML_TYPE, statuspage.login("Wrong token.").encode(), []
        cookie = f"{COOKIE}={session_cookie(self.token)}; Path=/; HttpOnly; SameSite=Strict"
        return HTTPStatus.SEE_OTHER, TEXT_TYPE, b"signed in\n", [("Set-Cookie", cookie), ("Location", "/")]

    def _status(self, _environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        return _json(self.backend.status())

    def _history(self, environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        service, limit = history_query(str(environ.get("QUERY_STRING", "")))
        return _json(_known(lambda: self.backend.history(service, limit)))

    def _update(self, environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        services = update_services(json_object(_body(environ), frozenset({"services"})))
        return _json(_known(lambda: self.backend.update(services)))

    def _rollback(self, environ: WSGIEnvironment) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
        service, to = rollback_request(json_object(_body(environ), frozenset({"service", "to"})))
        return _json(_known(lambda: self.backend.rollback(service, to)))


def _known(call: Callable[[], Answer]) -> Answer:
    """The backend's answer, with its refusals as HTTP errors."""
    try:
        return call()
    except UnknownService as exc:
        raise HttpError(HTTPStatus.NOT_FOUND, str(exc)) from None
    except ValueError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    except Busy as exc:
        raise HttpError(HTTPStatus.CONFLICT, str(exc), [("Retry-After", "10")]) from None
    except Stopping as exc:
        raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None


def _json(answer: Answer) -> tuple[HTTPStatus, str, bytes, list[tuple[str, str]]]:
    # Not a 5xx: curl's --retry would send the update again, and a failed digest is skipped the second time.
    status = HTTPStatus.OK if answer.ok else HTTPStatus.UNPROCESSABLE_ENTITY
    return status, JSON_TYPE, (answer.body + "\n").encode(), []
