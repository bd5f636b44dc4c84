"""Garbage collection, and state that outlives the daemon, on the real engine."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from dockwarden import config as configuration
from dockwarden import gc as collection
from dockwarden.engine import Engine
from dockwarden.history import History
from dockwarden.locks import ContainerLock
from dockwarden.skiplist import SkipList
from dockwarden.upgrade import Result
from tests.integration.conftest import ENGINES
from tests.integration.helpers import cli, spawn, wait_for_text
from tests.integration.upgrade_lab import Side, config, names_like, push_version, update, wait_serving
from tests.support.images import LABEL, ImageFactory, load_untagged
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

# GC removes dangling images engine-wide. So that the GC scene touches nothing but its own, its config
# spares every dangling image younger than ~22 years, and the ones it means to collect claim to be from
# 1990. Every other GC a test runs spares even those (100 years), so it cannot race the scene for them.
HERMETIC_MIN_AGE = "200000h"
SPARE_ALL_DANGLING = "36500d"  # the longest duration a config may give
ANCIENT = "1990-01-01T00:00:00Z"
OLD_BUT_NOT_ANCIENT = "2020-01-01T00:00:00Z"


def exists(client: docker.DockerClient, kind: str, ident: str) -> bool:
    try:
        (client.api.inspect_image if kind == "image" else client.api.inspect_container)(ident)
    except docker.errors.NotFound:
        return False
    return True


def gc(cfg: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = cli("gc", "-c", str(cfg), "--json", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("side", ENGINES, indirect=True)
def test_gc_removes_garbage_and_never_what_is_used_or_retained(
    side: Side,
    registry: Registry,
    run_label: str,
    side_containers: list[str],
    tmp_path: Path,
) -> None:
    """GC removes an old unused dangling image, a labelled old stopped container, a killed upgrade's
    leftovers and versions beyond keep_previous, each with its reason and bytes; it keeps an image used
    only by a stopped container, one shared with another service, a retained version, a young dangling
    image and containers the selector does not name. A dry run removes nothing."""
    client = side.client
    uid = uuid.uuid4().hex[:8]

    def run(name: str, image: str, **kwargs: Any) -> Any:
        side_containers.append(name)
        return client.containers.run(
            image, name=name, detach=True, **{"labels": {LABEL: run_label}, **kwargs}
        )

    # Services a and b share one image; a is upgraded with keep_previous 0, so the shared image is
    # dangling afterwards, and only b's use protects it.
    shared_tag, _, _ = push_version(side, registry, "shared")
    a, b, r = f"dw-gc-a-{uid}", f"dw-gc-b-{uid}", f"dw-gc-r-{uid}"
    run(a, shared_tag)
    run(b, shared_tag)
    shared_image = client.api.inspect_container(b)["Image"]
    # Service r keeps one previous version.
    r_tag, _, _ = push_version(side, registry, "retained")
    run(r, r_tag)
    r_first = client.api.inspect_container(r)["Image"]
    cfg_path = config(
        tmp_path,
        {
            "a": {"container": a, "keep_previous": 0},
            "b": {"container": b, "update": "monitor"},
            "r": {"container": r, "keep_previous": 1},
        },
        side,
        extra=(
            f"gc:\n  min_age: {HERMETIC_MIN_AGE}\n"
            f"  stopped_containers:\n    labels: [dwgc={uid}]\n    min_age: 1s"
        ),
    )
    push_version(side, registry, "shared")
    push_version(side, registry, "retained")
    code, rows, stderr = update(cfg_path, "a", "r")
    assert code == 0, stderr
    assert {row["service"]: row["result"] for row in rows} == {"a": "upgraded", "r": "upgraded"}
    assert not client.api.inspect_image(shared_image)["RepoTags"]  # dangling now, but b runs it

    # Garbage, and things that look like garbage but are not.
    used_by_stopped = load_untagged(client, run_label, ANCIENT)
    side_containers.append(f"dw-gc-c-{uid}")
    client.api.create_container(used_by_stopped, name=f"dw-gc-c-{uid}", labels={LABEL: run_label})
    unused = load_untagged(client, run_label, ANCIENT)
    young = load_untagged(client, run_label, OLD_BUT_NOT_ANCIENT)
    beyond = load_untagged(client, run_label, ANCIENT)  # r's "oldest version", beyond keep_previous 1
    beyond_tag = f"{registry.host}/retained:dockwarden-{r}-19900101T000000.000000Z"
    client.api.tag(beyond, f"{registry.host}/retained", beyond_tag.rpartition(":")[2])
    a_image = client.api.inspect_container(a)["Image"]
    client.api.tag(a_image, f"{registry.host}/shared", f"dockwarden-{a}-pulled")  # a killed upgrade's
    done = f"{a}--dockwarden-done"
    side_containers.append(done)
    # A committed AutoRemove stand-in: it names the container a replaced, as a's own label does, which is
    # what proves it a dockwarden leftover (a -done container nothing names is left alone).
    replaced = client.api.inspect_container(a)["Config"]["Labels"]["dockwarden.replaces"]
    client.api.create_container(
        a_image, name=done, labels={LABEL: run_label, "dockwarden.replaces": replaced}
    )
    stopped = run(f"dw-gc-s1-{uid}", shared_tag, command=["true"], labels={LABEL: run_label, "dwgc": uid})
    unlabelled = run(f"dw-gc-s2-{uid}", shared_tag, command=["true"])
    running = run(f"dw-gc-s3-{uid}", shared_tag, labels={LABEL: run_label, "dwgc": uid})
    for item in (stopped, unlabelled):
        item.wait(timeout=30)
    time.sleep(1.1)  # past the stopped containers' min_age

    code, planned = gc(cfg_path, "--dry-run")
    assert code == 0
    assert planned["dry_run"] is True
    by_name = {item["name"]: item for item in planned["removals"]}
    expected = {
        unused.removeprefix("sha256:")[:12]: "image",
        f"dw-gc-s1-{uid}": "container",
        done: "recover",
        f"{registry.host}/shared:dockwarden-{a}-pulled": "tag",
        beyond_tag: "tag",
    }
    mine = {name: item["kind"] for name, item in by_name.items() if uid in name or name in expected}
    assert mine == expected
    assert not any(item["done"] for item in planned["removals"])
    assert by_name[unused.removeprefix("sha256:")[:12]]["bytes"] >= 64 * 1024
    assert by_name[beyond_tag]["bytes"] >= 64 * 1024  # its last tag: the image goes with it
    assert "dangling" in by_name[unused.removeprefix("sha256:")[:12]]["reason"]
    assert "keep_previous=1" in by_name[beyond_tag]["reason"]
    assert exists(client, "image", unused)

    code, result = gc(cfg_path)
    assert code == 0, result
    done_items = {item["name"]: item for item in result["removals"] if item["done"]}
    assert set(expected) <= set(done_items)
    assert result["reclaimed_bytes"] is not None
    # Gone:
    assert not exists(client, "image", unused)
    assert not exists(client, "image", beyond)
    assert not exists(client, "container", f"dw-gc-s1-{uid}")
    assert names_like(client, a) == [a]
    assert (
        f"{registry.host}/shared:dockwarden-{a}-pulled" not in client.api.inspect_image(a_image)["RepoTags"]
    )
    # Kept:
    for image in (used_by_stopped, young, shared_image, r_first):
        assert exists(client, "image", image), image
    assert client.api.inspect_image(r_first)["RepoTags"]  # still tagged as r's retained version
    for name in (f"dw-gc-c-{uid}", f"dw-gc-s2-{uid}", f"dw-gc-s3-{uid}", b):
        assert exists(client, "container", name), name
    running.reload()
    assert running.status == "running"
    # Each removal is in the history with its reason.
    gc_entries = [e for e in History(configuration.load(cfg_path).state_dir).entries() if e["event"] == "gc"]
    assert {e["name"] for e in gc_entries} >= set(expected)
    assert all(e["reason"] for e in gc_entries)
    # Everything left is the user's or in use: a second run finds nothing of ours.
    code, again = gc(cfg_path, "--dry-run")
    assert not [item for item in again["removals"] if uid in item["name"] or item["name"] in expected]


def test_history_and_skip_list_survive_a_daemon_restart(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path
) -> None:
    """A digest rolled back by one daemon is skipped by the next one, and `history` shows both runs."""
    name, port, side = web
    first = wait_serving(port)
    cfg_path = config(tmp_path, {"web": {"container": name}})
    _, _, broken = push_version(side, registry, "app", cmd=["sh", "-c", "exit 3"])
    cfg = configuration.load(cfg_path)

    for run_number, awaited in ((1, '"rollback.finished"'), (2, '"upgrade.skipped"')):
        log = tmp_path / f"daemon-{run_number}.log"
        proc = spawn("run", cfg_path, log)
        try:
            wait_for_text(log, awaited, timeout=90)
            wait_for_text(log, '"update.cycle_finished"', timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert wait_serving(port) == first
        entry = SkipList(cfg.state_dir).get("web")
        assert entry is not None
        assert entry.digests == (broken,)

    rows = json.loads(cli("history", "-c", str(cfg_path), "web", "--json").stdout)
    events = [(row["event"], row.get("result") or row.get("status")) for row in rows]
    assert events == [
        ("skipped", None),
        ("checked", "update-available"),
        ("upgrade", Result.ROLLED_BACK),
        ("checked", "update-available"),
    ]
    assert "failed before" in rows[0]["reason"]
    assert rows[2]["to_digest"] == broken
    assert rows[2]["step"] == "gate"
    assert len(History(cfg.state_dir).entries()) == 4
    # --limit and the table form.
    assert len(json.loads(cli("history", "-c", str(cfg_path), "--json", "--limit", "1").stdout)) == 1
    table = cli("history", "-c", str(cfg_path)).stdout
    assert "rolled-back" in table
    assert "gate" in table


def test_gc_leaves_a_service_that_is_being_upgraded_for_later(
    docker_client: docker.DockerClient,
    images: ImageFactory,
    registry: Registry,
    run_label: str,
    containers: list[str],
    tmp_path: Path,
) -> None:
    """While a service's lock is held (its upgrade runs), GC does not touch its leftovers and does not
    call that a failure; once the lock is free, the next collection removes them."""
    side = Side(docker_client, images, None)
    tag, _, _ = push_version(side, registry, "busy")
    name = f"dw-gc-busy-{uuid.uuid4().hex[:8]}"
    containers.append(name)
    docker_client.containers.run(tag, name=name, detach=True, labels={LABEL: run_label})
    pulled = f"{registry.host}/busy:dockwarden-{name}-pulled"
    docker_client.api.tag(tag, f"{registry.host}/busy", f"dockwarden-{name}-pulled")
    hermetic = f"gc:\n  min_age: {SPARE_ALL_DANGLING}"
    cfg = configuration.load(config(tmp_path, {"web": {"container": name}}, extra=hermetic))
    engine = Engine.connect()
    try:
        with ContainerLock(cfg.state_dir, name):
            held = collection.collect(engine, cfg)
        removal = next(r for r in held.removals if r.name == pulled)
        assert (removal.done, removal.error) == (False, None)
        assert removal.left is not None
        assert "pid" in removal.left.lower()
        assert not held.failed()
        assert pulled in docker_client.api.inspect_image(tag)["RepoTags"]
        free = collection.collect(engine, cfg)
    finally:
        engine.close()
    assert next(r for r in free.removals if r.name == pulled).done
    assert pulled not in docker_client.api.inspect_image(tag)["RepoTags"]
