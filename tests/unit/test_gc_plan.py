"""What garbage collection would remove, and why: `gc.plan` on recorded engine lists (pure).

On the lists recorded on Engine 20.10 and 26.1 (tests/unit/conftest.py): three retained versions of
recorded-web, the oldest still run by recorded-other, and an old dangling image used only by a created
container labelled role=batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dockwarden import gc, retention
from dockwarden.config import Config, Gc, Service, StoppedContainers
from dockwarden.engine import ContainerView, ImageView
from tests.unit.conftest import Recorded

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def _config(
    keep: int = 2, stopped: StoppedContainers | None = None, min_age: timedelta | None = None
) -> Config:
    service = Service(name="web", container="recorded-web", keep_previous=keep)
    return Config(
        path=Path("/x.yaml"),
        state_dir=Path("/nonexistent/state"),  # plan() never touches it
        check_concurrency=1,
        registry_timeout=timedelta(seconds=1),
        services=(service,),
        gc=Gc(min_age=min_age if min_age is not None else timedelta(hours=1), stopped_containers=stopped),
    )


def _plan(
    rec: Recorded, cfg: Config, containers: list[ContainerView] | None = None, **kwargs: Any
) -> list[gc.Removal]:
    containers = rec.containers if containers is None else containers
    stopped_at = kwargs.pop("stopped_at", {rec.stopped.id: NOW - timedelta(days=30)})
    images = kwargs.pop("images", rec.images)
    return gc.plan(cfg, containers, images, {i.id: 1000 for i in images}, stopped_at, NOW)


def test_nothing_used_or_retained_is_planned(rec: Recorded) -> None:
    """With the recorded state, GC plans nothing: the dangling image has a (stopped) user, the oldest
    version beyond keep_previous is run by another container, the others are within keep_previous."""
    assert _plan(rec, _config(keep=2)) == []


def test_versions_beyond_a_lowered_keep_previous_are_untagged_but_used_ones_stay(rec: Recorded) -> None:
    """keep_previous 0: the two unused versions are untagged (their image goes with the last tag, so
    their bytes count); the one another container runs is not touched."""
    todo = _plan(rec, _config(keep=0))
    known = retention.versions(rec.images, "recorded-web")
    used = {c.image_id for c in rec.containers}
    assert [(r.kind, r.target) for r in todo] == [
        (gc.Kind.TAG, v.reference) for v in known if v.image_id not in used
    ]
    assert all(r.bytes == 1000 and r.service == "web" for r in todo)
    assert all("keep_previous=0" in r.reason for r in todo)


def test_a_dangling_image_goes_once_its_only_user_is_collected(rec: Recorded) -> None:
    """The opt-in rule removes the old labelled stopped container, and then its dangling image too."""
    rule = StoppedContainers(labels=("role=batch",), min_age=timedelta(days=7))
    todo = _plan(rec, _config(stopped=rule))
    assert [(r.kind, r.target) for r in todo] == [
        (gc.Kind.CONTAINER, rec.stopped.id),
        (gc.Kind.IMAGE, rec.dangling),
    ]
    assert "role=batch" in todo[0].reason
    assert "dangling" in todo[1].reason
    assert todo[1].bytes == 1000


def test_the_stopped_container_rule_needs_every_label_and_the_age(rec: Recorded) -> None:
    """A selector it lacks, a value that differs, or a container stopped too recently: not removed."""
    for rule in (
        StoppedContainers(labels=("role=batch", "tier"), min_age=timedelta(days=7)),
        StoppedContainers(labels=("role=web",), min_age=timedelta(days=7)),
        StoppedContainers(labels=("role",), min_age=timedelta(days=31)),
    ):
        assert _plan(rec, _config(stopped=rule)) == [], rule


def test_running_and_watched_containers_are_never_swept(rec: Recorded) -> None:
    """A label match on a running container, or on the service's own stopped container, is not garbage."""
    rule = StoppedContainers(labels=("dockwarden.test",), min_age=timedelta(0))
    web = next(c for c in rec.containers if c.name == "recorded-web")
    stopped_web = ContainerView.from_list({**web.raw, "State": "exited"})
    others = [c for c in rec.containers if c is not web]  # the stopped one: no known stop time, so kept
    todo = _plan(
        rec, _config(stopped=rule), [stopped_web, *others], stopped_at={web.id: NOW - timedelta(days=9)}
    )
    assert todo == []


