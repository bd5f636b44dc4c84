"""Config validation: every problem reported as FILE:LINE:COL, nothing coerced, defaults applied."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from dockwarden import config as configuration
from dockwarden import daemon, imageref

ROOT = Path(__file__).resolve().parents[2]


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "dw.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(configuration.ConfigError) as caught:
        configuration.load(path)
    return [str(p).removeprefix(f"{path}:") for p in caught.value.problems]


def test_issue_example_loads_with_defaults(tmp_path: Path) -> None:
    """The example from the issue loads, and a service's container defaults to its name."""
    path = tmp_path / "dw.yaml"
    path.write_text(
        textwrap.dedent("""
        interval: 5m
        state_dir: /var/lib/dockwarden
        services:
          web:
            container: web
            image: 127.0.0.1:5000/sample:latest
            update: auto
          api: {}
    """)
    )
    cfg = configuration.load(path)
    assert cfg.interval == timedelta(minutes=5)
    web, api = cfg.services
    assert (web.container, web.image, web.update) == (
        "web",
        imageref.parse("127.0.0.1:5000/sample:latest"),
        "auto",
    )
    assert (api.container, api.image, api.update) == ("api", None, "auto")
    assert cfg.check_concurrency == 32
    assert cfg.registry_timeout == timedelta(seconds=10)


def test_shipped_example_is_valid() -> None:
    """config/dockwarden.yaml, the documented example, validates."""
    cfg = configuration.load(ROOT / "config" / "dockwarden.yaml")
    assert [s.name for s in cfg.services] == ["web", "worker"]


def test_every_problem_is_located(tmp_path: Path) -> None:
    """Unknown keys, wrong types, bad durations, cron, names and references each point at their own line."""
    found = problems_for(
        tmp_path,
        """
        interval: 5x
        state_dir: relative
        check_concurrency: "8"
        services:
          web:
            image: 127.0.0.1:5000/Sample:latest
            update: sometimes
            colour: blue
          api:
            image: 1.10
          bad name!:
            container: x
    """,
    )
    assert found == [
        "1:11: '5x' is not a duration: write a number with a unit, like 30s, 5m, 1h, 1h30m or 7d",
        "2:12: state_dir 'relative' must be an absolute path",
        "3:20: must be a whole number, not str '8'",
        "6:12: invalid image reference '127.0.0.1:5000/Sample:latest': repository component 'Sample' is not "
        "valid (lowercase letters and digits, separated by . _ __ or -)",
        "7:13: must be 'auto' or 'monitor', not 'sometimes'",
        "8:5: unknown key 'colour'",
        "10:12: must be a string, not float 1.1 (quote it)",
        "11:3: 'bad name!' is not a valid container name (letters, digits, _ . -; not first)",
    ]


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    """A duplicated service name is an error at the second occurrence, not a silent overwrite."""
    assert problems_for(
        tmp_path,
        """
        services:
          web: {}
          web:
            update: monitor
    """,
    ) == ["3:3: duplicate key 'web' (first defined at line 2)"]


def test_interval_and_schedule_together(tmp_path: Path) -> None:
    """Setting both `interval` and `schedule` points at `schedule`."""
    assert problems_for(
        tmp_path,
        """
        interval: 5m
        schedule: "*/5 * * * *"
        services: {}
    """,
    ) == ["2:1: set either `interval` or `schedule`, not both"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'schedule: "61 * * * *"',
            "1:11: cron expression '61 * * * *': Error validating expression '61': "
            "the last value (61) is higher than the maximum value (59)",
        ),
        (
            'schedule: "* * *"',
            "1:11: cron expression '* * *' has 3 fields; it needs 5 "
            "(minute hour day-of-month month day-of-week)",
        ),
        ('schedule: "0 4 * * 8"', "1:11: day-of-week '8' is not 0-7 or a day name (sun..sat)"),
        ("interval: 5s", "1:11: interval 5s is shorter than the minimum of 10s"),
        ("interval: 300", "1:11: must be a string, not int 300 (quote it)"),
        ("services: [web]", "1:11: must be a mapping, not list ['web']"),
        ("1: {}", "1:1: key 1 must be a string (quote it if it is a name)"),
        (
            "services:\n  web: [",
            "3:1: YAML syntax error: expected the node content, but found '<stream end>'",
        ),
        ("- a\n- b", "1:1: the file must be a mapping with a `services:` key"),
        ("", "1:1: the file is empty; it must be a mapping with `services:`"),
    ],
)
def test_single_problem_messages(tmp_path: Path, line: str, message: str) -> None:
    """Each kind of mistake gets one precise, located message."""
    assert problems_for(tmp_path, line + "\n") == [message]


