"""The transaction for every container state, on the in-memory engine: what is replaced and how, what is
left alone, and what a failure or a kill at any step leaves (see tests/unit/test_transaction.py for the
running case, whose recorded container and images these tests reuse)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from dockwarden import recreate, upgrade
from dockwarden.config import Stopped
from dockwarden.engine import ContainerState, EngineError
from dockwarden.upgrade import Mode, Step
from tests.support.fakeengine import Behaviour, FakeEngine, Op
from tests.unit.test_transaction import (
    DATA,
    INJECTED,
    NAME,
    NEW_DIGEST,
    NEW_ID,
    POLICY,
    TAG,
    TARGET,
    Killed,
    _interrupted,
)

RECREATE = dataclasses.replace(TARGET, stopped=Stopped.RECREATE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scene:
    """A fake engine running (or not) the recorded container in one state; the registry has a new version."""

    fake: FakeEngine
    old_id: str
    old_image: str


def _scene(engine: str, state: str) -> Scene:
    recorded = json.loads((DATA / f"recreate-{engine}.json").read_text())
    new_image = copy.deepcopy(recorded["image"])
    new_image.update(Id=NEW_ID, RepoTags=[], RepoDigests=[])
    fake = FakeEngine(registry={f"127.0.0.1:5000/cap@{NEW_DIGEST}": new_image})
    old_image = fake.add_image(recorded["image"])
    container = recorded["container"]
    if state == "auto-remove":
        # `docker run --rm`: the engine refuses AutoRemove together with a restart policy.
        container["HostConfig"].update(AutoRemove=True, RestartPolicy={"Name": "no", "MaximumRetryCount": 0})
    if state == "restarting":
        fake.on_start[old_image] = Behaviour(crash_loop=True)
    old_id = fake.add_container(container, running=state != "exited")
    if state == "paused":
        fake.pause(old_id)
    return Scene(fake=fake, old_id=old_id, old_image=old_image)


@pytest.fixture(params=["engine20", "engine26"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _run(scene: Scene, target: upgrade.Target = TARGET, **hooks: Any) -> upgrade.Outcome:
    return upgrade.Upgrade(scene.fake, target, upgrade.Hooks(**hooks)).run()


def _kill_before(step: str) -> Callable[[str], None]:
    def checkpoint(current: str) -> None:
        if current == step:
            raise Killed

    return checkpoint


def _snapshot(fake: FakeEngine) -> dict[str, Any]:
    return copy.deepcopy(fake.containers)


def _holder(scene: Scene) -> dict[str, Any]:
    found = scene.fake.named(NAME)
    assert found is not None
    return found


def _ops(fake: FakeEngine, op: Op, container_id: str | None = None) -> int:
    return sum(1 for c in fake.calls if c.op is op and (container_id is None or c.args[0] == container_id))


# -- the decisions, on data -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "stopped", "stopped_ok", "reason"),
    [
        (ContainerState.RUNNING, Stopped.SKIP, False, None),
        (ContainerState.RESTARTING, Stopped.SKIP, False, None),
        (None, Stopped.SKIP, False, None),
        (ContainerState.PAUSED, Stopped.RECREATE, True, "paused"),
        (ContainerState.EXITED, Stopped.SKIP, False, "exited"),
        (ContainerState.CREATED, Stopped.SKIP, False, "created"),
        (ContainerState.EXITED, Stopped.RECREATE, False, None),
        (ContainerState.CREATED, Stopped.SKIP, True, None),
        (ContainerState.DEAD, Stopped.RECREATE, True, "dead"),
        (ContainerState.REMOVING, Stopped.RECREATE, True, "removing"),
        (ContainerState.UNKNOWN, Stopped.RECREATE, True, "unknown"),
    ],
)
def test_left_alone_names_the_state(
    state: ContainerState | None, stopped: Stopped, stopped_ok: bool, reason: str | None
) -> None:
    """Running and restarting containers are replaced; paused, dead and removing ones never; stopped ones
    only when the service says `stopped: recreate` or a rollback asks; the reason starts with the state."""
    found = upgrade.left_alone(state, stopped, stopped_ok=stopped_ok)
    assert (found.partition(":")[0] if found else None) == reason


@pytest.mark.parametrize(
    ("state", "auto_remove", "stopped_ok", "mode"),
    [
        (ContainerState.RUNNING, False, False, Mode.RUNNING),
        (ContainerState.RUNNING, True, False, Mode.AUTO_REMOVE),
        (ContainerState.RESTARTING, False, True, Mode.CRASH_LOOP),
        (ContainerState.EXITED, False, False, Mode.STOPPED),
        (ContainerState.CREATED, True, False, Mode.STOPPED),  # `docker create --rm`: nothing deletes it
        (ContainerState.EXITED, False, True, Mode.REVIVE),
    ],
)
def test_mode_for_each_state(state: ContainerState, auto_remove: bool, stopped_ok: bool, mode: Mode) -> None:
    """The way a container is replaced follows from its state, AutoRemove, and whether a rollback asks."""
    assert upgrade.mode_for(state, auto_remove=auto_remove, stopped_ok=stopped_ok) is mode


def test_only_running_modes_are_started_again_by_an_undo() -> None:
    """An undo starts the old container again only if it ran (or crash-looped); the set-aside name says so."""
    assert {m: (m.restores_running, m.aside_suffix) for m in Mode} == {
        Mode.RUNNING: (True, upgrade.OLD_SUFFIX),
        Mode.AUTO_REMOVE: (True, upgrade.OLD_SUFFIX),
        Mode.CRASH_LOOP: (True, upgrade.OLD_SUFFIX),
        Mode.STOPPED: (False, upgrade.STOPPED_SUFFIX),
        Mode.REVIVE: (False, upgrade.STOPPED_SUFFIX),
    }


# -- paused, and stopped by default: left alone ------------------------------------------------------


@pytest.mark.parametrize(("state", "target"), [("paused", RECREATE), ("exited", TARGET)])
def test_a_state_left_alone_is_skipped_untouched(engine: str, state: str, target: upgrade.Target) -> None:
    """A paused container, and a stopped one whose service does not opt in, are skipped with the state as
    the reason; no container changes and the pulled image goes again."""
    scene = _scene(engine, state)
    before = _snapshot(scene.fake)
    outcome = _run(scene, target)
    assert (outcome.result, outcome.step, outcome.replaced) == ("skipped", None, None)
    assert str(outcome.error).startswith(f"{state}: ")
    assert _snapshot(scene.fake) == before
    assert list(scene.fake.images) == [scene.old_image]


# -- stopped: recreate --------------------------------------------------------------------------------


def test_stopped_recreate_creates_the_successor_and_leaves_it_stopped(engine: str) -> None:
    """With `stopped: recreate` an exited container is replaced by a created, never started one on the new
    image; nothing is started, and the verdict says what vouched for it instead of a gate."""
    scene = _scene(engine, "exited")
    outcome = _run(scene, RECREATE)
    assert (outcome.result, outcome.verdict, outcome.started_new) == ("upgraded", upgrade.NOT_STARTED, False)
    new = _holder(scene)
    assert (new["Image"], new["State"]["Status"]) == (NEW_ID, "created")
    assert scene.fake.names() == [NAME]
    assert _ops(scene.fake, Op.START) == 0
    assert _ops(scene.fake, Op.STOP) == 0


@pytest.mark.parametrize(
    ("op", "nth", "step"),
    [
        (Op.TAG, 2, "tag"),
        (Op.CREATE, 1, "create"),
        (Op.CONNECT_NETWORK, 1, "connect"),
        (Op.RENAME, 2, "commit"),
    ],
)
def test_stopped_recreate_failure_puts_the_old_one_back_stopped(
    engine: str, op: Op, nth: int, step: str
) -> None:
    """A failure after set-aside puts the stopped container back under its name, still stopped: nothing
    was started, and its digest never ran."""
    scene = _scene(engine, "exited")
    scene.fake.fail(op, EngineError(INJECTED), nth=nth)
    outcome = _run(scene, RECREATE)
    assert (outcome.result, outcome.step, outcome.started_new) == ("rolled-back", step, False)
    assert scene.fake.names() == [NAME]
    assert (_holder(scene)["Id"], _holder(scene)["State"]["Status"]) == (scene.old_id, "exited")
    assert _ops(scene.fake, Op.START) == 0


@pytest.mark.parametrize("step", [s for s in upgrade.STEPS if s not in ("stop-old", "start", "gate")])
def test_stopped_recreate_killed_at_any_step_converges_stopped(engine: str, step: str) -> None:
    """A kill before any step of a `stopped: recreate` upgrade converges to one stopped container under the
    name (the old one, or the new one once committed), and recovery starts nothing."""
    scene = _scene(engine, "exited")
    with pytest.raises(Killed):
        _run(scene, RECREATE, checkpoint=_kill_before(step))
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]
    holder = _holder(scene)
    assert holder["Image"] == (NEW_ID if step == "remove-old" else scene.old_image)
    assert not holder["State"]["Running"]
    assert _ops(scene.fake, Op.START) == 0


# -- restarting (a crash loop) ------------------------------------------------------------------------


def test_a_crash_loop_is_held_then_replaced(engine: str) -> None:
    """A restarting container is stopped before it is renamed (the engine refuses the rename between
    restarts), then replaced by the new version, which is started and gated."""
    scene = _scene(engine, "restarting")
    outcome = _run(scene)
    assert (outcome.result, outcome.verdict, outcome.started_new) == ("upgraded", "healthy", True)
    new = _holder(scene)
    assert (new["Image"], new["State"]["Status"]) == (NEW_ID, "running")
    assert scene.fake.names() == [NAME]
    ops = [c.op for c in scene.fake.calls if c.op in (Op.STOP, Op.RENAME)]
    assert ops[:2] == [Op.STOP, Op.RENAME]


def test_a_crash_loop_whose_successor_fails_is_put_back_restarting(engine: str) -> None:
    """When the new version of a crash-looping container fails its gate, the old one is put back as it was
    (restarting again under its name): rolled-back, not rollback-failed."""
    scene = _scene(engine, "restarting")
    scene.fake.on_start[NEW_ID] = Behaviour(exit_code=1)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.rollback_error) == ("rolled-back", "gate", None)
    assert outcome.started_new
    assert scene.fake.names() == [NAME]
    assert (_holder(scene)["Id"], _holder(scene)["State"]["Status"]) == (scene.old_id, "restarting")


def test_a_container_that_starts_crash_looping_after_plan_is_held(engine: str) -> None:
    """A container seen running at plan that is between two restarts at set-aside (the rename refused) is
    held and renamed then, and the upgrade goes on."""
    scene = _scene(engine, "running")

    def crash(step: str) -> None:
        if step == "set-aside":
            scene.fake.containers[scene.old_id]["State"].update(Status="restarting", Restarting=True)

    outcome = _run(scene, checkpoint=crash)
    assert (outcome.result, outcome.error) == ("upgraded", None)
    assert _holder(scene)["Image"] == NEW_ID


def test_a_refused_set_aside_of_a_crash_loop_is_an_error_that_changes_nothing(engine: str) -> None:
    """If the set-aside rename fails even once the crash loop is held, the result is error (never
    rollback-failed), and the old container is started again, restarting as before, under its name."""
    scene = _scene(engine, "restarting")
    scene.fake.fail(Op.RENAME, EngineError(INJECTED), nth=1)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.started_new) == ("error", "set-aside", False)
    assert INJECTED in str(outcome.error)
    assert scene.fake.names() == [NAME]
    assert (_holder(scene)["Id"], _holder(scene)["State"]["Status"]) == (scene.old_id, "restarting")


@pytest.mark.parametrize("step", upgrade.STEPS)
def test_a_crash_loop_killed_at_any_step_converges(engine: str, step: str) -> None:
    """A kill before any step of a crash loop's upgrade converges to one container under the name: the old
    one restarting again, or the new one running once committed."""
    scene = _scene(engine, "restarting")
    with pytest.raises(Killed):
        _run(scene, checkpoint=_kill_before(step))
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]
    expected = (NEW_ID, "running") if step == "remove-old" else (scene.old_image, "restarting")
    assert (_holder(scene)["Image"], _holder(scene)["State"]["Status"]) == expected


# -- AutoRemove (--rm) --------------------------------------------------------------------------------


def test_auto_remove_is_replaced_through_a_stand_in(engine: str) -> None:
    """An AutoRemove container is copied to a created stand-in, stopped (the engine deletes it) before its
    successor is created under its name, and the stand-in goes once the successor passed its gate."""
    scene = _scene(engine, "auto-remove")
    outcome = _run(scene)
    assert (outcome.result, outcome.error, outcome.replaced) == ("upgraded", None, scene.old_id)
    new = _holder(scene)
    assert (new["Image"], new["State"]["Running"], new["HostConfig"]["AutoRemove"]) == (NEW_ID, True, True)
    assert scene.fake.names() == [NAME]
    creates = [c.args[1] for c in scene.fake.calls if c.op is Op.CREATE]
    assert creates == [NAME + upgrade.OLD_SUFFIX, NAME]
    ops = [c.op for c in scene.fake.calls]
    assert ops.index(Op.STOP) < len(ops) - ops[::-1].index(Op.CREATE)  # stopped before the new one exists


@pytest.mark.parametrize(
    ("op", "nth", "step"),
    [
        (Op.TAG, 2, "tag"),  # the first one is the -pulled tag
        (Op.CREATE, 2, "create"),
        (Op.CONNECT_NETWORK, 2, "connect"),
        (Op.START, 1, "start"),
        (Op.RENAME, 1, "commit"),
    ],
)
def test_auto_remove_failure_brings_the_old_version_back_from_its_stand_in(
    engine: str, op: Op, nth: int, step: str
) -> None:
    """A failure once the AutoRemove container is gone starts its stand-in under the name: the old image,
    running, AutoRemove kept; the successor is removed."""
    scene = _scene(engine, "auto-remove")
    scene.fake.fail(op, EngineError(INJECTED), nth=nth)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.rollback_error) == ("rolled-back", step, None)
    assert scene.fake.names() == [NAME]
    back = _holder(scene)
    assert (back["Image"], back["State"]["Running"], back["HostConfig"]["AutoRemove"]) == (
        scene.old_image,
        True,
        True,
    )
    assert scene.old_id not in scene.fake.containers
    assert scene.fake.tagged(TAG) == scene.old_image


def test_auto_remove_stand_in_that_cannot_be_made_is_an_error_that_changes_nothing(engine: str) -> None:
    """If the stand-in cannot be created, nothing was stopped: an error at set-aside; the old one serves."""
    scene = _scene(engine, "auto-remove")
    scene.fake.fail(Op.CREATE, EngineError(INJECTED), nth=1)
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("error", "set-aside")
    assert scene.fake.names() == [NAME]
    assert (_holder(scene)["Id"], _holder(scene)["State"]["Running"]) == (scene.old_id, True)


@pytest.mark.parametrize("step", upgrade.STEPS)
def test_auto_remove_killed_at_any_step_converges(engine: str, step: str) -> None:
    """A kill before any step of an AutoRemove container's upgrade converges to one running container
    under the name: the old version (the original, or its stand-in), or the new one once committed."""
    scene = _scene(engine, "auto-remove")
    with pytest.raises(Killed):
        _run(scene, checkpoint=_kill_before(step))
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]
    holder = _holder(scene)
    assert holder["Image"] == (NEW_ID if step == "remove-old" else scene.old_image)
    assert holder["State"]["Running"]
    assert _interrupted(scene.fake) == []


def test_auto_remove_stand_in_left_beside_the_running_original_is_dropped(engine: str) -> None:
    """A kill after the stand-in was made but before the original stopped: recovery removes the stand-in
    and leaves the original serving, untouched."""
    scene = _scene(engine, "auto-remove")
    with pytest.raises(Killed):
        _run(scene, checkpoint=_kill_before(Step.STOP_OLD))
    assert scene.fake.names() == [NAME, NAME + upgrade.OLD_SUFFIX]
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]
    assert _holder(scene)["Id"] == scene.old_id


def test_auto_remove_stand_in_is_made_from_the_image_the_old_one_runs(engine: str) -> None:
    """If the tag the old container was created from points elsewhere by now, it is pointed back at the
    image the old one runs before its stand-in is created, so the stand-in runs the old version."""
    scene = _scene(engine, "auto-remove")
    elsewhere = copy.deepcopy(scene.fake.images[scene.old_image])
    elsewhere.update(Id="sha256:" + "9" * 64, RepoTags=[TAG], RepoDigests=[])
    scene.fake.images[scene.old_image]["RepoTags"].remove(TAG)
    scene.fake.add_image(elsewhere)
    scene.fake.on_start[NEW_ID] = Behaviour(exit_code=1)
    outcome = _run(scene)
    assert outcome.result == "rolled-back"
    assert _holder(scene)["Image"] == scene.old_image


def test_relinked_points_links_to_a_set_aside_name_back_at_the_service() -> None:
    """Links to the service under its own or a set-aside name are pointed at its name; others stay."""
    plan = recreate.CreatePlan(
        name="client",
        body={
            "Image": "r/client:latest",
            "HostConfig": {"Links": ["web--dockwarden-done:app", "db:database", "web--dockwarden-old:w2"]},
        },
    )
    assert upgrade.relinked(plan, "web").body["HostConfig"]["Links"] == ["web:app", "db:database", "web:w2"]
    assert plan.body["HostConfig"]["Links"][0] == "web--dockwarden-done:app"  # the plan itself is unchanged
    unlinked = recreate.CreatePlan(name="client", body={"Image": "r/client:latest", "HostConfig": {}})
    assert upgrade.relinked(unlinked, "web") is unlinked
