"""The engine's read views, built from lists and inspect documents recorded on Engine 20.10 and 26.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockwarden.engine import ContainerState, ContainerView, Health, ImageView
from tests.unit.conftest import Recorded

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(params=["recreate-engine20.json", "recreate-engine26.json"])
def inspected(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A container's and its image's inspect documents: {"container": ..., "image": ...}."""
    data: dict[str, Any] = json.loads((DATA / request.param).read_text())
    return data


def _microseconds(stamp: str) -> str:
    """An RFC 3339 time as the engine writes it, cut to what a datetime holds: 2026-11-28T05:14:20.440347."""
    return stamp[:26]


def test_container_from_list(rec: Recorded) -> None:
    """A list item gives the name without its slash, the image ID, the state and labels, the creation time
    from Unix seconds, and the network mode."""
    item = rec.container("recorded-web").raw
    view = ContainerView.from_list(item)
    assert (view.id, view.name, view.image_id) == (item["Id"], "recorded-web", rec.running)
    assert (view.state, view.running) == (ContainerState.RUNNING, True)
    assert view.config_image == "127.0.0.1:5000/recorded:latest"
    assert view.labels == item["Labels"]
    assert view.created == datetime.fromtimestamp(item["Created"], UTC)
    assert view.network_mode == item["HostConfig"]["NetworkMode"]
    assert view.raw is item


def test_container_from_list_after_its_tag_moved(rec: Recorded) -> None:
    """The list API shows the image ID instead of the reference once that tag points at another image."""
    item = rec.container("recorded-other").raw
    assert ContainerView.from_list(item).config_image == item["ImageID"]


def test_container_from_list_never_started(rec: Recorded) -> None:
    """A container that was created and never started is in state `created`, not running."""
    view = ContainerView.from_list(rec.stopped.raw)
    assert (view.state, view.running, view.labels["role"]) == (ContainerState.CREATED, False, "batch")


def test_container_from_list_with_link_aliases() -> None:
    """A legacy link's "/linker/alias" name, listed first, is not taken for the container's own name."""
    item = {"Id": "c" * 64, "Names": ["/app/db", "/db"], "ImageID": "sha256:" + "a" * 64, "State": "exited"}
    view = ContainerView.from_list(item)
    assert (view.name, view.state, view.labels, view.network_mode) == ("db", "exited", {}, "default")
    assert view.linked_by == ("app",)  # the container that links to it


def test_container_from_inspect(inspected: dict[str, Any]) -> None:
    """An inspect document gives the same fields from Name, Image, State.Status, Config and HostConfig, and
    the creation time from RFC 3339 with nanoseconds."""
    data = inspected["container"]
    view = ContainerView.from_inspect(data)
    assert (view.id, view.name, view.image_id) == (data["Id"], "dwcap", inspected["image"]["Id"])
    assert view.config_image == "127.0.0.1:5000/cap:latest"
    assert (view.state, view.running) == (ContainerState.RUNNING, True)
    assert view.labels == {
        "com.docker.compose.project": "demo",
        "dockwarden.test": "capture",
        "marker": "old",
    }
    assert view.created.tzinfo == UTC
    assert view.created.strftime("%Y-%m-%dT%H:%M:%S.%f") == _microseconds(data["Created"])
    assert view.network_mode == "dwcapnet"
    assert view.raw is data


def test_container_health_and_stop_time_from_inspect(inspected: dict[str, Any]) -> None:
    """Inspect gives the HEALTHCHECK status (None without one) and, once the container has stopped, when
    (None for the zero time: it never did)."""
    data = inspected["container"]
    view = ContainerView.from_inspect(data)
    assert (view.health, view.finished_at) == (Health.STARTING, None)
    stopped = {
        **data,
        "State": {**data["State"], "Status": "exited", "FinishedAt": "2026-11-28T07:15:00.123456789Z"},
    }
    assert ContainerView.from_inspect(stopped).finished_at == datetime(
        2026, 11, 28, 7, 15, 0, 123456, tzinfo=UTC
    )
    bare = ContainerView.from_inspect({**data, "State": {"Status": "running"}})
    assert (bare.health, bare.finished_at) == (None, None)


def test_container_list_item_has_no_health_or_stop_time(rec: Recorded) -> None:
    """The list API's health is only words in its Status text, and it has no stop time: both None."""
    view = rec.container("recorded-web")
    assert (view.health, view.finished_at) == (None, None)


def test_unknown_container_state_reads_as_unknown() -> None:
    """A state outside the Engine API's seven (a newer engine's) reads as UNKNOWN, never as another state
    and never as an error that would fail a whole check cycle."""
    view = ContainerView.from_list({"Id": "c" * 64, "Names": ["/x"], "State": "sleeping"})
    assert view.state is ContainerState.UNKNOWN
    assert not view.running


