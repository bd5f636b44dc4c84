"""Hostile or absurd config files end in FILE:LINE:COL problems, never a traceback, a hang or gigabytes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest
from structlog.testing import capture_logs

from dockwarden import config as configuration
from dockwarden import liveness, schedule, upgrade, yamlsource
from dockwarden.check import Checker
from dockwarden.daemon import Daemon
from dockwarden.notify import Notifier


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dw.yaml"
    path.write_text(text)
    with pytest.raises(configuration.ConfigError) as caught:
        configuration.load(path)
    return [str(p).removeprefix(f"{path}:") for p in caught.value.problems]


@pytest.mark.parametrize(
    "text",
    ["interval: 3000000d", "stability_window: 99999999999999999999d", "gc: {min_age: 36501d}"],
)
def test_durations_past_a_century_are_config_problems(tmp_path: Path, text: str) -> None:
    """A duration too long for the scheduler or timedelta is refused where it is written."""
    problems = _problems(tmp_path, f"{text}\nservices: {{}}\n")
    assert len(problems) == 1
    assert problems[0].startswith("1:")
    assert "too long: durations go up to 36500d" in problems[0]


def test_a_request_timeout_past_an_hour_is_a_config_problem(tmp_path: Path) -> None:
    """registry_timeout becomes a socket wait, whose range is far shorter: it is at most 1h."""
    assert _problems(tmp_path, "registry_timeout: 2d\nservices: {}\n") == [
        "1:19: 2d is too long for one request: at most 1h"
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0s", "0s is too short for an engine call: at least 1s"),
        ("2h", "2h is too long for one request"),
    ],
)
def test_an_engine_timeout_out_of_range_is_a_config_problem(tmp_path: Path, value: str, problem: str) -> None:
    """engine_timeout is docker-py's whole-second socket wait: from 1s to 1h, else a positioned problem."""
    problems = _problems(tmp_path, f"engine_timeout: {value}\nservices: {{}}\n")
    assert len(problems) == 1
    assert problems[0].startswith("1:17: " + problem)


def test_the_engine_timeout_bounds_the_watchdog(tmp_path: Path) -> None:
    """A longer engine_timeout gives each engine-bound place of a cycle a longer bound before it is stuck."""
    path = tmp_path / "dw.yaml"
    path.write_text("engine_timeout: 1s\nservices: {}\n")
    short = liveness.bounds(configuration.load(path))
    path.write_text("services: {}\n")
    default = configuration.load(path)
    assert default.engine_timeout.total_seconds() == 60
    assert liveness.bounds(default).step == 60 * short.step


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    """A century ("never", for an age) and a one-hour request timeout are valid."""
    assert schedule.parse_duration("36500d") == schedule.MAX_DURATION
    path = tmp_path / "dw.yaml"
    path.write_text("registry_timeout: 1h\ngc: {min_age: 36500d}\nservices: {}\n")
    assert configuration.load(path).gc.min_age == schedule.MAX_DURATION


@pytest.mark.parametrize(
    ("text", "where"),
    [("x: &a [*a]\nservices: {}\n", "1:4"), ("services: &a {web: *a}\n", "1:11")],
    ids=["sequence", "mapping"],
)
def test_recursive_alias_is_a_positioned_problem(tmp_path: Path, text: str, where: str) -> None:
    """An alias that contains itself is refused at the alias's value, not expanded until the stack ends."""
    problems = _problems(tmp_path, text)
    assert problems == [
        f"{where}: values nested deeper than {yamlsource.MAX_DEPTH} levels (a recursive alias?)"
    ]


def test_deep_nesting_is_refused_before_composing(tmp_path: Path) -> None:
    """1500 nested lists are refused at the first level past the limit (PyYAML's composer would recurse)."""
    problems = _problems(
        tmp_path, "services: " + "[" * 1500 + "]" * 1500 + "\n"
    )  # the top mapping is level 1
    assert problems == [
        f"1:{10 + yamlsource.MAX_DEPTH}: values nested deeper than {yamlsource.MAX_DEPTH} levels"
    ]


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    """A 317-byte file of aliases of aliases (9^7 values) is refused after at most MAX_VALUES values."""
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"]
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    started = time.monotonic()
    problems = _problems(tmp_path, "\n".join([*lines, "services: {}"]) + "\n")
    assert len(problems) == 1
    assert f"expands to more than {yamlsource.MAX_VALUES} values" in problems[0]
    assert time.monotonic() - started < 30  # a bound on a hang, not a speed target (seconds, not minutes)


def test_reload_keeps_the_previous_config_on_any_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP's reload keeps the running config, and logs why, whatever the new file or the loader raises."""
    path = tmp_path / "dw.yaml"
    path.write_text(f"state_dir: {tmp_path}\nservices: {{}}\n")
    cfg = configuration.load(path)
    running = Daemon(cfg, cast(Checker, None), Notifier({}))
    path.write_text("x: &a [*a]\nservices: {}\n")
    with capture_logs() as logs:
        running.reload()

    def crash(_path: Path) -> configuration.Config:
        raise RuntimeError("a bug in loading")

    monkeypatch.setattr(configuration, "load", crash)
    with capture_logs() as more:
        running.reload()
    assert running.config is cfg
    assert [e["event"] for e in [*logs, *more]] == ["config.reload_failed", "config.reload_failed"]
    assert "RuntimeError" in str(more[0]["problems"])


def test_a_container_watched_by_two_services_is_refused(tmp_path: Path) -> None:
    """Two services naming one container (explicitly, or by a service's default name) are refused at the
    second one."""
    text = "services:\n  web: {}\n  other:\n    container: web\n  third:\n    container: db\n  db: {}\n"
    assert _problems(tmp_path, text) == [
        "4:5: container 'web' is already watched by service 'web'",
        "7:3: container 'db' is already watched by service 'third'",
    ]


def test_container_names_dockwarden_gives_set_aside_containers_are_refused(tmp_path: Path) -> None:
    """A watched container named like a set-aside one would be taken for a half-done upgrade."""
    text = (
        "services:\n  a:\n    container: web--dockwarden-old\n  web--dockwarden-done: {}\n"
        "  b:\n    container: web--dockwarden-old-stopped\n"
    )
    assert _problems(tmp_path, text) == [
        "3:5: container 'web--dockwarden-old' ends like a name dockwarden gives a container set aside",
        "4:3: container 'web--dockwarden-done' ends like a name dockwarden gives a container set aside",
        "6:5: container 'web--dockwarden-old-stopped' ends like a name dockwarden gives a container set"
        " aside",
    ]
    assert configuration.RESERVED_SUFFIXES == upgrade.SUFFIXES
