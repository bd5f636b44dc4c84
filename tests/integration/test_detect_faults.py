"""Detection through authentication, rate limiting and multi-platform indexes, on real registries."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import Deploy
from tests.integration.helpers import check, checker, cli, run_container, write_config
from tests.integration.upgrade_lab import Side, config
from tests.support.images import ImageFactory
from tests.support.proxy import FaultPlan, FaultProxy
from tests.support.registry import MANIFEST_LIST_V2, Registry, start_registry
from tests.support.tokenserver import TokenServer

pytestmark = pytest.mark.engine
USER, PASSWORD = "alice", "s3cret-Pa55word"


def unique(prefix: str) -> str:
    return f"dw-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[Registry]:
    reg = start_registry(tmp_path / "private", users={USER: PASSWORD})
    yield reg
    reg.stop()


@pytest.mark.parametrize("style", ["auths", "credsStore", "credHelpers"])
def test_private_registry_with_docker_config(
    deploy: Deploy,
    style: str,
    private_registry: Registry,
    tmp_path: Path,
) -> None:
    """Credentials from a Docker config (auths, a credsStore or a per-registry credHelper) open a private
    registry, and the password never appears in the output or the logs."""
    name, _tag, _image_id, digest = deploy(private_registry, "team/app:1", "priv", auth=(USER, PASSWORD))
    docker_dir = tmp_path / "docker-config"
    docker_dir.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-dwtest"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$server"\n'
    )
    helper.chmod(0o755)
    host = private_registry.host
    settings = {
        "auths": {"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}},
        "credsStore": {"credsStore": "dwtest"},
        "credHelpers": {"credHelpers": {host: "dwtest"}},
    }[style]
    (docker_dir / "config.json").write_text(json.dumps(settings))
    cfg = write_config(tmp_path / "dw.yaml", {"app": {"container": name}})
    env = {"DOCKER_CONFIG": str(docker_dir), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = cli("check", "-c", str(cfg), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert (row["status"], row["registry_digest"]) == ("up-to-date", digest)
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in proc.stdout + proc.stderr
    assert encoded not in proc.stdout + proc.stderr


def test_private_registry_without_credentials_is_unauthorized(
    deploy: Deploy,
    private_registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without credentials a private registry's 401 is a per-service `unauthorized` error, not a crash."""
    name, _tag, _image_id, _digest = deploy(private_registry, "team/app:1", "priv", auth=(USER, PASSWORD))
    empty = tmp_path / "empty-docker"
    empty.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    result = check(write_config(tmp_path / "dw.yaml", {"app": {"container": name}}))["app"]
    assert (result.status, result.reason) == ("error", "unauthorized")


def test_429_backs_off_that_registry(
    deploy: Deploy,
    registry: Registry,
    docker_client: docker.DockerClient,
    containers: list[str],
    tmp_path: Path,
) -> None:
    """A 429 with Retry-After is a per-service error and the registry is left alone until the delay passes."""
    name, _tag, image_id, _digest = deploy(registry)
    proxy = FaultProxy(registry.url, FaultPlan(status=429, headers={"Retry-After": "2"})).start()
    try:
        cfg = write_config(
            tmp_path / "dw.yaml", {"web": {"container": name, "image": f"{proxy.host}/sample:latest"}}
        )
        own = checker()
        limited_at = time.monotonic()
        first = check(cfg, own)["web"]
        assert (first.status, first.reason) == ("error", "rate-limited")
        assert "429" in (first.error or "")
        assert proxy.count == 1
        second = check(cfg, own)["web"]
        assert second.reason == "rate-limited"
        assert proxy.count == 1, "the registry was asked again during its back-off"
        proxy.plan = FaultPlan()
        time.sleep(max(0.0, limited_at + 2.2 - time.monotonic()))
        third = check(cfg, own)["web"]
        assert third.status == "up-to-date", third.error
        assert proxy.count > 1
    finally:
        proxy.stop()
    assert docker_client.containers.get(name).image.id == image_id


