"""The upgrade transaction on an in-memory engine: a success, and a failure at every step.

The container and its image are the recorded inspect documents of Engine 20.10 and 26.1 (two networks,
binds, volumes, a HEALTHCHECK). Gates decide at their first poll, so the file runs in milliseconds; the
same paths on real engines, and a SIGKILL at every step, are in tests/integration.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dockwarden import gate, imageref, recreate, retention, upgrade
from dockwarden.cycle import blamed
from dockwarden.engine import EngineError, Unreachable
from tests.support.fakeengine import Behaviour, FakeEngine, Health, Op

DATA = Path(__file__).resolve().parents[1] / "data"
NAME = "dwcap"  # the recorded container
TAG = "127.0.0.1:5000/cap:latest"  # the tag it was created from
PULLED = f"127.0.0.1:5000/cap:{retention.pulled_tag(NAME)}"
NEW_DIGEST = "sha256:" + "d" * 64
NEW_ID = "sha256:" + "e" * 64  # the image NEW_DIGEST resolves to
RETAINED_ID = "sha256:" + "f" * 64  # a version kept on the host, for rollbacks
INJECTED = "injected"
# No stability window, and the fake's containers are healthy or unhealthy at once: every gate verdict comes
# at its first poll, so no test sleeps gate.POLL. The cap only bounds a test that goes wrong.
POLICY = gate.Policy(stability=0.0, health_timeout_max=5.0)
TARGET = upgrade.Target(
    service="cap",
    container=NAME,
    ref=imageref.parse(TAG),
    from_digest="sha256:" + "a" * 64,
    to_digest=NEW_DIGEST,
    policy=POLICY,
)


class Killed(BaseException):
    """The process dying mid-step: not an Exception, so the transaction cannot catch it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scene:
    """A fake engine running the recorded container, which the registry has a new version of."""

    fake: FakeEngine
    old_id: str  # the service's container before the upgrade
    old_image: str


@pytest.fixture(params=["engine20", "engine26"])
def scene(request: pytest.FixtureRequest) -> Scene:
    recorded = json.loads((DATA / f"recreate-{request.param}.json").read_text())
    new_image = copy.deepcopy(recorded["image"])
    new_image.update(Id=NEW_ID, RepoTags=[], RepoDigests=[])
    new_image["Config"]["Env"] = [
        e.replace("APP_MARKER=old", "APP_MARKER=new") for e in new_image["Config"]["Env"]
    ]
    fake = FakeEngine(registry={f"127.0.0.1:5000/cap@{NEW_DIGEST}": new_image})
    old_image = fake.add_image(recorded["image"])
    return Scene(fake=fake, old_id=fake.add_container(recorded["container"]), old_image=old_image)


def _run(scene: Scene, target: upgrade.Target = TARGET, **hooks: Any) -> upgrade.Outcome:
    return upgrade.Upgrade(scene.fake, target, upgrade.Hooks(**hooks)).run()


def _interrupted(fake: FakeEngine) -> list[str]:
    """Containers with a half-done upgrade, by the names the transaction leaves."""
    suffixes = (upgrade.OLD_SUFFIX, upgrade.DONE_SUFFIX)
    return sorted(
        {
            n.removesuffix(upgrade.OLD_SUFFIX).removesuffix(upgrade.DONE_SUFFIX)
            for n in fake.names()
            if n.endswith(suffixes)
        }
    )


def _state(fake: FakeEngine) -> tuple[dict[str, Any], dict[str, Any]]:
    return copy.deepcopy((fake.containers, fake.images))


def _assert_old_one_back(scene: Scene, *, running: bool = True) -> None:
    """The old container holds its name again, as it was, and no successor or set-aside name is left."""
    assert scene.fake.names() == [NAME]
    back = scene.fake.named(NAME)
    assert back is not None
    assert back["Id"] == scene.old_id
    assert back["State"]["Running"] is running
    assert scene.fake.tagged(TAG) == scene.old_image


# -- a failure at every step ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Failure:
    step: str
    arrange: Callable[[FakeEngine], None]
    error: str = INJECTED  # part of the outcome's error


def _fault(op: Op, nth: int) -> Callable[[FakeEngine], None]:
    def arrange(fake: FakeEngine) -> None:
        fake.fail(op, EngineError(f"{INJECTED}: {op} #{nth}"), nth=nth)

    return arrange


