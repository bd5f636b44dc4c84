"""`dockwarden status` per service, from recorded engine data and history entries (pure)."""

from __future__ import annotations

from dockwarden import report, status
from dockwarden.config import Service
from dockwarden.engine import ContainerView
from dockwarden.skiplist import Entry, Skip
from tests.unit.conftest import Recorded


def _inspect(rec: Recorded) -> ContainerView:
    """What inspect says of recorded-web, reduced to the fields status reads (and the ID a view needs)."""
    return ContainerView.from_inspect(
        {
            "Id": rec.container("recorded-web").id,
            "Image": rec.running,
            "State": {"Status": "running", "Health": {"Status": "healthy"}},
            "Config": {"Image": "127.0.0.1:5000/recorded:latest"},
        }
    )


ENTRIES = [  # newest first, as History.entries returns them
    {"at": "2026-11-28T07:30:00.000+00:00", "event": "checked", "registry_digest": "sha256:" + "9" * 64},
    {"at": "2026-11-28T07:29:00.000+00:00", "event": "upgrade", "result": "upgraded"},
    {"at": "2026-11-28T07:20:00.000+00:00", "event": "checked", "registry_digest": "sha256:" + "8" * 64},
]


def test_status_combines_engine_history_and_skip_list(rec: Recorded) -> None:
    """State and health from inspect, running digest from the image, registry digest and last upgrade
    from the newest history entries, retained versions newest first, the skip entry as is."""
    skipped = Entry(
        skips=(Skip(digest="sha256:" + "7" * 64, reason="gate: unhealthy", at="2026-11-28T07:00:00+00:00"),)
    )
    found = status.describe(
        Service(name="web", container="recorded-web"), _inspect(rec), rec.images, ENTRIES, skipped
    )
    assert (found.state, found.health) == ("running", "healthy")
    assert found.image == "127.0.0.1:5000/recorded:latest"
    image = next(i for i in rec.images if i.id == rec.running)
    assert found.running_digest == image.repo_digests[0].partition("@")[2]
    assert found.registry_digest == "sha256:" + "9" * 64
    assert found.last_upgrade == ENTRIES[1]
    assert len(found.retained) == 3
    assert found.skipped == skipped
    as_json = found.to_json()
    assert as_json["skipped"]["digests"] == list(skipped.digests)
    assert as_json["skipped"]["reason"] == "gate: unhealthy"
    assert as_json["skipped"]["skips"] == [s.to_json() for s in skipped.skips]
    assert [v["retired_at"] for v in as_json["retained"]] == sorted(
        (v["retired_at"] for v in as_json["retained"]), reverse=True
    )
    row = report.status_table([found]).splitlines()[1]
    assert "running (healthy)" in row
    assert "upgraded 2026-11-28 07:29" in row


def test_a_missing_container_still_shows_what_is_known(rec: Recorded) -> None:
    """Without its container a service is `missing`, with its history and retained versions."""
    found = status.describe(Service(name="web", container="recorded-web"), None, rec.images, ENTRIES, None)
    assert found.state == "missing"
    assert found.running_digest is None
    assert found.registry_digest == "sha256:" + "9" * 64
    assert len(found.retained) == 3
