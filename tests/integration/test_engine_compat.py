"""The same detection on Docker Engine 26.1 (API 1.45), running beside 20.10 (API 1.41)."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import docker
import pytest

from dockwarden.engine import Engine
from tests.conftest import ENGINE26
from tests.integration.helpers import cli, write_config
from tests.support.images import LABEL, ImageFactory
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


def test_api_version_is_negotiated_per_engine() -> None:
    """The client speaks each engine's own API version instead of a pinned one."""
    old, new = Engine.connect(), Engine.connect(ENGINE26)
    try:
        assert (old.api_version, new.api_version) == ("1.41", "1.45")
    finally:
        old.close()
        new.close()


def test_detection_on_engine_26(
    registry: Registry, images: ImageFactory, docker26: docker.DockerClient, run_label: str, tmp_path: Path
) -> None:
    """On Engine 26.1 a current container is up to date, and a new push to its tag is an update."""
    tag = f"{registry.host}/compat:latest"
    _, first = images.build_and_push(tag, f"c-{uuid.uuid4().hex[:8]}")
    docker26.images.pull(tag)
    name = f"dw-compat-{uuid.uuid4().hex[:8]}"
    docker26.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
    try:
        cfg = write_config(
            tmp_path / "dw.yaml", {"web": {"container": name}}, extra=f"docker_host: {ENGINE26}"
        )
        proc = cli("check", "-c", str(cfg), "--json")
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)[0]
        assert (row["status"], row["running_digest"], row["registry_digest"]) == ("up-to-date", first, first)

        _, second = images.build_and_push(tag, f"c-{uuid.uuid4().hex[:8]}")
        row = json.loads(cli("check", "-c", str(cfg), "--json").stdout)[0]
        assert (row["status"], row["running_digest"], row["registry_digest"]) == (
            "update-available",
            first,
            second,
        )
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker26.containers.get(name).remove(force=True)