def _drop_cap_add(fake: FakeEngine) -> None:
    fake.ignored_host_config.add("CapAdd")


def _new_version_exits(fake: FakeEngine) -> None:
    fake.on_start[NEW_ID] = Behaviour(exit_code=1)


FAILURES = (
    Failure(step="pull", arrange=_fault(Op.PULL, 1)),
    Failure(step="plan", arrange=_fault(Op.INSPECT_CONTAINER, 2)),  # the first is at pull (is it running?)
    Failure(step="set-aside", arrange=_fault(Op.RENAME, 1)),
    Failure(step="tag", arrange=_fault(Op.TAG, 2)),  # the first tag is the -pulled one, at pull
    Failure(step="create", arrange=_fault(Op.CREATE, 1)),
    Failure(step="connect", arrange=_fault(Op.CONNECT_NETWORK, 1)),
    Failure(step="verify", arrange=_drop_cap_add, error="HostConfig.CapAdd is None"),
    Failure(step="stop-old", arrange=_fault(Op.STOP, 1)),
    Failure(step="start", arrange=_fault(Op.START, 1)),
    Failure(step="gate", arrange=_new_version_exits, error="not running (exited, exit code 1)"),
    Failure(step="commit", arrange=_fault(Op.RENAME, 2)),
    Failure(step="remove-old", arrange=_fault(Op.REMOVE, 1)),
)


def _cases(*steps: str) -> list[Any]:
    return [pytest.param(f, id=f.step) for f in FAILURES if f.step in steps]


def test_every_step_has_a_failure_case() -> None:
    """The failure table covers every step of the transaction, in order."""
    assert [f.step for f in FAILURES] == list(upgrade.STEPS)


@pytest.mark.parametrize("failure", _cases("pull", "plan", "set-aside"))
def test_failure_before_set_aside_leaves_everything_as_it_was(scene: Scene, failure: Failure) -> None:
    """A failure before anything is renamed (the set-aside rename itself refused included) is an error
    that leaves every container and image untouched."""
    before = _state(scene.fake)
    failure.arrange(scene.fake)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.replaced) == ("error", failure.step, None)
    assert failure.error in str(outcome.error)
    assert _state(scene.fake) == before  # a pulled image went with its -pulled tag


@pytest.mark.parametrize(
    "failure",
    _cases("tag", "create", "connect", "verify", "stop-old", "start", "gate", "commit"),
)
def test_failure_after_set_aside_rolls_back(scene: Scene, failure: Failure) -> None:
    """A failure from set-aside to commit is rolled back: the old container runs under its name again."""
    failure.arrange(scene.fake)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.rollback_error) == ("rolled-back", failure.step, None)
    assert failure.error in str(outcome.error)
    _assert_old_one_back(scene)
    assert list(scene.fake.images) == [scene.old_image]  # the failed image went with its -pulled tag


@pytest.mark.parametrize("failure", _cases("remove-old"))
def test_failure_at_remove_old_still_counts_as_upgraded(scene: Scene, failure: Failure) -> None:
    """Past the commit the new version stays; the old container is left as NAME--dockwarden-done."""
    failure.arrange(scene.fake)
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("upgraded", "remove-old")
    assert INJECTED in str(outcome.error)
    assert scene.fake.names() == [NAME, NAME + upgrade.DONE_SUFFIX]
    new = scene.fake.named(NAME)
    assert new is not None
    assert new["Image"] == NEW_ID
    assert new["State"]["Running"]


# -- success, and the cases that change nothing -----------------------------------------------------


def test_upgrade_hands_the_name_to_a_running_successor(scene: Scene) -> None:
    """A healthy new version takes the name and runs; the old container and the -pulled tag are gone."""
    outcome = _run(scene)
    assert (outcome.result, outcome.error, outcome.step, outcome.verdict) == (
        "upgraded",
        None,
        None,
        "healthy",
    )
    assert (outcome.replaced, outcome.old_image, outcome.new_image) == (scene.old_id, scene.old_image, NEW_ID)
    fake = scene.fake
    assert fake.names() == [NAME]
    new = fake.named(NAME)
    assert new is not None
    assert new["Image"] == NEW_ID
    assert new["State"]["Running"]
    assert new["Config"]["Labels"][recreate.REPLACES_LABEL] == scene.old_id
    assert set(new["NetworkSettings"]["Networks"]) == {"bridge", "dwcapnet"}
    assert fake.tagged(TAG) == NEW_ID
    assert fake.tagged(PULLED) is None
    assert scene.old_image in fake.images  # retention's to keep or release, not the transaction's
    ops = [call.op for call in fake.calls]
    assert ops.index(Op.STOP) > ops.index(Op.CONNECT_NETWORK)  # the old one serves until all is ready