def test_young_dangling_images_are_spared(rec: Recorded) -> None:
    """An unused dangling image younger than gc.min_age may belong to a build in progress."""
    unused = [c for c in rec.containers if c is not rec.stopped]
    assert [r.target for r in _plan(rec, _config(), unused)] == [rec.dangling]
    created = next(i.created for i in rec.images if i.id == rec.dangling)
    assert _plan(rec, _config(min_age=NOW - created + timedelta(days=1)), unused) == []


def test_half_done_upgrades_and_pulled_tags_of_watched_containers_are_leftovers(rec: Recorded) -> None:
    """A -done or -old copy of a watched container is converged; its -pulled tag untagged; those of
    containers this config does not watch are left to their owner."""
    web = next(c for c in rec.containers if c.name == "recorded-web")
    copies = [
        ContainerView.from_list(
            {**web.raw, "Id": "c1", "Names": ["/recorded-web--dockwarden-done"], "State": "exited"}
        ),
        ContainerView.from_list(
            {**web.raw, "Id": "c2", "Names": ["/other--dockwarden-old"], "State": "exited"}
        ),
    ]
    latest = next(i for i in rec.images if "127.0.0.1:5000/recorded:latest" in i.tags)
    pulled = [
        ImageView.from_list(
            {
                **latest.raw,
                "RepoTags": [
                    *latest.raw["RepoTags"],
                    "127.0.0.1:5000/recorded:dockwarden-recorded-web-pulled",
                    "127.0.0.1:5000/recorded:dockwarden-other-pulled",
                ],
            }
        ),
        *(i for i in rec.images if i is not latest),
    ]
    todo = _plan(rec, _config(), [*rec.containers, *copies], images=pulled)
    assert [(r.kind, r.name, r.service) for r in todo] == [
        (gc.Kind.RECOVER, "recorded-web--dockwarden-done", "web"),
        (gc.Kind.TAG, "127.0.0.1:5000/recorded:dockwarden-recorded-web-pulled", "web"),
    ]
    assert todo[1].bytes == 0  # the image keeps its other tag and its container


def test_label_selectors() -> None:
    """KEY matches any value; KEY=VALUE only that value; all selectors must hold."""
    labels = {"a": "1", "b": ""}
    assert gc.matches(labels, ("a",))
    assert gc.matches(labels, ("a=1", "b="))
    assert not gc.matches(labels, ("a=2",))
    assert not gc.matches(labels, ("a", "c"))


def test_an_image_losing_two_tags_is_counted_once(rec: Recorded) -> None:
    """A retained version beyond keep_previous that also carries a -pulled tag: both tags go, its
    bytes are counted once."""
    known = retention.versions(rec.images, "recorded-web")
    unused = next(v for v in known if v.image_id != rec.container("recorded-other").image_id)
    images = [
        ImageView.from_list(
            {
                **i.raw,
                "RepoTags": [*i.raw["RepoTags"], "127.0.0.1:5000/recorded:dockwarden-recorded-web-pulled"],
            }
        )
        if i.id == unused.image_id
        else i
        for i in rec.images
    ]
    todo = _plan(rec, _config(keep=0), images=images)
    mine = [r for r in todo if _image_of(images, r.target) == unused.image_id]
    assert len(mine) == 2
    assert sorted(r.bytes for r in mine) == [0, 1000]


def _image_of(images: list[ImageView], reference: str) -> str:
    return next((i.id for i in images if reference in i.tags), "")
