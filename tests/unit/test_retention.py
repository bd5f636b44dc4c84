"""Which versions to keep, which to let go, and where a rollback goes: pure functions on recorded lists.

The lists are recorded on Engine 20.10 and 26.1 (tests/unit/conftest.py says what they hold); each test
that reads them runs on both.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dockwarden import retention
from dockwarden.engine import ImageView
from tests.unit.conftest import Recorded

REPO = "127.0.0.1:5000/recorded"
NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def test_versions_are_read_from_tags_newest_first(rec: Recorded) -> None:
    """The three retained versions of recorded-web are found by their tags, newest first, with digests."""
    found = retention.versions(rec.images, "recorded-web")
    assert len(found) == 3
    assert [v.retired_at for v in found] == sorted((v.retired_at for v in found), reverse=True)
    assert all(v.reference.startswith(f"{REPO}:dockwarden-recorded-web-") for v in found)
    assert all(len(v.digests) == 1 and v.digests[0].startswith("sha256:") for v in found)
    assert rec.running not in {v.image_id for v in found}


def test_a_similar_container_name_does_not_own_the_versions(rec: Recorded) -> None:
    """`recorded` and `recorded-web-2` see none of recorded-web's versions."""
    assert retention.versions(rec.images, "recorded") == []
    assert retention.versions(rec.images, "recorded-web-2") == []


def test_tag_round_trip() -> None:
    """A version tag is a valid Docker tag, parsed back to the time it was made."""
    tag = retention.version_tag("web", NOW)
    assert len(tag) <= 128
    image = ImageView.from_list({"Id": "sha256:x", "RepoTags": [f"{REPO}:{tag}"], "RepoDigests": []})
    assert retention.versions([image], "web")[0].retired_at == NOW


def test_an_upgrade_keeps_the_replaced_image_and_lets_the_oldest_unused_go(rec: Recorded) -> None:
    """After one more upgrade the replaced image is tagged; of the versions beyond keep_previous, the
    one another container runs is held and reported, the others untagged."""
    known = retention.versions(rec.images, "recorded-web")
    running = rec.running
    new = "sha256:" + "f" * 64
    users = retention.users(rec.containers)
    todo = retention.plan("recorded-web", REPO, known, new, running, 2, NOW, users, (f"{REPO}:latest",))
    assert todo.tag == [(running, f"{REPO}:{retention.version_tag('recorded-web', NOW)}")]
    # previous now: running (new tag), then the three known; keep 2 -> the two oldest known are beyond.
    beyond = known[1:]
    held = [v for v in beyond if users.get(v.image_id)]
    assert [v for v, _ in todo.kept] == held
    assert "recorded-other" in todo.kept[0][1]
    assert [v for v, _ in todo.untag] == [v for v in beyond if not users.get(v.image_id)]
    assert all("keep_previous=2" in why for _, why in todo.untag)
    assert todo.remove == []


def test_keep_previous_zero_removes_the_replaced_image_only_when_nothing_holds_it() -> None:
    """With keep_previous 0 nothing is tagged; the replaced image is removed if it lost its last tag
    and no container uses it, and left alone otherwise."""
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    todo = retention.plan("web", REPO, [], new, old, 0, NOW, {})
    assert (todo.tag, todo.remove) == ([], [(old, "replaced, beyond keep_previous=0")])
    assert retention.plan("web", REPO, [], new, old, 0, NOW, {old: ["other"]}).remove == []
    assert retention.plan("web", REPO, [], new, old, 0, NOW, {}, (f"{REPO}:v1",)).remove == []


def test_a_rollback_untags_the_version_it_runs_again_and_retires_the_one_it_left(rec: Recorded) -> None:
    """Rolling back to the newest retained version: that version's tag goes (it runs), and the image
    rolled away from becomes the newest previous version."""
    known = retention.versions(rec.images, "recorded-web")
    left = rec.running
    target = known[0].image_id
    todo = retention.plan("recorded-web", REPO, known, target, left, 2, NOW, {})
    assert (known[0], "it is running again") in todo.untag
    assert todo.tag == [(left, f"{REPO}:{retention.version_tag('recorded-web', NOW)}")]
    # previous: left, known[1], known[2] -> known[2] is beyond keep_previous 2
    assert (known[2], "beyond keep_previous=2") in todo.untag