def test_same_image_is_up_to_date(scene: Scene) -> None:
    """A digest that resolves to the image already running changes no container."""
    old_image = scene.fake.images[scene.old_image]
    scene.fake.registry[f"127.0.0.1:5000/cap@{NEW_DIGEST}"] = copy.deepcopy(old_image)
    containers = copy.deepcopy(scene.fake.containers)
    outcome = _run(scene)
    assert (outcome.result, outcome.replaced) == ("up-to-date", None)
    assert scene.fake.containers == containers
    assert scene.fake.tagged(TAG) == scene.old_image
    assert scene.fake.tagged(PULLED) is None


def test_stopped_container_is_skipped_by_default(scene: Scene) -> None:
    """A container the user stopped is not upgraded unless its service opts in: skipped, and it stays
    stopped (tests/unit/test_states.py has the opt-in)."""
    scene.fake.stop(scene.old_id, 10)
    before = _state(scene.fake)
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("skipped", None)
    assert str(outcome.error).startswith("exited: the container is not running")
    assert _state(scene.fake) == before


def test_cancel_before_set_aside_skips(scene: Scene) -> None:
    """A stop requested before anything is renamed skips the upgrade and touches nothing."""
    before = _state(scene.fake)
    cancel = threading.Event()
    cancel.set()
    outcome = _run(scene, cancel=cancel)
    assert (outcome.result, outcome.step) == ("skipped", "plan")
    assert outcome.error == "not started: dockwarden is stopping"
    assert _state(scene.fake) == before


def test_cancel_during_the_gate_rolls_back(scene: Scene) -> None:
    """A stop requested while the new version is gated rolls it back."""
    cancel = threading.Event()

    def checkpoint(step: str) -> None:
        if step == "gate":
            cancel.set()

    outcome = _run(scene, cancel=cancel, checkpoint=checkpoint)
    assert (outcome.result, outcome.step) == ("rolled-back", "gate")
    assert outcome.error == "cancelled: dockwarden is stopping"
    _assert_old_one_back(scene)


# -- rollbacks of a stopped container (dockwarden rollback) -----------------------------------------


def _retained(scene: Scene, behaviour: Behaviour) -> upgrade.Target:
    """A version kept on the host, and the target that switches a possibly stopped container to it."""
    image = copy.deepcopy(scene.fake.images[scene.old_image])
    image.update(Id=RETAINED_ID, RepoTags=["127.0.0.1:5000/cap:dockwarden-dwcap-20260101T000000.000000Z"])
    scene.fake.add_image(image)
    scene.fake.on_start[RETAINED_ID] = behaviour
    return dataclasses.replace(TARGET, to_digest=None, image_id=RETAINED_ID, stopped_ok=True)


def test_stopped_ok_replaces_a_stopped_container(scene: Scene) -> None:
    """With stopped_ok (a rollback) a stopped container is replaced, and its successor started."""
    target = _retained(scene, Behaviour())
    scene.fake.stop(scene.old_id, 10)
    outcome = _run(scene, target)
    assert outcome.result == "upgraded"
    new = scene.fake.named(NAME)
    assert new is not None
    assert (new["Image"], new["State"]["Running"]) == (RETAINED_ID, True)
    assert scene.fake.names() == [NAME]


def test_failed_replacement_of_a_stopped_container_leaves_it_stopped(scene: Scene) -> None:
    """When the successor of a stopped container fails, the old one is put back stopped, not started."""
    target = _retained(scene, Behaviour(health=Health.UNHEALTHY))
    scene.fake.stop(scene.old_id, 10)
    outcome = _run(scene, target)
    assert (outcome.result, outcome.step) == ("rolled-back", "gate")
    assert outcome.error == "unhealthy (its HEALTHCHECK failed)"
    _assert_old_one_back(scene, running=False)


# -- the undo itself failing ------------------------------------------------------------------------


