"""The API's WSGI application over a recording backend: tokens, cookies, bodies, errors (no daemon)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from dockwarden import api

TOKEN = "t0ken-abc"


@dataclass
class Recorder:
    """A backend that answers fixed bodies and records what it was asked."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    refuse: Exception | None = None
    healthy: bool = True

    def status(self) -> api.Answer:
        self.calls.append(("status",))
        return api.Answer(body='[{"service": "web"}]')

    def history(self, service: str | None, limit: int) -> api.Answer:
        self.calls.append(("history", service, limit))
        return api.Answer(body="[]")

    def update(self, services: list[str]) -> api.Answer:
        self.calls.append(("update", services))
        if self.refuse is not None:
            raise self.refuse
        return api.Answer(body='[{"result": "rolled-back"}]', ok=False)

    def rollback(self, service: str, to: str | None) -> api.Answer:
        self.calls.append(("rollback", service, to))
        return api.Answer(body='[{"result": "reverted"}]')

    def health(self) -> tuple[bool, str]:
        return self.healthy, "ok" if self.healthy else "stuck in check cycle for 99 s"

    def metrics(self) -> tuple[bytes, str]:
        return b"# metrics\n", "text/plain; version=1.0.0"

    def page(self) -> str:
        return "<p>the page</p>"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: api.App,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    token: str | None = TOKEN,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Reply:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    for key, value in (headers or {}).items():
        environ[f"HTTP_{key.upper().replace('-', '_')}"] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], _exc: Any = None) -> Any:
        seen["status"], seen["headers"] = int(status.split(maxsplit=1)[0]), dict(headers)
        return lambda _data: None

    out = b"".join(app(environ, start_response))
    return Reply(seen["status"], seen["headers"], out)


@pytest.fixture
def backend() -> Recorder:
    return Recorder()


@pytest.fixture
def app(backend: Recorder) -> api.App:
    return api.App(backend, TOKEN)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/status"), ("GET", "/v1/history"), ("POST", "/v1/update"), ("POST", "/v1/rollback")],
)
@pytest.mark.parametrize("token", [None, "", "t0ken-ab", "t0ken-abcd", "Basic " + TOKEN])
def test_v1_needs_the_bearer_token_and_a_refusal_tells_nothing(
    app: api.App, backend: Recorder, method: str, path: str, token: str | None
) -> None:
    """Without the exact token every /v1 endpoint answers 401 with a fixed message; the backend is not
    asked."""
    reply = call(app, method, path, token=token, body=b'{"service": "web"}')
    assert (reply.status, reply.json()) == (401, {"error": "a valid bearer token is required"})
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert backend.calls == []


def test_healthz_and_metrics_need_no_token(app: api.App, backend: Recorder) -> None:
    """A probe and a scraper get /healthz and /metrics without the token; /healthz is 503 when stuck."""
    assert call(app, "GET", "/healthz", token=None).status == 200
    metrics = call(app, "GET", "/metrics", token=None)
    assert (metrics.status, metrics.body, metrics.headers["Content-Type"]) == (
        200,
        b"# metrics\n",
        "text/plain; version=1.0.0",
    )
    backend.healthy = False
    stuck = call(app, "GET", "/healthz", token=None)
    assert (stuck.status, stuck.body) == (503, b"stuck in check cycle for 99 s\n")


def test_update_passes_the_services_and_a_failed_outcome_is_a_422(app: api.App, backend: Recorder) -> None:
    """POST /v1/update hands the named services to the backend and answers its JSON; a failure is HTTP 422."""
    reply = call(app, "POST", "/v1/update", body=b'{"services": ["web", "db"]}')
    assert (reply.status, reply.json()) == (422, [{"result": "rolled-back"}])
    assert call(app, "POST", "/v1/update").status == 422  # no body: every service
    assert backend.calls == [("update", ["web", "db"]), ("update", [])]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "the body is not valid JSON"),
        (b"\xff\xfe", "the body is not valid JSON"),
        (b"[]", "the body must be a JSON object"),
        (b'{"services": "web"}', '"services" must be a list of service names'),
        (b'{"services": [1]}', '"services" must be a list of service names'),
        (b'{"service": ["web"]}', "unknown key(s) ['service']; allowed: ['services']"),
    ],
)
def test_bad_update_bodies_are_400s_that_say_why(
    app: api.App, backend: Recorder, body: bytes, message: str
) -> None:
    """A body that is not a JSON object of known keys with the right types is refused before anything runs."""
    reply = call(app, "POST", "/v1/update", body=body)
    assert reply.status == 400
    assert reply.json()["error"].startswith(message)
    assert backend.calls == []


