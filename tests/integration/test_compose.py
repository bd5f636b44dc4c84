"""Compose v2 projects upgraded by dockwarden on the real engines, driven by the real `docker compose`.

A compose service upgraded by dockwarden stays one: `docker compose ps` shows it, its data survives,
`docker compose up -d` afterwards changes nothing, `docker compose down` leaves only the retained image
tags, compose's depends_on label orders the upgrades, and what compose copies into a container (a secret
from `content:`) is refused rather than lost. Compose is the CLI plugin `scripts/lab.sh` installs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from dockwarden import compose
from tests.integration.upgrade_lab import Side, config, names_like, push_version, update
from tests.support.images import LABEL
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

COMPOSE_TIMEOUT = 120  # seconds for one compose command; `up` of a small project takes one or two


@dataclass
class Project:
    """One compose project a test writes and starts; `close` takes it down with everything it made."""

    side: Side
    directory: Path
    run_label: str
    name: str = field(default_factory=lambda: f"dwc-{uuid.uuid4().hex[:8]}")
    volumes: set[str] = field(default_factory=set)  # every volume its containers mounted, for the cleanup

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        docker_cli = shutil.which("docker")
        assert docker_cli, "no docker CLI on PATH (scripts/lab.sh installs the compose plugin for it)"
        env = {**os.environ, **({"DOCKER_HOST": self.side.docker_host} if self.side.docker_host else {})}
        command = [docker_cli, "compose", "-p", self.name, "-f", str(self.directory / "compose.yaml"), *args]
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=COMPOSE_TIMEOUT, check=False
        )
        if check:
            assert proc.returncode == 0, f"docker compose {' '.join(args)}: {proc.stderr}"
        return proc

    def up(self, document: str) -> None:
        """Write compose.yaml (`document`, the file less its `name:`) and `docker compose up -d` it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "compose.yaml").write_text(f"name: {self.name}\n{textwrap.dedent(document)}")
        self.compose("up", "-d", "--quiet-pull")
        self.note_volumes()

    def container(self, service: str) -> dict[str, Any]:
        found: dict[str, Any] = self.side.client.api.inspect_container(self.container_name(service))
        return found

    def container_name(self, service: str) -> str:
        return f"{self.name}-{service}-1"

    def exec(self, service: str, *command: str) -> str:
        got = self.side.client.containers.get(self.container_name(service)).exec_run(list(command))
        return str(got.output.decode()).strip()

    def ps(self) -> dict[str, dict[str, Any]]:
        """`docker compose ps --all` as service -> its row (one container per service here)."""
        out = self.compose("ps", "--all", "--format", "json").stdout
        # Compose 2.21+ prints one JSON object per line; earlier ones an array.
        rows = (
            json.loads(out)
            if out.lstrip().startswith("[")
            else [json.loads(x) for x in out.splitlines() if x]
        )
        return {row["Service"]: row for row in rows}

    def note_volumes(self) -> None:
        for item in self.side.client.api.containers(
            all=True, filters={"label": f"{compose.PROJECT_LABEL}={self.name}"}
        ):
            self.volumes.update(m["Name"] for m in item.get("Mounts") or [] if m.get("Type") == "volume")

    def close(self) -> None:
        self.note_volumes()
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "1", check=False)
        for name in names_like(self.side.client, self.name):  # anything a failed test left beside compose's
            with contextlib.suppress(docker.errors.NotFound):
                self.side.client.containers.get(name).remove(force=True, v=True)
        # Compose removes its named volumes; an anonymous volume mounted by name after a recreate (compose's
        # own, or dockwarden's) outlives `down --volumes`, so the test removes what its project mounted.
        for volume in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.side.client.volumes.get(volume).remove(force=True)


@pytest.fixture
def project(side: Side, tmp_path: Path, run_label: str) -> Iterator[Project]:
    made = Project(side=side, directory=tmp_path / "project", run_label=run_label)
    yield made
    made.close()


