"""Engine API faults at every call of an upgrade, its undo, recovery and GC (issue 12 item 5).

`dockwarden` talks to the real Engine 20.10 through `tests/support/engineproxy.py`, which injects one fault
at one call site. The sites of each scenario are the tables below, recorded from a clean run through the
proxy; `test_*_sites_are_the_recorded_ones` records again and fails when the code makes other calls, so a
table cannot go stale. Each case asserts the four properties: the service serves afterwards (old or new
version), nothing is leaked, a second `dockwarden update` (straight to the engine) converges to exactly one
healthy container, and a good digest is never skip-listed.

Fault kinds per site (a representative subset, to keep the matrix near a minute of suite time): a call
that changes something gets `timeout` (the engine does it, the answer never comes: the case a caller cannot
tell from a failure), reads alternate `503`, `drop` and `500`. Faulted are every call that changes
something, and the reads whose answer decides what happens next (`faulted`); a read elsewhere fails the
same way as its neighbour (the run ends, or the step fails, with nothing touched), and the tables still
enumerate it. Recovery's undo is sampled (it is the live undo's code). 31 faulted cases in all.
Refusals (`EngineError` at every step) are also covered in milliseconds by the fake engine's unit tests
(tests/unit/test_transaction.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from dockwarden import retention
from dockwarden.locks import ContainerLock
from tests.integration.conftest import Versions
from tests.integration.helpers import cli, spawn, wait_for_text, write_config
from tests.integration.upgrade_lab import free_port, names_like, wait_serving
from tests.support.engineproxy import EngineProxy, Fault, FaultKind
from tests.support.images import LABEL

pytestmark = pytest.mark.engine

ENGINE_SOCKET = "/var/run/docker.sock"
ENGINE_TIMEOUT = "10s"  # what a withheld answer costs; not shorter: on a loaded machine a shared engine
# takes seconds to start a container or to answer /system/df, and any such call would fail the run early

CONNECT = ["GET /version", "GET /_ping", "GET /version", "GET /info"]
RECOVERY_LISTS = ["GET /containers/json", "GET /images/json"]
# The check, then the transaction of a good upgrade, then what follows a commit (namespace, retention).
CHECK = [
    "GET /containers/json",
    "GET /images/json",
    "GET /containers/{id}/json",
    "GET /containers/NAME/json",
    "GET /containers/json",
]
TRANSACTION = [
    "POST /images/create",  # pull
    "GET /images/{ref}/json",
    "GET /containers/NAME/json",  # does it run that image already? (then no -pulled tag)
    "POST /images/{ref}/tag",  # the -pulled tag
    "GET /containers/NAME/json",  # plan
    "GET /images/{ref}/json",
    "POST /containers/create",  # the engine's defaults: a throwaway container
    "GET /containers/{id}/json",
    "DELETE /containers/{id}",
    "GET /info",
    "POST /containers/{id}/rename",  # set-aside
    "POST /images/{ref}/tag",  # tag
    "POST /containers/create",  # create
    "GET /containers/{id}/json",  # verify
    "POST /containers/{id}/stop",  # stop-old
    "POST /containers/{id}/start",  # start
    "GET /containers/{id}/json",  # the neighbour refresh: the container's addresses...
    "GET /networks/{id}",  # ... and its bridge
    "GET /containers/{id}/json",  # the gate's polls
    "POST /containers/{id}/rename",  # commit
    "DELETE /containers/{id}",  # remove-old
    "DELETE /images/{ref}",  # the -pulled tag
]
AFTER_COMMIT = [
    "GET /containers/NAME/json",
    "GET /containers/json",
    "GET /containers/NAME/json",
    "GET /containers/json",
    "GET /images/json",
    "GET /containers/json",
    "POST /images/{ref}/tag",  # the retained version's tag
]
UPGRADE_SITES = CONNECT + RECOVERY_LISTS + CHECK + TRANSACTION + AFTER_COMMIT
# A successor that exits at once: after the gate's first poll, the undo.
UNDO = [
    "GET /events",  # was it stopped from outside (a restarting engine), or did it exit by itself?
    "GET /containers/NAME/json",  # who holds the name: our successor?
    "DELETE /containers/{id}",  # undo-remove-new (live: at once)
    "GET /containers/{id}/json",
    "POST /images/{ref}/tag",  # the old container's tag points at its image again
    "POST /containers/{id}/start",  # undo-start-old
    "GET /containers/{id}/json",  # the neighbour refresh for the old version
    "GET /networks/{id}",
    "POST /containers/{id}/rename",  # undo-rename-old
    "GET /containers/{id}/json",  # the old version's quick gate
    "DELETE /images/{ref}",  # the -pulled tag, and the image that failed
    "GET /containers/NAME/json",  # the namespace follow-up
    "GET /containers/json",
]
# What `update` finds after a kill in the gate: the successor (never gated) holds NAME, the old container
# is NAME--dockwarden-old. Recovery undoes it (as a recovery: the successor is stopped, never forced), drops
# the -pulled tag, and then the run checks and upgrades as usual.
CONVERGE = [
    "GET /containers/NAME/json",
    "GET /containers/NAME--dockwarden-done/json",
    "GET /containers/NAME--dockwarden-old/json",
    "GET /containers/NAME--dockwarden-old-stopped/json",
]
RECOVERY_UNDO = [
    "GET /containers/NAME/json",  # who holds the name: our successor?
    "GET /containers/{id}/json",
    "POST /containers/{id}/stop",  # the successor, gracefully
    "DELETE /containers/{id}",
    "GET /containers/{id}/json",
    "POST /images/{ref}/tag",
    "POST /containers/{id}/start",  # the old version
    "POST /containers/{id}/rename",
    "GET /containers/{id}/json",  # its quick gate
    "GET /containers/NAME--dockwarden-new/json",  # no start-first successor left
    "GET /containers/NAME--dockwarden-old/json",  # resolved: the set-aside name is gone
    "DELETE /images/{ref}",  # the -pulled tag
]
RECOVERY_SITES = (
    CONNECT + RECOVERY_LISTS + CONVERGE + RECOVERY_UNDO + UPGRADE_SITES[len(CONNECT + RECOVERY_LISTS) :]
)
# What `gc` finds after a kill before remove-old: NAME--dockwarden-done beside the successor, and the tag.
GC_SITES = [
    "GET /version",
    "GET /containers/json",
    "GET /images/json",
    "GET /system/df",
    *CONVERGE,
    "POST /images/{ref}/tag",
    "DELETE /containers/{id}",  # the committed-away old container
    "GET /containers/NAME--dockwarden-new/json",  # no start-first successor left
    "GET /containers/NAME--dockwarden-done/json",
    "DELETE /images/{ref}",  # the -pulled tag
    "GET /images/json",  # the sizes to fall back on, should the second df fail
    "GET /system/df",
]
GATE_SITE = (
    len(CONNECT + RECOVERY_LISTS + CHECK)
    + TRANSACTION.index("GET /containers/{id}/json", TRANSACTION.index("GET /networks/{id}"))
    + 1
)
UNDO_SITES = UPGRADE_SITES[:GATE_SITE] + UNDO
READS = (FaultKind.ERROR_503, FaultKind.DROP, FaultKind.ERROR_500)


def kind_for(key: str, site: int) -> FaultKind:
    """The fault a site gets: `timeout` where the engine changes something, a rotating read fault else."""
    return FaultKind.TIMEOUT if not key.startswith("GET ") else READS[site % len(READS)]


def cases(sites: list[str], chosen: list[int] | range) -> list[Any]:
    return [
        pytest.param(site, kind_for(sites[site - 1], site), id=f"{site:02d}-{sites[site - 1]}")
        for site in chosen
    ]


def faulted(sites: list[str], span: range, reads: tuple[int, ...], skip: tuple[int, ...] = ()) -> list[int]:
    """The sites of `span` that are faulted: every call that changes something (but `skip`), and the
    `reads` whose answer decides what happens next (other reads fail the same way as a neighbour: the run
    ends, or the step fails, before anything else is touched)."""
    writes = {site for site in span if not sites[site - 1].startswith("GET ")}
    return sorted((writes - set(skip)) | set(reads))


BEFORE = len(CONNECT + RECOVERY_LISTS + CHECK)
# The transaction and what follows its commit (but the probe container's removal, a twin of its
# create); reads: recovery's list, plan, verify, the gate.
UPGRADE_CASES = faulted(
    UPGRADE_SITES, range(BEFORE + 1, len(UPGRADE_SITES) + 1), (5, 16, 25, GATE_SITE), skip=(20,)
)
# The undo; reads: the events that decide the cause, the old version's quick gate.
UNDO_CASES = faulted(UNDO_SITES, range(GATE_SITE + 1, len(UNDO_SITES) + 1), (GATE_SITE + 1, GATE_SITE + 10))
# Recovery's undo is the live undo's code (`upgrade.undo`, stopping the successor instead of forcing it):
# its list, the successor's stop, the retag and the old version's start; the rest is faulted in the undo.
RECOVERY_CASES = [5, 13, 16, 17]
# GC's finish of a committed upgrade: its three writes, and its disk usage (only for the report's sizes).
GC_CASES = faulted(GC_SITES, range(2, len(GC_SITES) + 1), (4,))


@dataclass(frozen=True, kw_only=True)
class Lab:
    name: str
    port: int
    repo: str
    faulted: Path  # the config through the proxy
    direct: Path  # the same service and state_dir, straight to the engine
    state_dir: Path
    proxy: EngineProxy


@pytest.fixture
def lab_for(
    docker_client: docker.DockerClient, versions: Versions, run_label: str, tmp_path: Path
) -> Iterator[Any]:
    """A factory: `lab_for(repo)` runs a service on v1 of `repo` behind a proxy of its own; everything it
    made (containers, their tags, the proxy) goes when the test ends."""
    made: list[Lab] = []

    def make(repo: str) -> Lab:
        name = f"dwf-{uuid.uuid4().hex[:10]}"
        docker_client.api.tag(versions.old_id, repo, "latest")  # the service's tag, where v1 is
        port = free_port()
        api = docker_client.api
        api.start(
            api.create_container(
                f"{repo}:latest",
                name=name,
                ports=[8080],
                labels={LABEL: run_label},
                stop_timeout=1,  # a withheld answer to a stop costs the engine timeout plus this
                host_config=api.create_host_config(port_bindings={8080: ("127.0.0.1", port)}),
            )
        )
        wait_serving(port)
        sockets = Path(tempfile.mkdtemp(prefix="dwp-", dir="/tmp"))  # a unix socket path has 108 bytes
        proxy = EngineProxy(ENGINE_SOCKET, sockets / "engine.sock", name).start()
        services = {"web": {"container": name}}
        common = "stability_window: 1s\nkeep_previous: 1\ngc:\n  min_age: 36500d\n  enabled: false"
        faulted = write_config(
            tmp_path / "faulted.yaml",
            services,
            extra=f"docker_host: {proxy.docker_host}\nengine_timeout: {ENGINE_TIMEOUT}\n{common}",
        )
        direct = write_config(tmp_path / "direct.yaml", services, extra=common)
        lab = Lab(
            name=name,
            port=port,
            repo=repo,
            faulted=faulted,
            direct=direct,
            state_dir=tmp_path / "state",
            proxy=proxy,
        )
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.proxy.stop()
        Path(lab.proxy.listen).parent.rmdir()
        for other in names_like(docker_client, lab.name):
            docker_client.api.remove_container(other, force=True, v=True)
        for image in docker_client.images.list(lab.repo):
            for tag in image.tags:
                if lab.name in tag:
                    docker_client.api.remove_image(tag)


def dockwarden(command: str, cfg: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = cli(command, "-c", str(cfg), "--json", *args, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    rows = json.loads(proc.stdout) if proc.stdout.strip() and command == "update" else []
    return proc.returncode, rows, proc.stderr


def serving(client: docker.DockerClient, lab: Lab, markers: set[str]) -> str:
    """The service's container runs and answers with one of `markers`; returns which."""
    state = client.api.inspect_container(lab.name)["State"]
    assert state["Running"], state
    body = wait_serving(lab.port, timeout=20)
    assert body in markers, body
    return body


