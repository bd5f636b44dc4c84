"""Image identity on both image stores: the classic one (Engine 20.10) and containerd's (Engine 28.5).

On the containerd store an image's ID is its manifest or index digest, an image pulled by digest is listed
as `repo@sha256:...` in RepoTags, a tag moved locally leaves the image it left with no references at all,
and `GET /system/df` fails now and then. Each fault is reproduced on the store where it happens.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dockwarden import config as configuration
from dockwarden import gate, imageref
from dockwarden.engine import Engine
from dockwarden.upgrade import Result, Target, Upgrade
from tests.conftest import ENGINE28
from tests.integration.helpers import cli
from tests.integration.upgrade_lab import Side, config, push_version, update
from tests.support.dfproxy import FailingDf
from tests.support.images import LABEL, load_untagged
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

SPARE_ALL_DANGLING = "36500d"  # GC here must not touch other tests' dangling images
# The GC tests of test_gc.py collect images dated 1990 with a min_age of ~22 years; this one collects only
# images from before 1981 (~45.6 years), dated 1975, so that neither takes the other's.
OLDEST_ONLY = "400000h"
PREHISTORIC = "1975-01-01T00:00:00Z"


def _gc(cfg: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = cli("gc", "-c", str(cfg), "--json", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def _exists(side: Side, image_id: str) -> bool:
    return any(item["Id"] == image_id for item in side.client.api.images(all=True))


def _run(side: Side, tag: str, run_label: str) -> str:
    name = f"dw-store-{uuid.uuid4().hex[:8]}"
    side.client.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
    return name


@pytest.mark.parametrize("side", ["20.10", "28.5"], indirect=True)
def test_a_tag_moved_locally_is_not_an_update(
    side: Side, registry: Registry, run_label: str, tmp_path: Path
) -> None:
    """A local build that moves the running image's tag (on the containerd store the running image is left
    without any reference) is not an update: check compares by content, for one HEAD and no GET, update
    changes nothing and leaves no `-pulled` tag, and GC afterwards succeeds."""
    tag, _, digest = push_version(side, registry, "moved")
    name = _run(side, tag, run_label)
    try:
        side.images.build(tag, f"local-{uuid.uuid4().hex[:8]}")  # never pushed: the registry still has digest
        cfg = config(
            tmp_path, {"web": {"container": name}}, side, extra=f"gc: {{min_age: {SPARE_ALL_DANGLING}}}"
        )
        mark = registry.mark()
        proc = cli("check", "-c", str(cfg), "--json")
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)[0]
        assert (row["status"], row["running_digest"], row["registry_digest"]) == (
            "up-to-date",
            digest,
            digest,
        )
        assert registry.manifest_requests(mark) == {"HEAD": 1}

        code, rows, err = update(cfg)
        assert (code, rows[0]["result"]) == (0, "up-to-date"), err
        names = [n for item in side.client.api.images() for n in item.get("RepoTags") or ()]
        assert not [n for n in names if n.endswith(f"dockwarden-{name}-pulled")]
        code, result, err = _gc(cfg)
        assert code == 0, (result, err)
    finally:
        side.client.containers.get(name).remove(force=True)


@pytest.mark.parametrize("side", ["28.5"], indirect=True)
def test_a_pull_that_finds_the_running_image_leaves_no_pulled_tag(
    side: Side, registry: Registry, run_label: str, tmp_path: Path
) -> None:
    """An upgrade whose pull finds the image the container runs (its tag had moved locally) ends up to date
    without a `-pulled` tag, which the containerd store would refuse to remove from an image in use, so
    that every later GC would fail."""
    tag, _, digest = push_version(side, registry, "found")
    name = _run(side, tag, run_label)
    try:
        side.images.build(tag, f"local-{uuid.uuid4().hex[:8]}")
        cfg = configuration.load(config(tmp_path, {"web": {"container": name}}, side))
        target = Target(
            service="web",
            container=name,
            ref=imageref.parse(tag),
            from_digest=None,
            to_digest=digest,
            policy=gate.policy_for(cfg.services[0], timedelta(seconds=30)),
        )
        engine = Engine.connect(ENGINE28)
        try:
            outcome = Upgrade(engine, target).run()
        finally:
            engine.close()
        assert outcome.result == Result.UP_TO_DATE, outcome.error
        repo = tag.rpartition(":")[0]
        running = side.client.api.inspect_container(name)["Image"]
        assert side.client.api.inspect_image(running)["RepoTags"] == [f"{repo}@{digest}"]  # the pull's name
        gc_cfg = config(
            tmp_path, {"web": {"container": name}}, side, extra=f"gc: {{min_age: {SPARE_ALL_DANGLING}}}"
        )
        code, result, err = _gc(gc_cfg)
        assert code == 0, (result, err)
    finally:
        side.client.containers.get(name).remove(force=True)


@pytest.mark.parametrize("keep", [0, 1])
@pytest.mark.parametrize("side", ["28.5"], indirect=True)
def test_replaced_images_pulled_by_digest_do_not_leak(
    side: Side, registry: Registry, run_label: str, tmp_path: Path, keep: int
) -> None:
    """On the containerd store the images dockwarden pulled by digest carry `repo@sha256:...` names in
    RepoTags; they are not tags, so after three upgrades exactly the running image and `keep_previous`
    retained versions are left of the service's repository."""
    tag, _, first = push_version(side, registry, f"leak{keep}")
    name = _run(side, tag, run_label)
    pushed = [first]  # on the containerd store an image's ID is its manifest digest
    try:
        cfg = config(tmp_path, {"web": {"container": name, "keep_previous": keep}}, side)
        for _ in range(3):
            pushed.append(push_version(side, registry, f"leak{keep}")[2])
            code, rows, err = update(cfg)
            assert (code, rows[0]["result"]) == (0, "upgraded"), err
        assert side.client.api.inspect_container(name)["Image"] == pushed[-1]
        left = [digest for digest in pushed if _exists(side, digest)]
        assert left == pushed[len(pushed) - 1 - keep :]
        if keep:
            names = side.client.api.inspect_image(pushed[-2])["RepoTags"]
            assert any(f":dockwarden-{name}-" in n for n in names), names
    finally:
        side.client.containers.get(name).remove(force=True)


