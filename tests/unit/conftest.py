"""Engine lists recorded on both lab engines, for the pure retention, GC and status logic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parents[1] / "data"


@dataclass(frozen=True)
class Recorded:
    """The image and container lists after three upgrades of `recorded-web` with keep_previous 2, while
    `recorded-other` still runs the first version, plus an old dangling image used only by a created
    container `recorded-stopped` (label role=batch). Engine 20.10 lists a dangling image's tags as
    `<none>:<none>`, 26.1 as an empty list."""

    images: list[dict[str, Any]]
    containers: list[dict[str, Any]]

    def container(self, name: str) -> dict[str, Any]:
        return next(c for c in self.containers if c["Names"] == [f"/{name}"])

    @property
    def running(self) -> str:
        return str(self.container("recorded-web")["ImageID"])

    @property
    def stopped(self) -> dict[str, Any]:
        return self.container("recorded-stopped")

    @property
    def dangling(self) -> str:
        return str(self.stopped["ImageID"])


@pytest.fixture(params=["engine20", "engine26"])
def rec(request: pytest.FixtureRequest) -> Recorded:
    data = json.loads((DATA / f"retention-{request.param}.json").read_text())
    return Recorded(data["images"], data["containers"])
