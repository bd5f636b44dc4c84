"""Engine lists recorded on both lab engines, for the pure retention, GC and status logic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockwarden.engine import ContainerView, ImageView

DATA = Path(__file__).parents[1] / "data"


@dataclass(frozen=True)
class Recorded:
    """The image and container lists after three upgrades of `recorded-web` with keep_previous 2, while
    `recorded-other` still runs the first version, plus an old dangling image used only by a created
    container `recorded-stopped` (label role=batch). Engine 20.10 lists a dangling image's tags as
    `<none>:<none>`, 26.1 as an empty list. Read as the engine's list readers read them; each view's
    `raw` is the recorded list item."""

    images: list[ImageView]
    containers: list[ContainerView]

    def container(self, name: str) -> ContainerView:
        return next(c for c in self.containers if c.name == name)

    @property
    def running(self) -> str:
        return self.container("recorded-web").image_id

    @property
    def stopped(self) -> ContainerView:
        return self.container("recorded-stopped")

    @property
    def dangling(self) -> str:
        return self.stopped.image_id


@pytest.fixture(params=["engine20", "engine26"])
def rec(request: pytest.FixtureRequest) -> Recorded:
    data = json.loads((DATA / f"retention-{request.param}.json").read_text())
    return Recorded(
        [ImageView.from_list(item) for item in data["images"]],
        [ContainerView.from_list(item) for item in data["containers"]],
    )