def test_undo_that_cannot_rename_back_is_rollback_failed(scene: Scene) -> None:
    """An undo that fails reports rollback-failed with its own error, leaving the old one where recovery
    looks (running, set aside)."""
    _new_version_exits(scene.fake)
    scene.fake.fail(
        Op.RENAME, EngineError(f"{INJECTED}: rename back"), when=lambda call: call.args[1] == NAME
    )
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("rollback-failed", "gate")
    assert outcome.error == "not running (exited, exit code 1)"
    assert outcome.rollback_error is not None
    assert f"{INJECTED}: rename back" in outcome.rollback_error
    assert scene.fake.names() == [NAME + upgrade.OLD_SUFFIX]
    aside = scene.fake.named(NAME + upgrade.OLD_SUFFIX)
    assert aside is not None
    assert aside["State"]["Running"]


def test_old_version_that_does_not_come_back_is_rollback_failed(scene: Scene) -> None:
    """If the old container exits when the undo starts it again, the result is rollback-failed, never a
    silent success."""
    _new_version_exits(scene.fake)
    scene.fake.on_start[scene.old_image] = Behaviour(exit_code=3)
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("rollback-failed", "gate")
    assert outcome.rollback_error == "the old container did not come back: not running (exited, exit code 3)"
    _assert_old_one_back(scene, running=False)