def test_retiring_a_version_twice_keeps_one_tag(rec: Recorded) -> None:
    """An image that already has a version tag gets a fresh one and loses the older."""
    known = retention.versions(rec.images, "recorded-web")
    again = known[1].image_id
    todo = retention.plan("recorded-web", REPO, known, rec.running, again, 5, NOW, {})
    assert (known[1], "a newer tag holds this version") in todo.untag
    assert todo.tag == [(again, f"{REPO}:{retention.version_tag('recorded-web', NOW)}")]


def test_rollback_target_defaults_to_the_newest_older_version(rec: Recorded) -> None:
    """Without --to, the newest retained version that is not the running image."""
    known = retention.versions(rec.images, "recorded-web")
    assert retention.choose(known, rec.running, rec.images, REPO, None) == (
        known[0].image_id,
        known[0].digests[0],
    )
    # Running the newest retained one (after a rollback), the default goes one further back.
    assert retention.choose(known, known[0].image_id, rec.images, REPO, None)[0] == known[1].image_id


def test_rollback_target_by_digest_or_image_id(rec: Recorded) -> None:
    """--to takes a manifest digest or an image ID prefix; the running one and unknown ones are errors."""
    known = retention.versions(rec.images, "recorded-web")
    digest = known[2].digests[0]
    assert retention.choose(known, rec.running, rec.images, REPO, digest) == (known[2].image_id, digest)
    prefix = known[1].image_id[:19]
    assert retention.choose(known, rec.running, rec.images, REPO, prefix)[0] == known[1].image_id
    with pytest.raises(retention.AlreadyRunning):
        retention.choose(known, rec.running, rec.images, REPO, rec.running)
    with pytest.raises(LookupError, match="never pulls"):
        retention.choose(known, rec.running, rec.images, REPO, "sha256:" + "0" * 64)
    with pytest.raises(LookupError, match="no retained version"):
        retention.choose([], rec.running, rec.images, REPO, None)


def test_pulled_tags_are_found_per_container() -> None:
    """Only the container's own -pulled tag is its leftover."""
    tags = [f"{REPO}:dockwarden-web-pulled", f"{REPO}:dockwarden-web-2-pulled"]
    images = [ImageView.from_list({"Id": "sha256:1", "RepoTags": tags})]
    assert retention.pulled_references(images, "web") == [f"{REPO}:dockwarden-web-pulled"]


LATER = datetime(2099, 1, 1, tzinfo=UTC)  # newer than every recorded version


def _foreign(rec: Recorded) -> ImageView:
    """An image of another repository, tagged as if it were recorded-web's newest retained version."""
    base = rec.images[0].raw
    return ImageView.from_list(
        {
            **base,
            "Id": "sha256:" + "9" * 64,
            "RepoTags": [f"127.0.0.1:5000/other:{retention.version_tag('recorded-web', LATER)}"],
            "RepoDigests": ["127.0.0.1:5000/other@sha256:" + "8" * 64],
        }
    )


def test_rollback_refuses_an_image_of_another_repository(rec: Recorded) -> None:
    """--to naming another repository's image, by ID or by digest, is refused with a message naming it."""
    images = [*rec.images, _foreign(rec)]
    known = retention.versions(images, "recorded-web")
    for to in ("9" * 12, "sha256:" + "9" * 64, "sha256:" + "8" * 64):
        with pytest.raises(LookupError, match=r"not an image of 127\.0\.0\.1:5000/recorded .*other"):
            retention.choose(known, rec.running, images, REPO, to)


def test_rollback_default_ignores_a_version_tag_in_another_repository(rec: Recorded) -> None:
    """A version-like tag of recorded-web in another repository is never the default rollback target."""
    images = [*rec.images, _foreign(rec)]
    known = retention.versions(images, "recorded-web")
    assert known[0].image_id == "sha256:" + "9" * 64  # the newest by its tag's stamp
    assert retention.choose(known, rec.running, images, REPO, None)[0] != known[0].image_id
