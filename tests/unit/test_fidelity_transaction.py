"""The transaction's part in fidelity, on an in-memory engine: the engine's defaults are read before the
service is touched, files a client copied into the old container follow it, and a successor that is rolled
back takes the anonymous volumes made for it, never the old container's.

The containers are the CLI-made recordings of tests/data/fidelity-engine*.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dockwarden import gate, imageref, recreate, upgrade
from dockwarden.engine import EngineError
from tests.support.fakeengine import Behaviour, FakeEngine, Op

DATA = Path(__file__).resolve().parents[1] / "data"
REPO = "127.0.0.1:5000/fid"
DIGEST = "sha256:" + "d" * 64
POLICY = gate.Policy(stability=0.0, health_timeout_max=5.0)


def _scene(engine: str, name: str) -> tuple[FakeEngine, dict[str, Any], str]:
    """A fake engine running the recorded container `name` as "svc", whose registry has the new image."""
    data = json.loads((DATA / f"fidelity-engine{engine}.json").read_text())
    new_image = copy.deepcopy(data["new_image"])
    new_image.update(RepoTags=[], RepoDigests=[])
    fake = FakeEngine(registry={f"{REPO}@{DIGEST}": new_image})
    fake.add_image({**data["old_image"], "RepoTags": [f"{REPO}:latest"]})
    container = copy.deepcopy(data["containers"][name])
    container["Name"] = "/svc"
    container["Config"]["Image"] = f"{REPO}:latest"
    old_id = fake.add_container(container)
    return fake, new_image, old_id


def _upgrade(fake: FakeEngine) -> upgrade.Outcome:
    target = upgrade.Target(
        service="svc",
        container="svc",
        ref=imageref.parse(f"{REPO}:latest"),
        from_digest="sha256:" + "a" * 64,
        to_digest=DIGEST,
        policy=POLICY,
    )
    return upgrade.Upgrade(fake, target).run()


def _ops(fake: FakeEngine) -> list[Op]:
    return [call.op for call in fake.calls]


@pytest.fixture(params=["20", "26"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_engine_defaults_are_read_before_the_service_is_touched(engine: str) -> None:
    """The probe runs at plan, before the set-aside rename, and a failing probe is an error that touches
    nothing."""
    fake, _, old_id = _scene(engine, "plain")
    assert _upgrade(fake).result == upgrade.Result.UPGRADED
    ops = _ops(fake)
    assert ops.index(Op.DEFAULTS) < ops.index(Op.RENAME)

    fake, _, old_id = _scene(engine, "plain")
    fake.fail(Op.DEFAULTS, EngineError("probe refused"), nth=1)
    outcome = _upgrade(fake)
    assert (outcome.result, outcome.step) == (upgrade.Result.ERROR, upgrade.Step.PLAN)
    assert Op.RENAME not in _ops(fake)
    assert fake.named("svc") == fake.containers[old_id]


def test_the_api_socket_credentials_follow_the_container(engine: str) -> None:
    """The file `--use-api-socket` wrote into the old container is in the new one before it starts."""
    fake, _, old_id = _scene(engine, "api-socket")
    fake.files[old_id, recreate.API_SOCKET_CONFIG] = b'{"auths": {}}'
    assert _upgrade(fake).result == upgrade.Result.UPGRADED
    new = fake.named("svc")
    assert new is not None
    assert fake.files[new["Id"], recreate.API_SOCKET_CONFIG] == b'{"auths": {}}'
    ops = _ops(fake)
    assert ops.index(Op.CREATE) < ops.index(Op.COPY_FILE) < ops.index(Op.STOP)


def test_a_missing_credentials_file_is_no_failure(engine: str) -> None:
    """Without the file (the CLI had no credentials to copy), the upgrade goes on."""
    fake, _, _ = _scene(engine, "api-socket")
    assert _upgrade(fake).result == upgrade.Result.UPGRADED


def test_a_rolled_back_successor_takes_only_its_own_anonymous_volumes(engine: str) -> None:
    """The new image's own VOLUME gets a fresh volume, which goes with the failed successor; the old
    container's anonymous volumes, re-attached by name, stay."""
    fake, new_image, old_id = _scene(engine, "anon-volumes")
    fake.on_start[new_image["Id"]] = Behaviour(exit_code=1)
    old_volumes = {m["Name"] for m in fake.containers[old_id]["Mounts"] if m["Type"] == "volume"}
    before = set(fake.volumes)

    outcome = _upgrade(fake)

    assert (outcome.result, outcome.step) == (upgrade.Result.ROLLED_BACK, upgrade.Step.GATE)
    assert fake.volumes == before
    assert old_volumes <= fake.volumes
    assert [c.args[2] for c in fake.calls if c.op is Op.REMOVE] == [True]  # the successor, with volumes