def test_missing_file_is_a_located_problem(tmp_path: Path) -> None:
    """A file that cannot be read is reported as FILE:1:1 with the OS reason."""
    with pytest.raises(configuration.ConfigError) as caught:
        configuration.load(tmp_path / "absent.yaml")
    assert str(caught.value) == f"{tmp_path / 'absent.yaml'}:1:1: cannot read file: No such file or directory"


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """-c wins over DOCKWARDEN_CONFIG, which wins over the default path."""
    monkeypatch.delenv("DOCKWARDEN_CONFIG", raising=False)
    assert configuration.resolve_path(None) == Path("/etc/dockwarden/dockwarden.yaml")
    monkeypatch.setenv("DOCKWARDEN_CONFIG", "/srv/dw.yaml")
    assert configuration.resolve_path(None) == Path("/srv/dw.yaml")
    assert configuration.resolve_path("/x.yaml") == Path("/x.yaml")


def test_cron_schedule_is_described_in_utc(tmp_path: Path) -> None:
    """A cron schedule builds a UTC trigger and says so."""
    path = tmp_path / "dw.yaml"
    path.write_text('schedule: "0 4 * * 0"\nservices: {}\n')
    cfg = configuration.load(path)
    assert cfg.describe_schedule() == "cron 0 4 * * 0 (UTC)"
    assert str(daemon.cycle_trigger(cfg).timezone) == "UTC"


def test_upgrade_keys_load_with_their_defaults_and_overrides(tmp_path: Path) -> None:
    """Gate settings default to 10 s / 5 min; a service's health probe, window and depends_on are read."""
    path = tmp_path / "dw.yaml"
    path.write_text(
        textwrap.dedent("""
        health_timeout_max: 2m
        services:
          db: {}
          web:
            depends_on: [db]
            health: {http: "http://127.0.0.1:8080/health", timeout: 5s}
            stability_window: 3s
          api:
            health: {tcp: "127.0.0.1:9000"}
    """)
    )
    cfg = configuration.load(path)
    assert (cfg.stability_window, cfg.health_timeout_max) == (timedelta(seconds=10), timedelta(minutes=2))
    db, web, api = cfg.services
    assert (db.depends_on, db.probe, db.stability_window) == ((), None, timedelta(seconds=10))
    assert web.depends_on == ("db",)
    assert web.probe == configuration.Probe(http="http://127.0.0.1:8080/health", timeout=timedelta(seconds=5))
    assert web.stability_window == timedelta(seconds=3)
    assert api.probe == configuration.Probe(tcp="127.0.0.1:9000", timeout=timedelta(seconds=30))


def test_stopped_defaults_to_skip_and_accepts_recreate_only(tmp_path: Path) -> None:
    """A service's `stopped` is `skip` unless set to `recreate`; any other word is a located error."""
    path = tmp_path / "dw.yaml"
    path.write_text("services:\n  job: {stopped: recreate}\n  web: {}\n")
    job, web = configuration.load(path).services
    assert (job.stopped, web.stopped) == (configuration.Stopped.RECREATE, configuration.Stopped.SKIP)
    assert problems_for(tmp_path, "services:\n  job: {stopped: start}\n") == [
        "2:18: must be 'skip' or 'recreate', not 'start'"
    ]


def test_probe_targets_are_checked(tmp_path: Path) -> None:
    """An http probe must be an http(s) URL and a tcp probe HOST:PORT, each error at its value."""
    found = problems_for(
        tmp_path,
        """
        services:
          web:
            health: {http: "ftp://x"}
          api:
            health: {tcp: "nohost"}
        """,
    )
    assert found == [
        "3:20: http probe 'ftp://x' must be an http:// or https:// URL",
        "5:19: tcp probe 'nohost' must be HOST:PORT",
    ]