def _remote_only(side: Side, registry: Registry, repo: str, old_id: str) -> tuple[str, str]:
    """Push a new version of `repo` and leave the host as `docker pull` of the old one left it: the tag on
    the old image, the new one not here. Returns (the new version's marker, its digest)."""
    tag, marker, digest = push_version(side, registry, repo)
    new_id = side.client.images.get(tag).id
    repository, _, name = tag.rpartition(":")
    side.client.images.get(old_id).tag(repository, name)
    side.client.images.remove(new_id)
    return marker, digest


def _labelled(run_label: str) -> str:
    return f"labels: {{{LABEL}: {run_label}}}"


def _upgrade_order(log: str) -> list[str]:
    """Services in the order their upgrade started, from `update`'s JSON log lines."""
    found = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "upgrade.started":
                found.append(str(event["service"]))
    return found


def test_upgraded_services_stay_compose_services(
    side: Side, project: Project, registry: Registry, tmp_path: Path, run_label: str
) -> None:
    """Upgraded in the order compose's depends_on says, both services keep their compose identity, named
    volume and file-based secret and config, a dependent with `restart: true` is restarted; `docker compose
    up -d` then changes nothing, and `down` leaves only the retained image tags."""
    tag, _, _ = push_version(side, registry, "compose-app")
    old_id = side.client.images.get(tag).id
    # The worker's own image: one following compose-app's tag would be recreated by `up` once the tag moved.
    worker_tag, _, _ = push_version(side, registry, "compose-worker")
    project.directory.mkdir(parents=True)
    (project.directory / "token.txt").write_text("t0ken\n")
    (project.directory / "app.conf").write_text("setting=1\n")
    project.up(
        f"""
        services:
          db:
            image: {tag}
            volumes: ["named:/named"]
            secrets: [token]
            configs: [{{source: conf, target: /etc/app.conf}}]
            {_labelled(run_label)}
          web:
            image: {tag}
            depends_on: {{db: {{condition: service_started}}}}
            {_labelled(run_label)}
          worker:
            image: {worker_tag}
            depends_on: {{db: {{condition: service_started, restart: true}}}}
            {_labelled(run_label)}
        volumes:
          named: {{{_labelled(run_label)}}}
        secrets:
          token: {{file: ./token.txt}}
        configs:
          conf: {{file: ./app.conf}}
        """
    )
    project.exec("db", "sh", "-c", "echo kept > /named/marker")
    before = {service: project.container(service) for service in ("db", "web")}
    worker = project.container("worker")
    marker, _ = _remote_only(side, registry, "compose-app", old_id)
    # web first in dockwarden's file: only compose's label can put db first.
    services = {s: {"container": project.container_name(s)} for s in ("web", "db")}

    code, rows, err = update(config(tmp_path, services, side))

    assert code == 0, err
    assert {r["service"]: r["result"] for r in rows} == {"web": "upgraded", "db": "upgraded"}, rows
    assert _upgrade_order(err) == ["db", "web"]
    ps = project.ps()
    new_image = side.client.images.get(tag).id
    for service, old in before.items():
        new = project.container(service)
        assert (ps[service]["ID"], ps[service]["State"]) == (new["Id"][:12], "running"), ps
        assert new["Id"] != old["Id"]
        assert new["Image"] == new_image != old_id
        labels, old_labels = new["Config"]["Labels"], old["Config"]["Labels"]
        assert labels[compose.IMAGE_LABEL] == new_image
        assert {
            k: v
            for k, v in labels.items()
            if k.startswith("com.docker.compose.") and k != compose.IMAGE_LABEL
        } == {
            k: v
            for k, v in old_labels.items()
            if k.startswith("com.docker.compose.") and k != compose.IMAGE_LABEL
        }
    assert project.exec("web", "cat", "/www/index.html") == marker
    assert project.exec("db", "cat", "/named/marker", "/run/secrets/token", "/etc/app.conf").split() == [
        "kept",
        "t0ken",
        "setting=1",
    ]

    # worker, unwatched, depends on db with `restart: true`: restarted after db's upgrade, as compose would.
    restarted = project.container("worker")
    assert restarted["Id"] == worker["Id"]
    assert restarted["State"]["StartedAt"] != worker["State"]["StartedAt"]
    assert '"compose.restarted"' in err

    upgraded = {service: project.container(service)["Id"] for service in ("db", "web", "worker")}
    again = project.compose("up", "-d")

    assert "Recreate" not in again.stderr, again.stderr
    assert {service: project.container(service)["Id"] for service in upgraded} == upgraded

    project.note_volumes()
    project.compose("down", "--timeout", "1")

    assert names_like(side.client, project.name) == []
    repository = tag.rpartition(":")[0]
    tags = sorted(t for image in side.client.images.list(repository) for t in image.tags)
    retained = sorted(t for t in tags if t != tag)
    # One retained version per container, and no `-pulled` tag of an upgrade in flight.
    assert [t.rpartition("-")[0] for t in retained] == [
        f"{repository}:dockwarden-{project.container_name(service)}" for service in ("db", "web")
    ], tags


