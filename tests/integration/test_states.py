"""Every container state, and containers bound to another, on the real engines: AutoRemove, a crash
loop, paused, a stopped job, a legacy link and a digest pin (the field cases of issue 10)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from dockwarden.skiplist import SkipList
from tests.integration.helpers import cli
from tests.integration.upgrade_lab import (
    Side,
    config,
    free_port,
    names_like,
    push_version,
    update,
    wait_serving,
)
from tests.support.images import LABEL, ImageFactory
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

JOB = ["cat", "/www/index.html"]  # a one-shot job: prints its version and exits 0


@pytest.fixture
def side20(docker_client: docker.DockerClient, images: ImageFactory) -> Side:
    return Side(docker_client, images, None)


class Made:
    """Names of containers a test created on one engine, removed with their set-aside copies and volumes."""

    def __init__(self) -> None:
        self.found: list[tuple[docker.DockerClient, str]] = []

    def name(self, side: Side, what: str) -> str:
        name = f"dw-st-{what}-{uuid.uuid4().hex[:8]}"
        self.found.append((side.client, name))
        return name

    def close(self) -> None:
        for client, name in self.found:
            for other in names_like(client, name):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    client.containers.get(other).remove(force=True, v=True)


@pytest.fixture
def made() -> Iterator[Made]:
    box = Made()
    yield box
    box.close()


def _inspect(side: Side, name: str) -> dict[str, Any]:
    return dict(side.client.api.inspect_container(name))


def _run_auto_remove(side: Side, tag: str, name: str, port: int, run_label: str) -> str:
    """`docker run -d --rm -p 127.0.0.1:PORT:8080 -v /anon`, with a file in the anonymous volume."""
    api = side.client.api
    host = api.create_host_config(auto_remove=True, port_bindings={8080: ("127.0.0.1", port)})
    created = api.create_container(
        tag, name=name, ports=[8080], volumes=["/anon"], host_config=host, labels={LABEL: run_label}
    )
    api.start(created["Id"])
    wait_serving(port)
    side.client.containers.get(name).exec_run(["sh", "-c", "echo anon > /anon/keep"])
    return str(created["Id"])


def _anon(side: Side, name: str) -> str:
    return str(side.client.containers.get(name).exec_run(["cat", "/anon/keep"]).output.decode().strip())


def _crash_loop(side: Side, registry: Registry, name: str, run_label: str) -> str:
    """A container whose image exits at once, with `--restart always`: restarting, again and again."""
    tag, _, _ = push_version(side, registry, "loop", cmd=["false"])
    side.client.containers.run(
        tag, name=name, detach=True, restart_policy={"Name": "always"}, labels={LABEL: run_label}
    )
    deadline = time.monotonic() + 30
    while _inspect(side, name)["RestartCount"] < 2:
        assert time.monotonic() < deadline, "the crash loop never restarted"
        time.sleep(0.2)
    return str(_inspect(side, name)["Id"])


# -- AutoRemove (--rm) --------------------------------------------------------------------------------


def test_auto_remove_container_is_upgraded_with_its_data_and_its_auto_remove(
    side: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """A `--rm` container is upgraded: the new version serves, keeps AutoRemove and the anonymous volume's
    data, and nothing but it is left under its name."""
    tag, _, _ = push_version(side, registry, "rm")
    name, port = made.name(side, "rm"), free_port()
    _run_auto_remove(side, tag, name, port, run_label)
    _, marker, _ = push_version(side, registry, "rm")

    code, rows, err = update(config(tmp_path, {"web": {"container": name}}, side))

    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    assert wait_serving(port) == marker
    assert names_like(side.client, name) == [name]
    assert _inspect(side, name)["HostConfig"]["AutoRemove"] is True
    assert _anon(side, name) == "anon"


def test_auto_remove_container_whose_successor_fails_comes_back_from_its_stand_in(
    side: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """When the new version of a `--rm` container fails its gate, the old version (a recreated copy, since
    the engine deleted the original at its stop) serves again with its data and AutoRemove; the digest,
    which ran, goes on the skip list."""
    tag, before, _ = push_version(side, registry, "rm")
    name, port = made.name(side, "rm"), free_port()
    original = _run_auto_remove(side, tag, name, port, run_label)
    _, _, bad = push_version(side, registry, "rm", cmd=["false"])
    cfg = config(tmp_path, {"web": {"container": name}}, side)

    code, rows, err = update(cfg)

    assert (code, rows[0]["result"], rows[0]["step"]) == (1, "rolled-back", "gate"), err
    assert wait_serving(port) == before
    assert names_like(side.client, name) == [name]
    back = _inspect(side, name)
    assert (back["Id"] != original, back["HostConfig"]["AutoRemove"]) == (True, True)
    assert _anon(side, name) == "anon"
    entry = SkipList(tmp_path / "state").get("web")
    assert entry is not None
    assert bad in entry.digests


# -- restarting (a crash loop) ------------------------------------------------------------------------


def test_crash_looping_container_is_replaced_by_a_working_version(
    side: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """A container in a crash loop (restarting) is replaced by the new version, which serves and keeps the
    restart policy; the engine's refusal to rename it between restarts does not get in the way."""
    name = made.name(side, "loop")
    _crash_loop(side, registry, name, run_label)
    _, marker, _ = push_version(
        side, registry, "loop", cmd=["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    )

    code, rows, err = update(config(tmp_path, {"loop": {"container": name}}, side))

    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    new = _inspect(side, name)
    assert (new["State"]["Status"], new["Config"]["Labels"]["marker"]) == ("running", marker)
    assert new["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert names_like(side.client, name) == [name]


def test_crash_loop_whose_successor_also_fails_is_put_back_crash_looping(
    side20: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """If the new version of a crash-looping container fails too, the old one comes back as it was
    (crash-looping under its name): rolled-back, not rollback-failed, and the digest that ran is skipped
    next time."""
    name = made.name(side20, "loop")
    original = _crash_loop(side20, registry, name, run_label)
    push_version(side20, registry, "loop", cmd=["false"])
    cfg = config(tmp_path, {"loop": {"container": name}})

    code, rows, err = update(cfg)

    assert (code, rows[0]["result"], rows[0]["rollback_error"]) == (1, "rolled-back", None), err
    assert names_like(side20.client, name) == [name]
    back = _inspect(side20, name)
    assert back["Id"] == original
    restarts = back["RestartCount"]
    deadline = time.monotonic() + 30
    while _inspect(side20, name)["RestartCount"] == restarts:  # its restart policy took over again
        assert time.monotonic() < deadline, "the old container was not crash-looping again"
        time.sleep(0.2)
    code, rows, _ = update(cfg)
    assert (code, rows[0]["result"]) == (0, "skipped")


# -- paused, and a stopped job ------------------------------------------------------------------------


def test_paused_container_is_skipped_and_stays_paused(
    side20: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """A paused container is left alone: skipped with reason `paused`, same container, still paused."""
    tag, _, _ = push_version(side20, registry, "app")
    name = made.name(side20, "paused")
    container = side20.client.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
    container.pause()
    push_version(side20, registry, "app")

    code, rows, err = update(config(tmp_path, {"web": {"container": name}}))

    assert (code, rows[0]["result"]) == (0, "skipped"), err
    assert rows[0]["error"].startswith("paused: ")
    after = _inspect(side20, name)
    assert (after["Id"], after["State"]["Status"]) == (container.id, "paused")


def test_stopped_job_is_skipped_by_default_and_recreated_stopped_when_the_service_says_so(
    side20: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """An exited job container is skipped (reason `exited`) unless its service sets `stopped: recreate`;
    then it is recreated on the new image and left stopped, and its next start runs the new version."""
    tag, _, _ = push_version(side20, registry, "job", cmd=JOB)
    name = made.name(side20, "job")
    side20.client.containers.run(tag, name=name, labels={LABEL: run_label}, detach=True).wait()
    _, marker, _ = push_version(side20, registry, "job", cmd=JOB)

    code, rows, _ = update(config(tmp_path, {"job": {"container": name}}))
    assert (code, rows[0]["result"]) == (0, "skipped")
    assert rows[0]["error"].startswith("exited: ")

    code, rows, err = update(config(tmp_path, {"job": {"container": name, "stopped": "recreate"}}))
    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    new = _inspect(side20, name)
    assert (new["State"]["Status"], new["Config"]["Labels"]["marker"]) == ("created", marker)
    assert names_like(side20.client, name) == [name]
    job = side20.client.containers.get(name)
    job.start()
    job.wait()
    assert job.logs().decode().strip() == marker


# -- relations: a legacy link, a digest pin ------------------------------------------------------------


def test_container_linking_to_the_service_is_recreated_to_link_to_the_new_one(
    side20: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """A client started with `--link SERVICE:app` is recreated after the upgrade: its link names the
    service again (not the removed old container), it reaches the new version, and it can be restarted."""
    tag, _, _ = push_version(side20, registry, "app")
    name = made.name(side20, "linked")
    side20.client.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
    client = f"{name}-client"
    side20.client.containers.run(
        tag, name=client, detach=True, links={name: "app"}, labels={LABEL: run_label}
    )
    _, marker, _ = push_version(side20, registry, "app")

    code, rows, err = update(config(tmp_path, {"web": {"container": name}}))

    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    assert '"namespace.recreated"' in err
    assert _inspect(side20, client)["HostConfig"]["Links"] == [f"/{name}:/{client}/app"]
    asked = side20.client.containers.get(client).exec_run(["wget", "-q", "-O-", "http://app:8080/"])
    assert asked.output.decode().strip() == marker
    side20.client.containers.get(client).restart(timeout=1)
    assert _inspect(side20, client)["State"]["Running"]
    # Besides the client's own name, the list names the service /CLIENT/app: its link.
    assert [n for n in names_like(side20.client, client) if "/" not in n] == [client]


def test_digest_pinned_container_is_reported_pinned_and_never_upgraded(
    side20: Side, registry: Registry, tmp_path: Path, made: Made, run_label: str
) -> None:
    """A container created from `repo:tag@sha256:...` is `pinned` for check (exit 0, no error) and skipped
    by update, keeping its pin; `dockwarden rollback` refuses it; naming `image:` makes it follow the tag."""
    tag, _, first = push_version(side20, registry, "app")
    pinned = f"{tag}@{first}"
    name = made.name(side20, "pinned")
    side20.client.containers.run(pinned, name=name, detach=True, labels={LABEL: run_label})
    _, marker, _ = push_version(side20, registry, "app")
    cfg = config(tmp_path, {"web": {"container": name}})

    checked = cli("check", "-c", str(cfg), "--json")
    assert checked.returncode == 0, checked.stderr
    row = json.loads(checked.stdout)[0]
    assert (row["status"], row["running_digest"], row["registry_digest"], row["error"]) == (
        "pinned",
        first,
        None,
        None,
    )
    code, rows, _ = update(cfg)
    assert (code, rows[0]["result"]) == (0, "skipped")
    assert rows[0]["error"].startswith("pinned: ")
    assert _inspect(side20, name)["Config"]["Image"] == pinned
    refused = cli("rollback", "-c", str(cfg), "web", "--json")
    assert refused.returncode == 1
    assert "pinned to a digest" in json.loads(refused.stdout)[0]["error"]

    code, rows, err = update(config(tmp_path, {"web": {"container": name, "image": tag}}))
    assert (code, rows[0]["result"]) == (0, "upgraded"), err
    new = _inspect(side20, name)
    assert (new["Config"]["Image"], new["Config"]["Labels"]["marker"]) == (tag, marker)