def test_bodies_are_bounded(app: api.App, backend: Recorder) -> None:
    """A body over MAX_BODY bytes is a 413 and is not read."""
    reply = call(app, "POST", "/v1/update", body=b" " * (api.MAX_BODY + 1))
    assert reply.status == 413
    assert backend.calls == []


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (api.Busy("an update cycle or rollback is running"), 409),
        (api.UnknownService("no such service: x"), 404),
        (api.Stopping("dockwarden is stopping"), 503),
        (ValueError("'zz' is not a digest"), 400),
        (RuntimeError("boom"), 500),
    ],
)
def test_backend_refusals_map_to_statuses(
    app: api.App, backend: Recorder, refusal: Exception, status: int
) -> None:
    """Busy is a 409 with Retry-After, an unknown service 404, stopping 503, bad values 400, a bug 500."""
    backend.refuse = refusal
    reply = call(app, "POST", "/v1/update")
    assert (reply.status, reply.json()) == (status, {"error": str(refusal)})
    assert ("Retry-After" in reply.headers) == (status == 409)


def test_rollback_and_history_take_their_parameters(app: api.App, backend: Recorder) -> None:
    """Rollback needs a service (and takes `to`); history reads service and limit from the query."""
    assert call(app, "POST", "/v1/rollback", body=b'{"service": "web", "to": "sha256:ab"}').status == 200
    assert call(app, "POST", "/v1/rollback", body=b"{}").status == 400
    assert call(app, "POST", "/v1/rollback", body=b'{"service": "web", "to": 5}').status == 400
    assert call(app, "GET", "/v1/history", query="service=web&limit=3").status == 200
    assert call(app, "GET", "/v1/history", query="limit=x").status == 400
    assert backend.calls == [("rollback", "web", "sha256:ab"), ("history", "web", 3)]


def test_unknown_paths_and_methods(app: api.App) -> None:
    """An unknown path is a 404; a known one with the wrong method a 405 naming the right one."""
    assert call(app, "GET", "/v2/status").status == 404
    wrong = call(app, "DELETE", "/v1/status")
    assert (wrong.status, wrong.headers["Allow"]) == (405, "GET")


def test_the_page_needs_a_sign_in_and_the_cookie_opens_only_the_page(app: api.App) -> None:
    """GET / shows the login form until a correct token is posted; the cookie it sets is not the token,
    opens the page, and is refused by /v1."""
    form = call(app, "GET", "/", token=None)
    assert form.status == 401
    assert b'action="/login"' in form.body
    wrong = call(app, "POST", "/login", token=None, body=b"token=nope")
    assert (wrong.status, b"Wrong token." in wrong.body) == (401, True)
    assert "Set-Cookie" not in wrong.headers
    signed = call(app, "POST", "/login", token=None, body=f"token={TOKEN}".encode())
    assert (signed.status, signed.headers["Location"]) == (303, "/")
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    value = cookie.split(";")[0].partition("=")[2]
    assert value == api.session_cookie(TOKEN)
    assert TOKEN not in value
    jar = {"Cookie": f"other=1; {api.COOKIE}={value}"}
    page = call(app, "GET", "/", token=None, headers=jar)
    assert (page.status, page.body) == (200, b"<p>the page</p>")
    assert call(app, "GET", "/v1/status", token=None, headers=jar).status == 401
    forged = {"Cookie": f"{api.COOKIE}={api.session_cookie('other')}"}
    assert call(app, "GET", "/", token=None, headers=forged).status == 401
    assert call(app, "GET", "/", token=TOKEN).status == 200


@pytest.mark.parametrize("text", ["", "  \n", "two words", "caf\u00e9"])
def test_a_token_must_be_one_printable_ascii_word(tmp_path: Any, text: str) -> None:
    """read_token refuses an empty token, spaces inside, and what a header cannot carry."""
    path = tmp_path / "token"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="one word of printable ASCII"):
        api.read_token(path)


def test_a_token_file_newline_is_not_part_of_the_token(tmp_path: Any) -> None:
    """The trailing newline an editor adds is stripped."""
    path = tmp_path / "token"
    path.write_text("abc123\n")
    assert api.read_token(path) == "abc123"
