"""Registry credentials from a Docker config and its credential helpers: a helper that is missing, fails,
hangs or talks nonsense is a CredentialsError naming the helper, never quoting what it printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockwarden.engine import Credentials, CredentialsError, registry_credentials

REGISTRY = "registry.example:5000"
SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln hunter2"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Docker config folder and a bin folder on PATH, for this test only."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _config(home: Path, **settings: object) -> None:
    (home / "docker" / "config.json").write_text(json.dumps(settings))


def _helper(home: Path, name: str, script: str) -> None:
    path = home / "bin" / f"docker-credential-{name}"
    path.write_text(f"#!/bin/sh\nread server\n{script}\n")
    path.chmod(0o755)


def test_helper_answer_is_used(home: Path) -> None:
    """A per-registry helper's Username and Secret are the credentials; `<token>` means an identity token."""
    _helper(home, "good", 'printf \'{"ServerURL":"%s","Username":"alice","Secret":"pw"}\' "$server"')
    _helper(home, "tok", 'printf \'{"Username":"<token>","Secret":"refresh-1"}\'')
    _config(home, credHelpers={REGISTRY: "good", "other:1": "tok"})
    assert registry_credentials(REGISTRY) == Credentials("alice", "pw")
    assert registry_credentials("other:1") == Credentials(None, None, "refresh-1")


def test_helper_without_an_entry_falls_back_to_auths(home: Path) -> None:
    """A helper's "credentials not found" leads to the `auths` entry, as with the docker CLI."""
    _helper(home, "empty", "echo 'credentials not found in native keychain'; exit 1")
    _config(home, credsStore="empty", auths={REGISTRY: {"auth": "Ym9iOnMzY3JldA=="}})
    assert registry_credentials(REGISTRY) == Credentials("bob", "s3cret")
    assert registry_credentials("unknown:1") is None


@pytest.mark.parametrize(
    ("script", "complaint"),
    [
        (f"echo 'vault refused: lease {SECRET}'; echo 'secret: {SECRET}' >&2; exit 3", "exit status 3"),
        (f"echo 'not json {SECRET}'", "something other than credentials"),
        ('echo \'{"Username": 1, "Secret": "' + SECRET + "\"}'", "something other than credentials"),
        ("exec sleep 5", "did not answer within 0.5s"),
    ],
)
def test_failing_helper_is_an_error_without_its_output(
    home: Path, script: str, complaint: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A helper that fails, answers nonsense or hangs is a CredentialsError naming the helper; nothing it
    printed, on stdout or stderr, reaches the message or our own output."""
    _helper(home, "bad", script)
    _config(home, credHelpers={REGISTRY: "bad"})
    with pytest.raises(CredentialsError, match=complaint) as caught:
        registry_credentials(REGISTRY, timeout=0.5)
    assert "docker-credential-bad" in str(caught.value)
    out, err = capfd.readouterr()
    for text in (str(caught.value), out, err):
        assert "hunter2" not in text
        assert "eyJzdWIi" not in text


def test_missing_helper_is_an_error(home: Path) -> None:
    """A helper named in the config but not installed is a CredentialsError saying so."""
    _config(home, credHelpers={REGISTRY: "notinstalled"})
    with pytest.raises(CredentialsError, match=r"docker-credential-notinstalled .* not installed"):
        registry_credentials(REGISTRY)


def test_helper_name_must_be_a_program_name(home: Path) -> None:
    """A helper name with a path in it is refused rather than run relative to the working directory."""
    _config(home, credsStore="../../tmp/x")
    with pytest.raises(CredentialsError, match="not a program name"):
        registry_credentials(REGISTRY)


def test_unreadable_config_is_an_error(home: Path) -> None:
    """A config whose credHelpers is not an object is a CredentialsError, not a traceback."""
    _config(home, credHelpers=["x"])
    with pytest.raises(CredentialsError, match="reading Docker credentials"):
        registry_credentials(REGISTRY)