def test_undo_retries_a_start_of_the_old_version(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start of the old container that fails once during the undo is retried, and the undo succeeds."""
    monkeypatch.setattr(upgrade, "START_RETRY_DELAY", 0.0)
    _new_version_exits(scene.fake)
    _fault(Op.START, 2)(scene.fake)  # the first start is the new version's
    outcome = _run(scene)
    assert (outcome.result, outcome.rollback_error) == ("rolled-back", None)
    assert [call.op for call in scene.fake.calls].count(Op.START) == 3
    _assert_old_one_back(scene)


@pytest.mark.parametrize(
    ("error", "cause"),
    [(EngineError("503: injected"), gate.Cause.CONTAINER), (Unreachable("injected"), gate.Cause.ENGINE)],
    ids=["answered-5xx", "unreachable"],
)
def test_undo_is_made_again_after_an_engine_error(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, error: EngineError, cause: gate.Cause
) -> None:
    """An undo that meets one engine error (its rename back) is made again and puts the old version back;
    an engine that did not answer at all makes the failure the engine's, one that answered 5xx does not."""
    monkeypatch.setattr(upgrade, "UNDO_RETRY_DELAY", 0.0)
    _new_version_exits(scene.fake)
    scene.fake.fail(Op.RENAME, error, nth=2)  # the first rename is the set-aside, the second the undo's
    outcome = _run(scene)
    assert (outcome.result, outcome.rollback_error, outcome.cause) == ("rolled-back", None, cause)
    assert blamed(outcome) is (cause is gate.Cause.CONTAINER)
    _assert_old_one_back(scene)


def test_undo_that_the_engine_never_answers_is_rollback_failed(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempts are bounded: an engine that never answers the undo ends it as rollback-failed, the
    engine's, which the next run's recovery takes from where it stopped."""
    monkeypatch.setattr(upgrade, "UNDO_RETRY_DELAY", 0.0)
    _new_version_exits(scene.fake)
    scene.fake.fail(Op.RENAME, Unreachable("injected"), when=lambda call: call.args[1] == NAME)
    outcome = _run(scene)
    assert (outcome.result, outcome.cause) == ("rollback-failed", gate.Cause.ENGINE)
    renames = [c for c in scene.fake.calls if c.op is Op.RENAME and c.args[1] == NAME]
    assert len(renames) == 2 * upgrade.UNDO_ATTEMPTS  # each undo's rename back tries twice


def test_converge_goes_on_after_an_engine_error(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery that meets one engine error in its undo looks again and finishes the undo in the same run."""
    monkeypatch.setattr(upgrade, "UNDO_RETRY_DELAY", 0.0)
    scene.fake.fail(Op.RENAME, Killed(), nth=2)  # killed at the commit: NAME--dockwarden-old is left
    with pytest.raises(Killed):
        _run(scene)
    scene.fake.fail(Op.TAG, Unreachable("injected"), nth=3)  # the undo's retag of the old image
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    _assert_old_one_back(scene)
    assert _interrupted(scene.fake) == []


# -- recovery of what a killed process left ---------------------------------------------------------


def test_converge_removes_a_done_leftover(scene: Scene) -> None:
    """NAME--dockwarden-done means the successor passed its gate: converge finishes by removing it."""
    _fault(Op.REMOVE, 1)(scene.fake)
    assert _run(scene).result == "upgraded"
    assert _interrupted(scene.fake) == [NAME]
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    assert scene.fake.names() == [NAME]
    new = scene.fake.named(NAME)
    assert new is not None
    assert (new["Image"], new["State"]["Running"]) == (NEW_ID, True)
    assert scene.old_id not in scene.fake.containers
    assert _interrupted(scene.fake) == []


@pytest.mark.parametrize(
    ("op", "nth"),
    [(Op.CREATE, 1), (Op.START, 1), (Op.RENAME, 2)],
    ids=["at-create", "at-start", "at-commit"],
)
def test_converge_undoes_an_old_leftover(scene: Scene, op: Op, nth: int) -> None:
    """NAME--dockwarden-old left by a kill before the commit is undone: the old version runs under its name,
    its successor is gone."""
    scene.fake.fail(op, Killed(), nth=nth)
    with pytest.raises(Killed):
        _run(scene)
    assert _interrupted(scene.fake) == [NAME]
    upgrade.converge(scene.fake, NAME, POLICY, scene.old_id)
    _assert_old_one_back(scene)
    assert _interrupted(scene.fake) == []


# -- whom a failure is about: the container, or the engine (the skip list takes only the former) -----


def _engine_gone_in_the_gate(scene: Scene) -> Callable[[str], None]:
    """A checkpoint that makes every inspect of the successor fail as an unreachable engine does."""

    def checkpoint(step: str) -> None:
        if step == "gate":
            new = scene.fake.named(NAME)
            assert new is not None
            scene.fake.fail(
                Op.INSPECT_CONTAINER,
                Unreachable(f"{INJECTED}: cannot connect to the Docker engine"),
                when=lambda call: call.args[0] == new["Id"],
            )

    return checkpoint


def test_engine_unreachable_in_the_gate_is_not_the_images_fault(scene: Scene) -> None:
    """A gate whose engine stops answering rolls back with the engine as its cause, and blames no digest."""
    outcome = _run(scene, checkpoint=_engine_gone_in_the_gate(scene))
    assert (outcome.result, outcome.step, outcome.cause) == ("rolled-back", "gate", gate.Cause.ENGINE)
    assert outcome.started_new
    assert not blamed(outcome)
    _assert_old_one_back(scene)


def test_successor_stopped_then_undo_meets_the_engine_away_is_the_engines_fault(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarting engine stops the successor (exit 0), then is away for the undo: the engine is blamed."""
    monkeypatch.setattr(upgrade, "START_RETRY_DELAY", 0.0)
    scene.fake.on_start[NEW_ID] = Behaviour(exit_code=0)
    scene.fake.fail(
        Op.START,
        Unreachable(f"{INJECTED}: cannot connect to the Docker engine"),
        when=lambda call: call.args[0] == scene.old_id,
    )
    outcome = _run(scene)
    assert (outcome.result, outcome.step) == ("rollback-failed", "gate")
    assert outcome.error == "not running (exited, exit code 0)"
    assert outcome.cause == gate.Cause.ENGINE
    assert not blamed(outcome)


def test_successor_that_exits_is_the_containers_fault(scene: Scene) -> None:
    """A successor that exits in its gate, with the engine fine throughout, puts the blame on its image."""
    _new_version_exits(scene.fake)
    outcome = _run(scene)
    assert (outcome.result, outcome.cause) == ("rolled-back", gate.Cause.CONTAINER)
    assert blamed(outcome)


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (EngineError(f"{INJECTED}: OCI runtime create failed: exec: no such file"), gate.Cause.CONTAINER),
        (Unreachable(f"{INJECTED}: the Docker engine did not answer in time"), gate.Cause.ENGINE),
    ],
)
def test_a_refused_start_blames_the_image_an_unanswered_one_the_engine(
    scene: Scene, error: EngineError, cause: gate.Cause
) -> None:
    """The engine refusing to start the successor is the image's fault; an engine not answering is not."""
    scene.fake.fail(Op.START, error, nth=1)
    outcome = _run(scene)
    assert (outcome.result, outcome.step, outcome.cause) == ("rolled-back", "start", cause)
    assert blamed(outcome) is (cause is gate.Cause.CONTAINER)


@pytest.mark.parametrize(
    ("undo_error", "expected"),
    [
        (None, gate.Cause.CONTAINER),
        (EngineError("renaming: 500 Internal Server Error"), gate.Cause.ENGINE),
        (
            upgrade.StepFailed(upgrade.UndoStep.ROLLBACK, "did not come back", gate.Cause.CONTAINER),
            gate.Cause.CONTAINER,
        ),
        (upgrade.StepFailed(upgrade.UndoStep.ROLLBACK, "inspecting", gate.Cause.ENGINE), gate.Cause.ENGINE),
    ],
)
def test_undo_cause_turns_to_the_engine_only_on_engine_failures(
    undo_error: BaseException | None, expected: gate.Cause
) -> None:
    """An undo that met the engine failing makes it the engine's fault; other undo failures do not."""
    assert upgrade.undo_cause(gate.Cause.CONTAINER, undo_error) is expected


# -- what proves a leftover ours (upgrade.not_ours) -------------------------------------------------------


def _doc(container_id: str, *, replaces: str | None = None, running: bool = False) -> dict[str, Any]:
    """The parts of an inspect document `not_ours` reads."""
    labels = {} if replaces is None else {recreate.REPLACES_LABEL: replaces}
    return {"Id": container_id, "Name": "/x", "Config": {"Labels": labels}, "State": {"Running": running}}


@pytest.mark.parametrize(
    ("suffix", "aside", "holder", "recorded", "ours"),
    [
        (upgrade.DONE_SUFFIX, _doc("A"), _doc("S", replaces="A"), None, True),
        (upgrade.DONE_SUFFIX, _doc("A", replaces="O"), _doc("S", replaces="O"), None, True),
        (upgrade.DONE_SUFFIX, _doc("A", running=True), _doc("S", replaces="A"), None, True),
        (upgrade.DONE_SUFFIX, _doc("A"), _doc("S"), "A", False),
        (upgrade.DONE_SUFFIX, _doc("A"), None, "A", False),
        (upgrade.OLD_SUFFIX, _doc("A", running=True), _doc("S", replaces="A"), None, True),
        (upgrade.OLD_SUFFIX, _doc("A", replaces="O"), _doc("O", running=True), None, True),
        (upgrade.OLD_SUFFIX, _doc("A", running=True), _doc("S", replaces="B"), "A", False),
        (upgrade.OLD_SUFFIX, _doc("A", running=True), None, "A", True),
        (upgrade.OLD_SUFFIX, _doc("A", running=True), None, "B", False),
        (upgrade.OLD_SUFFIX, _doc("A", running=True), None, None, False),
        (upgrade.OLD_SUFFIX, _doc("A", replaces="O"), None, None, True),
        (upgrade.STOPPED_SUFFIX, _doc("A"), _doc("S", replaces="A"), None, True),
        (upgrade.STOPPED_SUFFIX, _doc("A"), None, "A", True),
        (upgrade.STOPPED_SUFFIX, _doc("A", replaces="O"), None, None, False),
        (upgrade.STOPPED_SUFFIX, _doc("A", replaces="O"), _doc("O"), None, False),
        (upgrade.NEW_SUFFIX, _doc("N", replaces="A"), _doc("A", running=True), None, True),
        (upgrade.NEW_SUFFIX, _doc("N", replaces="A"), _doc("B", running=True), "A", False),
        (upgrade.NEW_SUFFIX, _doc("N", replaces="A"), None, "A", True),
        (upgrade.NEW_SUFFIX, _doc("N", replaces="A"), None, "B", False),
        (upgrade.NEW_SUFFIX, _doc("N", replaces="A"), None, None, False),
        (upgrade.NEW_SUFFIX, _doc("N"), _doc("A", running=True), "A", False),
    ],
    ids=[
        "done-named-by-successor",
        "done-stand-in-whose-original-the-successor-names",
        "done-running-start-first-drain",
        "done-beside-a-stranger",
        "done-alone",
        "old-named-by-successor",
        "old-stand-in-beside-original",
        "old-beside-a-stranger-even-if-recorded",
        "old-alone-recorded",
        "old-alone-another-recorded",
        "old-alone-unrecorded",
        "old-stand-in-alone",
        "stopped-named-by-successor",
        "stopped-alone-recorded",
        "stopped-labelled-alone",
        "stopped-beside-its-labelled-original",
        "new-beside-what-it-replaces",
        "new-beside-a-stranger-even-if-recorded",
        "new-alone-what-it-replaces-recorded",
        "new-alone-another-recorded",
        "new-alone-unrecorded",
        "new-unlabelled",
    ],
)
def test_not_ours_proves_each_leftover_kind(
    suffix: str, aside: dict[str, Any], holder: dict[str, Any] | None, recorded: str | None, ours: bool
) -> None:
    """A set-aside container is ours only when its successor's label, its stand-in label or the state_dir
    record proves it, as README's "Crash safety" lists."""
    assert (upgrade.not_ours(suffix, aside, holder, recorded) is None) is ours


def test_converge_leaves_a_foreign_done_container_and_a_stopped_service_alone(scene: Scene) -> None:
    """A running container that only carries NAME--dockwarden-done is reported, not removed, and the
    stopped service is not started (the fault-recovery-foreign-container case)."""
    scene.fake.stop(scene.old_id, 1)
    other = copy.deepcopy(scene.fake.containers[scene.old_id])
    other.update(Id="b" * 64, Name="/" + NAME + upgrade.DONE_SUFFIX)
    foreign = scene.fake.add_container(other)
    with capture_logs() as logs:
        upgrade.converge(scene.fake, NAME, POLICY, foreign)
    assert [e["event"] for e in logs] == ["recovery.not_ours"]
    assert scene.fake.containers[foreign]["State"]["Running"]
    assert not scene.fake.containers[scene.old_id]["State"]["Running"]
    assert [c.op for c in scene.fake.calls if c.op in (Op.REMOVE, Op.START)] == []


def test_converge_leaves_an_unrecorded_lone_old_container_alone(scene: Scene) -> None:
    """Killed before create, the set-aside container alone is undone only when state_dir recorded its ID:
    without the record it is reported and keeps its name."""
    scene.fake.fail(Op.CREATE, Killed(), nth=1)
    with pytest.raises(Killed):
        _run(scene)
    with capture_logs() as logs:
        upgrade.converge(scene.fake, NAME, POLICY, None)
    assert [e["event"] for e in logs] == ["recovery.not_ours"]
    assert scene.fake.names() == [NAME + upgrade.OLD_SUFFIX]


def test_set_aside_hook_records_the_old_id_before_the_rename(scene: Scene) -> None:
    """The transaction hands the old container's ID to `Hooks.set_aside` before any rename, so the record
    exists whenever the set-aside name does."""
    seen: list[tuple[str, int]] = []

    def record(aside_id: str) -> None:
        seen.append((aside_id, [c.op for c in scene.fake.calls].count(Op.RENAME)))

    assert _run(scene, set_aside=record).result == "upgraded"
    assert seen == [(scene.old_id, 0)]


def test_converge_never_forces_a_removal(scene: Scene) -> None:
    """Finishing a committed upgrade removes the proved-stopped -done container without force."""
    _fault(Op.REMOVE, 1)(scene.fake)
    assert _run(scene).result == "upgraded"
    scene.fake.calls.clear()
    upgrade.converge(scene.fake, NAME, POLICY)  # its first removal fails again (the count restarted)
    removes = [c for c in scene.fake.calls if c.op is Op.REMOVE]
    assert [c.args for c in removes] == [(scene.old_id, False, False)] * 2  # retried, never forced
    assert scene.fake.named(NAME + upgrade.DONE_SUFFIX) is None


def _starts(scene: Scene) -> tuple[list[tuple[str, bool]], Callable[[str], None]]:
    """A `Hooks.started` that records each ID it gets and whether that container runs at that moment."""
    seen: list[tuple[str, bool]] = []

    def started(container_id: str) -> None:
        seen.append((container_id, bool(scene.fake.containers[container_id]["State"]["Running"])))

    return seen, started


def test_started_hook_follows_the_successors_start(scene: Scene) -> None:
    """`Hooks.started` (the neighbour refresh) gets the successor's ID once, right after its start."""
    seen, started = _starts(scene)
    assert _run(scene, started=started).result == "upgraded"
    new = scene.fake.named(NAME)
    assert new is not None
    assert seen == [(new["Id"], True)]


def test_started_hook_follows_the_old_versions_restart_in_a_rollback(scene: Scene) -> None:
    """On a rollback `Hooks.started` gets the successor's ID, then the old container's right after the undo
    started it again."""
    _new_version_exits(scene.fake)
    seen, started = _starts(scene)
    assert _run(scene, started=started).result == "rolled-back"
    assert len(seen) == 2
    assert seen[0][0] != scene.old_id
    assert seen[1] == (scene.old_id, True)
