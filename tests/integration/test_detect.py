"""Detection against a real engine and real distribution registries on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import docker
import pytest

from tests.conftest import Deploy
from tests.integration.helpers import check, checker, cli, run_container, write_config
from tests.support.images import ImageFactory
from tests.support.registry import Registry, free_port

pytestmark = pytest.mark.engine


def unique(prefix: str) -> str:
    return f"dw-{prefix}-{uuid.uuid4().hex[:8]}"


def test_up_to_date_costs_one_head(
    deploy: Deploy,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """A container running the image its tag points to is up to date, at the cost of one HEAD and no GET."""
    name, _tag, _image_id, digest = deploy(registry)
    cfg = write_config(tmp_path / "dw.yaml", {"web": {"container": name}})
    mark = registry.mark()
    result = check(cfg)["web"]
    assert (result.status, result.running_digest, result.registry_digest, result.error) == (
        "up-to-date",
        digest,
        digest,
        None,
    )
    assert registry.manifest_requests(mark) == {"HEAD": 1}


def test_new_push_is_an_update_and_learned_once(
    deploy: Deploy,
    registry: Registry,
    images: ImageFactory,
    tmp_path: Path,
) -> None:
    """Pushing a new image to the watched tag is reported as an update; a second cycle spends no GET on it."""
    name, tag, _image_id, old = deploy(registry, "sample:stable")
    _, new = images.build_and_push(tag, unique("new"))
    assert new != old
    cfg = write_config(tmp_path / "dw.yaml", {"web": {"container": name}})
    own = checker()
    mark = registry.mark()
    first = check(cfg, own)["web"]
    assert (first.status, first.running_digest, first.registry_digest) == ("update-available", old, new)
    assert registry.manifest_requests(mark) == {"HEAD": 1, "GET": 1}
    mark = registry.mark()
    second = check(cfg, own)["web"]
    assert second.status == "update-available"
    assert registry.manifest_requests(mark) == {"HEAD": 1}


def test_shared_image_is_requested_once(
    registry: Registry,
    images: ImageFactory,
    docker_client: docker.DockerClient,
    run_label: str,
    containers: list[str],
    tmp_path: Path,
) -> None:
    """Three services on one image cost one HEAD per cycle, not three."""
    tag = f"{registry.host}/shared:1.0"
    _, digest = images.build_and_push(tag, unique("s"))
    services = {}
    for i in range(3):
        name = unique(f"s{i}")
        run_container(docker_client, run_label, name, tag, containers)
        services[f"svc{i}"] = {"container": name}
    cfg = write_config(tmp_path / "dw.yaml", services)
    mark = registry.mark()
    results = check(cfg)
    assert {r.status for r in results.values()} == {"up-to-date"}
    assert {r.registry_digest for r in results.values()} == {digest}
    assert registry.manifest_requests(mark) == {"HEAD": 1}


def test_missing_container_does_not_stop_the_others(
    deploy: Deploy,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """A service whose container does not exist gets a clear error naming it; the rest are still checked."""
    name, _tag, _image_id, _digest = deploy(registry)
    cfg = write_config(
        tmp_path / "dw.yaml", {"web": {"container": name}, "ghost": {"container": "dw-no-such"}}
    )
    proc = cli("check", "-c", str(cfg), "--json")
    assert proc.returncode == 1, proc.stderr
    rows = {row["service"]: row for row in json.loads(proc.stdout)}
    assert set(rows["web"]) == {
        "service",
        "container",
        "image",
        "running_digest",
        "registry_digest",
        "status",
        "error",
    }
    assert rows["web"]["status"] == "up-to-date"
    assert rows["ghost"]["status"] == "error"
    assert rows["ghost"]["error"] == "container 'dw-no-such' does not exist"
    assert "Traceback" not in proc.stderr
    table = cli("check", "-c", str(cfg))
    assert table.returncode == 1
    header, web, ghost = table.stdout.splitlines()
    assert header.split() == ["SERVICE", "CONTAINER", "IMAGE", "RUNNING", "REGISTRY", "STATUS"]
    assert web.split()[0] == "web"
    assert web.endswith("up-to-date")
    assert ghost.endswith("error: container 'dw-no-such' does not exist")


def test_tag_not_found_and_registry_down(
    deploy: Deploy,
    registry: Registry,
    docker_client: docker.DockerClient,
    containers: list[str],
    tmp_path: Path,
) -> None:
    """A missing tag and an unreachable registry are per-service errors with their own reasons."""
    name, _tag, _image_id, _digest = deploy(registry)
    # One container per service: a config may not watch a container twice.
    gone = deploy(registry, "sample:gone", prefix="gone")[0]
    down = deploy(registry, "sample:down", prefix="down")[0]
    dead = f"127.0.0.1:{free_port()}"
    cfg = write_config(
        tmp_path / "dw.yaml",
        {
            "ok": {"container": name},
            "gone": {"container": gone, "image": f"{registry.host}/sample:no-such-tag"},
            "down": {"container": down, "image": f"{dead}/sample:latest"},
        },
    )
    results = check(cfg)
    assert results["ok"].status == "up-to-date"
    assert (results["gone"].status, results["gone"].reason) == ("error", "not-found")
    assert "no-such-tag" in (results["gone"].error or "")
    assert (results["down"].status, results["down"].reason) == ("error", "unreachable")
    assert dead in (results["down"].error or "")
    assert docker_client.containers.get(name).status == "running"


def test_one_shot_checks_remember_digests_in_state_dir(
    registry: Registry, images: ImageFactory, deploy: Deploy, tmp_path: Path
) -> None:
    """A second `dockwarden check` process reuses what the first learned: one HEAD, no GET."""
    name, tag, _image_id, _old = deploy(registry)
    images.build_and_push(tag, unique("newer"))
    cfg = write_config(tmp_path / "dw.yaml", {"web": {"container": name}})
    mark = registry.mark()
    first = cli("check", "-c", str(cfg), "--json")
    assert json.loads(first.stdout)[0]["status"] == "update-available"
    assert registry.manifest_requests(mark) == {"HEAD": 1, "GET": 1}
    assert (tmp_path / "state" / "digests.json").exists()
    mark = registry.mark()
    second = cli("check", "-c", str(cfg), "--json")
    assert json.loads(second.stdout)[0]["status"] == "update-available"
    assert registry.manifest_requests(mark) == {"HEAD": 1}


def test_container_from_an_image_id_is_a_config_problem_and_a_digest_pin_is_pinned(
    registry: Registry,
    images: ImageFactory,
    docker_client: docker.DockerClient,
    run_label: str,
    containers: list[str],
    tmp_path: Path,
) -> None:
    """A container created from an image ID has no reference to follow: without `image:` its check fails as
    a config problem naming the fix, not as an engine error; with `image:` it is checked like any other.
    One created from a digest reference is pinned, by choice: `pinned`, with that digest, and no error."""
    tag = f"{registry.host}/unfollowed:1.0"
    image_id, digest = images.build_and_push(tag, unique("u"))
    by_id, by_digest = unique("by-id"), unique("by-digest")
    run_container(docker_client, run_label, by_id, image_id, containers)
    run_container(docker_client, run_label, by_digest, f"{registry.host}/unfollowed@{digest}", containers)
    services = {"by-id": {"container": by_id}, "by-digest": {"container": by_digest}}
    found = check(write_config(tmp_path / "dw.yaml", services))
    assert {name: (r.status, r.reason) for name, r in found.items()} == {
        "by-id": ("error", "config-problem"),
        "by-digest": ("pinned", None),
    }
    assert "set `image:`" in str(found["by-id"].error)
    assert (found["by-digest"].running_digest, found["by-digest"].error) == (digest, None)
    services["by-id"]["image"] = tag
    assert check(write_config(tmp_path / "dw.yaml", services))["by-id"].status == "up-to-date"
