"""Retained versions and on-demand rollback on the real engine, with a real (stoppable) registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest

from dockwarden import config as configuration
from dockwarden.history import History
from dockwarden.skiplist import SkipList
from dockwarden.upgrade import Result
from tests.integration.conftest import ENGINES
from tests.integration.helpers import cli
from tests.integration.upgrade_lab import Side, config, push_version, run_cycle, update, wait_serving
from tests.support.registry import Registry

pytestmark = pytest.mark.engine


def repo_images(client: docker.DockerClient, repo: str) -> list[dict[str, Any]]:
    """Images on disk known by `repo` (by a tag or a digest), from the raw list API."""
    return [
        item
        for item in client.api.images()
        if any(ref.startswith(repo + ":") for ref in item.get("RepoTags") or ())
        or any(ref.startswith(repo + "@") for ref in item.get("RepoDigests") or ())
    ]


def retained_tags(client: docker.DockerClient, repo: str, container: str) -> list[str]:
    found = [ref for item in repo_images(client, repo) for ref in item.get("RepoTags") or ()]
    return sorted(ref for ref in found if ref.startswith(f"{repo}:dockwarden-{container}-2"))


def rollback(cfg: Path, service: str, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = cli("rollback", "-c", str(cfg), service, "--json", *args)
    rows = json.loads(proc.stdout) if proc.stdout.strip() else [{}]
    return proc.returncode, rows[0], proc.stderr


def test_ten_upgrades_keep_exactly_keep_previous_plus_one_versions(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """After ten upgrades the repository has the running image and the two newest previous ones, all
    tagged (so `docker image prune` spares them), and nothing dangling or stopped is left."""
    name, port, side = web
    repo = f"{registry.host}/app"
    cfg_path = config(tmp_path, {"web": {"container": name, "image": f"{repo}:latest"}})
    cfg = configuration.load(cfg_path)
    digests = []
    for _ in range(10):
        _, marker, digest = push_version(side, registry, "app")
        report = run_cycle(cfg)
        assert [o.result for o in report.outcomes] == [Result.UPGRADED], report.outcomes
        assert wait_serving(port) == marker
        digests.append(digest)

    client = side.client
    on_disk = repo_images(client, repo)
    assert len(on_disk) == cfg.services[0].keep_previous + 1 == 3
    kept = retained_tags(client, repo, name)
    assert len(kept) == 2
    # The two retained are the two versions before the running one, newest first in `status`.
    status = json.loads(cli("status", "-c", str(cfg_path), "--json").stdout)[0]
    assert status["running_digest"] == digests[-1]
    assert [v["digests"] for v in status["retained"]] == [[digests[-2]], [digests[-3]]]
    assert status["last_upgrade"]["result"] == Result.UPGRADED
    # Tagged, so neither `docker image prune` nor `dangling=true | xargs docker rmi` would take them.
    dangling = {item["Id"] for item in client.api.images(filters={"dangling": True})}
    assert not dangling & {item["Id"] for item in on_disk}
    assert not [
        c for c in client.api.containers(all=True) if c["Names"][0].lstrip("/").startswith(name + "--")
    ]
    # Every upgrade and every released version is in the history.
    entries = History(cfg.state_dir).entries("web")
    assert sum(1 for e in entries if e["event"] == "upgrade" and e["result"] == Result.UPGRADED) == 10
    released = [e for e in entries if e["event"] == "released"]
    assert sum(1 for e in released if e["image_deleted"]) == 8, released


@pytest.mark.parametrize("web", ENGINES, indirect=True)
def test_rollback_works_with_the_registry_stopped_and_skips_the_digest_it_left(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """With the registry down, `rollback` brings the previous version back through the gated
    transaction, adds the digest it left to those skipped, and the next update does not go back to it."""
    name, port, side = web
    first = wait_serving(port)
    repo = f"{registry.host}/app"
    cfg_path = config(tmp_path, {"web": {"container": name, "image": f"{repo}:latest"}}, side)
    _, second, digest = push_version(side, registry, "app")
    code, rows, _ = update(cfg_path)
    assert (code, rows[0]["result"]) == (0, Result.UPGRADED)
    assert wait_serving(port) == second

    registry.stop()
    cfg = configuration.load(cfg_path)
    earlier = "sha256:" + "0" * 64  # a digest that failed its gate before: the rollback must keep it
    SkipList(cfg.state_dir).add("web", [earlier], "gate: unhealthy")
    code, row, stderr = rollback(cfg_path, "web")
    assert (code, row["result"]) == (0, "reverted"), stderr
    assert row["from_digest"] == digest
    assert wait_serving(port) == first
    assert '"step": "gate"' in stderr  # the same gated transaction as an upgrade
    assert '"step": "pull"' not in stderr
    entry = SkipList(cfg.state_dir).get("web")
    assert entry is not None
    assert entry.digests == (earlier, digest)
    # The version rolled away from is now the newest retained one: rolling forward is instant too.
    kept = retained_tags(side.client, repo, name)
    assert len(kept) == 1

    registry.start()
    code, rows, _ = update(cfg_path)
    assert (code, rows[0]["result"]) == (0, Result.SKIPPED)
    assert "rolled back by hand" in rows[0]["error"]
    assert wait_serving(port) == first
    events = [e["event"] for e in History(cfg.state_dir).entries("web")]
    assert events[:2] == ["skipped", "checked"]
    assert "rollback" in events


def test_rollback_to_a_named_digest_and_clear_errors(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """`--to DIGEST` goes to that version, even past a newer retained one; an unknown digest or service
    is a clear error that leaves the service running as it was."""
    name, port, side = web
    first = wait_serving(port)
    repo = f"{registry.host}/app"
    cfg_path = config(tmp_path, {"web": {"container": name, "image": f"{repo}:latest"}})
    first_digest = json.loads(cli("status", "-c", str(cfg_path), "--json").stdout)[0]["running_digest"]
    pushed = []
    for _ in range(2):
        _, marker, digest = push_version(side, registry, "app")
        assert update(cfg_path)[1][0]["result"] == Result.UPGRADED
        pushed.append((marker, digest))
    assert wait_serving(port) == pushed[-1][0]

    unknown = "sha256:" + "0" * 64
    code, row, _ = rollback(cfg_path, "web", "--to", unknown)
    assert (code, row["result"]) == (1, Result.ERROR)
    assert "not on this host" in row["error"]
    assert "never pulls" in row["error"]
    assert wait_serving(port) == pushed[-1][0]
    assert cli("rollback", "-c", str(cfg_path), "nosuch").returncode == 2
    bad = cli("rollback", "-c", str(cfg_path), "web", "--to", "latest")
    assert bad.returncode == 2
    assert "is not a digest" in bad.stderr
    assert "Traceback" not in bad.stderr

    code, row, stderr = rollback(cfg_path, "web", "--to", first_digest)
    assert (code, row["result"]) == (0, "reverted"), stderr
    assert row["to_digest"] == first_digest
    assert wait_serving(port) == first
    status = json.loads(cli("status", "-c", str(cfg_path), "--json").stdout)[0]
    assert status["running_digest"] == first_digest
    assert [v["digests"][0] for v in status["retained"]] == [pushed[1][1], pushed[0][1]]
    assert status["skipped"]["digests"] == [pushed[1][1]]
    # Asking for the running version is a no-op, not an error.
    code, row, _ = rollback(cfg_path, "web", "--to", first_digest)
    assert (code, row["result"]) == (0, Result.UP_TO_DATE)
    # The history answers what happened, newest first.
    table = cli("history", "-c", str(cfg_path), "web").stdout.splitlines()
    assert table[0].split() == ["TIME", "SERVICE", "EVENT", "DETAIL"]
    assert "rollback  up-to-date" in table[1]
    assert any("rollback  reverted" in line for line in table[2:6])


def test_a_service_whose_new_version_crashed_can_be_rolled_back(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """An upgrade passed its gate, then the container died: `rollback` brings the previous version up
    (an upgrade would refuse a container that is not running; a rollback is asked for exactly then)."""
    name, port, side = web
    first = wait_serving(port)
    cfg_path = config(tmp_path, {"web": {"container": name}})
    push_version(side, registry, "app")
    assert update(cfg_path)[1][0]["result"] == Result.UPGRADED
    side.client.containers.get(name).stop(timeout=5)
    code, _, _ = update(cfg_path, "--force")
    assert code == 0  # up to date: nothing to do, and a stopped container is not touched
    code, row, stderr = rollback(cfg_path, "web")
    assert (code, row["result"]) == (0, "reverted"), stderr
    assert wait_serving(port) == first