def test_anonymous_volume_of_a_compose_service_keeps_its_data(
    side: Side, project: Project, registry: Registry, tmp_path: Path, run_label: str
) -> None:
    """`volumes: ["/data"]` (compose mounts it with --mount semantics, no source) keeps its volume and its
    data through an upgrade, and `docker compose up -d` then changes nothing."""
    tag, _, _ = push_version(side, registry, "compose-anon")
    old_id = side.client.images.get(tag).id
    project.up(
        f"""
        services:
          db:
            image: {tag}
            volumes: ["/data"]
            {_labelled(run_label)}
        """
    )
    project.exec("db", "sh", "-c", "echo kept > /data/marker")
    volume = next(m["Name"] for m in project.container("db")["Mounts"] if m["Destination"] == "/data")
    _remote_only(side, registry, "compose-anon", old_id)

    code, rows, err = update(config(tmp_path, {"db": {"container": project.container_name("db")}}, side))

    assert code == 0, err
    assert rows[0]["result"] == "upgraded", rows
    project.note_volumes()
    upgraded = project.container("db")
    assert next(m["Name"] for m in upgraded["Mounts"] if m["Destination"] == "/data") == volume
    assert project.exec("db", "cat", "/data/marker") == "kept"
    assert "Recreate" not in project.compose("up", "-d").stderr
    assert project.container("db")["Id"] == upgraded["Id"]


@pytest.mark.parametrize("side", ["20.10"], indirect=True)
def test_what_compose_copies_in_is_refused_before_any_pull(
    side: Side, project: Project, registry: Registry, tmp_path: Path, run_label: str
) -> None:
    """A service with a secret from the environment and a config from `content:` is refused with a
    per-service message, by the dry run too, and nothing changes: the container, its files, and no pull."""
    tag, _, _ = push_version(side, registry, "compose-secret")
    old_id = side.client.images.get(tag).id
    project.directory.mkdir(parents=True)
    (project.directory / ".env").write_text("DW_TEST_TOKEN=s3cret\n")  # compose reads the project's .env
    project.up(
        f"""
        services:
          app:
            image: {tag}
            secrets: [token]
            configs: [{{source: inline, target: /etc/app.conf}}]
            {_labelled(run_label)}
        secrets:
          token: {{environment: DW_TEST_TOKEN}}
        configs:
          inline: {{content: "setting=1"}}
        """
    )
    before = project.container("app")["Id"]
    _, digest = _remote_only(side, registry, "compose-secret", old_id)
    cfg = config(tmp_path, {"app": {"container": project.container_name("app")}}, side)

    planned = update(cfg, "--dry-run")
    code, rows, err = update(cfg)

    for got_code, got_rows in ((planned[0], planned[1]), (code, rows)):
        assert got_code == 1, err
        assert (got_rows[0]["result"], got_rows[0]["step"]) == ("error", "plan")
        assert (
            f"compose service 'app' of project '{project.name}' has secret 'token' (environment:), "
            "config 'inline' (content:)"
        ) in str(got_rows[0]["error"])
    assert project.container("app")["Id"] == before
    assert project.exec("app", "cat", "/run/secrets/token") == "s3cret"
    assert project.exec("app", "cat", "/etc/app.conf") == "setting=1"
    with pytest.raises(docker.errors.ImageNotFound):
        side.client.images.get(f"{tag.rpartition(':')[0]}@{digest}")