def test_image_from_list(rec: Recorded) -> None:
    """A list item gives the image's tags, repository digests, labels, build time and size."""
    item = next(i.raw for i in rec.images if i.id == rec.running)
    view = ImageView.from_list(item)
    assert view.id == rec.running
    assert view.tags == ("127.0.0.1:5000/recorded:latest",)
    assert view.repo_digests == tuple(item["RepoDigests"])
    assert view.repo_digests[0].startswith("127.0.0.1:5000/recorded@sha256:")
    assert view.labels["marker"] == "v3"
    assert view.created == datetime.fromtimestamp(item["Created"], UTC)
    assert view.size == item["Size"] > 0


def test_untagged_image_from_list_has_no_tags_on_either_engine(rec: Recorded) -> None:
    """Engine 20.10's `<none>:<none>` and `<none>@<none>` are not tags or digests: () as on 26.1."""
    item = next(i.raw for i in rec.images if i.id == rec.dangling)
    view = ImageView.from_list(item)
    assert (view.tags, view.repo_digests) == ((), ())
    assert view.created == datetime(1990, 1, 1, tzinfo=UTC)  # the build time recorded for it


def test_image_from_inspect(inspected: dict[str, Any]) -> None:
    """An inspect document gives the same fields, the labels from Config.Labels."""
    data = inspected["image"]
    view = ImageView.from_inspect(data)
    assert view.id == data["Id"]
    assert (view.tags, view.repo_digests) == (("127.0.0.1:5000/cap:latest",), ())
    assert view.labels == {"dockwarden.test": "capture", "marker": "old"}
    assert view.created.strftime("%Y-%m-%dT%H:%M:%S.%f") == _microseconds(data["Created"])
    assert view.size == 1982330
    assert view.raw is data


def test_views_are_hashable_and_compare_without_raw(rec: Recorded) -> None:
    """Views can go in sets, and two views of one object are equal whatever else their documents hold."""
    item = rec.container("recorded-web").raw
    view = ContainerView.from_list(item)
    assert view == ContainerView.from_list({**item, "Status": "Up 2 hours"})
    assert len({view, ImageView.from_list(rec.images[0].raw)}) == 2


# As Engine 28.5.2 with the containerd image store listed them (API 1.51): an image pulled by digest and then
# tagged, and the container running it; the image's ID is its manifest digest.
_MANIFEST = "sha256:dd6802c5c4a223b312650752c98dca383cc7ec28c773b280f9afffbb4f2e4a7a"
_CONTAINERD_IMAGE = {
    "Containers": 1,
    "Created": 1796018400,
    "Descriptor": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": _MANIFEST,
        "size": 536,
    },
    "Id": _MANIFEST,
    "Labels": {"dockwarden.test": "e28manual"},
    "RepoDigests": [f"127.0.0.1:5000/e28x@{_MANIFEST}"],
    "RepoTags": ["127.0.0.1:5000/e28x:latest", f"127.0.0.1:5000/e28x@{_MANIFEST}"],
    "SharedSize": -1,
    "Size": 3072005,
}
_CONTAINERD_CONTAINER = {
    "Id": "1120e7e7954ac754edb0d7be83766e78971740fda9ec035a73ea8f45c52f6fb4",
    "Names": ["/e28x-run"],
    "Image": "127.0.0.1:5000/e28x:latest",
    "ImageID": _MANIFEST,
    "ImageManifestDescriptor": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": _MANIFEST,
        "size": 536,
        "platform": {"architecture": "amd64", "os": "linux"},
    },
    "State": "running",
}


def test_digest_names_in_repo_tags_are_not_tags_on_the_containerd_store() -> None:
    """The containerd store lists a digest reference among RepoTags; it reads as a repository digest, never
    as a tag, and the manifest the image is counts among the digests naming its content."""
    view = ImageView.from_list(_CONTAINERD_IMAGE)
    assert view.tags == ("127.0.0.1:5000/e28x:latest",)
    assert view.repo_digests == (f"127.0.0.1:5000/e28x@{_MANIFEST}",)
    assert view.manifest_digest == _MANIFEST
    assert view.content == frozenset({_MANIFEST})
    only_digest = ImageView.from_list({**_CONTAINERD_IMAGE, "RepoTags": [f"127.0.0.1:5000/e28x@{_MANIFEST}"]})
    assert only_digest.tags == ()


def test_container_names_the_platform_manifest_it_runs_on_the_containerd_store(rec: Recorded) -> None:
    """On the containerd store a container says which platform manifest it runs; elsewhere that is None."""
    assert ContainerView.from_list(_CONTAINERD_CONTAINER).manifest_digest == _MANIFEST
    assert rec.container("recorded-web").manifest_digest is None
