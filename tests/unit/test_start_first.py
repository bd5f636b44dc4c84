"""Start-first upgrades on the in-memory engine: the switch, a failure at every step, a kill at every step.

The recorded container of tests/unit/test_transaction.py, without what two containers cannot hold at once
(its published port, fixed IP and MAC), so that `strategy: start-first` applies; it keeps its alias
`webalias` on the network `dwcapnet`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from dockwarden import upgrade
from dockwarden.config import Strategy
from dockwarden.engine import EngineError
from dockwarden.upgrade import Mode, Step
from tests.support.fakeengine import Behaviour, FakeEngine, Op
from tests.unit.test_transaction import DATA, INJECTED, NAME, NEW_DIGEST, NEW_ID, POLICY, TAG, TARGET, Killed

START_FIRST = dataclasses.replace(TARGET, strategy=Strategy.START_FIRST, drain=0.0)
NETWORK, ALIAS = "dwcapnet", "webalias"
COMMITTED = (Step.DRAIN, Step.STOP_OLD, Step.REMOVE_OLD)  # steps after the commit


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scene:
    fake: FakeEngine
    old_id: str
    old_image: str


def _shareable(container: dict[str, Any]) -> dict[str, Any]:
    """The recorded container without a published port, a fixed IP and a fixed MAC."""
    container = copy.deepcopy(container)
    container["HostConfig"]["PortBindings"] = {}
    container["Config"].pop("MacAddress", None)
    for settings in container["NetworkSettings"]["Networks"].values():
        settings["IPAMConfig"] = None
        settings["MacAddress"] = ""
    return container


@pytest.fixture(params=["engine20", "engine26"])
def scene(request: pytest.FixtureRequest) -> Scene:
    recorded = json.loads((DATA / f"recreate-{request.param}.json").read_text())
    new_image = copy.deepcopy(recorded["image"])
    new_image.update(Id=NEW_ID, RepoTags=[], RepoDigests=[])
    fake = FakeEngine(registry={f"127.0.0.1:5000/cap@{NEW_DIGEST}": new_image})
    old_image = fake.add_image(recorded["image"])
    return Scene(fake=fake, old_id=fake.add_container(_shareable(recorded["container"])), old_image=old_image)


def _run(scene: Scene, **hooks: Any) -> upgrade.Outcome:
    return upgrade.Upgrade(scene.fake, START_FIRST, upgrade.Hooks(**hooks)).run()


def _holder(scene: Scene) -> dict[str, Any]:
    found = scene.fake.named(NAME)
    assert found is not None
    return found


def _old_stopped(scene: Scene) -> bool:
    return any(c.op is Op.STOP and c.args[0] == scene.old_id for c in scene.fake.calls)


def _kill_before(step: str) -> Callable[[str], None]:
    def checkpoint(current: str) -> None:
        if current == step:
            raise Killed

    return checkpoint


# -- which strategy ----------------------------------------------------------------------------------


def _doc(**host: Any) -> dict[str, Any]:
    mounts = host.pop("Mounts", [])
    return {"HostConfig": {"NetworkMode": "bridge", **host}, "Mounts": mounts, "Config": {}}


@pytest.mark.parametrize(
    ("wanted", "mode", "container", "chosen", "why"),
    [
        (Strategy.STOP_FIRST, Mode.RUNNING, _doc(), Strategy.STOP_FIRST, None),
        (Strategy.START_FIRST, Mode.RUNNING, _doc(), Strategy.START_FIRST, None),
        (Strategy.AUTO, Mode.RUNNING, _doc(), Strategy.START_FIRST, None),
        (
            Strategy.START_FIRST,
            Mode.RUNNING,
            _doc(PortBindings={"80/tcp": [{"HostPort": ""}]}),
            "stop-first",
            "ports",
        ),
        (Strategy.AUTO, Mode.RUNNING, _doc(PublishAllPorts=True), Strategy.STOP_FIRST, "ports"),
        (Strategy.AUTO, Mode.RUNNING, _doc(NetworkMode="host"), Strategy.STOP_FIRST, "network mode host"),
        (
            Strategy.START_FIRST,
            Mode.RUNNING,
            _doc(NetworkMode="container:x"),
            Strategy.STOP_FIRST,
            "container:x",
        ),
        (
            Strategy.AUTO,
            Mode.RUNNING,
            _doc(Devices=[{"PathOnHost": "/dev/ttyS0"}]),
            Strategy.STOP_FIRST,
            "devices",
        ),
        (
            Strategy.START_FIRST,
            Mode.RUNNING,
            _doc(Devices=[{"PathOnHost": "/dev/x"}]),
            Strategy.START_FIRST,
            None,
        ),
        (
            Strategy.AUTO,
            Mode.RUNNING,
            _doc(Mounts=[{"Type": "volume", "RW": True, "Destination": "/data"}]),
            Strategy.STOP_FIRST,
            "/data writable",
        ),
        (
            Strategy.AUTO,
            Mode.RUNNING,
            _doc(Mounts=[{"Type": "bind", "RW": False, "Destination": "/etc/app"}]),
            Strategy.START_FIRST,
            None,
        ),
        (
            Strategy.START_FIRST,
            Mode.RUNNING,
            _doc(Mounts=[{"Type": "volume", "RW": True, "Destination": "/data"}]),
            Strategy.START_FIRST,
            None,
        ),
        (Strategy.START_FIRST, Mode.AUTO_REMOVE, _doc(), Strategy.STOP_FIRST, "auto-remove"),
        (Strategy.AUTO, Mode.CRASH_LOOP, _doc(), Strategy.STOP_FIRST, "restarting"),
        (Strategy.START_FIRST, Mode.STOPPED, _doc(), Strategy.STOP_FIRST, "stopped"),
    ],
)
def test_strategy_for_keeps_start_first_to_what_two_containers_can_share(
    wanted: Strategy, mode: Mode, container: dict[str, Any], chosen: Strategy, why: str | None
) -> None:
    """Start-first is used only for a running container without host ports, host or shared network
    namespace and fixed addresses; `auto` also refuses devices and writable mounts; the reason says why."""
    strategy, reason = upgrade.strategy_for(wanted, mode, container)
    assert strategy == chosen
    assert (reason is None) == (why is None)
    assert why is None or why in str(reason)


def test_a_published_port_makes_start_first_fall_back_to_stop_first(scene: Scene) -> None:
    """A service asking for start-first whose container publishes a port is upgraded stop-first."""
    scene.fake.containers[scene.old_id]["HostConfig"]["PortBindings"] = {"8080/tcp": [{"HostPort": "18080"}]}
    outcome = _run(scene)
    assert outcome.result == "upgraded"
    creates = [c.args[1] for c in scene.fake.calls if c.op is Op.CREATE]
    assert NAME + upgrade.NEW_SUFFIX not in creates


# -- the switch --------------------------------------------------------------------------------------


def test_start_first_gates_the_new_one_while_the_old_one_serves_then_moves_name_and_aliases(
    scene: Scene,
) -> None:
    """The successor is created as NAME--dockwarden-new without aliases, started and gated while the old
    one runs under NAME; then it takes the name and the alias, the commit comes, and only then is the old
    one stopped (not disconnected: it finishes what it serves)."""
    outcome = _run(scene)
    assert (outcome.result, outcome.error, outcome.replaced) == ("upgraded", None, scene.old_id)
    assert scene.fake.names() == [NAME]
    new = _holder(scene)
    assert (new["Image"], new["State"]["Running"]) == (NEW_ID, True)
    assert ALIAS in new["NetworkSettings"]["Networks"][NETWORK]["Aliases"]
    assert scene.old_id not in scene.fake.containers
    create = next(c for c in scene.fake.calls if c.op is Op.CREATE)
    assert create.args[1] == NAME + upgrade.NEW_SUFFIX
    endpoints = create.args[0].get("NetworkingConfig", {}).get("EndpointsConfig", {})
    assert all(not e.get("Aliases") for e in endpoints.values())
    ops = [
        (c.op, c.args[0] if c.args else None, c.args[1] if len(c.args) > 1 else None)
        for c in scene.fake.calls
    ]
    new_id = new["Id"]
    started = ops.index((Op.START, new_id, None))
    committed = ops.index((Op.RENAME, scene.old_id, NAME + upgrade.DONE_SUFFIX))
    stopped = next(i for i, op in enumerate(ops) if op[:2] == (Op.STOP, scene.old_id))
    assert started < committed < stopped
    assert not any(op[:2] == (Op.DISCONNECT_NETWORK, scene.old_id) for op in ops)  # stopped, never cut off


def test_a_successor_failing_its_gate_is_removed_and_the_old_one_never_stopped(scene: Scene) -> None:
    """A successor that exits in its gate is removed; the old container never stopped nor moved, and the
    tag points at its image again: rolled back without an outage."""
    scene.fake.on_start[NEW_ID] = Behaviour(exit_code=1)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.started_new) == ("rolled-back", "gate", True)
    assert outcome.replaced is None  # nothing that depends on the old one has to follow
    assert scene.fake.names() == [NAME]
    assert _holder(scene)["Id"] == scene.old_id
    assert not _old_stopped(scene)
    assert not any(c.op is Op.RENAME and c.args[0] == scene.old_id for c in scene.fake.calls)
    assert scene.fake.tagged(TAG) == scene.old_image


@pytest.mark.parametrize(
    ("op", "nth", "step"),
    [
        (Op.TAG, 2, "tag"),  # the first one is the -pulled tag
        (Op.CREATE, 1, "create"),
        (Op.CONNECT_NETWORK, 1, "connect"),
        (Op.START, 1, "start"),
        (Op.RENAME, 1, "set-aside"),
        (Op.RENAME, 2, "take-name"),
        (Op.DISCONNECT_NETWORK, 1, "move-aliases"),
        (Op.CONNECT_NETWORK, 2, "move-aliases"),
        (Op.RENAME, 3, "commit"),
    ],
)
def test_a_failure_before_the_commit_removes_the_new_one_and_the_old_one_keeps_serving(
    scene: Scene, op: Op, nth: int, step: str
) -> None:
    """A failure at any step up to the commit rolls back: the successor is gone, the old container holds
    its name and aliases and never stopped."""
    scene.fake.fail(op, EngineError(INJECTED), nth=nth)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.rollback_error) == ("rolled-back", step, None)
    assert scene.fake.names() == [NAME]
    old = _holder(scene)
    assert (old["Id"], old["State"]["Running"]) == (scene.old_id, True)
    assert ALIAS in old["NetworkSettings"]["Networks"][NETWORK]["Aliases"]
    assert not _old_stopped(scene)
    assert scene.fake.tagged(TAG) == scene.old_image


@pytest.mark.parametrize(("op", "step"), [(Op.STOP, "stop-old"), (Op.REMOVE, "remove-old")])
def test_a_failure_after_the_commit_is_an_upgrade_with_an_error(scene: Scene, op: Op, step: str) -> None:
    """Once committed, a failure to stop or remove the old container leaves the upgrade done: the new one
    serves, and the old one waits as NAME--dockwarden-done for recovery."""
    scene.fake.fail(op, EngineError(INJECTED), nth=1)
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("upgraded", step)
    assert _holder(scene)["Image"] == NEW_ID
    assert NAME + upgrade.DONE_SUFFIX in scene.fake.names()
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]


@pytest.mark.parametrize("step", upgrade.START_FIRST_STEPS)
def test_start_first_killed_at_any_step_converges(scene: Scene, step: str) -> None:
    """A kill before any step converges to one running container under NAME with nothing left over: the
    old one, which never stopped, before the commit; the new one after it."""
    with pytest.raises(Killed):
        _run(scene, checkpoint=_kill_before(step))
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]
    holder = _holder(scene)
    assert holder["State"]["Running"]
    if step in COMMITTED:
        assert holder["Image"] == NEW_ID
    else:
        assert holder["Id"] == scene.old_id
        assert not _old_stopped(scene)


def test_a_successor_left_beside_a_stranger_is_reported_not_removed(scene: Scene) -> None:
    """A NAME--dockwarden-new whose label names a container other than the one holding NAME is not ours:
    recovery leaves it."""
    with pytest.raises(Killed):
        _run(scene, checkpoint=_kill_before(Step.SET_ASIDE))
    staged = scene.fake.named(NAME + upgrade.NEW_SUFFIX)
    assert staged is not None
    staged["Config"]["Labels"]["dockwarden.replaces"] = "f" * 64
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME, NAME + upgrade.NEW_SUFFIX]