def leaked(client: docker.DockerClient, lab: Lab) -> list[str]:
    """What a finished upgrade must not leave: set-aside containers, the -pulled tag, a held lock."""
    found = [n for n in names_like(client, lab.name) if n != lab.name]
    pulled = retention.pulled_tag(lab.name)
    found += [t for image in client.images.list(lab.repo) for t in image.tags if t.endswith(":" + pulled)]
    holder = ContainerLock(lab.state_dir, lab.name).holder()
    found += [f"lock held by {holder}"] if holder is not None else []
    found += [str(p) for p in lab.state_dir.rglob("*.tmp*")]
    return found


def skip_listed(lab: Lab) -> str:
    path = lab.state_dir / "skipped.json"
    return path.read_text() if path.exists() else ""


def converges(client: docker.DockerClient, lab: Lab, marker: str) -> None:
    """A second `update`, straight to the engine: one container of that name, healthy, serving `marker`,
    and nothing left over."""
    code, rows, err = dockwarden("update", lab.direct)
    assert code in (0, 1), err[-3000:]
    assert names_like(client, lab.name) == [lab.name], (rows, err[-3000:])
    deadline = time.monotonic() + 20
    while client.api.inspect_container(lab.name)["State"].get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, client.api.inspect_container(lab.name)["State"]
        time.sleep(0.2)
    assert serving(client, lab, {marker}) == marker, (rows, err[-3000:])
    assert leaked(client, lab) == []


