"""The command line: exit codes, usage errors and `validate` on any input without a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwarden import __version__, cli

LOCATED = re.compile(r"^.+:\d+:\d+: .+$")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"dockwarden {__version__}"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command or option is a usage error: exit 2 and a message, no traceback."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_validate_valid_and_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate exits 0 on a good file and 2 with located messages on a bad one."""
    good = tmp_path / "good.yaml"
    good.write_text("interval: 1m\nservices:\n  web: {}\n")
    assert cli.main(["validate", "-c", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("interval: 1m\nservices:\n  web:\n    update: nope\n")
    assert cli.main(["validate", "-c", str(bad)]) == 2
    assert capsys.readouterr().err == f"{bad}:4:13: must be 'auto' or 'monitor', not 'nope'\n"


def test_check_with_invalid_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check and run refuse an invalid config with exit 2 before touching the engine."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  web:\n    colour: red\n")
    assert cli.main(["check", "-c", str(bad)]) == 2
    assert cli.main(["run", "-c", str(bad)]) == 2
    assert capsys.readouterr().err.count("unknown key 'colour'") == 2


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKWARDEN_CONFIG is used when -c is absent."""
    good = tmp_path / "env.yaml"
    good.write_text("services: {}\n")
    monkeypatch.setenv("DOCKWARDEN_CONFIG", str(good))
    assert cli.main(["validate"]) == 0


YAML_PIECES = st.sampled_from(
    [
        "interval:",
        "schedule:",
        "services:",
        "state_dir:",
        "web:",
        "container:",
        "image:",
        "update:",
        "  ",
        "\n",
        "- ",
        "{",
        "}",
        "[",
        "]",
        ":",
        "'",
        '"',
        "&a ",
        "*a",
        "!!python/object ",
        "1.10",
        "5m",
        "*/5 * * * *",
        "auto",
        "monitor",
        "127.0.0.1:5000/x:y",
        "\t",
        "#",
        "---",
        "<<: *a",
        "~",
        "yes",
        "\x00",
        "é",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.lists(YAML_PIECES, max_size=40).map("".join), st.text(max_size=200)))
def test_validate_never_tracebacks(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """For any input, validate exits 0 or 2 and every stderr line is FILE:LINE:COL: message."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    code = cli.main(["validate", "-c", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        lines = err.splitlines()
        assert lines
        assert all(LOCATED.match(line) for line in lines), err


def test_update_of_an_unknown_service_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dockwarden update -c FILE nosuch` exits 2 and names the service, before touching any engine."""
    path = tmp_path / "dw.yaml"
    path.write_text("services:\n  web: {}\n")
    assert cli.main(["update", "-c", str(path), "nosuch"]) == 2
    assert "no such service" in capsys.readouterr().err


def test_new_commands_refuse_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rollback, gc, history and status refuse an invalid config, an unknown service, a malformed
    digest and a negative limit with exit 2, before touching the engine."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  web:\n    keep_previous: -1\n")
    for command in (["rollback", "web"], ["gc"], ["history"], ["status"]):
        assert cli.main([command[0], "-c", str(bad), *command[1:]]) == 2
    assert capsys.readouterr().err.count("must be greater than or equal to 0") == 4
    good = tmp_path / "good.yaml"
    good.write_text(f"state_dir: {tmp_path / 'state'}\nservices:\n  web: {{}}\n")
    assert cli.main(["rollback", "-c", str(good), "api"]) == 2
    assert cli.main(["history", "-c", str(good), "api"]) == 2
    assert cli.main(["history", "-c", str(good), "--limit", "-1"]) == 2
    assert "no such service" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        cli.main(["rollback", "-c", str(good), "web", "--to", "v1.2"])
    assert caught.value.code == 2
    assert "'v1.2' is not a digest" in capsys.readouterr().err


def test_history_without_a_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """history on a fresh state_dir prints that there is none yet (or [] with --json) and exits 0."""
    good = tmp_path / "good.yaml"
    good.write_text(f"state_dir: {tmp_path / 'state'}\nservices:\n  web: {{}}\n")
    assert cli.main(["history", "-c", str(good)]) == 0
    assert capsys.readouterr().out == "no history yet\n"
    assert cli.main(["history", "-c", str(good), "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"