@pytest.mark.parametrize("side", ["20.10", "28.5"], indirect=True)
def test_other_platform_rebuild_is_not_an_update(
    side: Side,
    registry: Registry,
    run_label: str,
    side_containers: list[str],
    tmp_path: Path,
) -> None:
    """When only another architecture of a multi-arch tag changes, the index digest moves but no update is
    reported; when this platform's image changes, it is. On the containerd store, where the running image's
    ID is the index digest and the container runs its child, as on the classic one."""
    images, docker_client = side.images, side.client
    base = f"{registry.host}/base:amd64"
    image_id, _ = images.build_and_push(base, unique("amd"))
    raw, child = registry.get_manifest("base", "amd64")
    manifest = json.loads(raw)
    for blob in [manifest["config"], *manifest["layers"]]:
        registry.mount_blob("multi", blob["digest"], "base")
    registry.put_manifest("multi", None, raw, manifest["mediaType"])
    ours = {
        "mediaType": manifest["mediaType"],
        "size": len(raw),
        "digest": child,
        "platform": {"architecture": "amd64", "os": "linux"},
    }

    def push_index(arm_marker: str, amd64_entry: dict[str, object]) -> str:
        arm = registry.push_fake_platform_image("multi", "arm64", "multi", manifest["layers"][0], arm_marker)
        index = {"schemaVersion": 2, "mediaType": MANIFEST_LIST_V2, "manifests": [amd64_entry, arm]}
        return registry.put_manifest("multi", "latest", index, MANIFEST_LIST_V2)

    first_index = push_index(unique("arm1"), ours)
    tag = f"{registry.host}/multi:latest"
    docker_client.images.pull(tag)
    name = unique("multi")
    run_container(docker_client, run_label, name, tag, side_containers)
    # The classic store names the image by its config digest; the containerd store by the index's.
    assert docker_client.containers.get(name).image.id in (image_id, first_index)
    cfg = config(tmp_path, {"app": {"container": name}}, side)
    own = checker(docker_host=side.docker_host)
    assert check(cfg, own)["app"].status == "up-to-date"

    second_index = push_index(unique("arm2"), ours)
    mark = registry.mark()
    result = check(cfg, own)["app"]
    assert (result.status, result.running_digest, result.registry_digest) == (
        "up-to-date",
        first_index,
        second_index,
    )
    assert registry.manifest_requests(mark) == {"HEAD": 1, "GET": 2}  # the index once, our child once
    mark = registry.mark()
    assert check(cfg, own)["app"].status == "up-to-date"
    assert registry.manifest_requests(mark) == {"HEAD": 1}

    new_base = f"{registry.host}/base:amd64-v2"
    images.build_and_push(new_base, unique("amd2"))
    raw2, child2 = registry.get_manifest("base", "amd64-v2")
    for blob in [json.loads(raw2)["config"], *json.loads(raw2)["layers"]]:
        registry.mount_blob("multi", blob["digest"], "base")
    registry.put_manifest("multi", None, raw2, manifest["mediaType"])
    push_index(unique("arm3"), {**ours, "size": len(raw2), "digest": child2})
    assert check(cfg, own)["app"].status == "update-available"


def test_bearer_token_is_reused_until_it_expires(
    images: ImageFactory,
    docker_client: docker.DockerClient,
    run_label: str,
    containers: list[str],
    tmp_path: Path,
) -> None:
    """Against a token-auth registry, one token serves every cycle until it expires; then exactly one new
    token is fetched, before the request rather than after a 401."""
    tokens = TokenServer(tmp_path / "tokens", lifetime=12)  # cached for 12 s minus the 10 s safety margin
    reg = start_registry(tmp_path / "token-registry", auth_yaml=tokens.registry_auth_yaml())
    try:
        tag = f"{reg.host}/team/app:1"
        images.build_and_push(tag, unique("tok"))
        name = unique("tok")
        run_container(docker_client, run_label, name, tag, containers)
        cfg = write_config(tmp_path / "dw.yaml", {"app": {"container": name}})
        own = checker()
        mark = reg.mark()
        for _ in range(3):
            assert check(cfg, own)["app"].status == "up-to-date"
        assert tokens.ours() == 1
        statuses = [s for m, p, s in reg.requests_seen()[mark:] if "/manifests/" in p]
        assert statuses == [401, 200, 200, 200]  # one challenge, then the cached token every time
        time.sleep(2.2)
        mark = reg.mark()
        assert check(cfg, own)["app"].status == "up-to-date"
        assert tokens.ours() == 2
        assert [s for m, p, s in reg.requests_seen()[mark:] if "/manifests/" in p] == [200]
    finally:
        reg.stop()
        tokens.stop()


