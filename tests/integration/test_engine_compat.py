"""The same detection on every lab engine: 20.10 (API 1.41), 26.1 (API 1.45) and 28.5 with the containerd
image store (API 1.51, refusing anything below 1.44 as Docker 29 does)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from dockwarden.engine import Engine
from tests.conftest import ENGINE26, ENGINE28
from tests.integration.conftest import ENGINES
from tests.integration.helpers import cli
from tests.integration.upgrade_lab import Side, config, push_version
from tests.support.images import LABEL
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


def test_api_version_is_negotiated_per_engine() -> None:
    """The client speaks each engine's own API version instead of a pinned one: 1.44 or newer on 28.5,
    whose floor is Docker 29's."""
    engines = [Engine.connect(), Engine.connect(ENGINE26), Engine.connect(ENGINE28)]
    try:
        versions = [engine.api_version for engine in engines]
    finally:
        for engine in engines:
            engine.close()
    assert versions[:2] == ["1.41", "1.45"]
    assert tuple(int(part) for part in versions[2].split(".")) >= (1, 44)


@pytest.mark.parametrize("side", ENGINES, indirect=True)
def test_detection_on_each_engine(side: Side, registry: Registry, run_label: str, tmp_path: Path) -> None:
    """On each engine a current container is up to date, and a new push to its tag is an update."""
    tag, _, first = push_version(side, registry, "compat")
    name = f"dw-compat-{uuid.uuid4().hex[:8]}"
    side.client.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
    try:
        cfg = config(tmp_path, {"web": {"container": name}}, side)
        proc = cli("check", "-c", str(cfg), "--json")
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)[0]
        assert (row["status"], row["running_digest"], row["registry_digest"]) == ("up-to-date", first, first)

        _, _, second = push_version(side, registry, "compat")
        row = json.loads(cli("check", "-c", str(cfg), "--json").stdout)[0]
        assert (row["status"], row["running_digest"], row["registry_digest"]) == (
            "update-available",
            first,
            second,
        )
    finally:
        side.client.containers.get(name).remove(force=True)