def faulted_run(
    lab: Lab, site: int, kind: FaultKind, expected: list[str], command: str = "update"
) -> tuple[int, str]:
    """`dockwarden COMMAND` through the proxy with `kind` injected at `site`, which must be `expected`'s."""
    lab.proxy.arm(Fault(kind=kind, site=site))
    code, _, err = dockwarden(command, lab.faulted)
    assert lab.proxy.fired is not None, lab.proxy.sites()
    assert lab.proxy.fired.key == expected[site - 1], (lab.proxy.fired, lab.proxy.sites())
    return code, err


# -- the sequences themselves -----------------------------------------------------------------------


def test_upgrade_sites_are_the_recorded_ones(
    lab_for: Any, versions: Versions, docker_client: docker.DockerClient
) -> None:
    """A clean upgrade makes exactly the calls of UPGRADE_SITES, in order (the matrix's table)."""
    lab = lab_for(versions.good)
    lab.proxy.arm(None)
    code, rows, err = dockwarden("update", lab.faulted)
    assert (code, rows[0]["result"]) == (0, "upgraded"), err[-3000:]
    assert lab.proxy.sites() == UPGRADE_SITES
    converges(docker_client, lab, versions.new_marker)


def test_undo_sites_are_the_recorded_ones(
    lab_for: Any, versions: Versions, docker_client: docker.DockerClient
) -> None:
    """An upgrade whose successor exits at once makes exactly the calls of UNDO_SITES, in order."""
    lab = lab_for(versions.bad)
    lab.proxy.arm(None)
    code, rows, err = dockwarden("update", lab.faulted)
    assert (code, rows[0]["result"], rows[0]["cause"]) == (1, "rolled-back", "container"), err[-3000:]
    assert lab.proxy.sites() == UNDO_SITES
    assert versions.bad_digest in skip_listed(lab)  # the control: a container's failure is a verdict
    converges(docker_client, lab, versions.old_marker)


