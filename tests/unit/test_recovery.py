"""What a killed upgrade leaves, found by `recovery.leftovers` on the lists recorded on both engines."""

from __future__ import annotations

from pathlib import Path

from dockwarden import recovery
from dockwarden.config import Service
from dockwarden.engine import ContainerView, ImageView
from dockwarden.recovery import LeftoverKind
from dockwarden.recreate import REPLACES_LABEL
from tests.unit.conftest import Recorded


def _with_leftovers(rec: Recorded) -> tuple[list[ContainerView], list[ImageView]]:
    """The recorded lists plus -done, -old and -old-stopped copies and two -pulled tags, of web and others."""
    web = rec.container("recorded-web").raw
    labels = web.get("Labels") or {}
    # What proves them ours: successors naming c1 and c2 in dockwarden.replaces; c4 by its record.
    containers = [
        *(c for c in rec.containers if c.name != "recorded-web"),
        *(
            ContainerView.from_list(item)
            for item in (
                {**web, "Labels": {**labels, REPLACES_LABEL: "c1"}},
                {**web, "Id": "s2", "Names": ["/recorded-db"], "Labels": {**labels, REPLACES_LABEL: "c2"}},
            )
        ),
        *(
            ContainerView.from_list(item)
            for item in (
                {**web, "Id": "c1", "Names": ["/recorded-web--dockwarden-old"], "State": "running"},
                {**web, "Id": "c2", "Names": ["/recorded-db--dockwarden-done"], "State": "exited"},
                {**web, "Id": "c3", "Names": ["/unwatched--dockwarden-done"], "State": "exited"},
                {**web, "Id": "c4", "Names": ["/recorded-job--dockwarden-old-stopped"], "State": "exited"},
            )
        ),
    ]
    latest = next(i for i in rec.images if "127.0.0.1:5000/recorded:latest" in i.tags)
    extra = [
        "127.0.0.1:5000/recorded:dockwarden-recorded-web-pulled",
        "127.0.0.1:5000/recorded:dockwarden-x-pulled",
    ]
    images = [
        ImageView.from_list({**i.raw, "RepoTags": [*i.raw["RepoTags"], *extra]}) if i is latest else i
        for i in rec.images
    ]
    return containers, images


def test_leftovers_of_watched_containers_only_half_done_first(rec: Recorded) -> None:
    """Set-aside copies come first (-old and -old-stopped to undo, -done to finish), then -pulled tags;
    those of containers the config does not name are another dockwarden's business and are not listed."""
    containers, images = _with_leftovers(rec)
    services = (
        Service(name="web", container="recorded-web"),
        Service(name="db", container="recorded-db"),
        Service(name="job", container="recorded-job"),
    )
    found = recovery.leftovers(services, containers, images, {"recorded-job": "c4"})
    latest = next(i for i in rec.images if "127.0.0.1:5000/recorded:latest" in i.tags)
    assert [(f.kind, f.service, f.container, f.name, f.id) for f in found] == [
        (LeftoverKind.UNDO, "web", "recorded-web", "recorded-web--dockwarden-old", "c1"),
        (LeftoverKind.FINISH, "db", "recorded-db", "recorded-db--dockwarden-done", "c2"),
        (LeftoverKind.UNDO, "job", "recorded-job", "recorded-job--dockwarden-old-stopped", "c4"),
        (
            LeftoverKind.PULLED,
            "web",
            "recorded-web",
            "127.0.0.1:5000/recorded:dockwarden-recorded-web-pulled",
            latest.id,
        ),
    ]


def test_no_leftovers_in_a_clean_state(rec: Recorded) -> None:
    """The recorded lists hold retained versions and ordinary containers, none of which is a leftover."""
    services = (Service(name="web", container="recorded-web"),)
    assert recovery.leftovers(services, rec.containers, rec.images) == []


def test_leftovers_leave_out_what_nothing_proves_ours(rec: Recorded) -> None:
    """A set-aside name beside a container that does not name it, with no successor, or with no record is
    not listed: recovery reports it and leaves it alone."""
    web = rec.container("recorded-web").raw
    # Copies of web without its dockwarden.replaces label (the recorded web is itself a successor).
    labels = {k: v for k, v in (web.get("Labels") or {}).items() if k != REPLACES_LABEL}
    web = {**web, "Labels": labels}
    containers = [
        *rec.containers,
        *(
            ContainerView.from_list(item)
            for item in (
                {**web, "Id": "c1", "Names": ["/recorded-web--dockwarden-old"], "State": "running"},
                {**web, "Id": "c2", "Names": ["/recorded-db--dockwarden-done"], "State": "exited"},
                {**web, "Id": "c4", "Names": ["/recorded-job--dockwarden-old-stopped"], "State": "exited"},
            )
        ),
    ]
    services = (
        Service(name="web", container="recorded-web"),
        Service(name="db", container="recorded-db"),
        Service(name="job", container="recorded-job"),
    )
    assert recovery.leftovers(services, containers, [], {"recorded-job": "c9"}) == []


def test_set_aside_records_are_read_back_per_container(tmp_path: Path) -> None:
    """A record names the container set aside for its own container only; a malformed one proves nothing."""
    recovery.record(tmp_path, "web", "a" * 64)
    (tmp_path / "locks" / "db.aside").write_text("not an id\n")
    assert recovery.recorded(tmp_path, ["web", "db", "job"]) == {"web": "a" * 64}
    assert oct((tmp_path / "locks" / "web.aside").stat().st_mode & 0o777) == "0o600"


def test_a_start_first_successor_beside_what_it_replaces_is_a_leftover(rec: Recorded) -> None:
    """NAME--dockwarden-new whose dockwarden.replaces names the container holding NAME is listed to undo
    (removed by converge); one naming another container is not."""
    web = rec.container("recorded-web")
    labels = {k: v for k, v in web.labels.items() if k != REPLACES_LABEL}
    staged = [
        {
            **web.raw,
            "Id": "n1",
            "Names": ["/recorded-web--dockwarden-new"],
            "Labels": {**labels, REPLACES_LABEL: web.id},
        },
        {
            **web.raw,
            "Id": "n2",
            "Names": ["/recorded-db--dockwarden-new"],
            "Labels": {**labels, REPLACES_LABEL: "x"},
        },
    ]
    db = {**web.raw, "Id": "d1", "Names": ["/recorded-db"], "Labels": labels}
    containers = [*rec.containers, *(ContainerView.from_list(item) for item in (*staged, db))]
    services = (Service(name="web", container="recorded-web"), Service(name="db", container="recorded-db"))
    found = recovery.leftovers(services, containers, [])
    assert [(f.kind, f.name, f.id) for f in found] == [
        (LeftoverKind.UNDO, "recorded-web--dockwarden-new", "n1")
    ]