def test_relations_between_services_are_checked(tmp_path: Path) -> None:
    """Unknown and self dependencies are errors, and a probe needs exactly one of http and tcp."""
    found = problems_for(
        tmp_path,
        """
        services:
          web:
            depends_on: [nope, web]
            health: {http: "http://127.0.0.1/", tcp: "127.0.0.1:80"}
          api:
            health: {timeout: 5s}
        """,
    )
    assert found == [
        "3:18: depends_on names 'nope', which is not a service in this file",
        "3:24: depends_on names itself",
        "4:13: health needs exactly one of `http` or `tcp`",
        "6:13: health needs exactly one of `http` or `tcp`",
    ]


def test_dependency_loop_is_an_error(tmp_path: Path) -> None:
    """depends_on that loops back is reported at the first service's depends_on."""
    found = problems_for(
        tmp_path,
        """
        services:
          a: {depends_on: [b]}
          b: {depends_on: [a]}
        """,
    )
    assert len(found) == 1
    assert "depends_on loops: " in found[0]


def test_retention_gc_and_history_keys_load_with_defaults_and_overrides(tmp_path: Path) -> None:
    """keep_previous (global, per service), gc and history_max_bytes load; defaults when absent."""
    path = tmp_path / "dw.yaml"
    path.write_text("services:\n  web: {}\n")
    cfg = configuration.load(path)
    assert cfg.services[0].keep_previous == 2
    assert cfg.gc == configuration.Gc(
        enabled=True, schedule="0 4 * * *", min_age=timedelta(hours=1), stopped_containers=None
    )
    assert cfg.history_max_bytes == 10 * 1024 * 1024
    path.write_text(
        textwrap.dedent(
            """\
            keep_previous: 5
            history_max_bytes: 1048576
            gc:
              enabled: false
              schedule: "30 3 * * sun"
              min_age: 2d
              stopped_containers:
                labels: [com.example.role=batch, com.example.ephemeral]
                min_age: 7d
            services:
              web: {}
              api:
                keep_previous: 0
            """
        )
    )
    cfg = configuration.load(path)
    assert [s.keep_previous for s in cfg.services] == [5, 0]
    assert cfg.gc.enabled is False
    assert cfg.gc.min_age == timedelta(days=2)
    assert cfg.gc.stopped_containers == configuration.StoppedContainers(
        labels=("com.example.role=batch", "com.example.ephemeral"), min_age=timedelta(days=7)
    )
    assert cfg.history_max_bytes == 1024 * 1024


def test_retention_and_gc_problems_are_located(tmp_path: Path) -> None:
    """Negative keep_previous, a non-boolean, a bad cron, an empty or malformed selector list, a tiny
    history and a service name too long for a tag each point at their line."""
    long_name = "a" * 65
    found = problems_for(
        tmp_path,
        f"""
        keep_previous: -1
        gc:
          enabled: "yes"
          schedule: "bad"
          stopped_containers:
            labels: []
        history_max_bytes: 10
        services:
          {long_name}: {{}}
          web:
            keep_previous: x
          api:
            container: {long_name}
          db:
            keep_previous: 101
    """,
    )
    assert found == [
        "1:16: must be greater than or equal to 0",
        "3:12: must be true or false, not str 'yes'",
        "4:13: cron expression 'bad' has 1 fields; it needs 5 (minute hour day-of-month month day-of-week)",
        "6:13: must have at least 1 item(s)",
        "7:20: must be greater than or equal to 65536",
        f"9:3: '{long_name}' is longer than 64 characters",
        "11:20: must be a whole number, not str 'x'",
        f"13:16: '{long_name}' is longer than 64 characters",
        "15:20: must be less than or equal to 100",
    ]
    assert problems_for(tmp_path, "gc:\n  stopped_containers:\n    labels: ['a=b', 'x y']\n") == [
        "3:21: label selector 'x y' must be KEY or KEY=VALUE"
    ]