# -- the matrix ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("site", "kind"), cases(UPGRADE_SITES, UPGRADE_CASES))
def test_engine_fault_during_a_good_upgrade(
    site: int, kind: FaultKind, lab_for: Any, versions: Versions, docker_client: docker.DockerClient
) -> None:
    """One engine fault at any call of a good upgrade: the service serves (old or new), the good digest is
    not skip-listed, and the next run upgrades it with nothing left over."""
    lab = lab_for(versions.good)
    code, err = faulted_run(lab, site, kind, UPGRADE_SITES)
    assert code in (0, 1), err[-3000:]
    serving(docker_client, lab, {versions.old_marker, versions.new_marker})
    assert versions.new_digest not in skip_listed(lab), err[-3000:]
    converges(docker_client, lab, versions.new_marker)
    assert versions.new_digest not in skip_listed(lab)


@pytest.mark.parametrize(("site", "kind"), cases(UNDO_SITES, UNDO_CASES))
def test_engine_fault_during_an_undo(
    site: int, kind: FaultKind, lab_for: Any, versions: Versions, docker_client: docker.DockerClient
) -> None:
    """One engine fault at any call of the undo of a failed upgrade: the old version serves again, and the
    next run leaves exactly it, healthy, with nothing left over."""
    lab = lab_for(versions.bad)
    code, err = faulted_run(lab, site, kind, UNDO_SITES)
    assert code == 1, err[-3000:]
    serving(docker_client, lab, {versions.old_marker})
    converges(docker_client, lab, versions.old_marker)


