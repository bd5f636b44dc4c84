"""What the upgrade tests share: an app image that serves HTTP and stops on SIGTERM, and small probes."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from dockwarden import check, cycle
from dockwarden.config import Config
from dockwarden.cycle import Report
from dockwarden.history import History
from dockwarden.runner import Runner
from dockwarden.upgrade import Hooks
from tests.integration.helpers import cli, write_config
from tests.support.images import ImageFactory
from tests.support.registry import Registry

# PID 1 is a shell that exits on SIGTERM, so a stop takes milliseconds, not the 10 s kill timeout.
APP = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
HEALTHY = "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"


@dataclass
class Side:
    """One engine as the tests see it: a client, an image factory, and its docker_host for the config."""

    client: docker.DockerClient
    images: ImageFactory
    docker_host: str | None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            return str(response.read().decode().strip())
    except OSError:
        return None


def wait_serving(port: int, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = fetch(port)
        if body:
            return body
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on 127.0.0.1:{port}")


def push_version(side: Side, registry: Registry, repo: str, **build: Any) -> tuple[str, str, str]:
    """Build and push a new version of `repo`; returns (tag, marker, digest)."""
    tag = f"{registry.host}/{repo}:latest"
    marker = f"v-{uuid.uuid4().hex[:8]}"
    build.setdefault("cmd", APP)
    side.images.build(tag, marker, **build)
    return tag, marker, side.images.push(tag)


def config(
    tmp_path: Path, services: dict[str, dict[str, Any]], side: Side | None = None, extra: str = ""
) -> Path:
    lines = ["stability_window: 1s"]
    if side is not None and side.docker_host:
        lines.append(f"docker_host: {side.docker_host}")
    if extra:
        lines.append(extra)
    return write_config(tmp_path / "dw.yaml", services, extra="\n".join(lines))


def update(cfg: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """`dockwarden update --json`; returns (exit code, rows, stderr)."""
    proc = cli("update", "-c", str(cfg), "--json", *args, env=env)
    rows = json.loads(proc.stdout) if proc.stdout.strip() else []
    return proc.returncode, rows, proc.stderr


def names_like(client: docker.DockerClient, name: str) -> list[str]:
    """Every container whose name starts with `name` (the service's, and any set-aside copy)."""
    # The raw list: the high-level one inspects each container, racing with other tests' removals.
    found = (n.lstrip("/") for item in client.api.containers(all=True) for n in item.get("Names") or ())
    return sorted(n for n in found if n.startswith(name))


def run_cycle(cfg: Config, hooks: Hooks | None = None) -> Report:
    """One update cycle in this process (for tests that hook steps or cancel), then disconnect."""
    hooks = hooks or Hooks()
    with check.connect(cfg) as checker:
        runner = Runner(checker.engine, cfg.state_dir, History.of(cfg), hooks)
        return cycle.run(checker, runner, cfg, cfg.services, cycle.Options(cancel=hooks.cancel))


def recover(cfg: Config) -> None:
    """What a fresh `update` or `run` does first: converge half-done upgrades."""
    with check.connect(cfg) as checker:
        cycle.recover(checker.engine, cfg)