def test_slow_registry_is_a_timeout(
    deploy: Deploy,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """A registry slower than registry_timeout is a per-service `timeout`, reported within that time."""
    name = deploy(registry, prefix="slow")[0]
    fast = deploy(registry)[0]  # one container per service; this one runs what the tag points to now
    proxy = FaultProxy(registry.url, FaultPlan(delay=5)).start()
    try:
        cfg = write_config(
            tmp_path / "dw.yaml",
            {
                "slow": {"container": name, "image": f"{proxy.host}/sample:latest"},
                "fast": {"container": fast},
            },
        )
        started = time.monotonic()
        results = check(cfg, checker(timeout=0.5))
        assert time.monotonic() - started < 3
        assert (results["slow"].status, results["slow"].reason) == ("error", "timeout")
        assert "0.5s" in (results["slow"].error or "")
        assert results["fast"].status == "up-to-date"
    finally:
        proxy.stop()


@pytest.mark.parametrize("command", [["check"], ["rollback", "web"], ["gc"], ["status"]])
def test_commands_without_engine_exit_1(tmp_path: Path, command: list[str]) -> None:
    """check, rollback, gc and status against an engine that does not answer explain it and exit 1."""
    cfg = write_config(tmp_path / "dw.yaml", {"web": {}}, extra=f"docker_host: unix://{tmp_path}/none.sock")
    proc = cli(command[0], "-c", str(cfg), *command[1:])
    assert proc.returncode == 1
    assert "cannot connect to the Docker engine" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_redirected_manifest_request_is_followed(
    deploy: Deploy,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """A registry that answers the manifest HEAD with a redirect is followed to the real answer."""
    name, _tag, _image_id, digest = deploy(registry)
    target = f"{registry.url}/v2/sample/manifests/latest"
    proxy = FaultProxy(registry.url, FaultPlan(status=307, headers={"Location": target})).start()
    try:
        cfg = write_config(
            tmp_path / "dw.yaml", {"web": {"container": name, "image": f"{proxy.host}/sample:latest"}}
        )
        result = check(cfg)["web"]
        assert (result.status, result.registry_digest, result.error) == ("up-to-date", digest, None)
        # The HEAD only: its digest names the running image's content under another repository name, and
        # digests are compared by content, whatever the name (a mirror costs no GET).
        assert proxy.count == 1
    finally:
        proxy.stop()


def test_identity_token_from_docker_login_is_used(
    registry: Registry, deploy: Deploy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `identitytoken` saved by `docker login` is exchanged for a bearer token by an OAuth2 POST."""
    tokens = TokenServer(tmp_path / "tokens", refresh_token="rt-dockwarden-test")
    reg = start_registry(tmp_path / "oauth-registry", auth_yaml=tokens.registry_auth_yaml())
    try:
        name, _tag, _image_id, digest = deploy(reg, "team/oauth:1")
        docker_dir = tmp_path / "docker-config"
        docker_dir.mkdir()
        (docker_dir / "config.json").write_text(
            json.dumps({"auths": {reg.host: {"identitytoken": "rt-dockwarden-test"}}})
        )
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
        result = check(write_config(tmp_path / "dw.yaml", {"app": {"container": name}}))["app"]
        assert (result.status, result.registry_digest) == ("up-to-date", digest)
        assert tokens.oauth_grants == 1

        (docker_dir / "config.json").write_text(
            json.dumps({"auths": {reg.host: {"identitytoken": "revoked"}}})
        )
        refused = check(write_config(tmp_path / "dw.yaml", {"app": {"container": name}}))["app"]
        assert (refused.status, refused.reason) == ("error", "unauthorized")
    finally:
        reg.stop()
        tokens.stop()