def _kill_before(step: str, cfg: Path, log: Path) -> None:
    """Run `dockwarden update` (straight to the engine) until it parks before `step`, and SIGKILL it."""
    proc = spawn("update", cfg, log, pause_before=step)
    try:
        wait_for_text(log, f"paused before {step}")
    finally:
        proc.kill()
        proc.wait()


def test_recovery_sites_are_the_recorded_ones(
    lab_for: Any, versions: Versions, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """After a kill in the gate, `update` makes exactly the calls of RECOVERY_SITES: undo, then upgrade."""
    lab = lab_for(versions.good)
    _kill_before("gate", lab.direct, tmp_path / "kill.log")
    lab.proxy.arm(None)
    code, rows, err = dockwarden("update", lab.faulted)
    assert (code, rows[0]["result"]) == (0, "upgraded"), err[-3000:]
    assert lab.proxy.sites() == RECOVERY_SITES
    converges(docker_client, lab, versions.new_marker)


def test_gc_sites_are_the_recorded_ones(
    lab_for: Any, versions: Versions, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """After a kill before remove-old, `gc` makes exactly the calls of GC_SITES."""
    lab = lab_for(versions.good)
    _kill_before("remove-old", lab.direct, tmp_path / "kill.log")
    lab.proxy.arm(None)
    code, _, err = dockwarden("gc", lab.faulted)
    assert code == 0, err[-3000:]
    assert lab.proxy.sites() == GC_SITES
    converges(docker_client, lab, versions.new_marker)


@pytest.mark.parametrize(("site", "kind"), cases(RECOVERY_SITES, RECOVERY_CASES))
def test_engine_fault_during_recovery(
    site: int,
    kind: FaultKind,
    lab_for: Any,
    versions: Versions,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """One engine fault at a call of recovery (undoing an upgrade killed in its gate): the service serves,
    the good digest is not skip-listed, and the next run upgrades it with nothing left over."""
    lab = lab_for(versions.good)
    _kill_before("gate", lab.direct, tmp_path / "kill.log")
    code, err = faulted_run(lab, site, kind, RECOVERY_SITES)
    assert code in (0, 1), err[-3000:]
    serving(docker_client, lab, {versions.old_marker, versions.new_marker})
    assert versions.new_digest not in skip_listed(lab), err[-3000:]
    converges(docker_client, lab, versions.new_marker)


@pytest.mark.parametrize(("site", "kind"), cases(GC_SITES, GC_CASES))
def test_engine_fault_during_gc(
    site: int,
    kind: FaultKind,
    lab_for: Any,
    versions: Versions,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """One engine fault at a call of `gc` finishing an upgrade killed before remove-old: the new version
    serves throughout, and the next run leaves it alone, healthy, with nothing left over."""
    lab = lab_for(versions.good)
    _kill_before("remove-old", lab.direct, tmp_path / "kill.log")
    code, err = faulted_run(lab, site, kind, GC_SITES, "gc")
    assert code in (0, 1), err[-3000:]
    serving(docker_client, lab, {versions.new_marker})
    converges(docker_client, lab, versions.new_marker)