@pytest.mark.parametrize("side", ["28.5"], indirect=True)
def test_gc_survives_a_failing_disk_usage_call_and_removes_digest_only_images(
    side: Side, registry: Registry, run_label: str, tmp_path: Path
) -> None:
    """When `GET /system/df` fails (as it does now and then on the containerd store), GC still removes
    what it should, sizes each removal from the image list and says so in its log. An old image known only
    by a digest reference (listed as `repo@sha256:...` in RepoTags) is untagged, so it goes too."""
    unused = load_untagged(side.client, run_label, PREHISTORIC, size=256 * 1024)
    pulled = load_untagged(side.client, run_label, PREHISTORIC, size=256 * 1024)
    repo = f"{registry.host}/digest-only"
    side.client.api.tag(pulled, repo, "v1")
    digest = side.images.push(f"{repo}:v1")
    side.client.api.remove_image(f"{repo}:v1")
    side.client.api.pull(repo, tag=digest)  # docker-py joins REPO@DIGEST for a digest "tag"
    assert side.client.api.inspect_image(pulled)["RepoTags"] == [f"{repo}@{digest}"]
    with FailingDf(ENGINE28.removeprefix("unix://")) as proxy:
        cfg = config(tmp_path, {}, extra=f"docker_host: {proxy.url}\ngc: {{min_age: {OLDEST_ONLY}}}")
        code, result, err = _gc(cfg)
    assert code == 0, (result, err)
    assert proxy.df_calls >= 1
    assert "gc.sizes_estimated" in err
    removed = {item["id"]: item for item in result["removals"] if item["done"]}
    assert {unused, pulled} <= set(removed)
    assert all(removed[i]["bytes"] >= 256 * 1024 and removed[i]["kind"] == "image" for i in (unused, pulled))
    assert result["reclaimed_bytes"] >= 2 * 256 * 1024
    assert not _exists(side, unused)
    assert not _exists(side, pulled)
