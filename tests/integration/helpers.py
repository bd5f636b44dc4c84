"""Small helpers shared by the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import docker

from dockwarden import config as configuration
from dockwarden.check import Checker, CheckResult
from dockwarden.engine import Engine, registry_credentials
from dockwarden.registry import RegistryClient
from tests.support.images import LABEL

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, services: dict[str, dict[str, Any]], extra: str = "") -> Path:
    lines = ["interval: 1m", f"state_dir: {path.parent / 'state'}"]
    if extra:
        lines.append(textwrap.dedent(extra).strip())
    if "gc:" not in extra:
        # A daemon a test starts must not collect engine-wide garbage (if CI ran at the default 04:00 UTC,
        # it would race the GC tests' own carefully dated images).
        lines.append("gc: {enabled: false}")
    lines.append("services:" if services else "services: {}")
    for name, spec in services.items():
        lines.append(f"  {name}:")
        if not spec:
            lines[-1] += " {}"
        for key, value in spec.items():
            lines.append(f"    {key}: {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def checker(timeout: float = 5.0, docker_host: str | None = None) -> Checker:
    engine = Engine.connect(docker_host)
    client = RegistryClient(credentials=registry_credentials, timeout=timeout)
    return Checker(engine, client, engine.platform())


def check(cfg_path: Path, checker_: Checker | None = None) -> dict[str, CheckResult]:
    cfg = configuration.load(cfg_path)
    own = checker_ or checker()
    summary = own.cycle(cfg.services, cfg.check_concurrency)
    return {r.service: r for r in summary.results}


def run_container(
    client: docker.DockerClient, run_label: str, name: str, image: str, created: list[str], **kwargs: Any
) -> Any:
    created.append(name)
    return client.containers.run(image, name=name, detach=True, labels={LABEL: run_label}, **kwargs)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dockwarden", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def spawn(
    command: str, cfg: Path, log: Path, env: dict[str, str] | None = None, pause_before: str | None = None
) -> subprocess.Popen[bytes]:
    """`dockwarden COMMAND -c cfg` in the background, stdout and stderr to `log`, `env` over ours; with
    `pause_before`, its transaction parks before that step (tests/support/paused.py)."""
    entry = ["dockwarden"] if pause_before is None else ["tests.support.paused", pause_before]
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *entry, command, "-c", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def wait_for_text(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {log}:\n{log.read_text()[-3000:]}")
