"""The `api:` section: where it listens, its token file's safety, and non-loopback addresses on purpose."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dockwarden import config as configuration
from tests.unit.test_config import problems_for


def _token(tmp_path: Path, mode: int = 0o600, text: str = "s3cret\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def _config(listen: str, token: Path, more: str = "") -> str:
    return f'services: {{}}\napi:\n  listen: "{listen}"\n  token_file: {token}\n{more}'


def test_api_is_off_unless_configured(tmp_path: Path) -> None:
    """A config without `api:` has no API."""
    path = tmp_path / "dw.yaml"
    path.write_text("services: {}\n")
    assert configuration.load(path).api is None


@pytest.mark.parametrize(
    ("listen", "host", "port", "unix"),
    [
        ("127.0.0.1:8420", "127.0.0.1", 8420, None),
        ("[::1]:9000", "::1", 9000, None),
        ("localhost:1", "localhost", 1, None),
        ("unix:/run/dockwarden/api.sock", "", 0, Path("/run/dockwarden/api.sock")),
    ],
)
def test_loopback_addresses_and_unix_sockets_load(
    tmp_path: Path, listen: str, host: str, port: int, unix: Path | None
) -> None:
    """A loopback TCP address (IPv4, bracketed IPv6, localhost) or a unix socket path loads as such."""
    path = tmp_path / "dw.yaml"
    path.write_text(_config(listen, _token(tmp_path)))
    api = configuration.load(path).api
    assert api is not None
    assert (api.host, api.port, api.unix_path, api.loopback) == (host, port, unix, True)


@pytest.mark.parametrize(
    ("mode", "text", "message"),
    [
        (0o640, "s3cret", "is open to group or others (mode 0640): chmod 600 it"),
        (0o604, "s3cret", "is open to group or others (mode 0604): chmod 600 it"),
        (0o600, "", "is empty"),
    ],
)
def test_a_token_file_others_can_read_or_an_empty_one_is_refused_at_its_line(
    tmp_path: Path, mode: int, text: str, message: str
) -> None:
    """The token is a secret: a file group or others can read, or an empty one, is a located problem."""
    token = _token(tmp_path, mode, text)
    assert problems_for(tmp_path, _config("127.0.0.1:8420", token)) == [
        f"4:15: token_file '{token}' {message}"
    ]


@pytest.mark.parametrize("text", ["two words", "\udcff\udcfe"])
def test_a_token_the_api_would_refuse_is_a_located_problem(tmp_path: Path, text: str) -> None:
    """A token that is not one word of printable ASCII fails `validate`, not only the daemon's listener."""
    token = tmp_path / "token"
    token.write_bytes(text.encode("utf-8", "surrogateescape"))
    token.chmod(0o600)
    assert problems_for(tmp_path, _config("127.0.0.1:8420", token)) == [
        f"4:15: token_file {token}: the token must be one word of printable ASCII"
    ]


def test_a_missing_token_file_is_a_located_problem(tmp_path: Path) -> None:
    """A token file that does not exist is reported at its key's value."""
    missing = tmp_path / "nope"
    assert problems_for(tmp_path, _config("127.0.0.1:8420", missing)) == [
        f"4:15: token_file '{missing}': No such file or directory"
    ]


def test_a_non_loopback_address_needs_allow_remote(tmp_path: Path) -> None:
    """0.0.0.0 or a host name is refused unless `allow_remote: true` says it is meant."""
    token = _token(tmp_path)
    for listen in ("0.0.0.0:8420", "example.invalid:8420"):
        [problem] = problems_for(tmp_path, _config(listen, token))
        assert problem.startswith(f"3:11: listen '{listen}' is not a loopback address")
        assert "allow_remote: true" in problem
    path = tmp_path / "dw.yaml"
    path.write_text(_config("0.0.0.0:8420", token, "  allow_remote: true\n"))
    api = configuration.load(path).api
    assert api is not None
    assert (api.loopback, api.allow_remote) == (False, True)


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ('listen: "8420"', "3:11: listen '8420' must be HOST:PORT (port 1-65535) or unix:/PATH"),
        (
            'listen: "127.0.0.1:0"',
            "3:11: listen '127.0.0.1:0' must be HOST:PORT (port 1-65535) or unix:/PATH",
        ),
        ('listen: "unix:api.sock"', "3:11: listen 'unix:api.sock': a unix socket needs an absolute path"),
        ("token_file: token", "4:15: 'token' must be an absolute path"),
        ("port: 1", "5:3: unknown key 'port'"),
    ],
)
def test_bad_api_values_are_located(tmp_path: Path, api: str, message: str) -> None:
    """Each malformed `api:` value is a FILE:LINE:COL problem saying what is expected."""
    token = _token(tmp_path)
    lines = ['listen: "127.0.0.1:8420"', f"token_file: {token}"]
    key = api.partition(":")[0]
    lines = [api if line.startswith(key) else line for line in lines]
    if key not in ("listen", "token_file"):
        lines.append(api)
    text = "services: {}\napi:\n" + textwrap.indent("\n".join(lines), "  ") + "\n"
    [problem] = problems_for(tmp_path, text)
    assert problem.startswith(message)