def test_durations_load_as_timedeltas(tmp_path: Path) -> None:
    """Every duration in the file, at any level, is a timedelta once loaded."""
    path = tmp_path / "dw.yaml"
    path.write_text(
        textwrap.dedent("""
        interval: 1h30m
        registry_timeout: 90s
        health_timeout_max: 7d
        gc:
          min_age: 2h
          stopped_containers: {labels: [role=batch], min_age: 3d}
        services:
          web:
            stability_window: 45s
            health: {tcp: "127.0.0.1:80", timeout: 1m}
    """)
    )
    cfg = configuration.load(path)
    assert (cfg.interval, cfg.registry_timeout, cfg.health_timeout_max) == (
        timedelta(hours=1, minutes=30),
        timedelta(seconds=90),
        timedelta(days=7),
    )
    assert cfg.gc.min_age == timedelta(hours=2)
    assert cfg.gc.stopped_containers is not None
    assert cfg.gc.stopped_containers.min_age == timedelta(days=3)
    (web,) = cfg.services
    assert web.stability_window == timedelta(seconds=45)
    assert web.probe is not None
    assert (web.probe.kind, web.probe.target, web.probe.timeout) == (
        "tcp",
        "127.0.0.1:80",
        timedelta(minutes=1),
    )


def test_service_defaults_are_resolved_when_the_config_loads(tmp_path: Path) -> None:
    """A service's container defaults to its name, keep_previous and stability_window to the top-level
    values, also when the key is there with no value; what a service sets stays its own."""
    path = tmp_path / "dw.yaml"
    path.write_text(
        textwrap.dedent("""
        keep_previous: 4
        stability_window: 7s
        services:
          web: {}
          api:
            container:
            keep_previous:
            stability_window:
          db: {container: postgres, keep_previous: 0, stability_window: 1m, update: monitor}
    """)
    )
    cfg = configuration.load(path)
    resolved = [(s.name, s.container, s.keep_previous, s.stability_window, s.update) for s in cfg.services]
    assert resolved == [
        ("web", "web", 4, timedelta(seconds=7), configuration.Update.AUTO),
        ("api", "api", 4, timedelta(seconds=7), configuration.Update.AUTO),
        ("db", "postgres", 0, timedelta(minutes=1), configuration.Update.MONITOR),
    ]
    assert cfg.service("db") is cfg.services[2]
    assert cfg.service("nope") is None


def test_path_and_name_are_not_keys_of_the_file(tmp_path: Path) -> None:
    """The config's path is where load read it, and a service's name is its key: a `path:` or a
    service's `name:` in the file is an unknown key."""
    path = tmp_path / "dw.yaml"
    path.write_text("services:\n  web: {}\n")
    cfg = configuration.load(path)
    assert (cfg.path, cfg.services[0].name) == (path, "web")
    assert problems_for(
        tmp_path,
        """
        path: /etc/other.yaml
        services:
          web:
            name: api
    """,
    ) == ["1:1: unknown key 'path'", "4:5: unknown key 'name'"]


def test_models_are_frozen_keyword_only_records_with_the_files_defaults() -> None:
    """Built in code, a Service takes keywords only and defaults like an empty entry in the file; a Config
    gives its services its own keep_previous and stability_window, and refuses two services of one name."""
    with pytest.raises(TypeError):
        configuration.Service("web")  # type: ignore[call-arg]  # the point: positional arguments are refused
    web = configuration.Service(name="web")
    assert (web.container, web.image, web.update, web.depends_on) == ("web", None, "auto", ())
    assert web.probe is None
    assert (web.keep_previous, web.stability_window) == (2, timedelta(seconds=10))
    with pytest.raises(ValidationError):
        web.container = "other"  # frozen: pydantic refuses the assignment
    cfg = configuration.Config(
        path=Path("/x.yaml"), keep_previous=5, stability_window=timedelta(seconds=3), services=(web,)
    )
    assert (cfg.services[0].keep_previous, cfg.services[0].stability_window) == (5, timedelta(seconds=3))
    with pytest.raises(ValidationError, match="two services have the same name"):
        configuration.Config(path=Path("/x.yaml"), services=(web, web))


def test_daemon_builds_the_cycle_trigger_from_the_interval(tmp_path: Path) -> None:
    """Without `schedule`, the daemon's trigger runs every `interval`, 5 minutes by default."""
    path = tmp_path / "dw.yaml"
    path.write_text("services: {}\n")
    cfg = configuration.load(path)
    assert cfg.describe_schedule() == "every 5m"
    assert daemon.cycle_trigger(cfg).interval == timedelta(minutes=5)
