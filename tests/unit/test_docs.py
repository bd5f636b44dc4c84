"""Docs are part of the change: every config key and every CLI command and option is documented."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from dockwarden import cli
from dockwarden.config import Api, Config, Gc, Notify, Service, StoppedContainers

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "config" / "README.md").read_text()
EXAMPLE = (ROOT / "config" / "dockwarden.yaml").read_text()
README = (ROOT / "README.md").read_text()


def _keys(model: type[BaseModel], *set_by_load: str) -> list[str]:
    """The file's keys at one level: each field's alias (`health` for `probe`) or name, less the fields `load`
    fills in itself."""
    return sorted(
        field.alias or name for name, field in model.model_fields.items() if name not in set_by_load
    )


@pytest.mark.parametrize("key", _keys(Config, "path"))
def test_top_level_key_documented(key: str) -> None:
    """Each top-level config key has a row in the reference and appears in the example file."""
    assert f"| `{key}` |" in REFERENCE
    assert re.search(rf"^#? ?{key}:", EXAMPLE, re.MULTILINE), f"{key} missing from config/dockwarden.yaml"


@pytest.mark.parametrize("key", _keys(Service, "name"))
def test_service_key_documented(key: str) -> None:
    """Each per-service key has a row in the reference and appears in the example file."""
    assert f"| `{key}` |" in REFERENCE
    assert re.search(rf"^\s+{key}:", EXAMPLE, re.MULTILINE), f"{key} missing from config/dockwarden.yaml"


@pytest.mark.parametrize(
    "key",
    [f"gc.{k}" for k in _keys(Gc)]
    + [f"gc.stopped_containers.{k}" for k in _keys(StoppedContainers)]
    + [f"notify.{k}" for k in _keys(Notify, "file_urls")],
)
def test_nested_key_documented(key: str) -> None:
    """Each key inside `gc` and `notify` has its own row in the reference and appears in the example."""
    assert f"| `{key}` |" in REFERENCE
    # Nested under its section, or in a section the example leaves commented out (`# notify:`).
    assert re.search(rf"^\s*#?\s+{key.rpartition('.')[2]}:", EXAMPLE, re.MULTILINE), (
        f"{key} not in the example"
    )


@pytest.mark.parametrize("key", [f"api.{k}" for k in _keys(Api)])
def test_api_key_documented(key: str) -> None:
    """Each key inside `api` has its own row in the reference and appears (commented) in the example file."""
    assert f"| `{key}` |" in REFERENCE
    assert re.search(rf"^#\s+{key.rpartition('.')[2]}:", EXAMPLE, re.MULTILINE), f"{key} not in the example"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_command_and_options_documented(command: str) -> None:
    """Each CLI command appears in the README's command table with every one of its options."""
    row = next((line for line in README.splitlines() if line.startswith(f"| `dockwarden {command}")), None)
    assert row is not None, f"`dockwarden {command}` has no row in README.md"
    for action in _commands()[command]._actions:
        if action.option_strings and "--help" not in action.option_strings:
            assert any(opt in row for opt in action.option_strings), f"{action.option_strings} of {command}"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit, with ExecStart pointing at this checkout's dockwarden."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (package systemd)"
    installed = str(Path(sys.executable).parent / "dockwarden")
    assert Path(installed).exists(), "dockwarden is not installed beside this Python"
    unit = (ROOT / "systemd" / "dockwarden.service").read_text()
    assert "/usr/local/bin/dockwarden" in unit
    target = tmp_path / "dockwarden.service"
    target.write_text(unit.replace("/usr/local/bin/dockwarden", installed))
    proc = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "dockwarden.service" not in proc.stderr, proc.stderr


def test_every_hardening_line_is_commented() -> None:
    """Each hardening directive in the unit has a comment above it saying why it is safe."""
    lines = (ROOT / "systemd" / "dockwarden.service").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Hardening" in line)
    hardening = re.compile(
        r"^(Protect|Private|NoNewPrivileges|Capability|Restrict|Lock|Memory|SystemCall|UMask)"
    )
    for i in range(start, len(lines)):
        if hardening.match(lines[i]):
            j = i - 1
            while j > start and hardening.match(lines[j]):
                j -= 1
            assert lines[j].startswith("#"), f"no comment for {lines[i]!r}"


def test_quickstart_commands_exist_and_ci_uses_the_test_command() -> None:
    """The README's two quickstart commands are executable scripts, and .ci/run runs the test one."""
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"{script}" in README
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def _events(module: str) -> set[str]:
    """Event names a module logs: the first argument of its log calls, dotted like `cycle.started`."""
    source = (ROOT / "daemon" / "dockwarden" / f"{module}.py").read_text()
    return set(re.findall(r'\.(?:debug|info|warning|error|exception)\(\s*"([a-z_]+\.[a-z_.]+)"', source))


@pytest.mark.parametrize("module", ["check", "registry"])
def test_check_and_registry_events_documented(module: str) -> None:
    """Every event the check cycle and the registry client log has a row in the README's log table."""
    events = _events(module)
    assert events, f"no events found in {module}.py: the pattern no longer matches its log calls"
    table = [line for line in README.splitlines() if line.startswith("| `")]
    for event in events:
        assert any(f"`{event}`" in line.split("|")[1] for line in table), f"{event} is not in the log table"
